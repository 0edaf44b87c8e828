"""What the binlog source makes of positions, XA transactions, rotations and table-level DDL,
against a real MariaDB (and a real broker where the whole path is claimed)."""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import orjson
import pytest

from tests.integration.conftest import Site

pytestmark = pytest.mark.integration


def replay(site: Site, start: str) -> list[dict[str, Any]]:
    result = site.cli("replay", "--from", start, "--sink", "stdout")
    assert result.returncode == 0, result.stderr
    return [orjson.loads(line) for line in result.stdout.splitlines()]


def binlog_events(site: Site, file: str) -> list[tuple[Any, ...]]:
    """SHOW BINLOG EVENTS IN file: (Log_name, Pos, Event_type, Server_id, End_log_pos, Info)."""
    return site.query(f"SHOW BINLOG EVENTS IN '{file}'")


def test_event_positions_are_the_servers_own(site: Site) -> None:
    pid = site.insert_post("positions", status="publish")
    site.sql(
        f"INSERT INTO wp_postmeta (post_id, meta_key, meta_value) VALUES ({pid}, 'a', '1'), ({pid}, 'b', '2')",
        f"UPDATE wp_postmeta SET meta_value = 'x' WHERE post_id = {pid}",
        f"DELETE FROM wp_postmeta WHERE post_id = {pid} AND meta_key = 'a'",
    )
    events = replay(site, site.start)
    assert len(events) == 7, [e["event_type"] for e in events]  # created, published, 2 added, 2 updated, deleted
    rows_events = {
        (row[0], row[1]): row[2]
        for file in {e["source"]["file"] for e in events}
        for row in binlog_events(site, file)
        if str(row[2]).split("_rows")[0] in ("Write", "Update", "Delete")
    }
    for e in events:
        src = e["source"]
        at = (src["file"], src["pos"])
        assert at in rows_events, f"{e['event_type']} at {at} is not where SHOW BINLOG EVENTS has a rows event"
        if site.stack.kind == "mysql":  # gtid_mode=ON, source.position auto: GTID positions, GTID ids
            assert e["event_id"].startswith(src["gtid"] + ":")
        else:
            assert e["event_id"].split(":")[1:3] == [src["file"], str(src["pos"])]
    kinds = {e["event_type"]: rows_events[(e["source"]["file"], e["source"]["pos"])] for e in events}
    assert kinds["post_created"].startswith("Write_rows")
    assert kinds["post_meta_updated"].startswith("Update_rows")
    assert kinds["post_meta_deleted"].startswith("Delete_rows")


def xa_insert_post(site: Site, xid: str, title: str, outcome: str | None) -> None:
    """One XA transaction on its own connection: insert a post and its meta, prepare, then `outcome`
    (COMMIT, ROLLBACK, or None: left prepared, to be decided from another connection)."""
    conn = site.stack.db.root()
    try:
        with conn.cursor() as cur:
            cur.execute(f"USE `{site.database}`")
            cur.execute(f"XA START '{xid}'")
            cur.execute(
                "INSERT INTO wp_posts (post_title, post_status, post_type, post_content, post_excerpt, to_ping, "
                "pinged, post_content_filtered) VALUES (%s, 'draft', 'post', '', '', '', '', '')",
                (title,),
            )
            cur.execute(
                "INSERT INTO wp_postmeta (post_id, meta_key, meta_value) VALUES (LAST_INSERT_ID(), 'xa', %s)", (xid,)
            )
            cur.execute(f"XA END '{xid}'")
            cur.execute(f"XA PREPARE '{xid}'")
            if outcome:
                cur.execute(f"XA {outcome} '{xid}'")
    finally:
        conn.close()  # a prepared XA transaction outlives its connection (MariaDB >= 10.5)


def titles(records: list[Any]) -> list[str]:
    return [r.value["data"]["post"]["post_title"] for r in records if r.value["event_type"] in ("post_created",)]


def test_xa_rows_are_published_on_commit_and_never_on_rollback(site: Site) -> None:
    site.set_checkpoint()
    s = site.streamer()
    try:
        xa_insert_post(site, f"{site.database}-c", "xa committed", "COMMIT")
        xa_insert_post(site, f"{site.database}-r", "xa rolled back", "ROLLBACK")
        # Prepared and left undecided, but no captured table: nothing to hold, the checkpoint does not list it.
        other = site.stack.db.root()
        with other.cursor() as cur:
            cur.execute(f"USE `{site.database}`")
            for verb in ("START", "INSERT", "END", "PREPARE"):
                cur.execute(
                    "INSERT INTO wp_options (option_name, option_value) VALUES ('xa', 'x')"
                    if verb == "INSERT"
                    else f"XA {verb} '{site.database}-o'"
                )
        other.close()
        site.insert_post("after both")
        records = site.consume(expect=3)
    finally:
        assert s.stop() == 0, s.output()
        site.sql(f"XA ROLLBACK '{site.database}-o'")
    assert "xa_prepared" not in json.loads(site.checkpoint_path.read_text())
    assert titles(records) == ["xa committed", "after both"]
    assert sorted(r.value["event_type"] for r in records) == ["post_created", "post_created", "post_meta_added"]
    assert "xa rolled back" not in str([r.value for r in records])
    assert "XA ROLLBACK X'" in s.output() and "2 row(s) prepared at" in s.output()
    # replay reads the same range to the same verdicts
    assert [e["event_id"] for e in replay(site, site.start)] == [
        r.value["event_id"] for r in sorted(records, key=lambda r: (r.value["source"]["pos"], r.value["source"]["row"]))
    ]


