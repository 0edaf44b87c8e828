"""The fast decoding paths must produce exactly what python-mysql-replication produces."""

from __future__ import annotations

import collections
import datetime as dt
import ssl
from typing import Any

import orjson
import pytest
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.constants import BINLOG
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from cdc.config import parse_config
from cdc.core.changes import RowChange, TransactionEnd
from cdc.core.position import BinlogPosition
from cdc.dev.stack import MYSQL_PASSWORD
from cdc.mapping.mapper import Mapper
from cdc.mapping.state import WordPressState
from cdc.source import binlog, fast_decoding, packets
from cdc.source.binlog import BinlogSource, connection_settings
from cdc.source.lookup import DatabaseLookup
from tests.integration.conftest import Site

pytestmark = pytest.mark.integration


def decode(site: Site, fast: bool) -> list[tuple[Any, ...]]:
    cfg = dict(site.config)
    cfg["source"] = {**cfg.get("source", {}), "fast_decoding": fast}
    file, pos = site.start.split(":")
    source = BinlogSource(parse_config(cfg), BinlogPosition(file, int(pos)), blocking=False)
    out: list[tuple[Any, ...]] = []
    for c in source.items():
        if isinstance(c, RowChange):
            out.append((c.op, c.table, c.before, c.after, c.file, c.pos, c.row, c.gtid, c.timestamp))
        elif isinstance(c, TransactionEnd):  # built from the XID/GTID events the fast wrapper makes
            out.append(("end", str(c.next_position), c.gtid, c.timestamp))
    return out


