"""Reading a whole topic back in tests, as a consumer would: assign() (Tansu's group joins wait for the
rebalance timeout), from the beginning, to the end offsets."""

from __future__ import annotations

import time
from typing import Any

import orjson
from kafka import KafkaConsumer, TopicPartition


def read_values(
    bootstrap: str, topic: str, *, committed: bool = False, idle: float = 0.0, timeout: float = 120.0
) -> list[dict[str, Any]]:
    """Every value on `topic`, partition by partition in offset order as polls return them: read to
    the end offsets taken at the start (with `committed`, isolation.level read_committed: the last
    stable offset), then on until nothing came for `idle` s."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed" if committed else "read_uncommitted",
    )
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end = consumer.end_offsets(parts)
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        last_new = time.monotonic()
        while time.monotonic() - last_new < idle or any(consumer.position(tp) < end[tp] for tp in parts):
            assert time.monotonic() < deadline, f"reading {topic} did not reach its end offsets {end}"
            for records in consumer.poll(timeout_ms=200).values():
                out += [orjson.loads(r.value) for r in records]
                last_new = time.monotonic()
        return out
    finally:
        consumer.close()
