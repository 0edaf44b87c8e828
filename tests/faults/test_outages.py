"""Outages while a writer keeps changing WordPress tables: the source server restarts, the broker
goes away and a fresh one comes back. Each test prints its figures (pytest -s shows them)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pymysql
import pytest
from kafka import KafkaConsumer, TopicPartition

from cdc.dev.stack import Tansu, create_topics
from tests.faults.conftest import FIGURES
from tests.integration.conftest import Site, Stack
from tests.integration.test_operations import enable_metrics, get, scrape, wait_until

pytestmark = pytest.mark.integration


class Writer:
    """Inserts a post (and a meta row every 5th) every `every` seconds until stopped, on its own
    connection (PyMySQL connections are not thread-safe)."""

    def __init__(self, site: Site, every: float = 0.02) -> None:
        self.site = site
        self.every = every
        self.ids: list[int] = []
        self.meta = 0
        self.errors = 0
        self._conn: Any = None
        self._stop = threading.Event()
        self._pause = threading.Event()
        self._parked = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Writer:
        self._thread.start()
        return self

    def _insert(self, n: int) -> None:
        if self._conn is None:
            self._conn = self.site.stack.db.root(self.site.database)
        with self._conn.cursor() as cur:
            cur.execute(
                "INSERT INTO wp_posts (post_title, post_status, post_content, post_excerpt, to_ping, pinged,"
                " post_content_filtered) VALUES (%s, 'draft', '', '', '', '', '')",
                (f"w{n}",),
            )
            pid = int(cur.lastrowid)
            self.ids.append(pid)
            if n % 5 == 0:
                cur.execute("INSERT INTO wp_postmeta (post_id, meta_key, meta_value) VALUES (%s, 'n', %s)", (pid, n))
                self.meta += 1

    def pause(self) -> None:
        """Returns once no insert is in progress; writes resume with `resume()`."""
        self._parked.clear()
        self._pause.set()
        self._parked.wait(30)

    def resume(self) -> None:
        self._pause.clear()

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            if self._pause.is_set():
                self._parked.set()
                time.sleep(0.01)
                continue
            try:
                self._insert(n)
                n += 1
            except Exception:  # the server is down: count it, reconnect, go on
                self.errors += 1
                self._conn = None
                time.sleep(0.2)
            if self.every:
                time.sleep(self.every)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


def report(name: str, written: int, records: list, recovery: float) -> tuple[int, int]:
    """`written`: row changes that each yield exactly one event (drafts, meta rows, plain updates)."""
    ids = Counter(r.value["event_id"] for r in records)
    duplicated = sum(c - 1 for c in ids.values())
    lost = written - len(ids)
    FIGURES.append(
        f"[{name}] row changes written {written}, events delivered {len(records)}, "
        f"lost {lost}, duplicated {duplicated}, recovery {recovery:.1f}s"
    )
    return lost, duplicated


def test_source_server_restart_loses_nothing(stack: Stack, tmp_path: Path) -> None:
    own = stack.new_server(tmp_path / f"restarting-{stack.kind}", server_id=202).start()
    try:
        site = Site(Stack(own, stack.broker, tmp_path), tmp_path)
        site.set_checkpoint()
        s = site.streamer()
        writer = Writer(site).start()
        assert wait_until(lambda: "connected to the binlog" in s.output(), timeout=60), s.output()
        time.sleep(1)  # streaming: the outage must interrupt a live stream (start-up is slow on a busy machine)
        own.stop()  # SIGTERM: a clean shutdown of the source, binlog closed
        time.sleep(2)
        restarted_at = time.monotonic()
        own.start()  # same datadir and port; a new binlog file
        site.conn = own.root()
        time.sleep(2)
        writer.stop()
        written = len(writer.ids) + writer.meta
        records = site.consume(expect=written, timeout=60)
        recovery_s = time.monotonic() - restarted_at
        assert s.stop() == 0, s.output()
        lost, _ = report("source restart", written, records, recovery_s)
        assert lost == 0
        assert {r.value["post_id"] for r in records if r.value["event_type"] == "post_created"} == set(writer.ids)
        assert "restarting from the last checkpoint" in s.output()
        # Per post, the first occurrences stay in binlog order.
        files = {r.value["source"]["file"] for r in records}
        assert len(files) >= 2, "the restart should have rotated the binlog"
    finally:
        own.stop()


def test_broker_outage_then_fresh_broker(site: Site, tmp_path: Path) -> None:
    broker = Tansu(tmp_path / "broker").start()
    port = broker.port
    try:
        create_topics(broker.bootstrap, [site.topic, site.dead_letter_topic])
        site.config["kafka"].update(
            {"bootstrap_servers": [broker.bootstrap], "flush_timeout_seconds": 3, "max_block_ms": 3000,
             "request_timeout_ms": 3000}
        )  # fmt: skip
        site.config["source"]["reconnect_backoff_max_seconds"] = 1
        site.write_config()
        site.set_checkpoint()
        s = site.streamer()
        writer = Writer(site).start()
        assert wait_until(lambda: "connected to the binlog" in s.output(), timeout=60), s.output()
        time.sleep(1)  # streaming: the outage must interrupt a live stream (start-up is slow on a busy machine)
        broker.stop()
        down_at = json.loads(site.checkpoint_path.read_text())
        positions = set()
        for _ in range(20):  # 4 s down, still writing: the checkpoint must not move
            time.sleep(0.2)
            cp = json.loads(site.checkpoint_path.read_text())
            positions.add((cp["file"], cp["pos"]))
        resumed_from = json.loads(site.checkpoint_path.read_text())
        assert positions == {(resumed_from["file"], resumed_from["pos"])}, "checkpoint advanced past unacked events"
        assert resumed_from["pos"] >= down_at["pos"]
        # A fresh, empty broker on the same address (Tansu keeps nothing on disk): only what the
        # streamer sends from its checkpoint on can be counted on it.
        broker = Tansu(tmp_path / "broker2", port=port).start()
        back_at = time.monotonic()
        create_topics(broker.bootstrap, [site.topic, site.dead_letter_topic])
        time.sleep(2)
        writer.stop()
        site.stack = Stack(site.stack.db, broker, tmp_path)
        # The oracle: what a replay from the checkpoint the streamer resumed from yields. All of it
        # must be on the new broker (waited for: a restarted producer can take seconds on a busy machine).
        resume = f"{resumed_from['file']}:{resumed_from['pos']}"
        replay = site.cli("replay", "--from", resume)
        assert replay.returncode == 0, replay.stderr
        expected = {json.loads(line)["event_id"] for line in replay.stdout.splitlines()}
        records = site.consume(expect=len(expected), idle=3.0, timeout=60)
        recovery = time.monotonic() - back_at
        assert s.stop() == 0, s.output()
        delivered = {r.value["event_id"] for r in records}
        assert expected and expected <= delivered, f"{len(expected - delivered)} events after {resume} missing"
        lost, _ = report(
            "broker outage", len(expected), [r for r in records if r.value["event_id"] in expected], recovery
        )
        assert lost == 0
        # Said in the log whichever way it recovered: the producer kept when the broker answers within
        # flush_timeout_seconds, or a restart from the last checkpoint after that (timing decides which).
        assert "Kafka broker unreachable" in s.output(), s.output()[-3000:]
    finally:
        broker.stop()


def _wait_for_post(site: Site, post_id: int, timeout: float) -> bool:
    """True as soon as an event of `post_id` is on the topic (a tail, not a full read)."""
    consumer = KafkaConsumer(bootstrap_servers=site.stack.broker.bootstrap, enable_auto_commit=False)
    try:
        parts = [TopicPartition(site.topic, p) for p in sorted(consumer.partitions_for_topic(site.topic) or [])]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for msgs in consumer.poll(timeout_ms=100).values():
                if any(orjson.loads(m.value)["post_id"] == post_id for m in msgs):
                    return True
        return False
    finally:
        consumer.close()


def _readyz_and_connected(port: int) -> tuple[int, str, float]:
    code, body = get(port, "/readyz")
    connected = scrape(port).get("wpcdc_sink_connected", -1.0) if code else -1.0
    return code, body.get("reason", ""), connected


def test_short_broker_outage_is_seen_within_seconds_and_recovery_starts_when_it_is_back(
    site: Site, tmp_path: Path
) -> None:
    """Default timeouts (flush 60 s, request 30 s): the outage is shorter than any of them, so only the
    producer's own health watch can show it."""
    broker = Tansu(tmp_path / "broker").start()
    port = broker.port
    try:
        create_topics(broker.bootstrap, [site.topic, site.dead_letter_topic])
        site.config["kafka"]["bootstrap_servers"] = [broker.bootstrap]
        http = enable_metrics(site)
        site.set_checkpoint()
        s = site.streamer()
        writer = Writer(site, every=0.05).start()
        assert wait_until(lambda: _readyz_and_connected(http)[::2] == (200, 1.0)), s.output()
        time.sleep(1)
        broker.proc.kill()  # the broker dies (no clean shutdown)
        broker.proc.wait(10)
        down_at = time.monotonic()
        seen = wait_until(lambda: (r := _readyz_and_connected(http))[0] == 503 and r[2] == 0.0 and r, timeout=15)
        detected = time.monotonic() - down_at
        assert seen, f"/readyz and wpcdc_sink_connected did not show the outage: {_readyz_and_connected(http)}"
        assert "broker not reachable" in seen[1], seen
        assert wait_until(lambda: "Kafka broker unreachable" in s.output(), timeout=5), s.output()
        resumed_from = json.loads(site.checkpoint_path.read_text())
        assert scrape(http)["wpcdc_publish_errors_total"] >= 1, (seen, detected, s.output()[-3000:])
        time.sleep(max(0.0, 8 - (time.monotonic() - down_at)))  # an 8 s outage, writes going on
        # A fresh, empty broker on the same address (Tansu keeps nothing): only what the streamer
        # sends from its checkpoint on can be counted on it.
        broker = Tansu(tmp_path / "broker2", port=port).start()
        back_at = time.monotonic()
        create_topics(broker.bootstrap, [site.topic, site.dead_letter_topic])
        assert wait_until(lambda: _readyz_and_connected(http)[::2] == (200, 1.0), timeout=30), s.output()
        ready_again = time.monotonic() - back_at
        site.stack = Stack(site.stack.db, broker, tmp_path)
        marker = site.insert_post("after the outage")
        assert _wait_for_post(site, marker, timeout=30), s.output()
        recovery = time.monotonic() - back_at
        writer.stop()
        records = site.consume(idle=3.0, timeout=60)
        assert s.stop() == 0, s.output()
        assert "Kafka broker reachable again" in s.output()
        replay = site.cli("replay", "--from", f"{resumed_from['file']}:{resumed_from['pos']}")
        assert replay.returncode == 0, replay.stderr
        expected = {json.loads(line)["event_id"] for line in replay.stdout.splitlines()}
        delivered = {r.value["event_id"] for r in records}
        lost, _ = report(
            "short broker outage", len(expected), [r for r in records if r.value["event_id"] in expected], recovery
        )
        FIGURES.append(
            f"[short broker outage] seen after {detected:.1f}s (/readyz 503, wpcdc_sink_connected 0, log line); "
            f"ready {ready_again:.1f}s and a new event delivered {recovery:.1f}s after the broker was back"
        )
        assert expected and lost == 0, f"{len(expected - delivered)} events missing"
    finally:
        broker.stop()