def test_xa_prepared_before_a_crash_is_published_once_when_it_commits_after_it(site: Site) -> None:
    site.set_checkpoint()
    xid = f"{site.database}-k"
    first = site.streamer()
    try:
        xa_insert_post(site, xid, "xa held", None)
        prepare_end = site.position()
        site.insert_post("after the prepare")
        records = site.consume(expect=1)
        assert titles(records) == ["after the prepare"], "a prepared transaction is not committed"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            cp = json.loads(site.checkpoint_path.read_text())
            if cp.get("xa_prepared") and cp["pos"] > int(prepare_end.split(":")[1]):
                break
            time.sleep(0.1)
    finally:
        first.stop(signal.SIGKILL)
    # The checkpoint moved on, but it names the prepared transaction and where to read it again.
    [held] = cp["xa_prepared"]
    assert held["xid"] == "X'" + xid.encode().hex() + "',X'',1"
    start_file, start_pos = held["start"].split(":")
    assert (start_file, int(start_pos)) <= (prepare_end.split(":")[0], int(prepare_end.split(":")[1]))
    assert held["end"] == prepare_end

    second = site.streamer()
    try:
        assert "xa held" not in titles(site.consume(idle=1.0))
        site.sql(f"XA COMMIT '{xid}'")
        site.insert_post("after the commit")
        records = site.consume(expect=4)
    finally:
        assert second.stop() == 0, second.output()
    created = titles(records)
    assert created.count("xa held") == 1, created
    assert set(created) == {"after the prepare", "xa held", "after the commit"}, created
    # Each post has its own key, so its own partition: the order records come back in across partitions
    # means nothing (the consume before the commit showed the held post was not published early). The
    # held rows were read again where the checkpoint said they are.
    [held_post] = [r.value for r in records if titles([r]) == ["xa held"]]
    end_file, end_pos = prepare_end.split(":")
    assert (
        (start_file, int(start_pos))
        <= (held_post["source"]["file"], held_post["source"]["pos"])
        < (end_file, int(end_pos))
    ), held_post["source"]
    held_events = [r.value for r in records if r.value["data"].get("meta_key") == "xa"]
    assert len(held_events) == 1 and held_events[0]["data"]["value"] == xid
    assert json.loads(site.checkpoint_path.read_text()).get("xa_prepared") is None


def rotate_and_purge(site: Site) -> str:
    """FLUSH BINARY LOGS, then purge every older file; returns the one file left."""
    site.sql("FLUSH BINARY LOGS")
    newest = site.position().split(":")[0]
    # MariaDB will not purge a file a dump thread still reads: end the ones earlier tests left behind.
    for _ in range(50):
        for row in site.query("SHOW PROCESSLIST"):
            if row[4] and "Binlog Dump" in str(row[4]):
                try:
                    site.sql(f"KILL {row[0]}")
                except Exception:
                    pass  # already gone
        site.sql(f"PURGE BINARY LOGS TO '{newest}'")
        if [r[0] for r in site.query("SHOW BINARY LOGS")] == [newest]:
            break
        time.sleep(0.2)
    assert [r[0] for r in site.query("SHOW BINARY LOGS")] == [newest]
    return newest


