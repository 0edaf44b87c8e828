"""Pure parts of the MySQL-only events: the compressed-transaction payload, tagged GTIDs, GTID sets."""

from __future__ import annotations

import dataclasses
import struct
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st
from pymysqlreplication import binlogstream
from pymysqlreplication.gtid import GtidSet as LibraryGtidSet

from cdc.core.tables import TableKind
from cdc.mapping import events as ev
from cdc.mapping.mapper import Mapper
from cdc.mapping.state import NoLookup, WordPressState
from cdc.source import mysql_events
from cdc.source.mysql_events import (
    PayloadError,
    TransactionPayloadEvent,
    parse_payload_header,
    parse_tagged_gtid,
    read_varlen_signed,
    read_varlen_unsigned,
)
from cdc.source.server import GtidSet
from tests.rows import change, post_row

# Recorded on MySQL 9.7.4: the header of a Transaction_payload event (compression ZSTD,
# uncompressed 656 bytes, payload 313 bytes) and the body of a tagged GTID event for
# 30ac2105-ed70-11f1-9860-02fc00000001:mytag:1.
PAYLOAD_HEADER = bytes.fromhex("0201000303fc90020103fc390100")
TAGGED_GTID = bytes.fromhex(
    "02700000000260b102420ab503e022c5036102c004f103000000020404060a6d7974616708040a0c0c7feebd6fd18f61061089051283120b"
)


def test_payload_header_fields_and_start() -> None:
    fields, start = parse_payload_header(PAYLOAD_HEADER + b"frame")
    assert fields == {2: 0, 3: 656, 1: 313}
    assert start == len(PAYLOAD_HEADER)


def test_payload_header_skips_fields_it_does_not_know() -> None:
    # Compression NONE (255, length-encoded as fc ff 00), then a newer server's field 9 (3 bytes).
    fields, start = parse_payload_header(bytes.fromhex("0203fcff000903abcdef00") + b"x")
    assert fields == {2: 255} and start == 11
    with pytest.raises(PayloadError, match="end mark"):
        parse_payload_header(bytes.fromhex("020100"))


def encode_varlen(value: int) -> bytes:
    """mysql::serialization's writer, as its documentation describes it."""
    for n in range(1, 9):
        if value < 1 << (7 * n):
            return ((value << n) | ((1 << (n - 1)) - 1)).to_bytes(n, "little")
    return b"\xff" + value.to_bytes(8, "little")


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_varlen_unsigned_round_trips(value: int) -> None:
    data = b"\x07" + encode_varlen(value) + b"\x09"
    assert read_varlen_unsigned(data, 1) == (value, len(data) - 1)


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_varlen_signed_is_zigzag(value: int) -> None:
    zigzag = value << 1 if value >= 0 else ((-(value + 1)) << 1) | 1
    assert read_varlen_signed(encode_varlen(zigzag), 0)[0] == value


def test_tagged_gtid_event_body() -> None:
    sid, tag, gno, _flags = parse_tagged_gtid(TAGGED_GTID)
    assert (str(__import__("uuid").UUID(bytes=sid)), tag, gno) == ("30ac2105-ed70-11f1-9860-02fc00000001", "mytag", 1)
    with pytest.raises(ValueError, match="version"):
        parse_tagged_gtid(b"\x03" + TAGGED_GTID[1:])


def _inner_event(kind: int, body: bytes, ts: int = 1_700_000_000) -> bytes:
    return struct.pack("<IBIIIH", ts, kind, 7, 19 + len(body), 0, 0) + body


class _RecordingWrapper:
    seen: ClassVar[list[tuple[bytes, list[Any]]]] = []

    def __init__(self, packet: Any, table_map: Any, ctl: Any, *args: Any) -> None:
        self.seen.append((packet._data, list(args)))
        self.event = SimpleNamespace(kind=packet._data[5]) if packet._data[5] != 99 else None


def _payload(frame: bytes, compression: int = 0, uncompressed: int = 0) -> TransactionPayloadEvent:
    event = TransactionPayloadEvent.__new__(TransactionPayloadEvent)
    event.packet = SimpleNamespace(log_pos=5000)
    event.compression_type = compression
    event.uncompressed_size = uncompressed
    event._payload = frame
    args = [None] * len(mysql_events.WRAPPER_PARAMS)
    args[mysql_events.WRAPPER_PARAMS.index("use_checksum")] = False
    args[mysql_events.WRAPPER_PARAMS.index("verify_checksum")] = True
    event._wrapper_args = ({}, object(), tuple(args), {})
    return event


