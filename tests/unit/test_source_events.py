"""The source's handling of event sequences, with stand-ins for the library's event objects."""

from __future__ import annotations

from typing import Any

import pytest
from pymysqlreplication.event import GtidEvent, MariadbGtidEvent, QueryEvent, RotateEvent, XAPrepareEvent, XidEvent
from pymysqlreplication.row_event import TableMapEvent, WriteRowsEvent

from cdc.config import parse_config
from cdc.core.changes import RowChange, TableChange, TransactionEnd, UndecodableRows, XAOutcome, XAPrepared
from cdc.core.position import BinlogPosition
from cdc.errors import PositionGoneError, SourceError
from cdc.mapping import events as ev
from cdc.mapping.mapper import Mapper
from cdc.mapping.state import NoLookup, WordPressState
from cdc.source.binlog import BinlogSource, parse_xid, table_ddl
from cdc.source.server import Server


class _Raw:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def get_all_data(self) -> bytes:
        return self._data


class _Packet:
    def __init__(self, log_pos: int) -> None:
        self.log_pos = log_pos
        self.event_size = 100  # the header's size: the whole event
        self.packet = _Raw(b"\x00raw-event-bytes")


def fake(cls: type, log_pos: int, **attrs: Any) -> Any:
    class Fake(cls):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            pass

        rows = property(lambda self: attrs["rows"]() if callable(attrs.get("rows")) else attrs.get("rows"))

    obj = Fake()
    obj.packet = _Packet(log_pos)
    obj.event_size = 77  # the library's: without the 19-byte header and the 4-byte checksum
    obj.timestamp = 1_790_000_000
    for k, v in attrs.items():
        if k != "rows":
            setattr(obj, k, v)
    return obj


def gtid(pos: int, standalone: bool = False) -> Any:
    return fake(MariadbGtidEvent, pos, gtid="0-1-5", flags=1 if standalone else 0)


def read(events: list[Any]) -> list[Any]:
    src = BinlogSource(parse_config({}), BinlogPosition("binlog.000001", 4))
    return list(src._read(iter(events)))  # type: ignore[arg-type]


def test_undecodable_rows_become_an_item_and_the_stream_goes_on() -> None:
    def boom() -> list[Any]:
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")

    ok_row = {"values": {"meta_id": 1, "post_id": 2, "meta_key": "k", "meta_value": "v"}}
    items = read([
        gtid(200),
        fake(TableMapEvent, 300),
        fake(WriteRowsEvent, 400, table="wp_postmeta", rows=boom),
        fake(WriteRowsEvent, 500, table="wp_postmeta", rows=[ok_row]),
        fake(XidEvent, 600),
    ])  # fmt: skip
    assert [type(i) for i in items] == [UndecodableRows, RowChange, TransactionEnd]
    bad = items[0]
    assert (bad.op, bad.table, bad.pos, bad.wp.blog_id) == ("insert", "wp_postmeta", 300, 1)
    assert "UnicodeDecodeError" in bad.error and bad.raw_event == b"\x00raw-event-bytes"
    assert items[2].next_position == BinlogPosition("binlog.000001", 600)

    record = Mapper(WordPressState(NoLookup()), 101).undecodable(bad)
    ev.DeadLetter.model_validate(record)
    assert record["event_id"] == "101:binlog.000001:300:0:undecodable"
    assert record["raw_event"] == "AHJhdy1ldmVudC1ieXRlcw=="


def test_start_inside_a_transaction_is_refused() -> None:
    with pytest.raises(SourceError, match="inside a transaction") as err:
        read([fake(TableMapEvent, 300), fake(WriteRowsEvent, 400, table="wp_posts", rows=[])])
    assert err.value.fatal


def test_boundaries_after_xid_ddl_and_rotation() -> None:
    items = read([
        gtid(200, standalone=True),
        fake(QueryEvent, 300, query="ALTER TABLE wp_posts ADD x INT"),
        fake(RotateEvent, 0, next_binlog="binlog.000002", position=4),
        gtid(400),
        fake(XidEvent, 500),
    ])  # fmt: skip
    ends = [i.next_position for i in items if isinstance(i, TransactionEnd)]
    assert ends == [BinlogPosition("binlog.000001", 300), BinlogPosition("binlog.000002", 500)]


def test_non_wordpress_tables_are_skipped() -> None:
    items = read([gtid(200), fake(WriteRowsEvent, 300, table="wp_options", rows=[{"values": {}}]), fake(XidEvent, 400)])
    assert [type(i) for i in items] == [TransactionEnd]


def xa_prepare(pos: int, gtrid: bytes, one_phase: bool = False) -> Any:
    return fake(XAPrepareEvent, pos, xid_gtrid=gtrid, xid_bqual=b"", xid_format_id=1, one_phase=one_phase)


