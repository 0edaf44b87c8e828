"""The checkpoint as a record in a compacted Kafka topic (checkpoint.store: kafka), keyed by the
source's identity, so the position survives the loss of the machine wpcdc runs on.

The value is the same JSON as the file store's. A reset writes a tombstone. Reading finds the latest
record for the key by walking back from the partition's end in growing windows: one fetch when the
topic holds one source per partition, and never a scan of the whole uncompacted head of a busy topic.

One writer per key: the `run` that owns the source (`owner=True`) reads the topic once and then
keeps what it last saved, so restarting after a broker outage does not need the broker to answer a
read first. Every other user (`checkpoint show`, a `snapshot` following a run) reads afresh.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from kafka.partitioner.default import murmur2

from cdc.checkpoint.store import Checkpoint
from cdc.config import KafkaConfig
from cdc.errors import CheckpointError, ConfigError, KafkaSetupError, SinkError

log = logging.getLogger(__name__)

_FIRST_WINDOW = 64  # offsets read back from the end before widening (x8 each time)


def partition_for(key: bytes, partitions: int) -> int:
    # The Java client's and kafka-python's default for a keyed record, so other tools agree on it.
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class KafkaCheckpointStore:
    def __init__(self, config: KafkaConfig, topic: str, key: str, *, owner: bool = False) -> None:
        self._config = config
        self._topic = topic
        self._key = key.encode()
        self._owner = owner
        self.where = f"Kafka topic {topic} (key {key!r})"
        self._known = False  # owner: has read or written the key, so _last is the truth
        self._last: Checkpoint | None = None
        self._producer: KafkaProducer | None = None
        self.settle = False  # exactly_once owner: reads wait for open transactions (see _settle)

    def _common(self) -> dict[str, Any]:
        return {
            "bootstrap_servers": self._config.bootstrap_servers,
            "client_id": f"{self._config.client_id}-checkpoint",
            "request_timeout_ms": self._config.request_timeout_ms,
            **self._config.producer_security(),
        }

    def _unreachable(self, what: str, exc: BaseException) -> CheckpointError:
        return CheckpointError(
            f"cannot {what} the checkpoint in {self.where} at {','.join(self._config.bootstrap_servers)}: "
            f"{type(exc).__name__}",
            "check that the brokers are up and kafka.bootstrap_servers / security settings; `wpcdc check` tells which",
        )

    def _missing(self) -> KafkaSetupError:
        return KafkaSetupError(
            f"the checkpoint topic {self._topic!r} does not exist (checkpoint.store is kafka)",
            f"create it compacted: `kafka-topics.sh --bootstrap-server {self._config.bootstrap_servers[0]} --create "
            f"--topic {self._topic} --partitions 1 --config cleanup.policy=compact`, or set checkpoint.kafka_topic",
        )

    def load(self) -> Checkpoint | None:
        if self._owner and self._known:
            return self._last
        try:
            found = self._read()
        except KafkaError as exc:
            raise self._unreachable("read", exc) from None
        cp = None
        if found is not None:
            try:
                cp = Checkpoint.from_json(json.loads(found))
            except (ValueError, KeyError, TypeError, ConfigError):
                raise CheckpointError(
                    f"the latest record in {self.where} is not a valid wpcdc checkpoint",
                    "set one with `wpcdc checkpoint set FILE:POS` (it writes a new record for the key)",
                ) from None
        if self._owner:
            self._known, self._last = True, cp
        return cp

    def _read(self) -> bytes | None:
        """The latest value for the key (None: none, or a tombstone)."""
        if self.settle:
            self._settle()
        consumer = KafkaConsumer(
            enable_auto_commit=False,
            isolation_level="read_committed",  # a checkpoint written in an aborted transaction never counts
            consumer_timeout_ms=200,
            **self._common(),
        )
        try:
            partitions = consumer.partitions_for_topic(self._topic)
            if not partitions:
                raise self._missing()
            count = max(partitions) + 1
            first = partition_for(self._key, count)
            # Only the key's partition is read, unless the key is not there (the topic was repartitioned).
            found: list[tuple[int, bytes | None]] = []
            for p in [first, *sorted(set(partitions) - {first})]:
                hit = self._latest_in(consumer, TopicPartition(self._topic, p))
                if hit is not None:
                    found.append(hit)
                    if p == first:
                        break
            if not found:
                return None
            return max(found, key=lambda hit: hit[0])[1]  # newest by record timestamp
        finally:
            consumer.close()

    def _latest_in(self, consumer: KafkaConsumer, tp: TopicPartition) -> tuple[int, bytes | None] | None:
        consumer.assign([tp])
        begin = consumer.beginning_offsets([tp])[tp]
        end = consumer.end_offsets([tp])[tp]
        window, hi = _FIRST_WINDOW, end
        while hi > begin:
            lo = max(begin, hi - window)
            consumer.seek(tp, lo)
            latest: tuple[int, bytes | None] | None = None
            deadline = time.monotonic() + self._config.request_timeout_ms / 1000
            while consumer.position(tp) < hi:
                if time.monotonic() > deadline:
                    raise CheckpointError(f"reading {self.where} did not progress within kafka.request_timeout_ms")
                for records in consumer.poll(timeout_ms=200).values():
                    for r in records:
                        if r.offset < hi and r.key == self._key:
                            latest = (r.timestamp, r.value)
            if latest is not None:
                return latest
            hi, window = lo, window * 8
        return None

    def _settle(self) -> None:
        """exactly_once: wait until read_committed reads reach the log end as it is now. Every
        transaction of this source is decided by then (its producer's init_transactions ran first), but
        another source's open transaction on the same partition hides every record after its start,
        this source's newest checkpoint included: reading before it is decided would resume from an
        older checkpoint and publish an interval twice. Normally a wait of one commit; at most
        kafka.transaction_timeout_ms when a producer died mid-commit and nobody took its source over."""
        committed = KafkaConsumer(enable_auto_commit=False, isolation_level="read_committed", **self._common())
        uncommitted = KafkaConsumer(enable_auto_commit=False, **self._common())
        try:
            partitions = committed.partitions_for_topic(self._topic)
            if not partitions:
                raise self._missing()
            tps = [TopicPartition(self._topic, p) for p in partitions]
            target = uncommitted.end_offsets(tps)
            deadline = time.monotonic() + self._config.transaction_timeout_ms / 1000 + 30
            logged = False
            while True:
                stable = committed.end_offsets(tps)
                behind = {tp.partition: target[tp] - stable[tp] for tp in tps if stable[tp] < target[tp]}
                if not behind:
                    return
                if time.monotonic() > deadline:
                    raise CheckpointError(
                        f"an open Kafka transaction in {self._topic} (partitions {sorted(behind)}) stayed undecided "
                        "past kafka.transaction_timeout_ms: the latest checkpoint cannot be read",
                        "check the broker's transaction coordinator (kafka-transactions.sh list)",
                    )
                if not logged:
                    logged = True
                    log.info(
                        "waiting for an open transaction in %s to be decided before reading the checkpoint", self.where,
                        extra={"event": "checkpoint_settle", "partitions": sorted(behind)},
                    )  # fmt: skip
                time.sleep(0.2)
        finally:
            committed.close()
            uncommitted.close()

    def record(self, checkpoint: Checkpoint) -> tuple[Checkpoint, tuple[str, bytes, bytes]]:
        """The stamped checkpoint and its record (topic, key, value), for a producer to write in its
        own transaction; `committed` once that transaction committed."""
        stamped = checkpoint.stamped()
        return stamped, (self._topic, self._key, json.dumps(stamped.to_json()).encode())

    def committed(self, stamped: Checkpoint) -> None:
        self._known, self._last = True, stamped

    def forget(self) -> None:
        """The next `load` reads the topic again (exactly_once: after a new producer's init_transactions
        decided the transaction whose commit this process could not confirm)."""
        self._known = False

    def _producer_for_writes(self) -> KafkaProducer:
        if self._producer is None:
            try:
                self._producer = KafkaProducer(
                    acks="all", enable_idempotence=True, linger_ms=0, max_block_ms=self._config.max_block_ms,
                    **self._common(),
                )  # fmt: skip
            except KafkaError as exc:
                raise SinkError(f"cannot connect to Kafka to write the checkpoint: {type(exc).__name__}") from None
        return self._producer

    def _write(self, value: bytes | None) -> None:
        producer = self._producer_for_writes()
        try:
            partitions = producer.partitions_for(self._topic)
        except KafkaError:
            partitions = None
        if not partitions:
            raise self._missing()
        # Transient, like a failed event send: `run` restarts from the checkpoint it last stored, so a
        # failed write re-sends events, never skips them.
        try:
            producer.send(
                self._topic, key=self._key, value=value, partition=partition_for(self._key, max(partitions) + 1)
            ).get(timeout=self._config.flush_timeout_seconds)
        except KafkaError as exc:
            raise SinkError(f"could not write the checkpoint to {self.where}: {exc}") from None

    def save(self, checkpoint: Checkpoint) -> Checkpoint:
        stamped = checkpoint.stamped()
        self._write(json.dumps(stamped.to_json()).encode())
        self._known, self._last = True, stamped
        return stamped

    def reset(self) -> bool:
        had = self.load() is not None
        if had:
            self._write(None)  # a tombstone: compaction removes the key
        self._known, self._last = True, None
        return had

    def close(self) -> None:
        if self._producer is not None:
            try:
                self._producer.close(timeout=5)
            except Exception:  # closing to a dead broker must not mask the original error
                log.debug("error closing the checkpoint producer", exc_info=True)
            self._producer = None


class TransactionalCheckpointStore:
    """kafka.delivery exactly_once, for the `run` that owns the source: `save` writes the checkpoint
    record into the sink's open transaction and commits it, so the checkpoint and the events before it
    become visible to read_committed consumers together, or (a crash, a fenced producer) not at all.
    `commit` is the sink's (KafkaProducerSink.commit); it raises SinkError or ProducerFenced."""

    def __init__(self, inner: KafkaCheckpointStore, commit: Callable[[tuple[str, bytes, bytes]], None]) -> None:
        self.inner = inner
        self._commit = commit
        self.where = inner.where
        inner.settle = True

    def load(self) -> Checkpoint | None:
        return self.inner.load()

    def save(self, checkpoint: Checkpoint) -> Checkpoint:
        stamped, record = self.inner.record(checkpoint)
        self._commit(record)
        self.inner.committed(stamped)
        return stamped

    def forget(self) -> None:
        self.inner.forget()

    def reset(self) -> bool:
        raise CheckpointError("a running exactly_once stream does not reset its checkpoint")

    def close(self) -> None:
        self.inner.close()
