"""fast_decoding's one-loop row reader against the library's own per-row loop, on row images built
here byte by byte (WordPress's column types, NULLs, zero dates, utf8mb4, bytes invalid in the
column's character set, binary) and on the same images cut short or with bytes overwritten: the
same rows, or both fail (the source then dead-letters the event); never anything else."""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pymysql.protocol import MysqlPacket
from pymysqlreplication.column import Column
from pymysqlreplication.constants import BINLOG, FIELD_TYPE
from pymysqlreplication.packet import BinLogPacketWrapper
from pymysqlreplication.table import Table

from cdc.core.values import RawValue
from cdc.source import fast_decoding
from cdc.source.fast_decoding import FastUpdateRowsEvent, FastWriteRowsEvent

# wp_posts-like: ID bigint unsigned, post_date datetime, post_title text (utf8mb4), post_name
# varchar(200) utf8mb4, guid varchar(255) latin1, post_content longtext, a nullable column a plugin
# added (bigint signed), and a binary one.
COLUMNS = [
    Column(type=FIELD_TYPE.LONGLONG, name="ID", unsigned=True, is_primary=True, character_set_name=None),
    Column(type=FIELD_TYPE.DATETIME2, name="post_date", fsp=0, unsigned=False, is_primary=False,
           character_set_name=None),
    Column(type=FIELD_TYPE.BLOB, name="post_title", length_size=2, unsigned=False, is_primary=False,
           character_set_name="utf8mb4"),
    Column(type=FIELD_TYPE.VARCHAR, name="post_name", max_length=800, unsigned=False, is_primary=False,
           character_set_name="utf8mb4"),
    Column(type=FIELD_TYPE.VARCHAR, name="guid", max_length=255, unsigned=False, is_primary=False,
           character_set_name="latin1"),
    Column(type=FIELD_TYPE.BLOB, name="post_content", length_size=4, unsigned=False, is_primary=False,
           character_set_name="utf8mb4"),
    Column(type=FIELD_TYPE.LONGLONG, name="extra", unsigned=False, is_primary=False, character_set_name=None),
    Column(type=FIELD_TYPE.BLOB, name="bin", length_size=1, unsigned=False, is_primary=False,
           character_set_name="binary"),
]  # fmt: skip
FULL = bytes([0xFF])  # 8 columns, all present


class _Ctl:
    charset = "utf8mb4"


def _datetime2(y: int, mo: int, d: int, h: int, mi: int, s: int) -> bytes:
    v = (1 << 39) | ((y * 13 + mo) << 22) | (d << 17) | (h << 12) | (mi << 6) | s
    return v.to_bytes(5, "big")


def _image(row: dict[str, Any]) -> bytes:
    nulls = sum(1 << i for i, c in enumerate(COLUMNS) if row[c.name] is None)
    out = bytearray([nulls])
    for c in COLUMNS:
        v = row[c.name]
        if v is None:
            continue
        if c.type == FIELD_TYPE.LONGLONG:
            out += struct.pack("<Q" if c.unsigned else "<q", v)
        elif c.type == FIELD_TYPE.DATETIME2:
            out += _datetime2(*v)
        else:
            size = c.length_size if c.type == FIELD_TYPE.BLOB else (2 if c.max_length > 255 else 1)
            out += len(v).to_bytes(size, "little") + v
    return bytes(out)


def _event(cls: type, body: bytes, fast: bool) -> Any:
    """A rows event of `cls` standing where the library leaves one after its header: the packet at
    the first row image."""
    table = Table(1, "wp", "wp_posts", [Column(**vars(c)) for c in COLUMNS], primary_key="ID")
    prefix = b"\x00" + bytes(19)  # the OK byte and the event header, read before the rows
    packet = MysqlPacket(prefix + body + b"\x00" * 4, "utf8mb4")  # and the checksum after them
    packet._position = len(prefix)
    wrapper = BinLogPacketWrapper.__new__(BinLogPacketWrapper)
    wrapper.packet = packet
    wrapper.read_bytes = 0
    wrapper._BinLogPacketWrapper__data_buffer = b""
    ctl = _Ctl()
    if fast:
        fast_decoding.enable(ctl)
    ev = cls.__new__(cls)
    ev.__dict__.update(
        packet=wrapper, table_map={1: table}, table_id=1, _ctl_connection=ctl, _ignore_decode_errors=False,
        complete=True, event_size=len(body), columns=table.columns, number_of_columns=len(COLUMNS),
        columns_present_bitmap=FULL, columns_present_bitmap2=FULL, schema="wp", table="wp_posts",
        event_type=BINLOG.UPDATE_ROWS_EVENT_V2 if cls is FastUpdateRowsEvent else BINLOG.WRITE_ROWS_EVENT_V2,
        _RowsEvent__rows=None, _RowsEvent__none_sources={}, _RowsEvent__use_column_name_cache=False,
        _RowsEvent__enable_logging=False,
    )  # fmt: skip
    return ev