def test_fast_decoding_is_identical_to_the_library(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    # Columns plugins add to wp_posts, of every type the fast path handles...
    site.sql(
        "ALTER TABLE wp_posts ADD COLUMN t_tiny TINYINT NULL, ADD COLUMN t_utiny TINYINT UNSIGNED NULL,"
        " ADD COLUMN t_small SMALLINT NULL, ADD COLUMN t_med MEDIUMINT NULL, ADD COLUMN t_umed MEDIUMINT UNSIGNED NULL,"
        " ADD COLUMN t_int INT NULL, ADD COLUMN t_ubig BIGINT UNSIGNED NULL, ADD COLUMN t_big BIGINT NULL,"
        " ADD COLUMN t_float FLOAT NULL, ADD COLUMN t_double DOUBLE NULL, ADD COLUMN t_char CHAR(10) NULL,"
        " ADD COLUMN t_bin VARBINARY(20) NULL, ADD COLUMN t_blob BLOB NULL, ADD COLUMN t_dt6 DATETIME(6) NULL,"
        " ADD COLUMN t_dt3 DATETIME(3) NULL, ADD COLUMN t_ts TIMESTAMP(3) NULL, ADD COLUMN t_date DATE NULL,"
        " ADD COLUMN t_year YEAR NULL, ADD COLUMN t_latin VARCHAR(300) CHARACTER SET latin1 NULL"
    )
    # ... and one the fast path leaves to the library (the whole table then takes the library's path).
    site.sql("ALTER TABLE wp_postmeta ADD COLUMN price DECIMAL(10,2) NULL, ADD COLUMN doc JSON NULL")
    site.start = site.position()
    pid = site.insert_post(
        "Grüße 😀 " + "x" * 300, post_date="0000-00-00 00:00:00", t_tiny=-128, t_utiny=255, t_small=-32768,
        t_med=-8388608, t_umed=16777215, t_int=-2147483648, t_ubig=2**64 - 1, t_big=-(2**63), t_float=1.5,
        t_double=-2.25e300, t_char="abc", t_bin=b"\x00\xff\x10", t_blob=b"\x01\x02" * 200,
        t_dt6="2026-11-22 10:11:12.123456", t_dt3="1999-12-31 23:59:59.5", t_ts="2026-01-02 03:04:05.678",
        t_date="2026-02-28", t_year=2026, t_latin="café" * 70,
    )  # fmt: skip
    site.insert_post("nulls")  # the added columns are NULL
    site.sql(
        f"UPDATE wp_posts SET t_dt6 = '0000-00-00 00:00:00', t_date = '0000-00-00', post_title = '' WHERE ID = {pid}",
        "INSERT INTO wp_postmeta (post_id, meta_key, meta_value, price, doc)"
        f" VALUES ({pid}, 'k', 'v', 12.34, '{{\"a\": [1]}}')",
        "UPDATE wp_posts SET menu_order = menu_order + 1",  # one multi-row event
        f"DELETE FROM wp_posts WHERE ID = {pid}",
    )

    compiled: list[Any] = []
    real_compile = fast_decoding._compile

    def spy(table: Any) -> Any:
        plan = real_compile(table)
        compiled.append((table.table, plan is not None))
        return plan

    monkeypatch.setattr(fast_decoding, "_compile", spy)
    straight_rows = [0]
    real_generate = fast_decoding._generate

    def counting(*args: Any) -> Any:
        decode = real_generate(*args)

        def count(data: bytes, pos: int) -> Any:
            straight_rows[0] += 1
            return decode(data, pos)

        return count

    monkeypatch.setattr(fast_decoding, "_generate", counting)
    lean_boundaries = [0]
    real_lean = fast_decoding.lean_event

    def count_lean(*args: Any) -> Any:  # GTID, XID, memoized BEGIN and table map: no wrapper at all
        ev = real_lean(*args)
        lean_boundaries[0] += ev is not None
        return ev

    monkeypatch.setattr(fast_decoding, "lean_event", count_lean)
    # Rows the library's per-row loop reads, and events its fetchone returns, in each run.
    library_rows = [0]
    for cls in (WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent):

        def one_row(self: Any, real: Any = cls._fetch_one_row) -> Any:
            library_rows[0] += 1
            return real(self)

        monkeypatch.setattr(cls, "_fetch_one_row", one_row)
    fetched = [0]
    real_fetchone = BinLogStreamReader.fetchone

    def fetchone(self: Any) -> Any:
        fetched[0] += 1
        return real_fetchone(self)

    monkeypatch.setattr(BinLogStreamReader, "fetchone", fetchone)
    monkeypatch.setenv("WPCDC_MYSQL_PASSWORD", MYSQL_PASSWORD)
    fast = decode(site, fast=True)
    fast_library_rows, fast_fetched = library_rows[0], fetched[0]
    library_rows[0] = fetched[0] = 0
    library = decode(site, fast=False)
    assert fast_library_rows == 1, "only the DECIMAL/JSON table's row takes the library's row loop"
    assert library_rows[0] == 7 and fetched[0] > 20
    assert fast_fetched == 0, "with fast decoding the reader's own loop reads the events, not fetchone"

    assert ("wp_posts", True) in compiled, "the fast path was not used for wp_posts"
    assert straight_rows[0] >= 3, "rows without NULLs take the generated straight-line decoder"
    # GTID (not MySQL's tagged ones, type 42) and XID events are made without a wrapper (see the test below).
    assert lean_boundaries[0] >= (12 if site.stack.kind == "mariadb" else 6), "GTID/XID events take the lean path"
    assert ("wp_postmeta", False) in compiled, "DECIMAL/JSON must fall back to the library"
    rows = [c for c in fast if c[0] != "end"]
    assert len(rows) == 7  # 2 inserts, 1 update, 1 meta insert, a 2-row update, 1 delete
    assert len(fast) - len(rows) >= 6, "and the transactions' ends"
    assert fast == library
    for a, b in zip(rows, [c for c in library if c[0] != "end"], strict=True):  # same types too (1 == 1.0)
        for image_a, image_b in ((a[2], b[2]), (a[3], b[3])):
            assert [type(v) for v in (image_a or {}).values()] == [type(v) for v in (image_b or {}).values()]

    after = rows[0][3]
    assert after["t_ubig"] == 2**64 - 1 and after["t_big"] == -(2**63) and after["t_med"] == -8388608
    assert after["post_title"].startswith("Grüße 😀") and after["post_date"] is None
    assert after["t_dt6"] == dt.datetime(2026, 11, 22, 10, 11, 12, 123456)
    assert after["t_dt3"] == dt.datetime(1999, 12, 31, 23, 59, 59, 500000)
    assert after["t_date"] == dt.date(2026, 2, 28) and after["t_year"] == 2026
    assert after["t_bin"] == b"\x00\xff\x10" and after["t_latin"] == "café" * 70
    assert rows[1][3]["t_ubig"] is None


def publish(
    site: Site, fast: bool, plain_tcp: bool, monkeypatch: pytest.MonkeyPatch, batches: list[int] | None = None
) -> tuple[list[bytes], int]:
    """The encoded events of site.start..now as `wpcdc replay` builds them (the source hands the rows
    of the transactions already received to the mapper's prefetch, then its rows one by one), and the
    number of lookup queries; `batches` gets the number of rows events of each prefetch. With
    fast=False: the library's decoding and packet reads, a query per row, no remembered term misses,
    the mapper's reference code."""
    cfg = dict(site.config)
    cfg["source"] = {**cfg.get("source", {}), "fast_decoding": fast}
    config = parse_config(cfg)
    with monkeypatch.context() as m:
        if plain_tcp:  # PyMySQL uses TLS whenever the test servers offer it (they do): refuse it here
            m.setattr(binlog, "connection_settings", lambda c: {**connection_settings(c), "ssl_disabled": True})
        lookup = DatabaseLookup(config)
        queries = [0]
        real_all = lookup._all

        def counted(sql: str, args: tuple[int, ...]) -> Any:
            queries[0] += 1
            return real_all(sql, args)

        m.setattr(lookup, "_all", counted)
        mapper = Mapper(WordPressState(lookup, remember_term_misses=fast), 1, fast_paths=fast)
        file, pos = site.start.split(":")

        def prefetch_changes(changes: list[RowChange]) -> None:
            if batches is not None:
                batches.append(len({(c.file, c.pos) for c in changes}))
            mapper.prefetch_changes(changes)

        source = BinlogSource(
            config, BinlogPosition(file, int(pos)), blocking=False, prefetch=mapper.prefetch if fast else None,
            prefetch_changes=prefetch_changes if fast else None,
        )  # fmt: skip
        out: list[bytes] = []
        try:
            for item in source.items():
                if isinstance(item, RowChange):
                    mapped = mapper.map(item)
                    assert mapped.dead_letter is None, mapped.dead_letter
                    out += mapped.encoded
        finally:
            lookup.close()
    return out, queries[0]


def test_every_speedup_on_or_off_publishes_the_same_bytes(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    # Posts and a term written before the range: every row of it that names them is a lookup.
    old = [site.insert_post(f"old {i}", status="publish") for i in range(6)]
    older = [site.insert_post(f"older {i}", status="publish") for i in range(6)]
    site.sql(
        "INSERT INTO wp_terms (term_id, name, slug) VALUES (40, 'Old', 'old')",
        "INSERT INTO wp_term_taxonomy (term_taxonomy_id, term_id, taxonomy, description)"
        " VALUES (40, 40, 'category', '')",
    )
    site.start = site.position()
    ids = ", ".join(map(str, old))
    site.sql(
        # One rows event per statement, each naming several posts the range never wrote.
        "INSERT INTO wp_postmeta (post_id, meta_key, meta_value) VALUES "
        + ", ".join(f"({p}, '_price', '{p}'), ({p}, '_edit_lock', '1:1')" for p in old),
        # Terms the database lacks (77, 78), one it has (40): several relationships each.
        "INSERT INTO wp_term_relationships (object_id, term_taxonomy_id) VALUES "
        + ", ".join(f"({p}, 77), ({p}, 78), ({p}, 40)" for p in old),
        f"INSERT INTO wp_term_relationships (object_id, term_taxonomy_id) VALUES ({old[0]}, 79)",
        f"UPDATE wp_postmeta SET meta_value = CONCAT(meta_value, '!') WHERE post_id IN ({ids})",
        # Term 77 is created now: the relationships after this must see it (from the binlog), not the
        # remembered miss. It is gone again by the time the range is read, so a lookup cannot find it.
        "INSERT INTO wp_terms (term_id, name, slug) VALUES (77, 'Fresh', 'fresh')",
        "INSERT INTO wp_term_taxonomy (term_taxonomy_id, term_id, taxonomy, description)"
        " VALUES (77, 77, 'post_tag', '')",
        f"UPDATE wp_term_relationships SET term_order = 2 WHERE term_taxonomy_id = 77 AND object_id IN ({ids})",
        f"DELETE FROM wp_term_relationships WHERE term_taxonomy_id IN (77, 78) AND object_id IN ({ids})",
        "DELETE FROM wp_term_taxonomy WHERE term_taxonomy_id = 77",
        "DELETE FROM wp_terms WHERE term_id = 77",
        # As WordPress writes: one single-row statement (and transaction) per post, each a post lookup.
        *(f"INSERT INTO wp_postmeta (post_id, meta_key, meta_value) VALUES ({p}, '_views', '1')" for p in older),
    )
    monkeypatch.setenv("WPCDC_MYSQL_PASSWORD", MYSQL_PASSWORD)
    chunked: list[bool] = []
    real_install = packets.install

    def spy(conn: Any) -> None:
        chunked.append(isinstance(conn._sock, ssl.SSLSocket))
        real_install(conn)

    monkeypatch.setattr(packets, "install", spy)
    batches: list[int] = []
    fast_tls, fast_tls_queries = publish(site, fast=True, plain_tcp=False, monkeypatch=monkeypatch, batches=batches)
    fast_tcp, fast_tcp_queries = publish(site, fast=True, plain_tcp=True, monkeypatch=monkeypatch)
    assert chunked == [True, False], "the chunked packet reader ran over TLS, then over plain TCP"
    slow, slow_queries = publish(site, fast=False, plain_tcp=False, monkeypatch=monkeypatch)
    assert len(chunked) == 2, "fast_decoding: false reads packets through PyMySQL"

    assert fast_tls == slow and fast_tcp == slow
    events = [orjson.loads(v) for v in slow]
    # 6 meta added (the _edit_lock rows are filtered), 19 terms added, 6 meta updated, 6 term order
    # updates, 12 terms removed, 6 meta added in statements of their own.
    assert len(events) == 55
    fresh = [e for e in events if e["event_type"] == "post_term_updated"]
    assert len(fresh) == 6
    assert all(e["data"]["name"] == "Fresh" and e["source"]["lookups"] == ["post_type"] for e in fresh)
    missed = [e for e in events if e["event_type"] == "post_term_added" and e["data"]["term_taxonomy_id"] == 77]
    assert all(e["data"]["name"] is None and "data.name" in e["source"]["lookups"] for e in missed)
    # Per row: the 6 posts, term 40 once, the missing 77 and 78 for every row naming them (6 + 6 added,
    # 6 more removed: 77 is known from the binlog by then), 79 once, the 6 older posts: 32 queries.
    # Batched per rows event and remembered: one for the meta's posts, one for the three terms, one
    # for term 79 and one per older post (9). Batched across the transactions already received (the
    # whole range, unless the server's packets arrived in several pieces): fewer.
    assert slow_queries == 32
    assert max(batches) >= 2, "a prefetch covered the rows of several transactions"
    assert fast_tls_queries < 9 and fast_tcp_queries < 9, (fast_tls_queries, fast_tcp_queries)


_NOT_COMPARED = frozenset(
    {
        "packet", "table_map", "_ctl_connection", "payload", "_wpcdc_data", "_wpcdc_row_plan",
        # Why a value is None (the library's reader notes zero dates); nothing in wpcdc reads it, and
        # the fast row decoders do not track it.
        "_RowsEvent__none_sources", "none_sources", "before_none_sources", "after_none_sources",
    }
)  # fmt: skip


def _attributes(value: Any) -> Any:
    """An event (or a table, a column) as its class's library name and every attribute, recursively."""
    if isinstance(value, list):
        return [_attributes(v) for v in value]
    if isinstance(value, dict):
        return {k: _attributes(v) for k, v in value.items() if k not in _NOT_COMPARED}
    if hasattr(value, "__dict__") and not isinstance(value, type):
        name = type(value).__name__.removeprefix("Memo").removeprefix("Fast").removeprefix("_Cached")
        return name, {k: _attributes(v) for k, v in vars(value).items() if k not in _NOT_COMPARED}
    return value


def _differences(a: tuple[Any, ...], b: tuple[Any, ...]) -> list[str]:
    out = []
    for part, x, y in zip(("built", "wrapper", "packet position", "rows", "after rows"), a, b, strict=True):
        if isinstance(x, tuple) and isinstance(y, tuple) and isinstance(x[1], dict) and isinstance(y[1], dict):
            x, y = x[1], y[1]
        if isinstance(x, dict) and isinstance(y, dict):
            out += [
                f"{part}.{k}: {x.get(k)!r:.200} != {y.get(k)!r:.200}"
                for k in x.keys() | y.keys()
                if x.get(k) != y.get(k)
            ]
        elif x != y:
            out.append(f"{part}: {x!r:.200} != {y!r:.200}")
    return out


# What BinlogSource reads of each event fast_decoding makes without a wrapper (lean_event), by kind.
_LEAN_FIELDS = {
    binlog._XID: ("xid",), binlog._QUERY: ("query", "schema"), binlog._TABLE_MAP: ("table_id",),
    binlog._MARIADB_GTID: ("gtid", "flags"), binlog._MYSQL_GTID: ("gtid",),
}  # fmt: skip
_LIBRARY_NAMES = {
    "LeanXid": "XidEvent", "LeanQuery": "QueryEvent", "LeanTableMap": "TableMapEvent",
    "LeanMariadbGtid": "MariadbGtidEvent", "LeanMysqlGtid": "GtidEvent",
}  # fmt: skip


def _lean_view(ev: Any) -> tuple[int, dict[str, Any]] | None:
    """An event of the kinds lean_event makes, as the source loop reads it (the wrapper's header
    fields, the event's own); None for other kinds."""
    kind = binlog._kind(type(ev))
    if kind not in _LEAN_FIELDS:
        return None
    fields = {"timestamp": ev.timestamp, "log_pos": ev.packet.log_pos, "event_size": ev.packet.event_size}
    return kind, {**fields, **{name: getattr(ev, name) for name in _LEAN_FIELDS[kind]}}


def reader_events(site: Site, fast: bool, cycles: list[bool] | None = None) -> list[tuple[Any, ...]]:
    """Every event the library's reader hands to BinlogSource: its attributes as built (before its
    rows are read), its packet wrapper's, where the packet stands, then its rows, and what the source
    loop reads of it (_lean_view). An event made without a wrapper (fast_decoding.LeanEvent) is its
    library class's name and that view only."""
    cfg = dict(site.config)
    cfg["source"] = {**cfg.get("source", {}), "fast_decoding": fast}
    file, pos = site.start.split(":")
    source = BinlogSource(parse_config(cfg), BinlogPosition(file, int(pos)), blocking=False)
    reader = source._open()
    out: list[tuple[Any, ...]] = []
    try:
        for ev in binlog._unpack_payloads(reader):
            if isinstance(ev, fast_decoding.LeanEvent):
                view = _lean_view(ev)
                assert view is not None, ev
                out.append(((_LIBRARY_NAMES[type(ev).__name__], view[1]), None, None, None, None, view))
                continue
            built = _attributes(ev)
            if cycles is not None and getattr(ev, "payload_index", None) is None:
                cycles.append(getattr(ev.packet, "event", None) is ev)  # event <-> wrapper: a cycle for the GC
            wrapper = {k: v for k, v in vars(ev.packet).items() if k not in ("packet", "event", "wpcdc_wrapper_args")}
            at = ev.packet.packet._position
            rows = _attributes(ev.rows) if hasattr(type(ev), "rows") else None
            out.append((built, wrapper, at, rows, _attributes(ev), _lean_view(ev)))
    finally:
        source.close()
    return out


def test_events_built_directly_are_the_librarys_events(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    """fast_decoding builds rows events, table maps, GTID/XID and query events without the library's
    constructor: each must have every attribute the library's has, the same packet position and
    the same rows; unusual events (another schema's table, DDL) still take the library's path."""
    other = f"{site.database}_other"
    site.sql(f"CREATE DATABASE `{other}`", f"CREATE TABLE `{other}`.t (id INT PRIMARY KEY, v VARCHAR(10))")
    site.start = site.position()
    pid = site.insert_post("one")
    site.sql(
        f"INSERT INTO wp_postmeta (post_id, meta_key, meta_value) VALUES ({pid}, 'a', '1'), ({pid}, 'b', '2')",
        f"UPDATE wp_posts SET post_status = 'publish' WHERE ID = {pid}",
        f"INSERT INTO `{other}`.t VALUES (1, 'x')",  # rows of a table the reader does not map
        "START TRANSACTION",
        f"UPDATE wp_postmeta SET meta_value = 'x' WHERE post_id = {pid}",
        f"INSERT INTO wp_term_relationships (object_id, term_taxonomy_id) VALUES ({pid}, 3)",
        "COMMIT",
        "ALTER TABLE wp_postmeta ADD COLUMN extra INT NULL",  # a query event of its own (DDL)
        f"INSERT INTO wp_postmeta (post_id, meta_key, meta_value, extra) VALUES ({pid}, 'c', '3', NULL)",
        f"DELETE FROM wp_term_relationships WHERE object_id = {pid}",
        f"DELETE FROM wp_postmeta WHERE post_id = {pid}",
    )
    if site.stack.kind == "mysql":  # a compressed transaction: its inner events take the same wrapper
        site.sql("SET SESSION binlog_transaction_compression = ON", f"DELETE FROM wp_posts WHERE ID = {pid}")
        site.sql("SET SESSION binlog_transaction_compression = OFF")
    else:
        site.sql(f"DELETE FROM wp_posts WHERE ID = {pid}")
    monkeypatch.setenv("WPCDC_MYSQL_PASSWORD", MYSQL_PASSWORD)
    by_library: list[int] = []
    real_init = fast_decoding.BinLogPacketWrapper.__init__

    def library_init(self: Any, from_packet: Any, *args: Any, **kwargs: Any) -> None:
        by_library.append(from_packet._data[from_packet._position + 5])
        real_init(self, from_packet, *args, **kwargs)

    monkeypatch.setattr(fast_decoding.BinLogPacketWrapper, "__init__", library_init)
    cycles: list[bool] = []
    fast = reader_events(site, fast=True, cycles=cycles)
    assert cycles and not any(cycles), "the reader's loop cuts each event's cycle with its wrapper"
    fast_by_library = list(by_library)
    by_library.clear()
    library = reader_events(site, fast=False)

    names = [e[0][0] for e in fast]
    assert names == [e[0][0] for e in library]
    lean_built: collections.Counter[str] = collections.Counter()
    for i, (a, b) in enumerate(zip(fast, library, strict=True)):
        if a[1] is None:  # made without a wrapper: what the source loop reads of it is the library's
            lean_built[names[i]] += 1
            assert a[5] == b[5], f"event {i} ({names[i]}) made without a wrapper: {a[5]} != library's {b[5]}"
            continue
        assert a[:5] == b[:5], f"event {i} ({names[i]}) differs from the library's: {_differences(a[:5], b[:5])}"
        assert a[5] == b[5]
    built = collections.Counter(names)
    by_type = collections.Counter(fast_by_library)
    lean = {t: by_library.count(t) - by_type[t] for t in set(by_library)}
    # Every rows event of the captured tables, every GTID and XID event and all but the first parse
    # of each table map and each distinct BEGIN: built directly.
    assert built["WriteRowsEvent"] == 4 and built["UpdateRowsEvent"] == 2 and built["DeleteRowsEvent"] == 3, built
    writes = (BINLOG.WRITE_ROWS_EVENT_V1, BINLOG.WRITE_ROWS_EVENT_V2)  # MariaDB writes V1, MySQL V2
    rows_types = (*writes, BINLOG.UPDATE_ROWS_EVENT_V1, BINLOG.UPDATE_ROWS_EVENT_V2, BINLOG.DELETE_ROWS_EVENT_V1)
    assert sum(lean.get(t, 0) for t in (*rows_types, BINLOG.DELETE_ROWS_EVENT_V2)) == 9, lean
    assert sum(by_type[t] for t in writes) == 1, "the other schema's rows (no table map) take the library's path"
    assert by_type[BINLOG.XID_EVENT] == 0 and lean[BINLOG.XID_EVENT] >= 9
    assert lean[BINLOG.TABLE_MAP_EVENT] >= 4, "memoized table maps are built directly"
    if site.stack.kind == "mysql":
        assert by_type[BINLOG.GTID_LOG_EVENT] == 0 and lean[BINLOG.GTID_LOG_EVENT] >= 10
        assert lean[BINLOG.QUERY_EVENT] >= 7, "BEGIN is parsed once, then built from the memo"
    else:
        assert by_type[BINLOG.MARIADB_GTID_EVENT] == 0 and lean[BINLOG.MARIADB_GTID_EVENT] >= 10
    assert built["QueryEvent"] >= 1 and any("ALTER TABLE" in str(e[0][1].get("query")) for e in fast)
    # Of those, made without any wrapper: every GTID and XID event, the memoized table maps and BEGINs.
    # (The events inside MySQL's compressed transaction are wrapped by mysql_events, its XID too.)
    compressed = 1 if site.stack.kind == "mysql" else 0
    assert lean_built["XidEvent"] == built["XidEvent"] - compressed >= 8, lean_built
    assert lean_built["TableMapEvent"] == lean[BINLOG.TABLE_MAP_EVENT] - compressed >= 4, lean_built
    if site.stack.kind == "mysql":
        assert lean_built["GtidEvent"] == built["GtidEvent"] >= 10, lean_built
        assert lean_built["QueryEvent"] == lean[BINLOG.QUERY_EVENT] - compressed >= 6, lean_built
    else:
        assert lean_built["MariadbGtidEvent"] == built["MariadbGtidEvent"] >= 10, lean_built
    assert not any("ALTER TABLE" in str(e[0][1].get("query")) for e in fast if e[1] is None), "DDL: the wrapper's"
