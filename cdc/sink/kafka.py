"""Sinks: where events go. Sends are asynchronous; `flush()` is the one place that waits, and it
raises if anything sent since the previous flush was not acknowledged."""

from __future__ import annotations

import logging
import sys
from typing import IO, Any, Protocol

from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError

from cdc.config import KafkaConfig
from cdc.errors import OversizeError, SinkError
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


class KafkaProducerSink:
    """kafka-python in this process: acks=all, idempotent, batched; `flush()` waits for acks."""

    def __init__(self, config: KafkaConfig, bootstrap_timeout_ms: int | None = None) -> None:
        self._config = config
        self._messages = KafkaMessages(config)
        self._error: BaseException | None = None
        extra: dict[str, object] = {}
        if bootstrap_timeout_ms is not None and "bootstrap_timeout_ms" in KafkaProducer.DEFAULT_CONFIG:
            extra["bootstrap_timeout_ms"] = bootstrap_timeout_ms  # kafka-python >= 3 (30 s by default)
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
            raise SinkError(f"Kafka send failed: {exc}") from None
        future.add_errback(self._failed)

    def send(self, event: dict[str, Any], value: bytes | None = None) -> None:
        self.produce(self._messages.event(event, value))

    def send_dead_letter(self, record: dict[str, Any]) -> None:
        self.produce(self._messages.dead_letter(record))

    def flush(self) -> None:
        try:
            self._producer.flush(timeout=self._config.flush_timeout_seconds)
        except KafkaTimeoutError:
            raise SinkError(
                f"Kafka did not acknowledge within kafka.flush_timeout_seconds ({self._config.flush_timeout_seconds}s)"
            ) from None
        if self._error is not None:
            error, self._error = self._error, None
            raise SinkError(f"Kafka did not accept a message: {error}")

    def close(self) -> None:
        try:
            self._producer.close(timeout=5)
        except Exception:  # closing a producer to a dead broker must not mask the original error
            log.debug("error closing the Kafka producer", exc_info=True)


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
    bounded = config.model_copy(
        update={"max_block_ms": min(config.max_block_ms, ms), "request_timeout_ms": min(config.request_timeout_ms, ms)}
    )
    library = logging.getLogger("kafka")
    level = library.level
    library.setLevel(logging.CRITICAL + 1)
    try:
        KafkaProducerSink(bounded, bootstrap_timeout_ms=ms).close()
    finally:
        library.setLevel(level)
