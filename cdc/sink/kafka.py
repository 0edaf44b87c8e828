"""Sinks: where events go. Sends are asynchronous; `flush()` is the one place that waits, and it
raises if anything sent since the previous flush was not acknowledged."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, Protocol

from kafka import KafkaProducer
from kafka.errors import InvalidProducerEpochError, KafkaError, KafkaTimeoutError, ProducerFencedError

from cdc.config import KafkaConfig
from cdc.errors import OversizeError, ProducerFenced, SinkError
from cdc.mapping.events import DEAD_LETTER, SCHEMA_VERSION, encode
from cdc.sink.oversize import shrink_to_fit

log = logging.getLogger(__name__)


class Sink(Protocol):
    # `value`: the event already encoded (Mapped.encoded), so the hot path encodes once.
    def send(self, event: dict[str, Any], value: bytes | None = None) -> None: ...

    def send_dead_letter(self, record: dict[str, Any]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def event_key(event: dict[str, Any]) -> bytes:
    post = event.get("post_id")
    if post is None and event["event_type"].startswith("table_"):
        return f"{event['blog_id']}:*".encode()  # a whole table: see BROADCAST_KEY_SUFFIX
    return f"{event['blog_id']}:{'' if post is None else post}".encode()


# A key ending so (`{blog_id}:*`, the table_* events) goes to every partition of its topic: each
# partition's consumer then sees the table change in order with the events of its own posts.
BROADCAST_KEY_SUFFIX = b":*"


class StdoutSink:
    """One JSON line per event on stdout, byte for byte the Kafka message value. Dead letters go to
    stderr so stdout stays a clean event stream."""

    def __init__(self, out: IO[bytes] | None = None, err: IO[bytes] | None = None) -> None:
        self._out = out or sys.stdout.buffer
        self._err = err or sys.stderr.buffer

    def send(self, event: dict[str, Any], value: bytes | None = None) -> None:
        self._out.write((encode(event) if value is None else value) + b"\n")

    def send_dead_letter(self, record: dict[str, Any]) -> None:
        self._err.write(b"dead-letter: " + encode(record) + b"\n")

    def flush(self) -> None:
        try:
            self._out.flush()
            self._err.flush()
        except BrokenPipeError:
            raise SinkError("stdout was closed by the reader (broken pipe)", "") from None

    def close(self) -> None:
        try:
            self.flush()
        except SinkError:
            pass


Message = tuple[str, bytes, bytes, list[tuple[str, bytes]]]  # topic, key, value, headers


class KafkaMessages:
    """Turns events into Kafka messages: the value, the per-post key, the headers, and the
    dead-letter record for an event larger than kafka.max_request_size (never dropped)."""

    def __init__(self, config: KafkaConfig) -> None:
        self._topic = config.topic
        self._dead_letter_topic = config.dead_letter_topic
        # Headroom for the record's key, headers and framing inside the producer's request.
        self._limit = config.max_request_size - 512
        self._policy = config.oversize_policy

    def event(self, event: dict[str, Any], value: bytes | None = None) -> Message:
        if value is None:
            value = encode(event)
        if len(value) > self._limit:
            return self._oversize(event, len(value))
        return (self._topic, event_key(event), value, _headers(event))

    def _oversize(self, event: dict[str, Any], size: int) -> Message:
        if self._policy == "fail":
            raise OversizeError(
                f"{event['event_type']} {event['event_id']} encodes to {size} bytes, over kafka.max_request_size "
                f"or the topic's max.message.bytes ({self._limit + 512}), and kafka.oversize_policy is fail",
                "raise the topic's max.message.bytes and kafka.max_request_size together, or set "
                "kafka.oversize_policy to truncate or dead_letter",
            )
        if self._policy == "truncate":
            shrunk = shrink_to_fit(event, self._limit, encode)
            if shrunk is not None:
                return (self._topic, event_key(shrunk), encode(shrunk), _headers(shrunk))
        return self.dead_letter(_too_large(event, size, self._limit + 512))

    def dead_letter(self, record: dict[str, Any]) -> Message:
        value = encode(record)
        if len(value) > self._limit:
            error = record["error"] + " (row images omitted: too large)"
            value = encode({**record, "before": None, "after": None, "error": error})
        return (self._dead_letter_topic, event_key(record), value, _headers(record))


def _headers(event: dict[str, Any]) -> list[tuple[str, bytes]]:
    return [
        ("event_type", event["event_type"].encode()),
        ("event_id", event["event_id"].encode()),
        ("schema_version", str(event["schema_version"]).encode()),
    ]


@dataclass(frozen=True)
class BrokerHealth:
    """The producer's view of the broker, refreshed every _WATCH_SECONDS. `failures` counts broker
    failures since the producer started (failed or unanswered metadata probes, rejected sends)."""

    up: bool = True
    problem: str = ""
    oldest_unacked_seconds: float = 0.0
    failures: int = 0


HealthListener = Callable[[BrokerHealth], None]

_WATCH_SECONDS = 0.25
# A metadata request at least this often, so an idle stream notices a broker that went away (and
# one that came back) without waiting for data to send.
_PROBE_SECONDS = 1.0


class HealthLog:
    """Logs the broker going down and coming back, then hands every report on to `listener`."""

    def __init__(self, listener: HealthListener | None = None) -> None:
        self._listener = listener
        self._down_since: float | None = None

    def __call__(self, health: BrokerHealth) -> None:
        if not health.up and self._down_since is None:
            self._down_since = time.monotonic()
            log.warning(
                "Kafka broker unreachable: %s (oldest unacknowledged message %.1fs); events are held and sent "
                "when it answers again", health.problem, health.oldest_unacked_seconds,
                extra={"event": "broker_down", "error": health.problem},
            )  # fmt: skip
        elif health.up and self._down_since is not None:
            down_for = time.monotonic() - self._down_since
            self._down_since = None
            log.info(
                "Kafka broker reachable again after %.1fs", down_for,
                extra={"event": "broker_up", "down_seconds": round(down_for, 3)},
            )  # fmt: skip
        if self._listener is not None:
            self._listener(health)


class KafkaProducerSink:
    """kafka-python in this process: acks=all, idempotent, batched; `flush()` waits for acks.

    A watcher thread reports the broker's health to `report` every _WATCH_SECONDS: down when a
    metadata probe fails or goes unanswered for kafka.health_timeout_seconds, when the oldest
    unacknowledged message is older than that, or when a send was rejected since the last good probe.
    kafka-python itself keeps reconnecting (backoff capped at kafka.reconnect_backoff_max_ms), so a
    broker that comes back within kafka.flush_timeout_seconds is used again without a restart."""

    def __init__(
        self, config: KafkaConfig, bootstrap_timeout_ms: int | None = None, report: HealthListener | None = None
    ) -> None:
        self._config = config
        self._messages = KafkaMessages(config)
        self._error: BaseException | None = None
        self._report = report if report is not None else HealthLog()
        self._outstanding: deque[tuple[float, Any]] = deque()  # (sent at, future), in send order
        self._send_failures = 0
        self._last_failure: BaseException | None = None
        self._closed = threading.Event()
        extra: dict[str, object] = {}
        if bootstrap_timeout_ms is not None and "bootstrap_timeout_ms" in KafkaProducer.DEFAULT_CONFIG:
            extra["bootstrap_timeout_ms"] = bootstrap_timeout_ms  # kafka-python >= 3 (30 s by default)
        self.transactional = config.delivery == "exactly_once" and config.transactional_id is not None
        if self.transactional:
            extra["transactional_id"] = config.transactional_id
            extra["transaction_timeout_ms"] = config.transaction_timeout_ms
        try:
            self._producer = KafkaProducer(
                bootstrap_servers=config.bootstrap_servers,
                client_id=config.client_id,
                acks="all",
                # Keeps per-partition order across internal retries, hence per-post order.
                enable_idempotence=True,
                compression_type=None if config.compression_type == "none" else config.compression_type,
                linger_ms=config.linger_ms,
                batch_size=config.batch_size,
                max_request_size=config.max_request_size,
                max_block_ms=config.max_block_ms,
                request_timeout_ms=config.request_timeout_ms,
                # kafka-python's default (30 s) made a broker that came back wait that long for the
                # next connection attempt.
                reconnect_backoff_max_ms=config.reconnect_backoff_max_ms,
                **config.producer_security(),
                **extra,
            )
        except KafkaError as exc:
            raise SinkError(
                f"cannot connect to Kafka at {','.join(config.bootstrap_servers)}: {exc}",
                "check kafka.bootstrap_servers and that the brokers are up",
            ) from None
        for topic in (config.topic, config.dead_letter_topic):
            self._require_topic(topic)
        if self.transactional:
            self._init_transactions()
        self._watcher = threading.Thread(target=self._watch, name="wpcdc-broker-health", daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        timeout = self._config.health_timeout_seconds
        # kafka-python's cluster metadata and network client (private: every use is guarded, and
        # without them the health rests on acknowledgements alone).
        metadata = getattr(self._producer, "_metadata", None)
        client = getattr(getattr(self._producer, "_sender", None), "_client", None)
        probe: Any = None
        probe_at = last_probe = time.monotonic()
        probe_problem = send_problem = ""
        failures_seen = failures = 0
        was_up = True
        while not self._closed.wait(_WATCH_SECONDS):
            now = time.monotonic()
            if probe is not None and probe.is_done:
                if probe.succeeded():
                    probe_problem = send_problem = ""
                else:
                    probe_problem = f"metadata request failed: {probe.exception!r}"
                probe = None
            elif probe is not None and now - probe_at > timeout:
                probe_problem = f"no answer to a metadata request for {now - probe_at:.1f}s"
            if probe is None and metadata is not None and now - last_probe >= _PROBE_SECONDS:
                try:
                    probe = metadata.request_update()
                except Exception as exc:  # a private API changed: go on without probes
                    log.debug("metadata probe unavailable: %r", exc)
                    metadata = None
                probe_at = last_probe = now
            if self._send_failures > failures_seen:
                failures += self._send_failures - failures_seen
                failures_seen = self._send_failures
                send_problem = f"a send was rejected: {self._last_failure!r}"
            outstanding = self._outstanding
            while outstanding and outstanding[0][1].is_done:
                outstanding.popleft()
            oldest = now - outstanding[0][0] if outstanding else 0.0
            problem = probe_problem or send_problem
            if not problem and oldest > 2 * _WATCH_SECONDS and _connected(client, metadata) is False:
                # Messages wait and no broker connection is open: it went away (a dead broker's
                # metadata probe may stay pending for the whole timeout rather than fail).
                problem = "lost the connection to the broker"
            if not problem and oldest > timeout:
                problem = f"no acknowledgement for {oldest:.1f}s"
            if problem and was_up:
                failures += 1
            was_up = not problem
            try:
                self._report(BrokerHealth(not problem, problem, oldest, failures))
            except Exception:
                log.debug("broker health report failed", exc_info=True)

    def _init_transactions(self) -> None:
        """Register as the source's producer: the broker fences every older producer with this
        transactional id and completes or aborts its open transaction, so what it left half-sent is
        never read by read_committed consumers. Then the first transaction begins."""
        try:
            self._producer.init_transactions()
            self._producer.begin_transaction()
        except KafkaTimeoutError:
            self.close()
            raise SinkError(
                f"Kafka did not register transactional id {self._config.transactional_id!r} within "
                f"kafka.max_block_ms ({self._config.max_block_ms} ms)",
                "check the broker; a broker needs transaction.state.log.replication.factor brokers up",
            ) from None
        except KafkaError as exc:
            self.close()
            raise SinkError(
                f"Kafka refused transactional id {self._config.transactional_id!r}: {exc}",
                "kafka.delivery exactly_once needs Kafka >= 2.5 and, with ACLs, WRITE and DESCRIBE on the "
                "TransactionalId resource",
            ) from None

    def _wait_txn(self, begin: Callable[[], Any], what: str) -> None:
        """commit_transaction()/abort_transaction() wait without a bound: a broker that dies then would
        leave the stream stuck. The same steps (kafka-python's transaction manager), with a timeout."""
        timeout_ms = int(self._config.flush_timeout_seconds * 1000)
        result = begin()
        self._producer._sender.wakeup()
        if not result.wait(timeout_ms=timeout_ms):
            raise SinkError(f"Kafka did not confirm the {what} within kafka.flush_timeout_seconds")

    def commit(self, record: tuple[str, bytes, bytes]) -> None:
        """exactly_once: the checkpoint `record` (topic, key, value) joins the open transaction, which
        is then committed with every event and dead letter sent since the last commit; the next one
        begins. Raises ProducerFenced or SinkError (then the transaction is not committed)."""
        topic, key, value = record
        self._raise_fenced(self._error)
        manager = self._producer._transaction_manager
        try:
            self._producer.send(topic, key=key, value=value)  # the key's partition, as partition_for picks it
            self._wait_acks()
            self._wait_txn(manager.begin_commit, "transaction commit")
            self._producer.begin_transaction()
        except KafkaError as exc:
            self._raise_fenced(exc)
            raise SinkError(f"Kafka did not commit the transaction: {exc}") from None

    def _raise_fenced(self, exc: BaseException | None) -> None:
        if isinstance(exc, ProducerFencedError | InvalidProducerEpochError) or (
            self.transactional and _fatal_fenced(self._producer)
        ):
            self._error = None
            raise ProducerFenced(
                f"another producer registered transactional id {self._config.transactional_id!r} (a newer wpcdc "
                "on the same source): this one is fenced and stops; its open transaction is aborted",
                "run one wpcdc per source (or let the group assign sources); give each source its own "
                "kafka.transactional_id / checkpoint.kafka_key",
            )

    def _require_topic(self, topic: str) -> None:
        try:
            partitions = self._producer.partitions_for(topic)
        except KafkaTimeoutError:
            partitions = None
        except KafkaError as exc:
            raise SinkError(f"cannot read metadata of topic {topic!r}: {exc}", "check the broker") from None
        if not partitions:
            self.close()
            raise SinkError(
                f"Kafka topic {topic!r} does not exist or is not reachable",
                "create it (kafka-topics.sh --create --topic ...), enable auto-creation on the broker, "
                "or set kafka.topic / kafka.dead_letter_topic",
            )

    def _failed(self, exc: BaseException) -> None:
        self._send_failures += 1
        self._last_failure = exc
        if self._error is None:
            self._error = exc

    def produce(self, message: Message) -> None:
        topic, key, value, headers = message
        try:
            if key.endswith(BROADCAST_KEY_SUFFIX):
                for partition in sorted(self._producer.partitions_for(topic) or ()):
                    future = self._producer.send(topic, key=key, value=value, headers=headers, partition=partition)
                    future.add_errback(self._failed)
                return
            future = self._producer.send(topic, key=key, value=value, headers=headers)
        except KafkaTimeoutError as exc:
            raise SinkError(f"Kafka did not accept a message within kafka.max_block_ms: {exc}") from None
        except KafkaError as exc:
            self._raise_fenced(exc)
            raise SinkError(f"Kafka send failed: {exc}") from None
        future.add_errback(self._failed)
        self._outstanding.append((time.monotonic(), future))

    def send(self, event: dict[str, Any], value: bytes | None = None) -> None:
        self.produce(self._messages.event(event, value))

    def send_dead_letter(self, record: dict[str, Any]) -> None:
        self.produce(self._messages.dead_letter(record))

    def flush(self) -> None:
        if self.transactional and self._error is None:
            return  # exactly_once: `commit`, right after it, waits for everything with its checkpoint record
        self._wait_acks()

    def _wait_acks(self) -> None:
        try:
            self._producer.flush(timeout=self._config.flush_timeout_seconds)
        except KafkaTimeoutError:
            raise SinkError(
                f"Kafka did not acknowledge within kafka.flush_timeout_seconds ({self._config.flush_timeout_seconds}s)"
            ) from None
        if self._error is not None:
            self._raise_fenced(self._error)
            error, self._error = self._error, None
            raise SinkError(f"Kafka did not accept a message: {error}")

    def close(self) -> None:
        self._closed.set()
        if self.transactional:
            # Abort what this producer sent after its last commit: read_committed consumers would
            # otherwise wait behind the open transaction until kafka.transaction_timeout_ms.
            try:
                manager = self._producer._transaction_manager
                sent = manager._partitions_in_transaction or manager.has_partitions_to_add()
                if sent and not manager.has_fatal_error():
                    self._wait_txn(manager.begin_abort, "transaction abort")
            except Exception:  # a dead broker, a fenced producer: the next owner's init aborts it
                log.debug("could not abort the open transaction", exc_info=True)
        try:
            self._producer.close(timeout=5)
        except Exception:  # closing a producer to a dead broker must not mask the original error
            log.debug("error closing the Kafka producer", exc_info=True)


def _fatal_fenced(producer: Any) -> bool:
    """Whether kafka-python's transaction manager holds a fenced producer's fatal error (it keeps it
    there and raises a generic error from later calls)."""
    manager = getattr(producer, "_transaction_manager", None)
    error = getattr(manager, "last_error", None) if manager is not None else None
    return isinstance(error, ProducerFencedError | InvalidProducerEpochError)


def _connected(client: Any, metadata: Any) -> bool | None:
    """Whether any known broker has an open connection; None when kafka-python cannot tell."""
    try:
        return any(client.connected(b.node_id) for b in metadata.brokers())
    except Exception:
        return None


def _too_large(event: dict[str, Any], size: int, limit: int) -> dict[str, Any]:
    return {
        "event_type": DEAD_LETTER,
        "event_id": event["event_id"] + ":too_large",
        "schema_version": SCHEMA_VERSION,
        "occurred_at": event["occurred_at"],
        "blog_id": event["blog_id"],
        "post_id": event.get("post_id"),
        "source": event["source"],
        "error": f"{event['event_type']} message of {size} bytes is over kafka.max_request_size or the topic's "
        f"max.message.bytes ({limit})",
        "op": _op_of(event["event_type"]),
        "before": None,
        "after": None,
    }


def _op_of(event_type: str) -> str:
    if event_type.endswith(("_created", "_added")):
        return "insert"
    if event_type.endswith(("_deleted", "_removed")):
        return "delete"
    return "update"


def probe_kafka(config: KafkaConfig, timeout_seconds: float = 5.0) -> None:
    """`wpcdc check`: connect and find both topics within about `timeout_seconds` (not the 30 s
    bootstrap and 10 s metadata waits a running producer may take), without kafka-python's own log
    lines: the outcome is reported as a finding. Raises SinkError."""
    ms = int(timeout_seconds * 1000)
    # Never transactional: registering the source's transactional id would fence the running `run`.
    bounded = config.model_copy(
        update={
            "max_block_ms": min(config.max_block_ms, ms),
            "request_timeout_ms": min(config.request_timeout_ms, ms),
            "delivery": "at_least_once",
        }
    )
    library = logging.getLogger("kafka")
    level = library.level
    library.setLevel(logging.CRITICAL + 1)
    try:
        KafkaProducerSink(bounded, bootstrap_timeout_ms=ms).close()
    finally:
        library.setLevel(level)
