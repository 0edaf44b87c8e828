"""What only Oracle MySQL writes, decoded on a real MySQL server: compressed transactions
(TRANSACTION_PAYLOAD, zstd), tagged GTIDs (GTID_TAGGED_LOG_EVENT) and partial JSON updates, each
compared with what the same workload gives without them (and on MariaDB)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from cdc.config import parse_config
from cdc.core.changes import RowChange, TransactionEnd, UndecodableRows
from cdc.core.position import BinlogPosition
from cdc.dev.stack import MYSQL_PASSWORD, Tansu
from cdc.source.binlog import BinlogSource
from cdc.source.server import GtidSet
from tests.integration.conftest import Record, Site, Stack, new_server

pytestmark = pytest.mark.integration


# These tests are about what only Oracle MySQL writes: they take the session's MySQL leg of the
# `stack` fixture (tests/conftest.py) only, and the MySQL-vs-MariaDB test adds a MariaDB beside it.
mysql_only = pytest.mark.parametrize("stack", ["mysql"], indirect=True)


@pytest.fixture(scope="module")
def mariadb_beside(broker: Tansu, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("mariadb-beside")
    db = new_server("mariadb", base / "mariadb").start()
    try:
        yield Stack(db, broker, base)
    finally:
        db.stop()


def _session(site: Site, *settings: str) -> pymysql.connections.Connection:
    conn = site.stack.db.root(site.database)
    with conn.cursor() as cur:
        for s in settings:
            cur.execute(s)
    return conn


# One WordPress-like workload: (session, statements, one transaction?). The sessions differ only in
# how the server logs them; the rows they change are the same on every server.
WORKLOAD: list[tuple[str, list[str], bool]] = [
    ("plain", ["INSERT INTO wp_terms (name, slug) VALUES ('Café news', 'cafe-news')"], False),
    ("plain", ["INSERT INTO wp_term_taxonomy (term_id, taxonomy, description) VALUES (1, 'category', '')"], False),
    (
        "compressed",
        [
            "INSERT INTO wp_posts (post_title, post_status, post_type, post_content, post_excerpt, to_ping, pinged,"
            " post_content_filtered, post_date) VALUES ('Hello 😀', 'draft', 'post', '<p>x</p>', '', '', '', '',"
            " '2026-11-22 10:00:00')",
        ],
        False,
    ),
    (
        "tagged",
        [
            "INSERT INTO wp_postmeta (post_id, meta_key, meta_value)"
            " VALUES (1, 'layout', 'a:1:{s:1:\"w\";s:4:\"wide\";}')",
            "INSERT INTO wp_term_relationships (object_id, term_taxonomy_id) VALUES (1, 1)",
            "UPDATE wp_posts SET post_status = 'publish', post_date_gmt = '2026-11-22 09:00:00' WHERE ID = 1",
        ],
        True,
    ),
    (
        "compressed",
        [
            # A plugin's big transaction: many posts, one multi-row update, meta for each.
            "INSERT INTO wp_posts (post_title, post_status, post_type, post_content, post_excerpt, to_ping, pinged,"
            " post_content_filtered) SELECT CONCAT('Bulk ', n), 'draft', 'post', REPEAT('lorem ', 200), '', '', '', ''"
            " FROM (WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 60) SELECT n FROM s) AS t",
            "UPDATE wp_posts SET menu_order = menu_order + 1 WHERE ID > 1",
            "INSERT INTO wp_postmeta (post_id, meta_key, meta_value) SELECT ID, 'views', ID FROM wp_posts WHERE ID > 1",
        ],
        True,
    ),
    ("both", ["UPDATE wp_postmeta SET meta_value = 'narrow' WHERE post_id = 1 AND meta_key = 'layout'"], False),
    ("plain", ["UPDATE wp_posts SET post_title = 'Grüße' WHERE ID = 2"], False),
    ("tagged", ["DELETE FROM wp_term_relationships WHERE object_id = 1"], False),
    (
        "both",
        ["DELETE FROM wp_postmeta WHERE post_id > 30", "DELETE FROM wp_posts WHERE ID > 30"],
        True,
    ),
    ("compressed", ["UPDATE wp_posts SET post_status = 'trash' WHERE ID = 3"], False),
]
# Transactions of the workload (one per statement outside a transaction): the GTIDs to expect.
WORKLOAD_TRANSACTIONS = sum(1 if txn else len(statements) for _, statements, txn in WORKLOAD)

# Row changes: term + taxonomy, post, meta + relationship + update, 60 posts + 60 updates + 60 meta,
# 3 single-row statements, 31 meta + 31 posts deleted, 1 update.
WORKLOAD_ROWS = 2 + 1 + 3 + 180 + 3 + 62 + 1

# Domain events on the topic: 61 post_created, 63 post_updated, 61 post_meta_added, 31 post_meta_deleted,
# 31 post_deleted, one each of post_published, post_trashed, post_meta_updated, post_term_added and
# post_term_removed; the two term rows only feed the term lookup cache.
WORKLOAD_EVENTS = 252

MYSQL_SESSIONS = {
    "plain": (),
    "compressed": ("SET SESSION binlog_transaction_compression = ON",),
    "tagged": ("SET gtid_next = 'AUTOMATIC:wpcdc_tag'",),
    "both": ("SET SESSION binlog_transaction_compression = ON", "SET gtid_next = 'AUTOMATIC:bulk'"),
}


def run_workload(site: Site, sessions: dict[str, tuple[str, ...]]) -> None:
    conns = {name: _session(site, *settings) for name, settings in sessions.items()}
    try:
        for name, statements, txn in WORKLOAD:
            with conns[name].cursor() as cur:
                if txn:
                    cur.execute("START TRANSACTION")
                for s in statements:
                    cur.execute(s)
                if txn:
                    cur.execute("COMMIT")
    finally:
        for c in conns.values():
            c.close()


def decode(site: Site, fast: bool = True) -> list[Any]:
    cfg = dict(site.config)
    cfg["source"] = {**cfg.get("source", {}), "fast_decoding": fast}
    cfg["mysql"] = {**cfg["mysql"], "password": MYSQL_PASSWORD}
    file, pos = site.start.split(":")
    return list(BinlogSource(parse_config(cfg), BinlogPosition(file, int(pos)), blocking=False).items())


def rows(items: list[Any]) -> list[tuple[Any, ...]]:
    """Every row change, without its coordinates (file, pos, row, event, gtid, timestamp)."""
    return [(c.op, c.table, c.before, c.after) for c in items if isinstance(c, RowChange)]


def without_coordinates(records: list[Record]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for r in sorted(records, key=_binlog_order):
        value = json.loads(json.dumps(r.value))
        value.pop("event_id")
        value.pop("occurred_at")
        value["source"] = {"table": value["source"]["table"]}
        out.append((r.key, value))
    return out


def _binlog_order(r: Record) -> tuple[Any, ...]:
    s = r.value["source"]
    return (s["file"], s["pos"], s.get("event", -1), s["row"], r.value["event_type"])


def stream(site: Site, expect: int) -> list[Record]:
    site.set_checkpoint()
    streamer = site.streamer()
    try:
        records = site.consume(expect=expect, timeout=90)
    finally:
        assert streamer.stop() == 0, streamer.output()
    return records


@mysql_only
def test_compressed_transactions_decode_exactly_like_uncompressed_ones(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    plain = Site(stack, tmp_path_factory.mktemp("plain"))
    run_workload(plain, {name: () for name in MYSQL_SESSIONS})
    compressed = Site(stack, tmp_path_factory.mktemp("compressed"))
    run_workload(compressed, {name: ("SET SESSION binlog_transaction_compression = ON",) for name in MYSQL_SESSIONS})

    with compressed.conn.cursor() as cur:  # the server really compressed them
        cur.execute(f"SHOW BINLOG EVENTS IN '{compressed.start.split(':')[0]}' FROM {compressed.start.split(':')[1]}")
        kinds = [r[2] for r in cur.fetchall()]
    assert kinds.count("Transaction_payload") == WORKLOAD_TRANSACTIONS
    assert "Write_rows" in kinds  # SHOW BINLOG EVENTS lists the inner events too

    # The source, both decoding paths: the same row changes, in the same order.
    expected = decode(plain)
    assert len(rows(expected)) == WORKLOAD_ROWS
    for fast in (True, False):
        got = decode(compressed, fast)
        assert rows(got) == rows(expected)
        assert rows(decode(plain, fast)) == rows(expected)
        # One transaction end per transaction, at the end of its payload, with its GTID.
        ends = [c for c in got if isinstance(c, TransactionEnd)]
        assert len(ends) == WORKLOAD_TRANSACTIONS
        assert [c.gtid for c in got if isinstance(c, RowChange)] == [
            e.gtid for e in ends for _ in range(_rows_before(got, e))
        ]
        inner = [c for c in got if isinstance(c, RowChange)]
        assert all(c.event is not None for c in inner)
        # Identified by the payload's position plus the inner event's ordinal: unique, and equal on replay.
        ids = [(c.file, c.pos, c.event, c.row) for c in inner]
        assert len(set(ids)) == len(ids)
        assert [(c.file, c.pos, c.event, c.row) for c in decode(compressed, fast) if isinstance(c, RowChange)] == ids

    # The whole pipeline: the same events on Kafka, apart from the coordinates.
    n = WORKLOAD_EVENTS
    a = stream(plain, n)
    b = stream(compressed, n)
    assert len(a) == len(b) == n
    assert without_coordinates(b) == without_coordinates(a)
    assert all("event" in r.value["source"] for r in b)

    # gtid_mode=ON (source.position auto): GTID ids, which compression does not change; the payload's
    # coordinates (pos and the inner event's ordinal) stay in `source`.
    def in_transaction(records: list[Record]) -> list[str]:  # the id after the GTID: row ordinal[:suffix]
        assert all(r.value["event_id"].startswith(r.value["source"]["gtid"] + ":") for r in records)
        return sorted(r.value["event_id"][len(r.value["source"]["gtid"]) + 1 :] for r in records)

    assert in_transaction(b) == in_transaction(a)


def _rows_before(items: list[Any], end: TransactionEnd) -> int:
    """How many row changes the transaction that `end` closes has."""
    count = 0
    for c in items:
        if c is end:
            return count
        if isinstance(c, TransactionEnd):
            count = 0
        elif isinstance(c, RowChange):
            count += 1
    raise AssertionError("end not in items")


@mysql_only
def test_tagged_gtids_are_on_every_row_and_parse_in_gtid_sets(stack: Stack, tmp_path: Path) -> None:
    site = Site(stack, tmp_path)
    with site.conn.cursor() as cur:
        cur.execute("SELECT @@server_uuid, @@global.gtid_executed")
        uuid, before_text = cur.fetchone()
    before = GtidSet.parse(before_text)
    run_workload(site, MYSQL_SESSIONS)
    with site.conn.cursor() as cur:
        cur.execute("SELECT @@global.gtid_executed")
        after = GtidSet.parse(cur.fetchone()[0])
    assert "wpcdc_tag" in str(after) and f"{uuid}:" in str(after)

    items = decode(site)
    changes = [c for c in items if isinstance(c, RowChange)]
    ends = [c for c in items if isinstance(c, TransactionEnd)]
    assert len(ends) == WORKLOAD_TRANSACTIONS
    # Each row carries the GTID of its own transaction (the one its transaction end reports), and
    # the GTIDs are exactly the ones the server added to gtid_executed, tags included.
    gtids = [e.gtid for e in ends]
    assert len(set(gtids)) == len(gtids)
    assert [c.gtid for c in changes] == [e.gtid for e in ends for _ in range(_rows_before(items, e))]
    assert all(g is not None and g not in before and g in after for g in gtids)
    tagged = [g for g in gtids if g and ":wpcdc_tag:" in g]
    assert len(tagged) == 2 and len([g for g in gtids if g and ":bulk:" in g]) == 2
    # Transactions in the tagged session number on within their tag: uuid:tag:1, uuid:tag:2, …
    assert [int(g.rsplit(":", 1)[1]) for g in tagged] == sorted(int(g.rsplit(":", 1)[1]) for g in tagged)
    # The delete in the tagged session: its rows say which transaction they belong to.
    delete = next(c for c in changes if c.table == "wp_term_relationships" and c.op == "delete")
    assert delete.gtid is not None and delete.gtid.startswith(f"{uuid}:wpcdc_tag:")


@mysql_only
def test_mixed_workload_yields_the_same_events_on_mysql_and_mariadb(
    stack: Stack, mariadb_beside: Stack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    mariadb = Site(mariadb_beside, tmp_path_factory.mktemp("mariadb"))
    run_workload(mariadb, {name: () for name in MYSQL_SESSIONS})
    mysql = Site(stack, tmp_path_factory.mktemp("mysql"))
    run_workload(mysql, MYSQL_SESSIONS)  # some sessions compressed, some tagged, some both, some plain

    n = WORKLOAD_EVENTS
    on_mariadb = stream(mariadb, n)
    on_mysql = stream(mysql, n)
    assert without_coordinates(on_mysql) == without_coordinates(on_mariadb)
    assert len(on_mysql) == len(on_mariadb) == n
    # GTID formats differ (domain-server-seq vs uuid[:tag]:gno); each event has its server's.
    assert all("-" in r.value["source"]["gtid"] and ":" not in r.value["source"]["gtid"] for r in on_mariadb)
    tags = {r.value["source"]["gtid"].split(":")[1] for r in on_mysql if r.value["source"]["gtid"].count(":") == 2}
    assert tags == {"wpcdc_tag", "bulk"}


@mysql_only
def test_partial_json_updates_decode_without_json_columns_and_dead_letter_with_them(
    stack: Stack, tmp_path: Path
) -> None:
    site = Site(stack, tmp_path)
    site.sql("ALTER TABLE wp_postmeta ADD COLUMN doc JSON NULL")  # a plugin's column
    site.start = site.position()
    pid = site.insert_post("Partial")
    site.sql(f"INSERT INTO wp_postmeta (post_id, meta_key, meta_value, doc) VALUES ({pid}, 'k', 'v', '{{\"a\": 1}}')")
    conn = _session(site, "SET SESSION binlog_row_value_options = 'PARTIAL_JSON'")
    try:
        with conn.cursor() as cur:
            cur.execute(f"UPDATE wp_posts SET post_title = 'Partial 2' WHERE ID = {pid}")
            cur.execute("UPDATE wp_postmeta SET meta_value = 'w'")  # doc unchanged: the library says None
    finally:
        conn.close()
    with site.conn.cursor() as cur:
        cur.execute(f"SHOW BINLOG EVENTS IN '{site.start.split(':')[0]}' FROM {site.start.split(':')[1]}")
        assert [r[2] for r in cur.fetchall()].count("Update_rows_partial") == 2

    for fast in (True, False):
        items = decode(site, fast)
        updates = [c for c in items if isinstance(c, RowChange) and c.op == "update"]
        assert [(c.table, c.before["post_title"], c.after["post_title"]) for c in updates] == [
            ("wp_posts", "Partial", "Partial 2")
        ]
        dead = [c for c in items if isinstance(c, UndecodableRows)]
        assert [(d.table, d.op) for d in dead] == [("wp_postmeta", "update")]
        assert "binlog_row_value_options" in dead[0].error and "doc" in dead[0].error
        assert dead[0].raw_event  # kept for a replay after the fix


# The probe's own peak is VmHWM (its address space's high-water mark, new at exec). Not ru_maxrss:
# Linux carries the parent's peak RSS over fork/vfork and exec into the child's, so after a full
# suite run (pytest itself near 300 MiB) the probe reported pytest's size instead of the reader's.
_RSS_PROBE = """
import sys
from cdc.config import parse_config
from cdc.core.changes import RowChange
from cdc.core.position import BinlogPosition
from cdc.source.binlog import BinlogSource
import json
cfg, file, pos = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
n = 0
for item in BinlogSource(parse_config(cfg), BinlogPosition(file, pos), blocking=False).items():
    n += isinstance(item, RowChange)
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(n, int(hwm.split()[1]) // 1024)
"""


def _bulk_insert(site: Site, rows_n: int, *settings: str) -> str:
    """One transaction inserting rows_n posts with 1 KiB of content each; its SHOW BINLOG EVENTS info."""
    conn = _session(site, "SET SESSION cte_max_recursion_depth = 200000", *settings)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO wp_posts (post_title, post_status, post_type, post_content, post_excerpt, to_ping, pinged,"
                " post_content_filtered) SELECT CONCAT('Bulk ', n), 'publish', 'post', REPEAT(SHA2(n, 256), 16),"
                " '', '', '', '' FROM (WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s"
                f" WHERE n < {rows_n}) SELECT n FROM s) AS t"
            )
            cur.execute(f"SHOW BINLOG EVENTS IN '{site.start.split(':')[0]}' FROM {site.start.split(':')[1]}")
            return " ".join(str(r[5]) for r in cur.fetchall() if r[2] == "Transaction_payload")
    finally:
        conn.close()


def _pipeline_peak_rss_mib(site: Site) -> int:
    """`wpcdc run` from site.start until its checkpoint reaches the binlog's end: the main process's
    peak RSS (decode, map, hand to the producer process, checkpoint), read from /proc."""
    end = site.position()
    site.set_checkpoint()
    streamer = site.streamer()
    saved: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and streamer.proc.poll() is None:
            saved = json.loads(site.checkpoint_path.read_text()) if site.checkpoint_path.exists() else {}
            if f"{saved.get('file')}:{saved.get('pos')}" == end:
                break
            time.sleep(0.2)  # polling for a condition, not an assertion
        status = Path(f"/proc/{streamer.proc.pid}/status").read_text()
    finally:
        assert streamer.stop() == 0, streamer.output()
    assert f"{saved.get('file')}:{saved.get('pos')}" == end, streamer.output()[-2000:]
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1]) // 1024


@mysql_only
def test_slow_one_huge_compressed_transaction_streams_in_bounded_memory(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    rows_n = 100_000
    site = Site(stack, tmp_path_factory.mktemp("huge"))
    info = _bulk_insert(site, rows_n, "SET SESSION binlog_transaction_compression = ON")
    uncompressed_mib = int(info.split("decompressed_size=")[1].split()[0]) / 2**20
    assert uncompressed_mib > 100  # 100k rows of 1 KiB content: one payload of over 100 MiB decompressed

    # The reader alone.
    file, pos = site.start.split(":")
    cfg = {**site.config, "source": {**site.config["source"], "fast_decoding": True}}
    done = subprocess.run(
        [sys.executable, "-c", _RSS_PROBE, json.dumps(cfg), file, pos],
        capture_output=True, text=True, timeout=600, env={**os.environ, "WPCDC_MYSQL_PASSWORD": MYSQL_PASSWORD},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    count, rss_mib = map(int, done.stdout.split())
    print(f"100k-row compressed transaction ({uncompressed_mib:.0f} MiB decompressed): reader peak RSS {rss_mib} MiB")
    assert count == rows_n
    # Materialising the decompressed payload (or its row changes) alone would exceed this.
    assert rss_mib < uncompressed_mib

    # The whole pipeline, against the same transaction written uncompressed: compression must cost
    # it nothing (what grows with the row count is the mapper's bounded post cache, in both).
    compressed_mib = _pipeline_peak_rss_mib(site)
    plain = Site(stack, tmp_path_factory.mktemp("huge-plain"))
    assert _bulk_insert(plain, rows_n) == ""  # no payload: written uncompressed
    plain_mib = _pipeline_peak_rss_mib(plain)
    print(f"through `wpcdc run`: peak RSS {compressed_mib} MiB compressed, {plain_mib} MiB uncompressed")
    assert compressed_mib < plain_mib + 16
