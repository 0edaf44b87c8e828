"""kafka.delivery exactly_once on Apache Kafka (Tansu cannot show it: its read_committed consumers see
aborted records). Each checkpoint interval's events and the checkpoint record are one transaction:
kill -9 twenty times under load and a read_committed consumer sees every row change's events exactly
once; a producer fenced by a newer one with the same transactional id stops, and nothing it sent
after that becomes visible."""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from cdc.config import parse_config
from cdc.errors import ProducerFenced
from cdc.sink.kafka import KafkaProducerSink
from tests.conftest import BROKER_FIGURES as FIGURES
from tests.faults.test_outages import Writer
from tests.integration.conftest import Site, Stack
from tests.kafka.test_kafka_checkpoints import stored, tuple_of, use_kafka_store

pytestmark = pytest.mark.kafka

# The kill loop is about the protocol, not the server: one leg (the MariaDB one) keeps the suite short.
mariadb_only = pytest.mark.parametrize("stack", ["mariadb"], indirect=True)


@pytest.fixture
def esite(apache_stack: Stack, tmp_path: Path) -> Iterator[Site]:
    s = Site(apache_stack, tmp_path)
    try:
        yield s
    finally:
        s.close()  # no streamer outlives a failed test


def read(site: Site, topic: str | None = None, committed: bool = True, idle: float = 2.0) -> list[dict[str, object]]:
    """Every value on the topic as a consumer with isolation.level=read_committed (or not) sees it."""
    topic = topic or site.topic
    consumer = KafkaConsumer(
        bootstrap_servers=site.stack.broker.bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed" if committed else "read_uncommitted",
    )
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end = consumer.end_offsets(parts)  # read_committed: the last stable offset
        out: list[dict[str, object]] = []
        last_new = time.monotonic()
        while time.monotonic() - last_new < idle or any(consumer.position(tp) < end[tp] for tp in parts):
            for msgs in consumer.poll(timeout_ms=200).values():
                out += [orjson.loads(m.value) for m in msgs]
                last_new = time.monotonic()
        return out
    finally:
        consumer.close()


def exactly_once(site: Site, interval: float = 0.2) -> None:
    use_kafka_store(site)
    site.config["kafka"]["delivery"] = "exactly_once"
    site.config["checkpoint"]["interval_seconds"] = interval
    site.write_config()


