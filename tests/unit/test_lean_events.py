"""fast_decoding.lean_event against the library's events, on GTID and XID packets built here byte
by byte (any header values, MariaDB's GTID flags, checksums on and off): the fields the source loop
reads are the library's, and what the lean path does not take goes back to the library."""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pymysql.protocol import MysqlPacket
from pymysqlreplication.constants import BINLOG
from pymysqlreplication.event import GtidEvent, MariadbGtidEvent, QueryEvent, XidEvent
from pymysqlreplication.packet import BinLogPacketWrapper
from pymysqlreplication.row_event import TableMapEvent

from cdc.source import binlog, fast_decoding

_U32, _U64 = st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1)


class _Ctl:
    charset = "utf8mb4"

    def _get_dbms(self) -> str:
        return "mysql"


def _packet(event_type: int, timestamp: int, server_id: int, log_pos: int, body: bytes, checksum: bool) -> bytes:
    trailer = b"\x01\x02\x03\x04" if checksum else b""
    size = 19 + len(body) + len(trailer)
    return b"\x00" + struct.pack("<IBIIIH", timestamp, event_type, server_id, size, log_pos, 0) + body + trailer


def _params(checksum: bool, verify: bool = False) -> dict[str, Any]:
    # The reader lists the memoized table map class (fast_decoding.install puts it in the event map).
    allowed = frozenset(
        {XidEvent, GtidEvent, MariadbGtidEvent, QueryEvent, TableMapEvent, fast_decoding.MemoTableMapEvent}
    )
    args = ((8, 0, 40), checksum, allowed, None, None, None, None, False, False, verify, False, False, False, None)
    return {**fast_decoding.wrapper_params(args), "args": args}


def _library(data: bytes, params: dict[str, Any]) -> Any:
    """The library's own event for the packet (its wrapper, not FastPacketWrapper)."""
    return BinLogPacketWrapper(MysqlPacket(data, "utf8mb4"), {}, _Ctl(), *params["args"]).event


def _same_view(lean: Any, library: Any) -> None:
    assert binlog._kind(type(lean)) == binlog._kind(type(library))
    assert (lean.timestamp, lean.packet.log_pos, lean.packet.event_size) == (
        library.timestamp, library.packet.log_pos, library.packet.event_size,
    )  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    timestamp=_U32, server_id=_U32, log_pos=_U32, checksum=st.booleans(), xid=_U64, seq=_U64, domain=_U32,
    flags=st.integers(0, 255), sid=st.binary(min_size=16, max_size=16), gno=st.integers(1, 2**63 - 1),
)  # fmt: skip
def test_gtid_and_xid_events_read_as_the_librarys(
    timestamp: int, server_id: int, log_pos: int, checksum: bool, xid: int, seq: int, domain: int, flags: int,
    sid: bytes, gno: int,
) -> None:  # fmt: skip
    params = _params(checksum)
    ctl = _Ctl()
    fast_decoding.enable(ctl)
    data = _packet(BINLOG.XID_EVENT, timestamp, server_id, log_pos, struct.pack("<Q", xid), checksum)
    lean, library = fast_decoding.lean_event(data, params, {}, ctl), _library(data, params)
    _same_view(lean, library)
    assert lean.xid == library.xid
    body = struct.pack("<QIB", seq, domain, flags) + b"\x00" * 6
    data = _packet(BINLOG.MARIADB_GTID_EVENT, timestamp, server_id, log_pos, body, checksum)
    lean, library = fast_decoding.lean_event(data, params, {}, ctl), _library(data, params)
    _same_view(lean, library)
    assert (lean.gtid, lean.flags) == (library.gtid, library.flags)
    body = b"\x01" + sid + struct.pack("<QBQQ", gno, 2, 7, 8) + b"\x00" * 20
    data = _packet(BINLOG.GTID_LOG_EVENT, timestamp, server_id, log_pos, body, checksum)
    lean, library = fast_decoding.lean_event(data, params, {}, ctl), _library(data, params)
    _same_view(lean, library)
    assert lean.gtid == library.gtid


def test_what_the_lean_path_leaves_to_the_library() -> None:
    ctl = _Ctl()
    fast_decoding.enable(ctl)
    xid = _packet(BINLOG.XID_EVENT, 1, 2, 300, struct.pack("<Q", 9), True)
    assert fast_decoding.lean_event(xid, _params(True), {}, ctl) is not None
    assert fast_decoding.lean_event(xid, _params(True, verify=True), {}, ctl) is None, "checksum verification"
    assert fast_decoding.lean_event(xid[:-8], _params(False), {}, ctl) is None, "a cut-off XID"
    begin = _packet(BINLOG.QUERY_EVENT, 1, 2, 300, b"\x00" * 13 + b"\x00\x00wp\x00BEGIN", False)
    assert fast_decoding.lean_event(begin, _params(False), {}, ctl) is None, "a query not parsed yet"
    table_map = _packet(BINLOG.TABLE_MAP_EVENT, 1, 2, 300, b"\x01" + b"\x00" * 20, False)
    assert fast_decoding.lean_event(table_map, _params(False), {}, ctl) is None, "a table map not parsed yet"
    rotate = _packet(BINLOG.ROTATE_EVENT, 1, 2, 300, struct.pack("<Q", 4) + b"binlog.000002", False)
    assert fast_decoding.lean_event(rotate, _params(False), {}, ctl) is None
    # The switch off (no memos on the control connection), or a reader without one of the classes
    # the lean objects stand for (the library would drop those events): the wrapper's path.
    allowed = _params(False)["allowed_events"]
    assert fast_decoding.lean_events_apply(ctl, allowed)
    assert not fast_decoding.lean_events_apply(_Ctl(), allowed)
    assert not fast_decoding.lean_events_apply(ctl, allowed - {XidEvent})