def test_frozen_source_is_detected_from_missing_heartbeats(stack: Stack, tmp_path: Path) -> None:
    """SIGSTOP the source server: TCP stays up, nothing arrives. Heartbeats (1 s) stop, so the stream is
    dead after mysql.stall_heartbeats (3) periods, not after read_timeout_seconds (30)."""
    own = stack.new_server(tmp_path / f"frozen-{stack.kind}", server_id=203).start()
    assert own.proc is not None
    try:
        site = Site(Stack(own, stack.broker, tmp_path), tmp_path)
        site.config["mysql"]["connect_timeout_seconds"] = 2
        http = enable_metrics(site)
        site.set_checkpoint()
        s = site.streamer()
        writer = Writer(site, every=0.05).start()
        assert wait_until(lambda: get(http, "/readyz")[0] == 200), s.output()
        time.sleep(1.5)
        stall = 15.0
        os.kill(own.proc.pid, signal.SIGSTOP)
        frozen_at = time.monotonic()
        try:
            seen = wait_until(lambda: (r := get(http, "/readyz"))[0] == 503 and r, timeout=10, every=0.1)
            detected = time.monotonic() - frozen_at
            assert seen, f"/readyz still {get(http, '/readyz')} {detected:.1f}s into the freeze\n{s.output()}"
            statuses = []
            while time.monotonic() - frozen_at < stall:
                statuses.append(get(http, "/readyz")[0])
                time.sleep(0.5)
            out = s.output()
        finally:
            os.kill(own.proc.pid, signal.SIGCONT)
        thawed_at = time.monotonic()
        assert set(statuses) == {503}, statuses
        assert "sent neither events nor heartbeats" in out, out
        # The restart probe and the reconnects are bounded (connect_timeout 2 s): several rounds
        # happened during the freeze instead of one probe hanging for all of it.
        assert out.count("restarting from the last checkpoint") >= 2, out
        marker = site.insert_post("after the freeze")
        assert wait_until(lambda: get(http, "/readyz")[0] == 200, timeout=30), s.output()
        ready = time.monotonic() - thawed_at
        assert _wait_for_post(site, marker, timeout=30), s.output()
        resumed = time.monotonic() - thawed_at
        time.sleep(1)
        writer.stop()
        written = len(writer.ids) + writer.meta + 1
        records = site.consume(expect=written, timeout=60)
        assert s.stop() == 0, s.output()
        lost, _ = report("frozen source", written, records, resumed)
        FIGURES.append(
            f"[frozen source] {stall:.0f}s SIGSTOP seen after {detected:.1f}s (heartbeat 1s x 3), /readyz 503 "
            f"throughout ({len(statuses)} probes), {out.count('restarting from the last checkpoint')} bounded "
            f"reconnect rounds; after SIGCONT ready in {ready:.1f}s, new event in {resumed:.1f}s"
        )
        assert lost == 0
        assert {r.value["post_id"] for r in records if r.value["event_type"] == "post_created"} >= set(writer.ids)
    finally:
        if own.proc is not None and own.proc.poll() is None:
            os.kill(own.proc.pid, signal.SIGCONT)
        own.stop()