def wait_for_checkpoint_at(site: Site, end: str, streamer: object, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while (cp := stored(site)) is None or (cp.position.file, cp.position.pos) < tuple_of(end):
        assert streamer.proc.poll() is None and time.monotonic() < deadline, streamer.output()  # type: ignore[attr-defined]
        time.sleep(0.2)


@mariadb_only
def test_exactly_once_kill_9_twenty_times_under_load_slow(esite: Site) -> None:
    """kill -9 twenty times while a writer inserts posts and meta rows, some kills landing inside a
    multi-row UPDATE: a read_committed consumer sees every row change's events exactly once (by
    event_id), while a read_uncommitted one sees the aborted copies. (at_least_once under the same
    kind of loop, 0 lost: tests/faults/test_crashes.py, and with Kafka checkpoints
    test_kafka_checkpoints.py.)"""
    exactly_once(esite, interval=0.2)
    esite.set_checkpoint()
    rng = random.Random(1520)
    writer = Writer(esite, every=0.01).start()
    began = time.monotonic()
    for i in range(20):
        before = stored(esite)
        s = esite.streamer()
        deadline = time.monotonic() + 60
        while stored(esite) == before:  # it committed at least once (its start takes seconds under load)
            assert s.proc.poll() is None and time.monotonic() < deadline, s.output()
            time.sleep(0.3)
        time.sleep(rng.uniform(0.0, 1.0))  # then anywhere in the checkpoint cycle
        if i % 4 == 0:  # kill inside a large transaction: one UPDATE of the newest 500 posts
            big = esite.stack.db.root(esite.database)
            t = threading.Thread(
                target=big.query,
                args=(
                    "UPDATE wp_posts SET menu_order = menu_order + 1 WHERE post_title LIKE 'w%'"
                    " ORDER BY ID DESC LIMIT 500",
                ),
            )
            t.start()
            time.sleep(rng.uniform(0.0, 0.05))
            s.proc.kill()
            t.join()
            big.close()
        else:
            s.proc.kill()
        s.wait(10)
    writer.stop()
    end = esite.position()
    final = esite.streamer()
    wait_for_checkpoint_at(esite, end, final)
    committed = read(esite)
    uncommitted = read(esite, committed=False, idle=0.5)
    assert final.stop() == 0, final.output()
    seconds = time.monotonic() - began

    updates = int(esite.query("SELECT SUM(menu_order) FROM wp_posts WHERE post_title LIKE 'w%%'")[0][0] or 0)
    expected = len(writer.ids) + writer.meta + updates  # every row change is one event here
    ids = Counter(str(v["event_id"]) for v in committed)
    lost = expected - len(ids)
    dup = sum(n - 1 for n in ids.values())
    aborted = len(uncommitted) - len(committed)
    FIGURES.append(
        f"[kill -9 x20, exactly_once] cycles 20, row changes {expected}, read_committed "
        f"{len(committed)}: lost {lost}, dup {dup}; records in aborted transactions {aborted}; {seconds:.0f}s"
    )
    assert lost == 0, f"lost {lost} of {expected}"
    created = {v["post_id"] for v in committed if v["event_type"] == "post_created"}
    assert created == set(writer.ids)
    assert dup == 0, ids.most_common(3)
    assert aborted > 0  # the kills did land inside open transactions: read_committed hid those copies


@mariadb_only  # about the producer alone: one leg
def test_a_fenced_producer_cannot_commit_and_stops(esite: Site) -> None:
    """Two producers with one transactional id: the newer one's init_transactions fences the older;
    the older's commit fails with ProducerFenced, and nothing it sent becomes visible."""
    exactly_once(esite)
    kafka = parse_config(esite.config).kafka.model_copy(update={"transactional_id": f"fence-{esite.topic}"})
    checkpoint_topic = esite.config["checkpoint"]["kafka_topic"]
    old = KafkaProducerSink(kafka)
    old.produce((esite.topic, b"1:1", b'{"event_id": "old-before"}', []))
    new = KafkaProducerSink(kafka)  # fences `old`, aborting its open transaction
    old.produce((esite.topic, b"1:1", b'{"event_id": "old-after"}', []))
    with pytest.raises(ProducerFenced) as fenced:
        old.commit((checkpoint_topic, b"k", b'{"owner": "old"}'))
    old.close()
    assert "fenced" in fenced.value.problem and fenced.value.exit_code == 8
    new.produce((esite.topic, b"1:1", b'{"event_id": "new"}', []))
    new.commit((checkpoint_topic, b"k", b'{"owner": "new"}'))
    new.close()
    assert [v["event_id"] for v in read(esite, idle=0.5)] == ["new"]
    assert [v["owner"] for v in read(esite, checkpoint_topic, idle=0.5)] == ["new"]


@mariadb_only
def test_a_paused_run_is_fenced_by_a_newer_one_and_exits_8(esite: Site, tmp_path: Path) -> None:
    """`run` A streams; it is SIGSTOPped; `run` B on the same source (same checkpoint key, hence the
    same transactional id) starts and takes over. A, continued, fails its next commit: it logs
    `fenced` and exits 8. A read_committed consumer sees every row change exactly once."""
    exactly_once(esite)
    esite.set_checkpoint()
    a = esite.streamer()
    first = [esite.insert_post(f"a{i}") for i in range(5)]
    wait_for_checkpoint_at(esite, esite.position(), a, timeout=60)
    a.proc.send_signal(signal.SIGSTOP)
    during = [esite.insert_post(f"stopped{i}") for i in range(5)]
    other = tmp_path / "b"
    other.mkdir()
    b_config = json.loads(json.dumps(esite.config))
    b_config["checkpoint"]["path"] = str(other / "checkpoint.json")  # its own lock; the same Kafka key
    b_config["mysql"]["server_id"] += 1  # A keeps its binlog connection: it reads on when continued
    saved, esite.config = esite.config, b_config
    esite.config_path = other / "config.yaml"
    esite.write_config()
    b = esite.streamer()
    wait_for_checkpoint_at(esite, esite.position(), b, timeout=60)
    a.proc.send_signal(signal.SIGCONT)
    after = [esite.insert_post(f"after{i}") for i in range(5)]
    code = a.wait(60)
    wait_for_checkpoint_at(esite, esite.position(), b, timeout=60)
    values = read(esite)
    assert b.stop() == 0, b.output()
    esite.config = saved
    out = a.output()
    assert code == 8, out
    assert "fenced:" in out and "another producer registered transactional id" in out and "Traceback" not in out
    ids = Counter(str(v["event_id"]) for v in values)
    posts = [v["post_id"] for v in values if v["event_type"] == "post_created"]
    FIGURES.append(f"[fencing] A exit {code}; events {len(values)}, distinct {len(ids)}")
    assert sorted(posts) == sorted(first + during + after)
    assert max(ids.values()) == 1
