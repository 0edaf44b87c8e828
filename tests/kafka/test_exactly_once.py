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
from pathlib import Path

import pytest

from cdc.config import parse_config
from cdc.errors import ProducerFenced
from cdc.sink.in_process import KafkaProducerSink
from tests.conftest import BROKER_FIGURES as FIGURES
from tests.faults.test_outages import Writer
from tests.integration.conftest import Site
from tests.kafka.conftest import read_topic, tally
from tests.kafka.test_kafka_checkpoints import stored, tuple_of, use_kafka_store

pytestmark = pytest.mark.kafka

# The kill loop is about the protocol, not the server: one leg (the MariaDB one) keeps the suite short.
mariadb_only = pytest.mark.parametrize("stack", ["mariadb"], indirect=True)


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
def test_exactly_once_kill_9_twenty_times_under_load_slow(asite: Site) -> None:
    """kill -9 twenty times while a writer inserts posts and meta rows, some kills landing inside a
    multi-row UPDATE: a read_committed consumer sees every row change's events exactly once (by
    event_id), while a read_uncommitted one sees the aborted copies. (at_least_once under the same
    kind of loop, 0 lost: tests/faults/test_crashes.py, and with Kafka checkpoints
    test_kafka_checkpoints.py.)"""
    exactly_once(asite, interval=0.2)
    asite.set_checkpoint()
    rng = random.Random(1520)
    writer = Writer(asite, every=0.01).start()
    began = time.monotonic()
    for i in range(20):
        before = stored(asite)
        s = asite.streamer()
        deadline = time.monotonic() + 60
        while stored(asite) == before:  # it committed at least once (its start takes seconds under load)
            assert s.proc.poll() is None and time.monotonic() < deadline, s.output()
            time.sleep(0.3)
        time.sleep(rng.uniform(0.0, 1.0))  # then anywhere in the checkpoint cycle
        if i % 4 == 0:  # kill inside a large transaction: one UPDATE of the newest 500 posts
            big = asite.stack.db.root(asite.database)
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
    end = asite.position()
    final = asite.streamer()
    wait_for_checkpoint_at(asite, end, final)
    committed = read_topic(asite)
    uncommitted = read_topic(asite, committed=False, idle=0.5)
    assert final.stop() == 0, final.output()
    seconds = time.monotonic() - began

    updates = int(asite.query("SELECT SUM(menu_order) FROM wp_posts WHERE post_title LIKE 'w%%'")[0][0] or 0)
    expected = len(writer.ids) + writer.meta + updates  # every row change is one event here
    lost, dup, aborted = tally(expected, committed, uncommitted)
    FIGURES.append(
        f"[kill -9 x20, exactly_once] cycles 20, row changes {expected}, read_committed "
        f"{len(committed)}: lost {lost}, dup {dup}; records in aborted transactions {aborted}; {seconds:.0f}s"
    )
    assert lost == 0, f"lost {lost} of {expected}"
    created = {v["post_id"] for v in committed if v["event_type"] == "post_created"}
    assert created == set(writer.ids)
    assert dup == 0, Counter(str(v["event_id"]) for v in committed).most_common(3)
    assert aborted > 0  # the kills did land inside open transactions: read_committed hid those copies


@mariadb_only  # about the producer alone: one leg
def test_a_fenced_producer_cannot_commit_and_stops(asite: Site) -> None:
    """Two producers with one transactional id: the newer one's init_transactions fences the older;
    the older's commit fails with ProducerFenced, and nothing it sent becomes visible."""
    exactly_once(asite)
    kafka = parse_config(asite.config).kafka.model_copy(update={"transactional_id": f"fence-{asite.topic}"})
    checkpoint_topic = asite.config["checkpoint"]["kafka_topic"]
    old = KafkaProducerSink(kafka)
    old.produce((asite.topic, b"1:1", b'{"event_id": "old-before"}', []))
    new = KafkaProducerSink(kafka)  # fences `old`, aborting its open transaction
    old.produce((asite.topic, b"1:1", b'{"event_id": "old-after"}', []))
    with pytest.raises(ProducerFenced) as fenced:
        old.commit((checkpoint_topic, b"k", b'{"owner": "old"}'))
    old.close()
    assert "fenced" in fenced.value.problem and fenced.value.exit_code == 8
    new.produce((asite.topic, b"1:1", b'{"event_id": "new"}', []))
    new.commit((checkpoint_topic, b"k", b'{"owner": "new"}'))
    new.close()
    assert [v["event_id"] for v in read_topic(asite, idle=0.5)] == ["new"]
    assert [v["owner"] for v in read_topic(asite, checkpoint_topic, idle=0.5)] == ["new"]


@mariadb_only
def test_a_paused_run_is_fenced_by_a_newer_one_and_exits_8(asite: Site, tmp_path: Path) -> None:
    """`run` A streams; it is SIGSTOPped; `run` B on the same source (same checkpoint key, hence the
    same transactional id) starts and takes over. A, continued, fails its next commit: it logs
    `fenced` and exits 8. A read_committed consumer sees every row change exactly once."""
    exactly_once(asite)
    asite.set_checkpoint()
    a = asite.streamer()
    first = [asite.insert_post(f"a{i}") for i in range(5)]
    wait_for_checkpoint_at(asite, asite.position(), a, timeout=60)
    a.proc.send_signal(signal.SIGSTOP)
    during = [asite.insert_post(f"stopped{i}") for i in range(5)]
    other = tmp_path / "b"
    other.mkdir()
    b_config = json.loads(json.dumps(asite.config))
    b_config["checkpoint"]["path"] = str(other / "checkpoint.json")  # its own lock; the same Kafka key
    b_config["mysql"]["server_id"] += 1  # A keeps its binlog connection: it reads on when continued
    saved, asite.config = asite.config, b_config
    asite.config_path = other / "config.yaml"
    asite.write_config()
    b = asite.streamer()
    wait_for_checkpoint_at(asite, asite.position(), b, timeout=60)
    a.proc.send_signal(signal.SIGCONT)
    after = [asite.insert_post(f"after{i}") for i in range(5)]
    code = a.wait(60)
    wait_for_checkpoint_at(asite, asite.position(), b, timeout=60)
    values = read_topic(asite)
    assert b.stop() == 0, b.output()
    asite.config = saved
    out = a.output()
    assert code == 8, out
    assert "fenced:" in out and "another producer registered transactional id" in out and "Traceback" not in out
    ids = Counter(str(v["event_id"]) for v in values)
    posts = [v["post_id"] for v in values if v["event_type"] == "post_created"]
    FIGURES.append(f"[fencing] A exit {code}; events {len(values)}, distinct {len(ids)}")
    assert sorted(posts) == sorted(first + during + after)
    assert max(ids.values()) == 1