def _rows(cls: type, body: bytes, fast: bool) -> tuple[str, Any]:
    ev = _event(cls, body, fast)
    try:
        rows = ev.rows
    except Exception as exc:  # what BinlogSource dead-letters
        return "failed", type(exc).__name__
    return "rows", (_comparable(rows), ev.packet.read_bytes, ev.packet.packet._position)


def _comparable(value: Any) -> Any:
    if isinstance(value, RawValue):
        return ("raw", value.raw, value.text, value.problem)
    if isinstance(value, dict):  # why a value is None: the library's own note, not compared (as in
        # tests/integration/test_fast_decoding.py); the fast loop's is tested below
        return {k: _comparable(v) for k, v in value.items() if not k.endswith("none_sources")}
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    return (type(value).__name__, value)


text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40).map(lambda s: s.encode("utf-8"))
odd_bytes = st.binary(max_size=40)  # often not UTF-8: a RawValue, as a non-strict sql_mode stores
dates = st.one_of(
    st.tuples(st.integers(1000, 9999), st.integers(1, 12), st.integers(1, 28), st.integers(0, 23),
              st.integers(0, 59), st.integers(0, 59)),
    st.tuples(st.integers(0, 9999), st.integers(0, 12), st.integers(0, 31), st.integers(0, 23),
              st.integers(0, 59), st.integers(0, 59)),  # zero and partial zero dates, February 31st
    st.just((0, 0, 0, 0, 0, 0)),
)  # fmt: skip
rows = st.fixed_dictionaries(
    {
        "ID": st.integers(0, 2**64 - 1),
        "post_date": dates,
        "post_title": st.one_of(text, odd_bytes),
        "post_name": text,
        "guid": st.binary(max_size=30),  # every byte is latin1
        "post_content": st.one_of(text, odd_bytes),
        "extra": st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
        "bin": st.one_of(st.none(), st.binary(max_size=20)),
    }
)


@settings(max_examples=200, deadline=None)
@given(images=st.lists(rows, min_size=1, max_size=4), update=st.booleans(), cut=st.integers(0, 10**6),
       overwrite=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=3))  # fmt: skip
def test_the_fast_row_loop_reads_what_the_librarys_loop_reads(
    images: list[dict[str, Any]], update: bool, cut: int, overwrite: list[tuple[int, int]]
) -> None:
    cls = FastUpdateRowsEvent if update else FastWriteRowsEvent
    body = b"".join(_image(r) for r in images)
    if update:  # before and after images of each row: here the next row's image is the after image
        body = b"".join(_image(a) + _image(b) for a, b in zip(images, images[1:] + images[:1], strict=True))
    assert _rows(cls, body, fast=True) == _rows(cls, body, fast=False)
    # Cut short (a truncated event) and overwritten bytes (lengths and null bitmaps that lie).
    damaged = bytearray(body[: cut % (len(body) + 1)])
    for at, value in overwrite:
        if damaged:
            damaged[at % len(damaged)] = value
    fast, library = _rows(cls, bytes(damaged), fast=True), _rows(cls, bytes(damaged), fast=False)
    if library[0] == "rows":
        assert fast == library
    else:
        assert fast[0] == "failed", fast


def test_whole_images_take_the_fast_loop_and_a_null_the_per_column_decoders() -> None:
    row = {
        "ID": 7, "post_date": (2026, 12, 1, 20, 0, 0), "post_title": "Grüße 😀".encode(), "post_name": b"x",
        "guid": b"caf\xe9", "post_content": b"\xff\xfe", "extra": None, "bin": b"\x00\x01",
    }  # fmt: skip
    zero = {**row, "post_date": (0, 0, 0, 0, 0, 0), "extra": -1}
    ev = _event(FastWriteRowsEvent, _image(row) + _image(zero), fast=True)
    calls = []
    real = FastWriteRowsEvent.__mro__[2]._fetch_one_row  # WriteRowsEvent's: the library's per-row loop
    try:
        FastWriteRowsEvent.__mro__[2]._fetch_one_row = lambda self: calls.append(1) or real(self)  # type: ignore[method-assign]
        got = ev.rows
    finally:
        FastWriteRowsEvent.__mro__[2]._fetch_one_row = real  # type: ignore[method-assign]
    assert calls == [], "the library's per-row loop was not used"
    first, second = got[0]["values"], got[1]["values"]
    assert first["post_title"] == "Grüße 😀" and first["guid"] == "café" and first["extra"] is None
    assert isinstance(first["post_content"], RawValue) and first["post_content"].raw == b"\xff\xfe"
    assert first["bin"] == b"\x00\x01" and first["ID"] == 7 and first["post_date"].year == 2026
    assert got[0]["none_sources"] == {"extra": "null"}
    assert second["post_date"] is None and second["extra"] == -1 and got[1]["none_sources"] == {"post_date": "null"}
