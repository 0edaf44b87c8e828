"""Outages while a writer keeps changing WordPress tables: the source server restarts, the broker
goes away and a fresh one comes back. Each test prints its figures (pytest -s shows them)."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from cdc.dev.stack import Tansu, create_topics
from tests.faults.conftest import FIGURES
from tests.integration.conftest import Site, Stack

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

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
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
        time.sleep(2)
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
        time.sleep(2)
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
        records = site.consume(idle=3.0, timeout=60)
        recovery = time.monotonic() - back_at
        assert s.stop() == 0, s.output()
        # The oracle: what a replay from the checkpoint the streamer resumed from yields. All of it
        # must be on the new broker.
        resume = f"{resumed_from['file']}:{resumed_from['pos']}"
        replay = site.cli("replay", "--from", resume)
        assert replay.returncode == 0, replay.stderr
        expected = {json.loads(line)["event_id"] for line in replay.stdout.splitlines()}
        delivered = {r.value["event_id"] for r in records}
        assert expected and expected <= delivered, f"{len(expected - delivered)} events after {resume} missing"
        lost, _ = report(
            "broker outage", len(expected), [r for r in records if r.value["event_id"] in expected], recovery
        )
        assert lost == 0
        assert "restarting from the last checkpoint" in s.output()
    finally:
        broker.stop()