def test_mysql_xa_rows_are_held_until_the_outcome() -> None:
    row = {"values": {"meta_id": 1, "post_id": 2, "meta_key": "k", "meta_value": "v"}}

    class MySQLGtid(GtidEvent):  # type: ignore[misc]
        gtid = "3E11FA47-71CA-11E1-9E33-C80AA9429562:5"  # a property in the library

    def mysql_gtid(pos: int) -> Any:
        return fake(MySQLGtid, pos)

    items = read([
        fake(QueryEvent, 100, query="CREATE TABLE t (a INT)"),  # a boundary: the XA one is re-read from 100
        mysql_gtid(200),
        fake(QueryEvent, 300, query="XA START X'6b31',X'',1"),  # MySQL: no BEGIN, XA START opens it
        fake(TableMapEvent, 400),
        fake(WriteRowsEvent, 500, table="wp_postmeta", rows=[row]),
        fake(QueryEvent, 600, query="XA END X'6b31',X'',1"),
        xa_prepare(700, b"k1"),
        mysql_gtid(800),
        fake(QueryEvent, 900, query="XA ROLLBACK X'6b31',X'',1"),
        mysql_gtid(1000),
        fake(QueryEvent, 1100, query="XA START X'6b32',X'',1"),
        fake(WriteRowsEvent, 1200, table="wp_postmeta", rows=[row]),
        fake(QueryEvent, 1300, query="XA END X'6b32',X'',1"),
        xa_prepare(1400, b"k2", one_phase=True),  # XA COMMIT ... ONE PHASE
    ])  # fmt: skip
    assert [type(i) for i in items] == [TransactionEnd, XAPrepared, XAOutcome, XAPrepared]
    prepared, outcome, one_phase = items[1:]
    assert prepared.ref.xid == "X'6b31',X'',1" and not prepared.one_phase
    assert (str(prepared.ref.start), str(prepared.ref.end)) == ("binlog.000001:100", "binlog.000001:700")
    assert [type(i) for i in prepared.items] == [RowChange] and prepared.items[0].pos == 400
    assert (outcome.xid, outcome.committed, outcome.end.next_position.pos) == ("X'6b31',X'',1", False, 900)
    assert one_phase.one_phase and len(one_phase.items) == 1


def test_xids_as_the_server_writes_them_and_quoted() -> None:
    assert parse_xid("X'7831',X'',1") == "X'7831',X'',1"
    assert parse_xid("X'7A',X'6231',7") == "X'7a',X'6231',7"
    assert parse_xid("'x1'") == "X'7831',X'',1"
    assert parse_xid("'it''s','b',3") == "X'" + b"it's".hex() + "',X'62',3"
    assert parse_xid("nonsense") is None


