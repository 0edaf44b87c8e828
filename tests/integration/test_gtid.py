"""GTID positions on a real server (both legs): the checkpoint's GTID state, resuming by GTID alone
(MySQL COM_BINLOG_DUMP_GTID with tags, MariaDB slave_connect_state), GTID event ids."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import defaultdict
from typing import Any

import pytest

from cdc.source.server import GtidSet
from tests.integration.conftest import Record, Site

pytestmark = pytest.mark.integration

GTID = {"source": {"position": "gtid"}}


def _bogus_position(site: Site) -> dict[str, Any]:
    """Point the checkpoint's file/position at a file no server has: a resume that used them would fail."""
    cp = json.loads(site.checkpoint_path.read_text())
    assert cp["format"] == 2 and cp["gtid_set"], cp
    cp["file"], cp["pos"] = "nowhere-bin.000001", 4
    site.checkpoint_path.write_text(json.dumps(cp))
    return cp


def _by_title(records: list[Record]) -> dict[str, list[Record]]:
    out: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        if r.value["event_type"] == "post_created":
            out[r.value["data"]["post"]["post_title"]].append(r)
    return out


def test_a_gtid_resume_reads_on_from_the_gtid_state_alone_with_gtid_ids(make_site: Any) -> None:
    site = make_site(**GTID)
    site.set_checkpoint()  # a file/position checkpoint: run derives its GTID state from the binlog
    if site.stack.kind == "mysql":
        site.sql("SET gtid_next = 'AUTOMATIC:wpcdc_test'")  # a tagged GTID inside the state and the ids
    site.insert_post("before the stop")
    if site.stack.kind == "mysql":
        site.sql("SET gtid_next = 'AUTOMATIC'")
    s = site.streamer()
    try:
        assert len(site.consume(expect=1)) == 1
    finally:
        assert s.stop() == 0, s.output()
    state = GtidSet.parse(_bogus_position(site)["gtid_set"])
    # While wpcdc is down: a transaction of several rows in two tables, then one more post.
    with site.stack.db.root(site.database) as conn, conn.cursor() as cur:
        cur.execute("START TRANSACTION")
        for title in ("in a transaction 1", "in a transaction 2"):
            cur.execute(
                "INSERT INTO wp_posts (post_title, post_status, post_content, post_excerpt, to_ping, pinged, "
                "post_content_filtered) VALUES (%s, 'draft', '', '', '', '', '')",
                (title,),
            )
            cur.execute(
                "INSERT INTO wp_postmeta (post_id, meta_key, meta_value) VALUES (%s, 'k', 'v')", (cur.lastrowid,)
            )
        cur.execute("COMMIT")
    site.insert_post("after the stop")
    s = site.streamer()
    try:
        records = site.consume(expect=6)
    finally:
        assert s.stop() == 0, s.output()
    titles = _by_title(records)
    assert sorted(titles) == ["after the stop", "before the stop", "in a transaction 1", "in a transaction 2"]
    assert all(len(copies) == 1 for copies in titles.values()), "a clean stop re-sends nothing"
    first = titles["before the stop"][0].value
    assert first["source"]["gtid"] in state, "the checkpoint's state holds the transaction it read"
    if site.stack.kind == "mysql":
        assert ":wpcdc_test:" in first["source"]["gtid"]
    for r in records:  # ids from GTIDs; the source block still names the server's position
        assert r.value["event_id"].startswith(r.value["source"]["gtid"] + ":"), r.value["event_id"]
        assert r.value["source"]["file"] != "nowhere-bin.000001" and r.value["source"]["pos"] > 4
    gtid = titles["in a transaction 1"][0].value["source"]["gtid"]
    txn = sorted((r.value for r in records if r.value["source"]["gtid"] == gtid), key=lambda v: v["event_id"])
    # The rows' ordinals run across the transaction's rows events: post, meta, post, meta.
    assert [(v["event_id"], v["event_type"]) for v in txn] == [
        (f"{gtid}:0", "post_created"),
        (f"{gtid}:1", "post_meta_added"),
        (f"{gtid}:2", "post_created"),
        (f"{gtid}:3", "post_meta_added"),
    ]
    cp = json.loads(site.checkpoint_path.read_text())
    assert gtid in GtidSet.parse(cp["gtid_set"]) and cp["file"] != "nowhere-bin.000001"


