"""checkpoint.store: kafka on Apache Kafka: the position lives in a compacted topic, `run` resumes from
it after kill -9 (three times under write load) with nothing lost, and the `checkpoint` commands
(copy from a file included) work on it."""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from cdc.checkpoint.kafka import KafkaCheckpointStore
from cdc.checkpoint.store import Checkpoint
from cdc.config import parse_config
from tests.faults.test_outages import Writer
from tests.integration.conftest import Site

pytestmark = pytest.mark.kafka


def checkpoint_topic(site: Site) -> str:
    topic = f"{site.topic}.checkpoints"
    admin = KafkaAdminClient(bootstrap_servers=site.stack.broker.bootstrap, client_id="wpcdc-tests")
    try:
        admin.create_topics([NewTopic(topic, 1, 1, topic_configs={"cleanup.policy": "compact"})])
    finally:
        admin.close()
    return topic


def use_kafka_store(site: Site) -> str:
    topic = checkpoint_topic(site)
    site.config["checkpoint"].update({"store": "kafka", "kafka_topic": topic})
    site.write_config()
    return topic


def records_for_key(bootstrap: str, topic: str) -> list[tuple[bytes, bytes | None]]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=1000)
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        end = consumer.end_offsets([tp])[tp]
        out = []
        while consumer.position(tp) < end:
            for recs in consumer.poll(timeout_ms=500).values():
                out += [(r.key, r.value) for r in recs]
        return out
    finally:
        consumer.close()


def shown(site: Site) -> dict[str, Any]:
    result = site.cli("checkpoint", "show")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def tuple_of(position: str) -> tuple[str, int]:
    file, pos = position.rsplit(":", 1)
    return file, int(pos)


def stored(site: Site) -> Checkpoint | None:
    """What `checkpoint show` reads, without a CLI process per poll."""
    config = parse_config(site.config)
    store = KafkaCheckpointStore(config.kafka, config.checkpoint.kafka_topic, config.checkpoint_key())
    try:
        return store.load()
    finally:
        store.close()


def test_run_resumes_from_the_kafka_checkpoint_after_kill_9_with_nothing_lost(asite: Site) -> None:
    topic = use_kafka_store(asite)
    asite.set_checkpoint()
    assert not asite.checkpoint_path.exists()  # the position is in Kafka, not in the file
    rng = random.Random(15)
    writer = Writer(asite, every=0.01).start()
    moved = []
    for _ in range(3):
        before = stored(asite)
        s = asite.streamer()
        deadline = time.monotonic() + 60
        while stored(asite) == before:  # it checkpointed in Kafka at least once
            assert s.proc.poll() is None and time.monotonic() < deadline, s.output()
            time.sleep(0.1)
        time.sleep(rng.uniform(0.0, 1.0))  # then anywhere in the checkpoint cycle
        s.proc.kill()
        s.wait(10)
        cp = stored(asite)
        assert cp is not None
        moved.append(cp.position.pos)
    writer.stop()
    end = asite.position()
    final = asite.streamer()
    # The checkpoint passes the binlog end only once the broker has acknowledged everything before
    # it; counting records instead could stop early, on duplicates of re-sent transactions.
    deadline = time.monotonic() + 120
    while (cp := stored(asite)) is None or (cp.position.file, cp.position.pos) < tuple_of(end):
        assert final.proc.poll() is None and time.monotonic() < deadline, final.output()
        time.sleep(0.2)
    expected = len(writer.ids) + writer.meta
    records = asite.consume(expect=expected, idle=2.0, timeout=120)  # all of it is in the topic by now
    assert final.stop() == 0, final.output()
    ids = Counter(r.value["event_id"] for r in records)
    assert len(ids) == expected, f"lost {expected - len(ids)} of {expected}"
    created = {r.value["post_id"] for r in records if r.value["event_type"] == "post_created"}
    assert created == set(writer.ids)
    assert not asite.checkpoint_path.exists()
    keyed = records_for_key(asite.stack.broker.bootstrap, topic)
    key = f"127.0.0.1:{asite.stack.db.port}/{asite.database}".encode()
    assert keyed and {k for k, _ in keyed} == {key}
    assert json.loads(keyed[-1][1] or b"null")["pos"] == shown(asite)["pos"]
    assert len(set(moved)) == len(moved), moved  # every run moved the checkpoint on


def test_checkpoint_commands_and_copying_a_file_checkpoint_into_kafka(asite: Site) -> None:
    asite.set_checkpoint()  # a file checkpoint, as before the switch
    file_cp = json.loads(asite.checkpoint_path.read_text())
    topic = checkpoint_topic(asite)
    asite.config["checkpoint"]["kafka_topic"] = topic  # store still: file
    asite.write_config()
    copied = asite.cli("checkpoint", "copy", "--to", "kafka")
    assert copied.returncode == 0, copied.stderr
    asite.config["checkpoint"]["store"] = "kafka"
    asite.write_config()
    cp = shown(asite)
    assert (cp["file"], cp["pos"], cp["server_id"]) == (file_cp["file"], file_cp["pos"], file_cp["server_id"])
    # A newer position in Kafka is not overwritten by an older file without --force.
    post = asite.insert_post("after the copy")
    later = asite.position()
    assert asite.cli("checkpoint", "set", later).returncode == 0
    again = asite.cli("checkpoint", "copy", "--to", "kafka")
    assert again.returncode == 5 and "already has a checkpoint" in again.stderr and "--force" in again.stderr
    assert f"{shown(asite)['file']}:{shown(asite)['pos']}" == later
    # run streams from the Kafka checkpoint: the post before it is not published again.
    s = asite.streamer()
    newer = asite.insert_post("streamed")
    records = asite.consume(expect=1)
    assert s.stop() == 0, s.output()
    assert [r.value["post_id"] for r in records] == [newer] and post != newer
    reset = asite.cli("checkpoint", "reset")
    assert reset.returncode == 0 and "removed the checkpoint in Kafka topic" in reset.stderr
    after = asite.cli("checkpoint", "show")
    assert after.returncode == 0 and after.stdout.strip() == "null", after
    assert records_for_key(asite.stack.broker.bootstrap, topic)[-1][1] is None  # a tombstone


def test_a_missing_checkpoint_topic_stops_run_with_the_fix(asite: Site) -> None:
    missing = f"missing-checkpoints-{os.getpid()}"
    asite.config["checkpoint"].update({"store": "kafka", "kafka_topic": missing})
    asite.write_config()
    s = asite.streamer()
    code = s.wait(60)
    out = s.output()
    assert code == 6 and f"the checkpoint topic {missing!r} does not exist" in out, out
    assert "cleanup.policy=compact" in out and "Traceback" not in out
