"""Sinks: where events go. Sends are asynchronous; `flush()` is the one place that waits, and it
raises if anything sent since the previous flush was not acknowledged."""

from __future__ import annotations

import logging
import sys
import time
from typing import IO, Any, Protocol

from cdc.config import KafkaConfig
from cdc.errors import OversizeError, SinkError
from cdc.mapping.events import DEAD_LETTER, SCHEMA_VERSION, encode
from cdc.sink.oversize import shrink_to_fit
from cdc.sink.wire import BROADCAST_KEY_SUFFIX as BROADCAST_KEY_SUFFIX
from cdc.sink.wire import BrokerHealth as BrokerHealth
from cdc.sink.wire import HealthListener as HealthListener
from cdc.sink.wire import Message as Message

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
    kind, version = event["event_type"], event["schema_version"]
    # The event_type and schema_version headers are one of a few values: built once each.
    type_header = _TYPE_HEADERS.get(kind)
    if type_header is None:
        type_header = ("event_type", kind.encode())
        if len(_TYPE_HEADERS) < 64:
            _TYPE_HEADERS[kind] = type_header
    return [
        type_header,
        ("event_id", event["event_id"].encode()),
        _VERSION_HEADER if type(version) is int and version == SCHEMA_VERSION else
        ("schema_version", str(version).encode()),
    ]  # fmt: skip


_TYPE_HEADERS: dict[str, tuple[str, bytes]] = {}
_VERSION_HEADER = ("schema_version", str(SCHEMA_VERSION).encode())


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