def checkpoint_file_becomes(site: Site, file: str, timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    while True:
        cp = json.loads(site.checkpoint_path.read_text())
        if cp["file"] == file or time.monotonic() > deadline:
            return str(cp["file"])
        time.sleep(0.1)


def test_a_quiet_rotation_moves_the_checkpoint_so_a_purge_is_no_gap(site: Site) -> None:
    site.set_checkpoint()
    s = site.streamer()
    try:
        site.insert_post("before the rotation")
        assert titles(site.consume(expect=1)) == ["before the rotation"]
        site.sql("FLUSH BINARY LOGS")
        newest = site.position().split(":")[0]
        assert checkpoint_file_becomes(site, newest) == newest, "the checkpoint must follow a quiet rotation"
    finally:
        assert s.stop() == 0, s.output()
    rotate_and_purge(site)
    s = site.streamer()
    try:
        site.insert_post("after the purge")
        records = site.consume(expect=2)
    finally:
        assert s.stop() == 0, s.output()
    assert titles(records) == ["before the rotation", "after the purge"]


def test_a_checkpoint_at_the_end_of_a_purged_file_is_no_gap_but_a_real_gap_exits_4(make_site: Any) -> None:
    site = make_site()
    site.set_checkpoint()
    s = site.streamer()
    try:
        site.insert_post("before the stop")
        assert titles(site.consume(expect=1)) == ["before the stop"]
    finally:
        assert s.stop() == 0, s.output()
    # wpcdc is down while the file rotates and is purged: its checkpoint is at the end of a file it
    # can no longer read, and the next file's Gtid_list shows nothing was written after it.
    newest = rotate_and_purge(site)
    s = site.streamer()
    try:
        site.insert_post("after the purge")
        records = site.consume(expect=2)
    finally:
        assert s.stop() == 0, s.output()
    assert titles(records) == ["before the stop", "after the purge"]
    # File positions (MariaDB here): the next file's Gtid_list proves it. GTID positions (MySQL here,
    # gtid_mode=ON; with tagged GTIDs in the session's binlog): the server still has every
    # transaction after the checkpoint's executed set.
    assert (f"no gap, continuing at {newest}:4" if site.stack.kind == "mariadb" else "no gap, continuing by GTID") in (
        s.output()
    )

    # A transaction after the checkpoint in a file that is then purged is a real gap: exit 4.
    site.insert_post("lost in the gap")
    rotate_and_purge(site)
    s = site.streamer()
    code = s.wait(30)
    assert code == 4, s.output()
    assert "no longer has" in s.output() and "Traceback" not in s.output()
    assert titles(site.consume(idle=1.0)) == ["before the stop", "after the purge"]


def test_truncate_and_rename_of_captured_tables_reach_every_partition_in_order(site: Site) -> None:
    site.set_checkpoint()
    s = site.streamer()
    try:
        pid = site.insert_post("has meta")
        site.sql(f"INSERT INTO wp_postmeta (post_id, meta_key, meta_value) VALUES ({pid}, 'k', 'v')")
        site.sql("TRUNCATE wp_postmeta")
        site.sql("TRUNCATE wp_options")  # not captured: nothing
        later = site.insert_post("after the truncate")
        site.consume(expect=6)  # the streamer is past its start-up checks (which want every table)
        site.sql("RENAME TABLE wp_term_relationships TO wp_term_relationships_old")
        site.sql("DROP TABLE wp_term_relationships_old, wp_postmeta")  # only wp_postmeta is captured
        records = site.consume(expect=12)
    finally:
        assert s.stop() == 0, s.output()
    table_events = [r for r in records if r.value["event_type"].startswith("table_")]
    truncated = [r for r in table_events if r.value["event_type"] == "table_truncated"]
    renamed = [r for r in table_events if r.value["event_type"] == "table_renamed"]
    dropped = [r for r in table_events if r.value["event_type"] == "table_dropped"]
    assert sorted(r.partition for r in dropped) == [0, 1, 2]
    assert dropped[0].value["data"]["table"] == "wp_postmeta" and dropped[0].value["source"]["row"] == 1
    assert sorted(r.partition for r in truncated) == [0, 1, 2], "one copy on every partition"
    assert sorted(r.partition for r in renamed) == [0, 1, 2]
    assert {r.key for r in table_events} == {"1:*"}
    assert len({r.value["event_id"] for r in truncated}) == 1  # copies of one event
    t = truncated[0].value
    assert t["data"] == {"table": "wp_postmeta", "table_kind": "postmeta", "statement": "TRUNCATE wp_postmeta"}
    assert (t["blog_id"], t["post_id"], t["source"]["table"]) == (1, None, "wp_postmeta")
    # The query event's own position, as SHOW BINLOG EVENTS has it.
    [row] = [r for r in binlog_events(site, t["source"]["file"]) if r[1] == t["source"]["pos"]]
    assert row[2] == "Query" and "TRUNCATE wp_postmeta" in row[5]
    r = renamed[0].value["data"]
    assert (r["table"], r["renamed_from"], r["renamed_to"]) == (
        "wp_term_relationships",
        "wp_term_relationships",
        "wp_term_relationships_old",
    )
    # On each post's partition the truncate comes after the meta row it empties and before what follows.
    for post, before, after in ((pid, "post_meta_added", None), (later, None, "post_created")):
        part = next(x for x in records if x.key == f"1:{post}").partition
        seq = [x.value["event_type"] for x in sorted(records, key=lambda x: x.offset) if x.partition == part]
        at = seq.index("table_truncated")
        if before:
            assert before in seq[:at]
        if after:
            assert after in seq[at:]
    out = s.output()
    assert "WARNING" in out and "table_truncated wp_postmeta" in out
    assert "ERROR" in out and "table_renamed wp_term_relationships" in out and "table_dropped wp_postmeta" in out