def test_inner_events_are_dressed_as_outer_ones_and_numbered(monkeypatch: pytest.MonkeyPatch) -> None:
    _RecordingWrapper.seen = []
    monkeypatch.setattr(binlogstream, "BinLogPacketWrapper", _RecordingWrapper)
    inner = [_inner_event(2, b"BEGIN-ish"), _inner_event(99, b"filtered"), _inner_event(16, b"\x01" * 8)]
    raw = b"".join(inner)
    got = list(_payload(zstandard.ZstdCompressor().compress(raw), uncompressed=len(raw)).events())
    # Filtered events (wrapper.event None) are not yielded but still count in the ordinals.
    assert [(e.kind, e.payload_index) for e in got] == [(2, 0), (16, 2)]
    for (data, args), original in zip(_RecordingWrapper.seen, inner, strict=True):
        assert data[0] == 0  # the OK byte of a dump packet
        assert struct.unpack_from("<I", data, 10)[0] == len(original) + 4  # size with the checksum placeholder
        assert struct.unpack_from("<I", data, 14)[0] == 5000  # end_log_pos: the payload's end
        assert data[18:] == original[17:] + b"\0\0\0\0"
        assert args[mysql_events.WRAPPER_PARAMS.index("use_checksum")] is True
        assert args[mysql_events.WRAPPER_PARAMS.index("verify_checksum")] is False
    # Uncompressed payloads (compression type NONE) take the same path.
    assert [e.kind for e in _payload(raw, compression=255).events()] == [2, 16]


def test_bad_payloads_are_errors_not_silent_losses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(binlogstream, "BinLogPacketWrapper", _RecordingWrapper)
    raw = _inner_event(16, b"\x01" * 8)
    frame = zstandard.ZstdCompressor().compress(raw)
    with pytest.raises(PayloadError, match="compression type 7"):
        list(_payload(frame, compression=7).events())
    with pytest.raises(PayloadError, match="cut off"):
        list(_payload(zstandard.ZstdCompressor().compress(raw[:-3])).events())
    with pytest.raises(PayloadError, match="corrupt"):
        list(_payload(b"\x00\x00\x00\x00" + frame[4:]).events())  # not a zstd frame
    with pytest.raises(PayloadError, match="header says"):
        list(_payload(frame, uncompressed=len(raw) + 1).events())


def test_gtid_sets_with_tags_parse_and_keep_the_tags() -> None:
    text = "30AC2105-ED70-11F1-9860-02FC00000001:1-7:9:MyTag:1:3-4:2,\n1c2aad49-ae92-409a-b4df-d05a03e4702e:42"
    with pytest.raises(Exception, match="GTID format is incorrect"):
        LibraryGtidSet(text)  # why wpcdc parses them itself
    g = GtidSet.parse(text)
    assert str(g) == "1c2aad49-ae92-409a-b4df-d05a03e4702e:42,30ac2105-ed70-11f1-9860-02fc00000001:1-7:9:mytag:1-4"
    assert GtidSet.parse(str(g)) == g
    assert "30ac2105-ed70-11f1-9860-02fc00000001:mytag:2" in g
    assert "30ac2105-ed70-11f1-9860-02fc00000001:mytag:5" not in g
    assert "30ac2105-ed70-11f1-9860-02fc00000001:8" not in g and "30ac2105-ed70-11f1-9860-02fc00000001:9" in g
    assert "30ac2105-ed70-11f1-9860-02fc00000001:2" in g  # untagged and tagged numbers are separate
    mariadb = GtidSet.parse("0-1-100,1-2-5")
    assert "0-1-99" in mariadb and "1-2-6" not in mariadb and str(mariadb) == "0-1-100,1-2-5"
    assert str(GtidSet.parse("")) == ""
    for bad in ("nonsense", "30ac2105-ed70-11f1-9860-02fc00000001:5-3", "30ac2105-ed70-11f1-9860-02fc00000001:-x"):
        with pytest.raises(ValueError):
            GtidSet.parse(bad)


def test_rows_of_a_compressed_transaction_carry_the_inner_event_ordinal() -> None:
    mapper = Mapper(WordPressState(NoLookup()), 101)
    c = dataclasses.replace(change(TableKind.POSTS, "insert", after=post_row(5), pos=630, row=1), event=3)
    event = mapper.map(c).events[0]
    assert event["event_id"] == "101:binlog.000003:630.3:1"
    assert event["source"]["event"] == 3 and event["source"]["pos"] == 630
    ev.EVENT_MODELS[event["event_type"]].model_validate(event)
    plain = mapper.map(change(TableKind.POSTS, "insert", after=post_row(6), pos=700)).events[0]
    assert plain["event_id"] == "101:binlog.000003:700:0" and "event" not in plain["source"]


def test_an_unreadable_payload_stops_the_stream_naming_the_transaction_and_the_way_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cdc.errors import SourceError
    from cdc.source.binlog import _unpack_payloads

    monkeypatch.setattr(binlogstream, "BinLogPacketWrapper", _RecordingWrapper)
    bad = _payload(b"whatever", compression=7)
    bad.packet.event_size = 300  # the whole event, header included: it starts at 5000 - 300

    class Reader(list[Any]):
        log_file = "binlog.000042"

    with pytest.raises(SourceError) as info:
        list(_unpack_payloads(Reader([bad])))  # type: ignore[arg-type]
    text = str(info.value) + " " + str(info.value.fix)
    assert "compressed transaction at binlog.000042:4700" in text and "compression type 7" in text
    assert "wpcdc checkpoint set binlog.000042:5000" in text and info.value.fatal