class _Binlogs(Server):
    """A Server whose SHOW BINARY LOGS / SHOW BINLOG EVENTS answers are given."""

    def __init__(self, logs: list[str], gtid_list: str) -> None:
        self._logs, self._gtid_list = logs, gtid_list

    def query(self, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
        if sql == "SHOW BINARY LOGS":
            return [(name, 1000) for name in self._logs]
        assert sql.startswith("SHOW BINLOG EVENTS IN 'binlog.000008'")
        return [
            ("binlog.000008", 4, "Format_desc", 1, 256, "Server ver"),
            ("binlog.000008", 256, "Gtid_list", 1, 299, self._gtid_list),
        ]


@pytest.mark.parametrize(
    ("gtid_list", "gtid", "resumes"),
    [
        ("[0-101-9]", "0-101-9", True),  # nothing after the checkpoint's transaction
        ("[0-101-9,0-102-7]", "0-101-9", True),  # another server's older GTID in the same domain
        ("[0-101-10]", "0-101-9", False),  # a transaction after it: a gap
        ("[0-102-10,0-101-9]", "0-101-9", False),
        ("[0-101-9,1-101-3]", "0-101-9", False),  # another domain may have written after it
        ("[]", "0-101-9", False),
        ("[0-101-9]", None, False),  # no GTID in the checkpoint: cannot tell
        ("[0-101-9]", "3E11FA47-71CA-11E1-9E33-C80AA9429562:9", False),
    ],
)
def test_a_purged_checkpoint_file_is_a_gap_unless_the_next_file_proves_otherwise(
    gtid_list: str, gtid: str | None, resumes: bool
) -> None:
    server = _Binlogs(["binlog.000008", "binlog.000009"], gtid_list)
    at_end = BinlogPosition("binlog.000007", 5506)
    if resumes:
        assert server.resume_position(at_end, gtid) == BinlogPosition("binlog.000008", 4)
    else:
        with pytest.raises(PositionGoneError, match=r"oldest available: binlog\.000008"):
            server.resume_position(at_end, gtid)
    assert server.resume_position(BinlogPosition("binlog.000009", 4), gtid) == BinlogPosition("binlog.000009", 4)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("TRUNCATE wp_postmeta", [("truncated", "wp_postmeta", None, None)]),
        ("truncate table `wp`.`wp_posts`", [("truncated", "wp_posts", None, None)]),
        ("TRUNCATE other.wp_posts", []),  # another database's table of the same name
        ("DROP TABLE `wp_7_posts`,`wp_x` /* generated by server */", [
            ("dropped", "wp_7_posts", None, None), ("dropped", "wp_x", None, None)]),
        ("DROP TABLE IF EXISTS wp.wp_postmeta", [("dropped", "wp_postmeta", None, None)]),
        ("DROP TEMPORARY TABLE wp_posts", []),
        ("RENAME TABLE wp_posts TO wp_posts_old, wp_posts_new TO wp_posts", [
            ("renamed", "wp_posts", "wp_posts", "wp_posts_old"),
            ("renamed", "wp_posts_old", "wp_posts", "wp_posts_old"),
            ("renamed", "wp_posts_new", "wp_posts_new", "wp_posts"),
            ("renamed", "wp_posts", "wp_posts_new", "wp_posts")]),
        ("RENAME TABLE wp_postmeta TO archive.wp_postmeta", [
            ("renamed", "wp_postmeta", "wp_postmeta", "archive.wp_postmeta")]),
        ("ALTER TABLE wp_posts RENAME TO wp_posts_old", [
            ("renamed", "wp_posts", "wp_posts", "wp_posts_old"),
            ("renamed", "wp_posts_old", "wp_posts", "wp_posts_old")]),
        ("ALTER TABLE wp_posts RENAME COLUMN a TO b", []),
        ("ALTER TABLE wp_posts ADD COLUMN renamed INT", []),
        ("CREATE TABLE wp_posts2 LIKE wp_posts", []),
    ],
)  # fmt: skip
def test_table_level_ddl_is_recognised(query: str, expected: list[tuple[str, str, str | None, str | None]]) -> None:
    assert table_ddl(query, "wp", "wp") == expected


def test_table_ddl_of_captured_tables_becomes_table_events() -> None:
    src = BinlogSource(parse_config({"wordpress": {"database": "wp"}}), BinlogPosition("binlog.000001", 4))
    items = list(src._read(iter([  # type: ignore[arg-type]
        gtid(200, standalone=True),
        fake(QueryEvent, 300, query="TRUNCATE wp_postmeta", schema=b"wp"),
        gtid(400, standalone=True),
        fake(QueryEvent, 500, query="TRUNCATE wp_options", schema=b"wp"),  # not captured
        gtid(600, standalone=True),
        fake(QueryEvent, 700, query="RENAME TABLE wp_3_posts TO wp_3_posts_old", schema=b"wp"),
    ])))  # fmt: skip
    assert [type(i) for i in items] == [TableChange, TransactionEnd, TransactionEnd, TableChange, TransactionEnd]
    truncated, renamed = items[0], items[3]
    assert (truncated.kind, truncated.table, truncated.pos, truncated.wp.blog_id) == (
        "truncated",
        "wp_postmeta",
        200,
        1,
    )
    assert (renamed.kind, renamed.wp.blog_id, renamed.renamed_to) == ("renamed", 3, "wp_3_posts_old")
    mapper = Mapper(WordPressState(NoLookup()), 101)
    for item, model in ((truncated, ev.TableTruncated), (renamed, ev.TableRenamed)):
        event = mapper.table_event(item)
        model.model_validate(event)
        assert event["post_id"] is None and event["source"]["pos"] == item.pos
    assert mapper.table_event(truncated)["event_id"] == "101:binlog.000001:200:0"


class _EndedReader:
    """What the library's reader does when the server sends its dump thread an EOF packet (MySQL on
    shutdown): the iteration just ends."""

    def __iter__(self) -> Any:
        return iter(())

    def close(self) -> None:
        pass


def test_a_live_stream_the_server_ends_is_a_lost_connection_not_the_end(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(BinlogSource, "_open", lambda self: _EndedReader())
    live = BinlogSource(parse_config({}), BinlogPosition("binlog.000001", 4))
    with pytest.raises(SourceError, match="ended the binlog stream") as raised:
        list(live.items())
    assert not raised.value.fatal  # the pipeline reconnects from the last checkpoint
    # A non-blocking read (replay) really is done at the end of the binlog.
    assert list(BinlogSource(parse_config({}), BinlogPosition("binlog.000001", 4), blocking=False).items()) == []
