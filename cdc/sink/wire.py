"""What the streamer and its producer child share, without kafka-python or pydantic: the messages,
the producer's settings as plain values, and the broker health reports and their pipe. The streamer
imports only this of the producer's side (kafka-python's imports cost ~0.2 CPU s at every start,
and the child, which needs them, pays them once)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cdc.config import KafkaConfig

# A key ending so (`{blog_id}:*`, the table_* events) goes to every partition of its topic: each
# partition's consumer then sees the table change in order with the events of its own posts.
BROADCAST_KEY_SUFFIX = b":*"

Message = tuple[str, bytes, bytes, list[tuple[str, bytes]]]  # topic, key, value, headers


@dataclass(frozen=True)
class BrokerHealth:
    """The producer's view of the broker, refreshed every _WATCH_SECONDS. `failures` counts broker
    failures since the producer started (failed or unanswered metadata probes, rejected sends)."""

    up: bool = True
    problem: str = ""
    oldest_unacked_seconds: float = 0.0
    failures: int = 0


HealthListener = Callable[[BrokerHealth], None]


@dataclass(frozen=True)
class ProducerSettings:
    """What the producer needs from KafkaConfig, as plain values: the child gets them as a dict (a
    pickled KafkaConfig would import pydantic and the whole configuration tree there, ~0.2 CPU s and
    ~15 MiB of the child's start-up)."""

    bootstrap_servers: list[str]
    client_id: str
    topic: str
    dead_letter_topic: str
    compression_type: str
    linger_ms: int
    batch_size: int
    max_request_size: int
    max_block_ms: int
    request_timeout_ms: int
    reconnect_backoff_max_ms: int
    health_timeout_seconds: float
    flush_timeout_seconds: float
    delivery: str
    transactional_id: str | None
    transaction_timeout_ms: int
    security: dict[str, object] = dataclasses.field(repr=False)  # may hold the SASL password

    @classmethod
    def of(cls, config: KafkaConfig) -> ProducerSettings:
        """Raises ConfigError (incomplete SASL settings) here, in the streamer, before any child starts."""
        fields = {f.name for f in dataclasses.fields(cls)} - {"security"}
        return cls(**{name: getattr(config, name) for name in fields}, security=config.producer_security())


class HealthPipe:
    """The child's BrokerHealth reports, sent over a pipe of their own to the parent's watcher
    (which logs and feeds the metrics: the child has no logging set up and the main pipe is busy
    with batches and flushes). A pipe rather than multiprocessing shared memory: that needs
    multiprocessing to start the child, and its spawn start method runs a resource-tracker
    process besides (12 MiB) that has nothing to track here."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.last = BrokerHealth()

    def write(self, health: BrokerHealth) -> None:
        try:
            self.conn.send(tuple(dataclasses.astuple(health)))
        except OSError:
            pass  # the parent is gone; the main pipe tells the child so

    def read(self, timeout: float) -> BrokerHealth:
        """The latest report, waiting up to `timeout` for one; the previous one if none came."""
        try:
            while self.conn.poll(timeout):
                self.last = BrokerHealth(*self.conn.recv())
                timeout = 0
        except (EOFError, OSError):
            pass
        return self.last
