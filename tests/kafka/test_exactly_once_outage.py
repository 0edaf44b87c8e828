"""kafka.delivery exactly_once through a broker outage: the test's own Apache Kafka broker (the suite's
session broker is shared, so no other test may stop it) is killed with SIGKILL under write load and
started again on the same port and log dir a few seconds later. A read_committed consumer then sees
every row change's events exactly once, and the run came back by itself."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path

import pytest

from cdc.dev.kafka import Kafka
from tests.conftest import BROKER_FIGURES as FIGURES
from tests.faults.test_outages import Writer
from tests.integration.conftest import Site, Stack, Streamer
from tests.kafka.conftest import read_topic, tally
from tests.kafka.test_exactly_once import exactly_once, wait_for_checkpoint_at
from tests.kafka.test_kafka_checkpoints import stored

pytestmark = pytest.mark.kafka


# The MySQL leg: it has slack, the MariaDB one is the suite's long pole (README "Tests").
@pytest.mark.parametrize("stack", ["mysql"], indirect=True)
def test_exactly_once_survives_a_broker_kill_9_and_restart_slow(stack: Stack, tmp_path: Path) -> None:
    broker = Kafka(tmp_path / "kafka").start()
    site = Site(Stack(stack.db, broker, tmp_path), tmp_path)
    try:
        # Short producer timeouts, as test_outages' broker outage: the commit open when the broker dies
        # fails within seconds, so the producer-replacement path (a new producer's init_transactions
        # decides the unconfirmed transaction, the checkpoint is read again) is what runs.
        site.config["kafka"]["flush_timeout_seconds"] = 3
        site.config["source"]["reconnect_backoff_max_seconds"] = 1
        exactly_once(site, interval=0.2)
        site.set_checkpoint()
        before = stored(site)
        s = site.streamer()
        writer = Writer(site, every=0.01).start()
        deadline = time.monotonic() + 60
        while stored(site) == before:  # the run committed a transaction of its own: it is streaming
            assert s.proc.poll() is None and time.monotonic() < deadline, s.output()
            time.sleep(0.2)
        time.sleep(0.5)
        broker.proc.kill()  # kill -9: no clean shutdown, transactions left open on the broker
        broker.proc.wait(10)
        killed_at = time.monotonic()
        # A `run` that starts while the broker is down: under exactly_once it registers the source's
        # transactional id before anything else, cannot, and exits 6 with the error (README "Exactly
        # once": a supervisor restarts it). Its own lock directory and server_id, the same source, so
        # had it reached a broker it would have fenced the running one: the broker stays down until it exited.
        late = _late_run(site, tmp_path / "late")
        late_code = late.wait(60)
        late_out = late.output()
        broker = Kafka(broker.base, port=broker.port, controller_port=broker.controller_port).start()
        back_at = time.monotonic()
        site.stack = Stack(stack.db, broker, tmp_path)
        # Came back by itself: a checkpoint past what was written when the broker answered again.
        wait_for_checkpoint_at(site, site.position(), s, timeout=60)
        recovered = time.monotonic() - back_at
        writer.stop()
        wait_for_checkpoint_at(site, site.position(), s, timeout=60)
        committed = read_topic(site)
        uncommitted = read_topic(site, committed=False, idle=0.5)
        code = s.stop()
        out = s.output()

        expected = len(writer.ids) + writer.meta  # each insert is one event (drafts, meta rows)
        lost, dup, aborted = tally(expected, committed, uncommitted)
        FIGURES.append(
            f"[exactly_once, broker kill -9 + restart] row changes {expected}, read_committed {len(committed)}: "
            f"lost {lost}, dup {dup}, records in aborted transactions {aborted}; broker down "
            f"{back_at - killed_at:.1f}s (its restart {broker.started_in:.1f}s), first checkpoint after it "
            f"{recovered:.1f}s; run exit {code}, a run started during the outage exit {late_code} "
            f"(load average {os.getloadavg()[0]:.1f})"
        )
        # A broker outage is retried (README "Exit codes"): the run never stopped (wait_for_checkpoint_at
        # asserts it is alive) and SIGTERM ends it with 0.
        assert code == 0, out[-3000:]
        assert lost == 0, f"lost {lost} of {expected}"
        assert {v["post_id"] for v in committed if v["event_type"] == "post_created"} == set(writer.ids)
        assert dup == 0, Counter(str(v["event_id"]) for v in committed).most_common(3)
        assert "Kafka broker unreachable" in out, out[-3000:]
        assert "restarting from the last checkpoint" in out, out[-3000:]
        assert "Traceback" not in out, out[-3000:]
        assert late_code == 6, late_out
        assert "error: cannot connect to Kafka" in late_out and "Traceback" not in late_out, late_out
    finally:
        site.close()
        broker.stop()


def _late_run(site: Site, directory: Path) -> Streamer:
    directory.mkdir()
    saved, saved_path = site.config, site.config_path
    late = json.loads(json.dumps(site.config))
    late["checkpoint"]["path"] = str(directory / "checkpoint.json")
    late["mysql"]["server_id"] += 1
    late["kafka"]["max_block_ms"] = 2000  # gives up connecting after 5 s (fit_to_topics' floor)
    site.config, site.config_path = late, directory / "config.yaml"
    try:
        site.write_config()
        return site.streamer()
    finally:
        site.config, site.config_path = saved, saved_path
