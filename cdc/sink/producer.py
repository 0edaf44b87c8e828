"""kafka-python, as the producer child runs it: this module and cdc.errors are all the child imports
besides kafka-python (no pydantic, no configuration tree: its settings arrive as a plain dict), which
keeps the child's start-up to kafka-python's own imports."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from kafka.errors import (
    InvalidProducerEpochError,
    KafkaError,
    KafkaTimeoutError,
    ProducerFencedError,
    UnknownError,
)
from kafka.partitioner.default import DefaultPartitioner, murmur2
from kafka.producer.kafka import KafkaProducer
from kafka.structs import TopicPartition
from kafka.version import __version__ as kafka_version

from cdc.errors import ProducerFenced, SinkError
from cdc.sink.wire import BROADCAST_KEY_SUFFIX as BROADCAST_KEY_SUFFIX
from cdc.sink.wire import BrokerHealth as BrokerHealth
from cdc.sink.wire import HealthListener as HealthListener
from cdc.sink.wire import Message as Message
from cdc.sink.wire import ProducerSettings as ProducerSettings

log = logging.getLogger(__name__)

_WATCH_SECONDS = 0.25
# A metadata request at least this often, so an idle stream notices a broker that went away (and
# one that came back) without waiting for data to send.
_PROBE_SECONDS = 1.0
# Keys whose partition produce_batch remembers (a key is `blog:post`; at this many it starts over).
_PARTITION_CACHE = 100_000


class Producer:
    """kafka-python in this process: acks=all, idempotent, batched; `flush()` waits for acks.

    A watcher thread reports the broker's health to `report` every _WATCH_SECONDS: down when a
    metadata probe fails or goes unanswered for kafka.health_timeout_seconds, when the oldest
    unacknowledged message is older than that, or when a send was rejected since the last good probe.
    kafka-python itself keeps reconnecting (backoff capped at kafka.reconnect_backoff_max_ms), so a
    broker that comes back within kafka.flush_timeout_seconds is used again without a restart."""

    def __init__(
        self, config: ProducerSettings, bootstrap_timeout_ms: int | None = None, report: HealthListener | None = None
    ) -> None:
        self._config = config
        self._error: BaseException | None = None
        self._report: HealthListener = report if report is not None else (lambda health: None)
        self._outstanding: deque[tuple[float, Any]] = deque()  # (sent at, future), in send order
        self._send_failures = 0
        self._last_failure: BaseException | None = None
        self._closed = threading.Event()
        extra: dict[str, object] = {}
        if bootstrap_timeout_ms is not None and "bootstrap_timeout_ms" in KafkaProducer.DEFAULT_CONFIG:
            extra["bootstrap_timeout_ms"] = bootstrap_timeout_ms  # kafka-python >= 3 (30 s by default)
        if "metrics_enabled" in KafkaProducer.DEFAULT_CONFIG:
            # kafka-python's own sensors (several per request and per socket read or write, on the
            # sender thread) feed producer.metrics(), which nothing reads: wpcdc has its own.
            extra["metrics_enabled"] = False
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
                **config.security,
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
        self._fast = _fast_path(self._producer)
        self._partition_of: dict[bytes, tuple[int, int]] = {}  # key -> (partition count, index)
        self._tp_of: dict[tuple[str, int], TopicPartition] = {}
        self._incomplete: Any = None  # kafka-python's incomplete batches, when produce_batch is in use
        if self._fast is not None:
            self._incomplete = _watch_batches(self._fast[0], self._batch_done)
        # Headers and framing stay within the 512 bytes KafkaMessages leaves; beyond, send() says why.
        self._record_limit = config.max_request_size - 512
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
            if self._incomplete is not None:
                batches = self._incomplete.all()
                if batches:
                    oldest = max(oldest, now - min(batch.created for batch in batches))
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

    def produce_batch(self, messages: list[Message]) -> None:
        """`produce` for each message, in order, with kafka-python's per-record work cut to what a
        keyed record of ours needs: the partition as kafka-python's default partitioner picks it
        (murmur2 of the key, remembered per key), the record appended straight to its partition's
        open batch (kafka-python's own append only to open a new batch), and the sender woken once
        per call, only if a batch was opened (it already waits out the linger of the open ones; a
        wakeup is a syscall and a turn of the sender loop). No FutureRecordMetadata per record: a
        batch's outcome is its records' outcome (kafka-python fails or aborts a batch as a whole),
        so _batch_done, hooked on every batch the accumulator registers (split halves included),
        reports failures as per-record errbacks did, and the health watcher takes the oldest
        unacknowledged message from the accumulator's incomplete batches."""
        fast = self._fast
        if fast is None:
            for message in messages:
                self.produce(message)
            return
        accumulator, metadata, sender, transactions = fast
        limit = self._record_limit
        transactional = transactions is not None and transactions.is_transactional()
        added: set[TopicPartition] = set()  # partitions added to the transaction by this call
        ordered_of: dict[str, list[int]] = {}
        partition_of = self._partition_of
        tp_of = self._tp_of
        tp_lock = accumulator._tp_lock
        batches = accumulator._batches
        now = time.monotonic()
        timestamp = int(time.time() * 1000)  # what the record builder takes for None, once per call
        appending = accumulator._appends_in_progress  # abort_incomplete_batches waits for appenders
        opened = False
        appending.increment()
        try:
            if accumulator._closed:
                raise KafkaError("the producer is closed")
            for message in messages:
                topic, key, value, headers = message
                ordered = ordered_of.get(topic)
                if ordered is None:
                    ordered = ordered_of[topic] = sorted(metadata.partitions_for_topic(topic) or ())
                if not ordered or key.endswith(BROADCAST_KEY_SUFFIX) or len(key) + len(value) > limit:
                    self.produce(message)  # metadata to wait for, a broadcast, or kafka-python's own size error
                    continue
                count = len(ordered)
                known = partition_of.get(key)
                if known is None or known[0] != count:
                    if len(partition_of) >= _PARTITION_CACHE:
                        partition_of.clear()
                    known = partition_of[key] = (count, (murmur2(key) & 0x7FFFFFFF) % count)
                partition = ordered[known[1]]
                tp = tp_of.get((topic, partition))
                if tp is None:
                    tp = tp_of[(topic, partition)] = TopicPartition(topic, partition)
                if transactional and tp not in added:
                    transactions.maybe_add_partition_to_transaction(tp)
                    added.add(tp)
                with tp_lock(tp):  # as RecordAccumulator.append and ProducerBatch.try_append do it
                    dq = batches[tp]
                    if dq:
                        last = dq[-1]
                        appended = last.records.append(timestamp, key, value, headers)
                        if appended is not None:
                            if appended.size > last.max_record_size:
                                last.max_record_size = appended.size
                            last.last_append = now
                            continue
                accumulator.append(tp, timestamp, key, value, headers, now=now)  # a new batch
                opened = True
        except KafkaError as exc:
            self._raise_fenced(exc)
            raise SinkError(f"Kafka send failed: {exc}") from None
        finally:
            appending.decrement()
            if opened:
                sender.wakeup()

    def _batch_done(self, result: tuple[Any, Any, Any]) -> None:
        """A batch completed (kafka-python's FutureProduceResult): a record_exceptions_fn means it
        failed or was aborted, every record in it with it."""
        record_exception = result[2]
        if record_exception is not None:
            self._failed(record_exception(0))

    def flush(self) -> None:
        if self.transactional and self._error is None:
            return  # exactly_once: `commit`, right after it, waits for everything with its checkpoint record
        self._wait_acks()

    def _wait_acks(self) -> None:
        timeout = self._config.flush_timeout_seconds
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._producer.flush(timeout=max(deadline - time.monotonic(), 0.001))
                break
            except KafkaTimeoutError:
                raise SinkError(f"Kafka did not acknowledge within kafka.flush_timeout_seconds ({timeout}s)") from None
            except UnknownError as exc:
                # kafka-python 3.0: a batch the broker found too large (over the topic's
                # max.message.bytes) is split in halves, which wakes flush() on the original batch,
                # never completed, and it raises this; the halves are in the incomplete batches the
                # next flush() waits for.
                if "Future not done" not in str(exc) or time.monotonic() >= deadline:
                    raise SinkError(f"Kafka flush failed: {exc}") from None
                time.sleep(0.001)  # the sender may not yet have dropped the split batch: no tight loop
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


def _fast_path(producer: KafkaProducer) -> tuple[Any, Any, Any, Any] | None:
    """kafka-python's accumulator, metadata, sender and transaction manager, as KafkaProducer.send
    uses them, for the version whose send() `produce_batch` was checked against (3.0); None (the
    public send() for every record) for any other version or a producer configured otherwise."""
    if not kafka_version.startswith("3.0.") or type(producer.config.get("partitioner")) is not DefaultPartitioner:
        return None
    try:
        parts = (producer._accumulator, producer._metadata, producer._sender, producer._transaction_manager)
    except AttributeError:
        return None
    if producer.config.get("key_serializer") or producer.config.get("value_serializer"):
        return None
    accumulator = parts[0]
    used = ("_incomplete", "_tp_lock", "_batches", "_appends_in_progress", "_closed", "split_and_reenqueue")
    if accumulator.config.get("message_version") != 2 or not all(hasattr(accumulator, name) for name in used):
        return None
    return parts


def _watch_batches(accumulator: Any, done: Callable[[tuple[Any, Any, Any]], None]) -> Any:
    """Hooks `done` on the completion of every batch kafka-python's accumulator registers as
    incomplete: the batches RecordAccumulator.append opens and the halves split_and_reenqueue makes
    of one the broker found too large (their records' original batch never completes). Only this
    producer's accumulator is touched. Returns the incomplete batches, for the health watcher."""
    incomplete = accumulator._incomplete
    register = incomplete.add
    split = accumulator.split_and_reenqueue

    def add(batch: Any) -> None:
        batch.produce_future.add_callback(done)
        register(batch)

    def split_and_wake(batch: Any, now: float | None = None) -> int:
        try:
            return int(split(batch, now))
        finally:
            # What FutureRecordMetadata.rebind does for the records that have one (here only the
            # first of each batch): a flush() waiting on the original batch wakes and raises
            # "Future not done" (_wait_acks then waits for the halves) instead of waiting forever.
            batch.produce_future._latch.set()

    incomplete.add = add
    accumulator.split_and_reenqueue = split_and_wake
    return incomplete


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