@pytest.mark.parametrize("stack", ["mariadb"], indirect=True)
def test_snapshot_reads_that_lose_their_connection_lose_no_post(make_site: Any) -> None:
    """The snapshot's read connection killed on the server, again and again, while an idle server lets
    several one-post chunks be due at each heartbeat: each kill fails a read in the middle of that
    run of chunks, `run` restarts from its checkpoint, and every post still gets its post_snapshot."""
    site = make_site(
        snapshot={"mode": "initial", "chunk_size": 1},
        checkpoint={"interval_seconds": 0.05},
        mysql={"heartbeat_seconds": 0.2},
    )
    ids = [site.insert_post(f"Post {i}", status="publish") for i in range(200)]
    s = site.streamer()
    killed: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while not site.checkpoint_path.exists() or "snapshot" in json.loads(site.checkpoint_path.read_text()):
            assert time.monotonic() < deadline, f"the snapshot did not finish\n{s.output()}"
            assert s.proc.poll() is None, s.output()
            if len(killed) < 4 and site.checkpoint_path.exists():
                # wpcdc's connections on this database but the binlog dump: the chunk reader (and
                # the idle lookup connection); the test's own connection is left alone.
                for (conn_id,) in site.query(
                    "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = DATABASE() "
                    "AND COMMAND NOT LIKE 'Binlog Dump%' AND ID <> CONNECTION_ID()"
                ):
                    try:
                        site.sql(f"KILL CONNECTION {int(conn_id)}")
                    except pymysql.err.MySQLError as exc:
                        if exc.args[0] != 1094:  # unknown thread id: it closed meanwhile
                            raise
                        continue
                    killed.append(conn_id)
            time.sleep(0.4)
    finally:
        assert s.stop() == 0, s.output()
    out = s.output()
    assert len(killed) >= 2 and "snapshot read failed" in out, out
    records = site.consume(expect=len(ids), timeout=60)
    published = {r.value["post_id"] for r in records if r.value["event_type"] == "post_snapshot"}
    assert not set(ids) - published, f"posts without a post_snapshot: {sorted(set(ids) - published)[:10]}\n{out}"