def test_kill_9_under_writes_then_a_gtid_resume_loses_nothing_and_resends_only_after_the_state(make_site: Any) -> None:
    site = make_site(**GTID)
    site.set_checkpoint()
    total = 300
    written: list[str] = []
    done = threading.Event()

    def write() -> None:
        with site.stack.db.root(site.database) as conn, conn.cursor() as cur:
            for i in range(total):
                title = f"w-{i}"
                cur.execute(
                    "INSERT INTO wp_posts (post_title, post_status, post_content, post_excerpt, to_ping, pinged, "
                    "post_content_filtered) VALUES (%s, 'draft', '', '', '', '', '')",
                    (title,),
                )
                written.append(title)
                time.sleep(0.005)  # pacing, so that the kill lands while transactions keep coming
        done.set()

    s = site.streamer()
    writer = threading.Thread(target=write)
    try:
        site.insert_post("streaming")
        site.consume(expect=1)  # the first run is up: the writes start now, so the kill lands among them
        writer.start()
        site.consume(expect=61, idle=0.2)
    finally:
        s.stop(signal.SIGKILL)
    written_at_kill = len(written)
    # What the checkpoint holds at the kill: no transaction in it may come out a second time.
    at_kill = GtidSet.parse(_bogus_position(site)["gtid_set"])
    writer.join(60)
    assert done.is_set() and len(written) == total
    s = site.streamer()
    try:
        site.insert_post("after the restart")  # read by the second run: its arrival says that run is through
        deadline = time.monotonic() + 120
        while "after the restart" not in _by_title(records := site.consume(idle=0.5)):
            assert time.monotonic() < deadline and s.proc.poll() is None, s.output()
    finally:
        assert s.stop() == 0, s.output()
    titles = _by_title(records)
    assert titles.pop("after the restart") and titles.pop("streaming")
    assert sorted(titles) == sorted(written), f"lost: {sorted(set(written) - set(titles))[:10]}"
    resent = {t: c for t, c in titles.items() if len(c) > 1}
    for title, copies in resent.items():
        assert len({c.value["event_id"] for c in copies}) == 1 and len({c.raw for c in copies}) == 1, title
        assert copies[0].value["source"]["gtid"] not in at_kill, f"{title} was in the checkpoint's state yet re-sent"
    in_state = sum(1 for copies in titles.values() if copies[0].value["source"]["gtid"] in at_kill)
    assert written_at_kill < total, "the kill should land while the writer is still writing"
    print(f"\n[{site.stack.kind}] kill -9 with {written_at_kill} of {total} posts written, {in_state} in the "
          f"checkpoint's GTID state: 0 lost, {len(resent)} re-sent, all with identical ids and bytes")  # fmt: skip


def test_a_server_that_lags_belongs_elsewhere_or_purged_the_states_future_is_named(site: Site) -> None:
    """Server.gtid_resume_problem, which `run` (and a choice among several servers) asks before reading."""
    from cdc.config import parse_config
    from cdc.dev.stack import MYSQL_PASSWORD
    from cdc.errors import PositionGoneError, SourceError
    from cdc.source.server import Server
    from tests.integration.test_source_events import rotate_and_purge

    rotate_and_purge(site)
    config = parse_config({**site.config, "mysql": {**site.config["mysql"], "password": MYSQL_PASSWORD}})
    with Server(config) as server:
        executed = server.gtid_executed()
        assert server.gtid_resume_problem(executed) is None
        if server.is_mariadb():
            domain, (srv, seq) = next(iter(executed.mariadb.items()))
            ahead = executed.add(f"{domain}-{srv}-{seq + 1000}")
        else:
            (sid, tag), ivs = next(iter(executed.intervals.items()))
            ahead = executed.add(f"{sid}:{tag + ':' if tag else ''}{ivs[-1][1] + 1000}")
        lags = server.gtid_resume_problem(ahead)
        assert isinstance(lags, SourceError) and not lags.fatal and "lacks transactions" in lags.problem
        # Another topology's state: MySQL another source UUID, MariaDB a domain this server never wrote in.
        other = "9-901-5" if server.is_mariadb() else "0b9a1e4c-0000-4000-8000-000000000001:1-5"
        foreign = server.gtid_resume_problem(GtidSet.parse(other))
        assert isinstance(foreign, SourceError) and foreign.fatal and "another replication topology" in foreign.problem
        # The empty state needs everything since the first transaction; the first file was purged long ago.
        gone = server.gtid_resume_problem(GtidSet())
        assert isinstance(gone, PositionGoneError) and "no longer has" in gone.problem
        # The binlog's own state at the end of the newest file is the executed set.
        assert server.gtid_state_at(server.current_position()) == executed
