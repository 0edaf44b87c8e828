"""The Kafka sink in the streamer's own process (`kafka.producer_process: false`, `wpcdc check`, the
tests): kafka-python imported here, where cdc.sink.kafka (what every sink shares) imports none of it."""

from __future__ import annotations

import logging
from typing import Any

from cdc.config import KafkaConfig
from cdc.sink.kafka import HealthListener, HealthLog, KafkaMessages
from cdc.sink.producer import Producer, ProducerSettings


class KafkaProducerSink(Producer):
    """The Producer (cdc.sink.producer) with KafkaMessages in front: the sink of `producer_process:
    false`, of `wpcdc check` and of the tests."""

    def __init__(
        self, config: KafkaConfig, bootstrap_timeout_ms: int | None = None, report: HealthListener | None = None
    ) -> None:
        self._messages = KafkaMessages(config)
        super().__init__(
            ProducerSettings.of(config), bootstrap_timeout_ms, report if report is not None else HealthLog()
        )

    def send(self, event: dict[str, Any], value: bytes | None = None) -> None:
        self.produce(self._messages.event(event, value))

    def send_dead_letter(self, record: dict[str, Any]) -> None:
        self.produce(self._messages.dead_letter(record))


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
