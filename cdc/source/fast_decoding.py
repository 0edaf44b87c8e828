"""Faster decoding for python-mysql-replication, with output identical to the library's.

Two hot spots on a WordPress binlog (see shared/notes/binlog-pitfalls.md):

1. TABLE_MAP: MariaDB writes a table map before every rows event and the library re-parses its
   optional metadata and rebuilds its column objects each time (55-60 % of the reader's CPU). A
   table map's meaning is a function of its bytes, so the parse is memoized per exact byte string.
2. Row images: the library reads every column of every row through a long if/elif chain and
   several method calls per value. For tables whose columns are all of the common types
   (integers, floats, strings, blobs, DATETIME2/TIMESTAMP2/DATE/YEAR; every WordPress core table)
   a per-table plan of small decoders reads straight from the packet buffer. Anything else
   (DECIMAL, JSON, ENUM/SET, BIT, TIME, partial images) goes through the library unchanged.

3. Event objects: per row change a rows event, a table map, a GTID and an XID event (and on MySQL
   a BEGIN query event), each built through the library's generic constructor with a dozen keyword
   arguments; FastPacketWrapper sets their attributes directly (table maps and query events from a
   parse memoized per exact bytes), falling back to the library for anything unusual.

4. Values a non-strict sql_mode let in (bytes not valid in a text column's character set, dates
   with a zero month or day) become a `cdc.core.values.RawValue` in that column, in the fast
   decoders and in the library's own readers alike (overridden below), instead of failing the
   whole rows event or turning into null.

All are switched per reader by an attribute on its control connection (every event is handed
that connection), so `source.fast_decoding: false` restores the library's own code paths; a test
decodes the same binlog both ways and compares every event.
"""

from __future__ import annotations

import codecs
import datetime
import struct
from collections.abc import Callable
from typing import Any

from pymysqlreplication import binlogstream
from pymysqlreplication.binlogstream import BinLogPacketWrapper
from pymysqlreplication.constants import BINLOG, FIELD_TYPE
from pymysqlreplication.event import BinLogEvent
from pymysqlreplication.row_event import DeleteRowsEvent, TableMapEvent, UpdateRowsEvent, WriteRowsEvent
from pymysqlreplication.table import Table

from cdc.core.values import invalid_date, invalid_datetime, invalid_text
from cdc.source import mysql_events

MEMO_ATTRIBUTE = "_wpcdc_table_map_memo"
_PLAN_ATTRIBUTE = "_wpcdc_row_plan"
_MAX_ENTRIES = 4096
# Set per event by BinLogEvent.__init__ (or refer to the event's own packet): never shared.
_PER_EVENT = frozenset({"packet", "table_map", "timestamp", "_ctl_connection"})
_UNSET = object()

Decoder = Callable[[bytes, int], tuple[Any, int]]


class MemoTableMapEvent(TableMapEvent):
    def __init__(
        self, from_packet: Any, event_size: int, table_map: dict[int, Any], ctl_connection: Any, **kwargs: Any
    ):
        memo: dict[bytes, dict[str, Any]] | None = getattr(ctl_connection, MEMO_ATTRIBUTE, None)
        if memo is None:
            super().__init__(from_packet, event_size, table_map, ctl_connection, **kwargs)
            return
        raw = from_packet.packet
        # event_size excludes the header and the CRC32 trailer, which covers the header (timestamp,
        # position) and so differs between otherwise identical table maps.
        body = raw._position
        key = bytes(raw._data[body : body + event_size])
        parsed = memo.get(key)
        if parsed is None:
            super().__init__(from_packet, event_size, table_map, ctl_connection, **kwargs)
            if type(getattr(self, "table_obj", None)) is Table:
                self.table_obj.__class__ = _CachedTable
            if raw._position - body != event_size:
                return  # the lean wrapper's memo hit consumes the whole event, as this parse did not
            if len(memo) >= _MAX_ENTRIES:
                memo.clear()
            memo[key] = {k: v for k, v in self.__dict__.items() if k not in _PER_EVENT}
            return
        BinLogEvent.__init__(self, from_packet, event_size, table_map, ctl_connection, **kwargs)
        self.__dict__.update(parsed)
        if self._processed:
            table_map[self.table_id] = self.table_obj


class _CachedTable(Table):
    """Every rows event reads `table.data["primary_key"]`, and `data` rebuilds a dict of the table's
    attributes each time. A memoized table never changes after its parse, so the dict is kept."""

    @property
    def data(self) -> dict[str, Any]:
        cached: dict[str, Any] | None = self.__dict__.get("_wpcdc_data")
        if cached is None:
            cached = self.__dict__["_wpcdc_data"] = Table.data.fget(self)  # type: ignore[attr-defined]
        return cached


# -- row images ----------------------------------------------------------------------------------


def _fixed(fmt: str) -> Decoder:
    st = struct.Struct(fmt)
    unpack, size = st.unpack_from, st.size

    def dec(data: bytes, pos: int) -> tuple[Any, int]:
        return unpack(data, pos)[0], pos + size

    return dec


def _int24(signed: bool) -> Decoder:
    def dec(data: bytes, pos: int) -> tuple[Any, int]:
        return int.from_bytes(data[pos : pos + 3], "little", signed=signed), pos + 3

    return dec


def _text(length_size: int, encoding: str | None) -> Decoder:
    def dec(data: bytes, pos: int) -> tuple[Any, int]:
        end = pos + length_size
        n = data[pos] if length_size == 1 else int.from_bytes(data[pos:end], "little")
        raw = data[end : end + n]
        if encoding is None:
            return raw, end + n
        try:
            return raw.decode(encoding), end + n
        except UnicodeDecodeError:  # stored in a non-strict sql_mode: this value, not the whole event
            return invalid_text(raw, encoding), end + n

    return dec


def _fsp_reader(fsp: int) -> tuple[int, Callable[[bytes, int], int]]:
    size = {1: 1, 2: 1, 3: 2, 4: 2, 5: 3, 6: 3}.get(fsp, 0)

    def micro(data: bytes, pos: int) -> int:
        if not size:
            return 0
        m = int.from_bytes(data[pos : pos + size], "big", signed=True)
        if fsp % 2:
            m = int(m / 10)
        return m * (10 ** (6 - fsp))

    return size, micro


def _datetime2(fsp: int) -> Decoder:
    size, micro = _fsp_reader(fsp)

    def dec(data: bytes, pos: int) -> tuple[Any, int]:
        v = int.from_bytes(data[pos : pos + 5], "big")
        ym = (v >> 22) & 0x1FFFF
        parts = (ym // 13, ym % 13, (v >> 17) & 31, (v >> 12) & 31, (v >> 6) & 63, v & 63)
        m = micro(data, pos + 5)
        try:
            t = datetime.datetime(*parts)
        except ValueError:  # null for the zero date, the server's text for a partial one (2024-00-15)
            return invalid_datetime(*parts, m, fsp), pos + 5 + size
        return (t.replace(microsecond=m) if m > 0 else t), pos + 5 + size

    return dec


def _timestamp2(fsp: int) -> Decoder:
    size, micro = _fsp_reader(fsp)
    utc = datetime.datetime.utcfromtimestamp

    def dec(data: bytes, pos: int) -> tuple[Any, int]:
        t = utc(int.from_bytes(data[pos : pos + 4], "big", signed=True))
        m = micro(data, pos + 4)
        return (t.replace(microsecond=m) if m > 0 else t), pos + 4 + size

    return dec


def _date(data: bytes, pos: int) -> tuple[Any, int]:
    v = data[pos] | (data[pos + 1] << 8) | (data[pos + 2] << 16)
    return _date_value((v >> 9) & 0x7FFF, (v >> 5) & 15, v & 31), pos + 3


def _date_value(year: int, month: int, day: int) -> Any:
    try:
        return datetime.date(year, month, day)
    except ValueError:  # null for 0000-00-00, the server's text for 2024-00-15 or 2024-02-31
        return invalid_date(year, month, day)


def _year(data: bytes, pos: int) -> tuple[Any, int]:
    return data[pos] + 1900, pos + 1


# How the generated straight-line code reads a column: ("fixed", struct format), ("text", length
# size, encoding or None for raw bytes) or ("call", decoder) for the rest.
Spec = tuple[Any, ...]


def _decoder(column: Any, unsigned: bool) -> tuple[Decoder, Spec] | None:
    t = column.type
    fixed = {
        FIELD_TYPE.TINY: "B" if unsigned else "b",
        FIELD_TYPE.SHORT: "H" if unsigned else "h",
        FIELD_TYPE.LONG: "I" if unsigned else "i",
        FIELD_TYPE.LONGLONG: "Q" if unsigned else "q",
        FIELD_TYPE.FLOAT: "f",
        FIELD_TYPE.DOUBLE: "d",
    }.get(t)
    if fixed is not None:
        return _fixed("<" + fixed), ("fixed", fixed)
    if t in (FIELD_TYPE.VARCHAR, FIELD_TYPE.STRING, FIELD_TYPE.BLOB):
        size = column.length_size if t == FIELD_TYPE.BLOB else (2 if column.max_length > 255 else 1)
        encoding = _encoding(column.character_set_name)
        return _text(size, encoding), ("text", size, encoding)
    dec: Decoder | None = None
    if t == FIELD_TYPE.INT24:
        dec = _int24(not unsigned)
    elif t == FIELD_TYPE.DATETIME2:
        if not column.fsp:  # WordPress's dates: inlined by the generated decoder
            return _datetime2(0), ("datetime2",)
        dec = _datetime2(column.fsp)
    elif t == FIELD_TYPE.TIMESTAMP2:
        dec = _timestamp2(column.fsp)
    elif t == FIELD_TYPE.DATE:
        dec = _date
    elif t == FIELD_TYPE.YEAR:
        dec = _year
    return (dec, ("call", dec)) if dec is not None else None


class _Plan:
    __slots__ = (
        "columns", "full_bitmap", "full_bitmap_padded", "no_nulls", "no_nulls_padded", "null_bytes", "straight",
    )  # fmt: skip

    def __init__(self, columns: list[tuple[str, Decoder]], specs: list[Spec]) -> None:
        n = len(columns)
        self.columns = columns
        self.null_bytes = (n + 7) // 8
        self.full_bitmap = ((1 << n) - 1).to_bytes(self.null_bytes, "little") if n else b""
        # MySQL sets the columns bitmap's unused high bits, MariaDB does not (42 columns: MySQL sends
        # ff..ff, MariaDB ff..03); the null bitmap the library reads is the same size either way.
        self.full_bitmap_padded = b"\xff" * self.null_bytes
        # A row without NULLs: the servers set the bitmap's unused high bits (seen: 0xf0 for 4 columns).
        self.no_nulls = bytes(self.null_bytes)
        self.no_nulls_padded = (((1 << (8 * self.null_bytes)) - 1) ^ ((1 << n) - 1)).to_bytes(self.null_bytes, "little")
        self.straight = _generate([name for name, _ in columns], specs)


def _generate(names: list[str], specs: list[Spec]) -> Callable[[bytes, int], tuple[dict[str, Any], int, bool]]:
    """One function per table for rows without NULLs (every row of WordPress's NOT NULL columns):
    straight-line reads, adjacent fixed-width columns in one struct call, no per-column calls for
    text. Same values as the per-column loop, which still handles rows with NULLs. It returns
    (values, position, maybe_none): maybe_none is False when no value can be None (a zero date is),
    so the caller can skip the library's per-row scan for None values."""
    env: dict[str, Any] = {
        "int_from_bytes": int.from_bytes,
        "datetime": datetime.datetime,
        "invalid_datetime": invalid_datetime,
    }
    lines = ["def decode(data, pos):", "    z = False"]
    i = 0
    while i < len(specs):
        spec = specs[i]
        if spec[0] == "fixed":
            j = i
            fmt = "<"
            while j < len(specs) and specs[j][0] == "fixed":
                fmt += specs[j][1]
                j += 1
            st = struct.Struct(fmt)
            env[f"s{i}"] = st.unpack_from
            targets = "".join(f"v{k}, " for k in range(i, j))
            lines.append(f"    {targets}= s{i}(data, pos)")
            lines.append(f"    pos += {st.size}")
            i = j
            continue
        if spec[0] == "text":
            size, encoding = spec[1], spec[2]
            if size == 1:
                lines.append("    n = data[pos]")
            else:
                lines.append(f"    n = int_from_bytes(data[pos : pos + {size}], 'little')")
            lines.append(f"    pos += {size}")
            read = "data[pos : pos + n]"
            lines.append(f"    v{i} = {read}.decode({encoding!r})" if encoding is not None else f"    v{i} = {read}")
            lines.append("    pos += n")
        elif spec[0] == "datetime2":  # what _datetime2(0) does, without a call per value
            lines += [
                "    x = int_from_bytes(data[pos : pos + 5], 'big')",
                "    ym = (x >> 22) & 0x1FFFF",
                "    try:",
                f"        v{i} = datetime(ym // 13, ym % 13, (x >> 17) & 31, (x >> 12) & 31, (x >> 6) & 63, x & 63)",
                "    except ValueError:",
                f"        v{i} = invalid_datetime(ym // 13, ym % 13, (x >> 17) & 31, (x >> 12) & 31, "
                "(x >> 6) & 63, x & 63, 0, 0)",
                "        z = True",
                "    pos += 5",
            ]
        else:
            env[f"d{i}"] = spec[1]
            lines.append(f"    v{i}, pos = d{i}(data, pos)")
            lines.append(f"    if v{i} is None:")
            lines.append("        z = True")
        i += 1
    body = ", ".join(f"{name!r}: v{k}" for k, name in enumerate(names))
    lines.append(f"    return {{{body}}}, pos, z")
    # Column names and encodings enter the source only as repr() literals; the rest is fixed text.
    exec(compile("\n".join(lines), "<wpcdc row decoder>", "exec"), env)
    return env["decode"]  # type: ignore[no-any-return]


def _encoding(charset: str | None) -> str | None:
    if charset is None:
        return "utf-8"
    from pymysqlreplication.row_event import RowsEvent

    encoding: str = RowsEvent.charset_to_encoding(charset)
    try:
        codecs.lookup(encoding)
    except LookupError:
        return None  # the library returns the raw bytes for codecs Python lacks (e.g. binary)
    return encoding


def _compile(table: Any) -> _Plan | None:
    columns = []
    specs = []
    for col in table.columns:
        if not col.name:
            return None  # no column names (binlog_row_metadata != FULL): the library's path handles it
        found = _decoder(col, bool(getattr(col, "unsigned", False)))
        if found is None:
            return None
        columns.append((col.name, found[0]))
        specs.append(found[1])
    return _Plan(columns, specs)


class _FastRows:
    def _wpcdc_plan(self, *bitmaps: bytes) -> _Plan | None:
        """The table's plan when these column bitmaps can be read by it, else None (the library's path)."""
        if getattr(self._ctl_connection, MEMO_ATTRIBUTE, None) is None or self._ignore_decode_errors:  # type: ignore[attr-defined]
            return None
        table = self.table_map[self.table_id]  # type: ignore[attr-defined]
        plan = getattr(table, _PLAN_ATTRIBUTE, _UNSET)
        if plan is _UNSET:
            plan = _compile(table)
            setattr(table, _PLAN_ATTRIBUTE, plan)
        if plan is None or self.packet._BinLogPacketWrapper__data_buffer:  # type: ignore[attr-defined]  # bytes pushed back by the library
            return None
        for bitmap in bitmaps:
            if bitmap != plan.full_bitmap and bitmap != plan.full_bitmap_padded:
                return None
        return plan  # type: ignore[no-any-return]

    def _read_column_data(self, cols_bitmap: bytes, row_image_type: Any = None) -> dict[str, Any]:
        plan = self._wpcdc_plan(cols_bitmap)
        if plan is None:
            return super()._read_column_data(cols_bitmap, row_image_type)  # type: ignore[misc]
        self.is_partial_json_update = False  # as the library's reader sets it (no partial images here)
        wrapper = self.packet  # type: ignore[attr-defined]
        raw = wrapper.packet
        start = raw._position
        values, pos, _ = _image(plan, raw._data, start)
        raw._position = pos
        wrapper.read_bytes += pos - start
        return values

    def _fetch_rows(self) -> None:
        """The library's loop (a method call per row, per image, and a Python scan of every row for
        None values), as one loop over the packet's bytes when every image is read by the plan."""
        update = isinstance(self, UpdateRowsEvent)
        bitmaps: tuple[bytes, ...] = (self.columns_present_bitmap,)  # type: ignore[attr-defined]
        if update:
            bitmaps += (self.columns_present_bitmap2,)  # type: ignore[attr-defined]
        plan = self._wpcdc_plan(*bitmaps) if self.complete else None  # type: ignore[attr-defined]
        if plan is None:
            super()._fetch_rows()  # type: ignore[misc]
            return
        self.is_partial_json_update = False
        rows: list[dict[str, Any]] = []
        self._RowsEvent__rows = rows
        wrapper = self.packet  # type: ignore[attr-defined]
        raw = wrapper.packet
        data = raw._data
        start = pos = raw._position
        end = start + self.event_size - wrapper.read_bytes  # type: ignore[attr-defined]  # the library's read_bytes < event_size
        none_sources = self._get_none_sources  # type: ignore[attr-defined]
        try:
            while pos < end:
                values, pos, maybe_none = _image(plan, data, pos)
                if update:
                    after, pos, after_none = _image(plan, data, pos)
                    rows.append(
                        {
                            "before_values": values,
                            "before_none_sources": none_sources(values) if maybe_none else {},
                            "after_values": after,
                            "after_none_sources": none_sources(after) if after_none else {},
                        }
                    )
                else:
                    rows.append({"values": values, "none_sources": none_sources(values) if maybe_none else {}})
        finally:  # where the library's reads would have left the packet, an error included
            raw._position = pos
            wrapper.read_bytes += pos - start

    # The library's own readers (used without fast decoding, and for tables the plan does not
    # cover) fail the whole rows event on one value that is not valid in its character set, and
    # turn partial zero dates into null. These give the same RawValue as the fast decoders.
    # (Python mangles the library's `self.__read_string` to these names.)

    def _RowsEvent__read_string(self, size: int, column: Any) -> Any:
        raw = self.packet.read_length_coded_pascal_string(size)  # type: ignore[attr-defined]
        encoding = _encoding(column.character_set_name)
        if encoding is None:
            # A character set Python lacks (binary): the raw bytes, as the library gives them, and
            # as the fast decoders do for an empty value too (b"".decode() looks no codec up: "").
            return raw
        try:
            return raw.decode(encoding, "ignore" if self._ignore_decode_errors else "strict")  # type: ignore[attr-defined]
        except UnicodeDecodeError:
            return invalid_text(raw, encoding)

    def _RowsEvent__read_datetime2(self, column: Any) -> Any:
        v = self.packet.read_int_be_by_size(5)  # type: ignore[attr-defined]
        ym = (v >> 22) & 0x1FFFF
        parts = (ym // 13, ym % 13, (v >> 17) & 31, (v >> 12) & 31, (v >> 6) & 63, v & 63)
        micro = self._RowsEvent__read_fsp(column)  # type: ignore[attr-defined]
        try:
            t = datetime.datetime(*parts)
        except ValueError:
            return invalid_datetime(*parts, micro, column.fsp)
        return t.replace(microsecond=micro) if micro > 0 else t

    def _RowsEvent__read_datetime(self) -> Any:
        day, time = divmod(self.packet.read_uint64(), 1_000_000)  # type: ignore[attr-defined]
        parts = (day // 10000, day % 10000 // 100, day % 100, time // 10000, time % 10000 // 100, time % 100)
        try:
            return datetime.datetime(*parts)
        except ValueError:
            return invalid_datetime(*parts, 0, 0)

    def _RowsEvent__read_date(self) -> Any:
        v = self.packet.read_uint24()  # type: ignore[attr-defined]
        return _date_value((v >> 9) & 0x7FFF, (v >> 5) & 15, v & 31)


def _image(plan: _Plan, data: bytes, start: int) -> tuple[dict[str, Any], int, bool]:
    """One row image at `start`: its values, where it ends, and whether a value may be None."""
    pos = start + plan.null_bytes
    nulls = data[start:pos]
    values: dict[str, Any]
    if nulls == plan.no_nulls_padded or nulls == plan.no_nulls:
        try:
            values, pos, maybe_none = plan.straight(data, pos)
        except UnicodeDecodeError:  # a bad value: the per-column decoders hand it on as a RawValue
            values, pos = _per_column(plan, nulls, data, pos)
            maybe_none = True
    else:
        values, pos = _per_column(plan, nulls, data, pos)
        maybe_none = True
    if pos > len(data):
        raise ValueError("row image runs past the end of the event")
    return values, pos, maybe_none


def _per_column(plan: _Plan, nulls: bytes, data: bytes, pos: int) -> tuple[dict[str, Any], int]:
    values: dict[str, Any] = {}
    for i, (name, dec) in enumerate(plan.columns):
        if nulls[i >> 3] & (1 << (i & 7)):
            values[name] = None
        else:
            values[name], pos = dec(data, pos)
    return values, pos


class FastWriteRowsEvent(_FastRows, WriteRowsEvent):
    pass


class FastUpdateRowsEvent(_FastRows, UpdateRowsEvent):
    pass


class FastDeleteRowsEvent(_FastRows, DeleteRowsEvent):
    pass


EVENT_CLASSES = (MemoTableMapEvent, FastWriteRowsEvent, FastUpdateRowsEvent, FastDeleteRowsEvent)


# -- events built directly -----------------------------------------------------------------------

_HEADER = struct.Struct("<cIBIIIH")
_XID = struct.Struct("<Q")
_MARIADB_GTID = struct.Struct("<QIB")
_MYSQL_GTID = struct.Struct("<B16sQB")
_MYSQL_GTID_CLOCK = struct.Struct("<QQ")
_ROWS_V2 = struct.Struct("<6sHH")
_ROWS_V1 = struct.Struct("<6sH")
_ROWS_V2_TYPES = frozenset({BINLOG.WRITE_ROWS_EVENT_V2, BINLOG.UPDATE_ROWS_EVENT_V2, BINLOG.DELETE_ROWS_EVENT_V2})
_ROWS_V1_TYPES = frozenset({BINLOG.WRITE_ROWS_EVENT_V1, BINLOG.UPDATE_ROWS_EVENT_V1, BINLOG.DELETE_ROWS_EVENT_V1})
_UPDATE_TYPES = frozenset({BINLOG.UPDATE_ROWS_EVENT_V1, BINLOG.UPDATE_ROWS_EVENT_V2})
_LEAN_TYPES = frozenset(
    {BINLOG.XID_EVENT, BINLOG.MARIADB_GTID_EVENT, BINLOG.GTID_LOG_EVENT, BINLOG.QUERY_EVENT, BINLOG.TABLE_MAP_EVENT}
    | _ROWS_V1_TYPES
    | _ROWS_V2_TYPES
)
# Query events (BEGIN, COMMIT, XA ...) are parsed once per exact bytes after the thread id and the
# execution time, like table maps; a long statement (DDL) is rare and not worth keeping.
QUERY_MEMO_ATTRIBUTE = "_wpcdc_query_memo"
_QUERY_MEMO_MAX_BYTES = 512
_QUERY_PER_EVENT = _PER_EVENT | {"slave_proxy_id", "execution_time"}


class FastPacketWrapper(BinLogPacketWrapper):
    """Every row change costs, besides its rows, a rows event, a table map and a transaction's GTID,
    XID (and on MySQL BEGIN) events, each built by the library through a generic constructor with a
    dozen keyword arguments. For those this sets the same attributes directly (all of them, so the
    objects are indistinguishable; the packet is left where the library leaves it): rows events of
    the common shapes, table maps whose parse is memoized, GTID/XID events, and query events whose
    parse is memoized. Anything else (checksum verification, a table not mapped, V2 extra data, a
    post-header of another length, 251+ columns), every other event, and every event of a reader
    without the switch, takes the library's constructor."""

    def __init__(self, from_packet: Any, table_map: Any, ctl_connection: Any, *args: Any, **kwargs: Any) -> None:
        self._build(from_packet, table_map, ctl_connection, args, kwargs, None)

    @classmethod
    def wrap(
        cls, from_packet: Any, table_map: Any, ctl_connection: Any, args: tuple[Any, ...], params: dict[str, Any]
    ) -> FastPacketWrapper:
        """`cls(from_packet, table_map, ctl_connection, *args)` for a caller that has the arguments by
        name already (`wrapper_params(args)`, kept while args stay the same): no argument tuple to
        unpack and no dict to look up per event."""
        self = cls.__new__(cls)
        self._build(from_packet, table_map, ctl_connection, args, _NO_KWARGS, params)
        return self

    def _build(
        self, from_packet: Any, table_map: Any, ctl_connection: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
        params: dict[str, Any] | None,
    ) -> None:  # fmt: skip
        data = from_packet._data
        start = from_packet._position
        event_type = data[start + 5]  # after the OK byte and the timestamp
        if event_type == mysql_events.TRANSACTION_PAYLOAD_EVENT:
            # Its inner events are wrapped later with exactly the reader's arguments (see mysql_events).
            self.wpcdc_wrapper_args = (table_map, ctl_connection, args, kwargs)
        if event_type not in _LEAN_TYPES or getattr(ctl_connection, MEMO_ATTRIBUTE, None) is None:
            super().__init__(from_packet, table_map, ctl_connection, *args, **kwargs)
            return
        if params is None:
            params = _wrapper_params(args, kwargs)
        event_class = self._BinLogPacketWrapper__event_map[event_type]  # type: ignore[attr-defined]
        if params["verify_checksum"] or event_class not in params["allowed_events"]:
            super().__init__(from_packet, table_map, ctl_connection, *args, **kwargs)
            return
        _, timestamp, _, server_id, event_size, log_pos, flags = _HEADER.unpack_from(data, start)
        size = event_size - (23 if params["use_checksum"] else 19)
        body = start + 20
        if event_type == BINLOG.QUERY_EVENT:
            memo: dict[Any, Any] = getattr(ctl_connection, QUERY_MEMO_ATTRIBUTE)
            key = (_declared(params, event_type, 13), bytes(data[body + 8 : body + size]))
            parsed = memo.get(key) if len(key[1]) <= _QUERY_MEMO_MAX_BYTES else None
            if parsed is None:
                super().__init__(from_packet, table_map, ctl_connection, *args, **kwargs)
                ev = self.event
                if len(key[1]) <= _QUERY_MEMO_MAX_BYTES and type(ev) is event_class:
                    if len(memo) >= _MAX_ENTRIES:
                        memo.clear()
                    consumed = (from_packet._position - body, self.read_bytes)
                    memo[key] = ({k: v for k, v in ev.__dict__.items() if k not in _QUERY_PER_EVENT}, consumed)
                return
        elif event_type == BINLOG.TABLE_MAP_EVENT:
            tm_memo: dict[bytes, dict[str, Any]] = getattr(ctl_connection, MEMO_ATTRIBUTE)
            parsed = tm_memo.get(bytes(data[body : body + size]))
            if parsed is None:  # parsed by MemoTableMapEvent, which memoizes it
                super().__init__(from_packet, table_map, ctl_connection, *args, **kwargs)
                return
        elif event_type in _ROWS_V2_TYPES or event_type in _ROWS_V1_TYPES:
            v2 = event_type in _ROWS_V2_TYPES
            known = 10 if v2 else 8
            table_id_raw, _, extra = (_ROWS_V2 if v2 else _ROWS_V1).unpack_from(data, body) + ((2,) if not v2 else ())
            table = table_map.get(int.from_bytes(table_id_raw, "little"))
            columns = data[body + known] if body + known < len(data) else 251
            bitmap = (columns + 7) // 8
            header_end = body + known + 1 + bitmap * (2 if event_type in _UPDATE_TYPES else 1)
            if (
                table is None  # filtered table map: the library marks the event unprocessed
                or extra != 2  # V2 extra data (NDB, partition info): the library reads it
                or _declared(params, event_type, known) != known
                or columns >= 251  # a column count that is not a single byte (or a cut-off event)
                or header_end > len(data)
                or _table_filtered(table, params)
            ):
                super().__init__(from_packet, table_map, ctl_connection, *args, **kwargs)
                return
        elif event_type == BINLOG.GTID_LOG_EVENT and (size < 42 or params["mysql_version"] < (5, 7)):
            super().__init__(from_packet, table_map, ctl_connection, *args, **kwargs)
            return

        self._BinLogPacketWrapper__data_buffer = b""
        self.packet = from_packet
        self.charset = ctl_connection.charset
        self.enable_logging = params["enable_logging"]
        self.use_column_name_cache = params["use_column_name_cache"]
        self.timestamp, self.event_type, self.server_id = timestamp, event_type, server_id
        self.event_size, self.log_pos, self.flags = event_size, log_pos, flags
        from_packet._position = body  # the library reads the header from the raw packet, not through self.read
        ev = event_class.__new__(event_class)
        # The attributes every event of this reader shares, set in one dict update.
        ev.__dict__.update(_shared(params, table_map, ctl_connection))
        ev.packet = self
        ev.event_type = event_type
        ev.timestamp = timestamp
        ev.event_size = size
        self.event = ev
        if event_type == BINLOG.XID_EVENT:
            ev.xid = _XID.unpack_from(data, body)[0]
            self._consumed(body, 8)
        elif event_type == BINLOG.MARIADB_GTID_EVENT:
            ev.server_id = server_id
            ev.gtid_seq_no, ev.domain_id, ev.flags = _MARIADB_GTID.unpack_from(data, body)
            ev.gtid = f"{ev.domain_id}-{server_id}-{ev.gtid_seq_no}"
            self._consumed(body, 13)
        elif event_type == BINLOG.GTID_LOG_EVENT:
            commit, ev.sid, ev.gno, ev.lt_type = _MYSQL_GTID.unpack_from(data, body)
            ev.commit_flag = commit == 1
            ev.last_committed, ev.sequence_number = _MYSQL_GTID_CLOCK.unpack_from(data, body + 26)
            self._consumed(body, 42)
        elif event_type == BINLOG.QUERY_EVENT:
            attributes, (advance, read) = parsed
            ev.slave_proxy_id, ev.execution_time = _QUERY_IDS.unpack_from(data, body)
            ev.__dict__.update(attributes)
            from_packet._position = body + advance
            self.read_bytes = read
        elif event_type == BINLOG.TABLE_MAP_EVENT:
            # The library's parse reads the whole event (its optional metadata runs to the end).
            self._consumed(body, size)
            ev.__dict__.update(parsed)
            if ev._processed:
                table_map[ev.table_id] = ev.table_obj
            else:  # a table of another schema: the library's wrapper drops the event
                self.event = None
        else:
            ev.__dict__.update(_shared_rows(params))
            ev._RowsEvent__none_sources = {}
            ev.table_id = int.from_bytes(table_id_raw, "little")
            ev.primary_key = table.data["primary_key"]
            ev.schema = table.schema
            ev.table = table.table
            ev.flags = _ROWS_V1.unpack_from(data, body)[1]
            if v2:
                ev.extra_data_length = 2
            ev.number_of_columns = columns
            ev.columns = table.columns
            pos = body + known + 1
            ev.columns_present_bitmap = data[pos : pos + bitmap]
            if event_type in _UPDATE_TYPES:
                ev.columns_present_bitmap2 = data[pos + bitmap : pos + 2 * bitmap]
            self._consumed(body, header_end - body)

    def _consumed(self, body: int, n: int) -> None:
        self.packet._position = body + n
        self.read_bytes = n


_QUERY_IDS = struct.Struct("<II")
_NO_KWARGS: dict[str, Any] = {}
# The last (params, table_map, control connection) and the attributes BinLogEvent.__init__ sets
# from them; and the last params with RowsEvent's. The reader passes the same objects for every
# event until a format description, a rotation (a new table map) or another reader.
_last_shared: list[Any] = [None, None, None, None]
_last_rows: list[Any] = [None, None]


def _shared(params: dict[str, Any], table_map: Any, ctl_connection: Any) -> dict[str, Any]:
    last = _last_shared
    if last[0] is params and last[1] is table_map and last[2] is ctl_connection:
        return last[3]  # type: ignore[no-any-return]
    shared = {
        "table_map": table_map,
        "_post_header_lengths": params["post_header_lengths"],
        "_ctl_connection": ctl_connection,
        "mysql_version": params["mysql_version"],
        "_ignore_decode_errors": params["ignore_decode_errors"],
        "_verify_checksum": False,
        "_is_event_valid": None,
        "_processed": True,
        "complete": True,
        "dbms": ctl_connection._get_dbms(),
    }
    last[:] = [params, table_map, ctl_connection, shared]
    return shared


def _shared_rows(params: dict[str, Any]) -> dict[str, Any]:
    if _last_rows[0] is params:
        return _last_rows[1]  # type: ignore[no-any-return]
    shared = {
        "_RowsEvent__rows": None,
        "_RowsEvent__only_tables": params["only_tables"],
        "_RowsEvent__ignored_tables": params["ignored_tables"],
        "_RowsEvent__only_schemas": params["only_schemas"],
        "_RowsEvent__ignored_schemas": params["ignored_schemas"],
        "_RowsEvent__use_column_name_cache": params["use_column_name_cache"],
        "_RowsEvent__enable_logging": params["enable_logging"],
    }
    _last_rows[:] = [params, shared]
    return shared


def _declared(params: dict[str, Any], event_type: int, default: int) -> int:
    """The post-header length the format description declares for this type (BinLogEvent's rule)."""
    lengths = params["post_header_lengths"]
    if not lengths or not 0 <= event_type - 1 < len(lengths):
        return default
    return int(lengths[event_type - 1])


def _table_filtered(table: Any, params: dict[str, Any]) -> bool:
    """RowsEvent's table and schema filters (the reader passes only_schemas)."""
    only, ignored = params["only_tables"], params["ignored_tables"]
    if (only is not None and table.table not in only) or (ignored is not None and table.table in ignored):
        return True
    only, ignored = params["only_schemas"], params["ignored_schemas"]
    return (only is not None and table.schema not in only) or (ignored is not None and table.schema in ignored)


_WRAPPER_PARAMS = mysql_events.WRAPPER_PARAMS


_WRAPPER_DEFAULTS = {"use_column_name_cache": False, "post_header_lengths": None}


# The last positional arguments and their dict: the reader passes the same ones for every event
# (until a format description or rotation changes one), so the dict is not rebuilt per event.
_last_params: list[Any] = [None, None]


def wrapper_params(args: tuple[Any, ...]) -> dict[str, Any]:
    """The wrapper's positional arguments (as fetchone passes them) by name, for FastPacketWrapper.wrap."""
    return _wrapper_params(args, _NO_KWARGS)


def _wrapper_params(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The wrapper's arguments by name (read only: the dict may be shared with the previous call)."""
    if not kwargs and len(args) == len(_WRAPPER_PARAMS):  # how BinLogStreamReader.fetchone calls it
        last_args, last = _last_params
        if last_args is not None and last_args == args:  # the same objects: identity, item by item
            return last  # type: ignore[no-any-return]
        params = dict(zip(_WRAPPER_PARAMS, args, strict=True))
        _last_params[:] = [args, params]
        return params
    params = {**_WRAPPER_DEFAULTS, **dict(zip(_WRAPPER_PARAMS, args, strict=False))}
    params.update(kwargs)
    return params


def install() -> None:
    """Make the library build these classes. Without the attribute on the control connection they
    behave exactly like the library's own."""
    binlogstream.BinLogPacketWrapper = FastPacketWrapper  # type: ignore[misc]
    event_map = BinLogPacketWrapper._BinLogPacketWrapper__event_map  # type: ignore[attr-defined]
    event_map[BINLOG.TABLE_MAP_EVENT] = MemoTableMapEvent
    for v in (BINLOG.WRITE_ROWS_EVENT_V1, BINLOG.WRITE_ROWS_EVENT_V2):
        event_map[v] = FastWriteRowsEvent
    for v in (BINLOG.UPDATE_ROWS_EVENT_V1, BINLOG.UPDATE_ROWS_EVENT_V2):
        event_map[v] = FastUpdateRowsEvent
    for v in (BINLOG.DELETE_ROWS_EVENT_V1, BINLOG.DELETE_ROWS_EVENT_V2):
        event_map[v] = FastDeleteRowsEvent
    # Not speed-ups: events the library cannot read at all (compressed transactions, tagged GTIDs).
    mysql_events.install(event_map)


def enable(ctl_connection: Any) -> None:
    setattr(ctl_connection, QUERY_MEMO_ATTRIBUTE, {})
    setattr(ctl_connection, MEMO_ATTRIBUTE, {})


# Events the source loop reads only a few fields of: without a packet wrapper or library event.
#
# A WordPress row change is four or five binlog events (GTID, BEGIN on MySQL, table map, rows, XID);
# even built directly (FastPacketWrapper) each costs a wrapper and an event with a few dozen
# attributes, and ~25 % of the source loop's samples went there. For the GTID, XID and memoized
# BEGIN/COMMIT/table map events, `lean_event` makes one slotted object with what BinlogSource reads:
# the header's timestamp, end position (log_pos) and length (event_size) as the wrapper has them
# (`ev.packet` is the object itself), and the event's own fields. Anything else, and every event of
# a reader without the fast_decoding switch, keeps the library's path (or FastPacketWrapper's).


class LeanEvent:
    __slots__ = ("event_size", "log_pos", "timestamp")

    @property
    def packet(self) -> LeanEvent:  # where the library's event has its wrapper's header fields
        return self


# One constructor call per event, every field set in it.
class LeanXid(LeanEvent):
    __slots__ = ("xid",)

    def __init__(self, timestamp: int, log_pos: int, event_size: int, xid: int) -> None:
        self.timestamp, self.log_pos, self.event_size, self.xid = timestamp, log_pos, event_size, xid


class LeanMariadbGtid(LeanEvent):
    __slots__ = ("flags", "gtid")  # flags: the GTID event's own flags byte, as the library's event has it

    def __init__(self, timestamp: int, log_pos: int, event_size: int, gtid: str, flags: int) -> None:
        self.timestamp, self.log_pos, self.event_size, self.gtid, self.flags = (
            timestamp,
            log_pos,
            event_size,
            gtid,
            flags,
        )


class LeanMysqlGtid(LeanEvent):
    __slots__ = ("gtid",)

    def __init__(self, timestamp: int, log_pos: int, event_size: int, gtid: str) -> None:
        self.timestamp, self.log_pos, self.event_size, self.gtid = timestamp, log_pos, event_size, gtid


class LeanQuery(LeanEvent):
    __slots__ = ("query", "schema")

    def __init__(self, timestamp: int, log_pos: int, event_size: int, query: str, schema: bytes) -> None:
        self.timestamp, self.log_pos, self.event_size = timestamp, log_pos, event_size
        self.query, self.schema = query, schema


class LeanTableMap(LeanEvent):
    __slots__ = ("table_id",)

    def __init__(self, timestamp: int, log_pos: int, event_size: int, table_id: int) -> None:
        self.timestamp, self.log_pos, self.event_size, self.table_id = timestamp, log_pos, event_size, table_id


_GTID_LOG_EVENT, _MARIADB_GTID_EVENT = BINLOG.GTID_LOG_EVENT, BINLOG.MARIADB_GTID_EVENT
_XID_EVENT, _QUERY_EVENT, _TABLE_MAP_EVENT = BINLOG.XID_EVENT, BINLOG.QUERY_EVENT, BINLOG.TABLE_MAP_EVENT
_LEAN_EVENT_TYPES = frozenset({_GTID_LOG_EVENT, _MARIADB_GTID_EVENT, _XID_EVENT, _QUERY_EVENT, _TABLE_MAP_EVENT})
_SID = struct.Struct("<16sQ")
# A MySQL server's source id as the library's GtidEvent.gtid formats it, per 16 raw bytes (one or a
# few per topology; bounded like the other memos).
_sid_text: dict[bytes, str] = {}


def _sid_prefix(sid: bytes) -> str:
    text = _sid_text.get(sid)
    if text is None:
        h = sid.hex()
        if len(_sid_text) >= _MAX_ENTRIES:
            _sid_text.clear()
        text = _sid_text[sid] = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}:"
    return text


def lean_event(data: bytes, params: dict[str, Any], table_map: dict[int, Any], ctl_connection: Any) -> Any:
    """The lean object for the packet `data` (an OK byte, then the event), or None for the library's
    path. Has the reader's effects of the event as the wrapper would (a table map enters `table_map`);
    the caller checks that FastPacketWrapper is installed, the class of the event type is allowed and
    the switch is on (the memos on `ctl_connection`): see lean_events_apply."""
    event_type = data[5]
    if event_type not in _LEAN_EVENT_TYPES or params["verify_checksum"]:
        return None
    _, timestamp, _, server_id, event_size, log_pos, _ = _HEADER.unpack_from(data, 0)
    size = event_size - (23 if params["use_checksum"] else 19)
    if 20 + size > len(data):  # shorter than its header says: the library's parse says how
        return None
    if event_type == _XID_EVENT:
        return LeanXid(timestamp, log_pos, event_size, _XID.unpack_from(data, 20)[0]) if size >= 8 else None
    if event_type == _MARIADB_GTID_EVENT:
        if size < 13:
            return None
        seq_no, domain_id, flags = _MARIADB_GTID.unpack_from(data, 20)
        return LeanMariadbGtid(timestamp, log_pos, event_size, f"{domain_id}-{server_id}-{seq_no}", flags)
    if event_type == _GTID_LOG_EVENT:
        if size < 42 or params["mysql_version"] < (5, 7):  # as FastPacketWrapper: the library's parse
            return None
        sid, gno = _SID.unpack_from(data, 21)
        return LeanMysqlGtid(timestamp, log_pos, event_size, _sid_prefix(sid) + str(gno))
    if event_type == _QUERY_EVENT:
        body = bytes(data[28 : 20 + size])
        if len(body) > _QUERY_MEMO_MAX_BYTES:
            return None
        parsed = getattr(ctl_connection, QUERY_MEMO_ATTRIBUTE).get((_declared(params, _QUERY_EVENT, 13), body))
        if parsed is None:  # the first of its bytes: the wrapper parses and memoizes it
            return None
        attributes = parsed[0]
        return LeanQuery(timestamp, log_pos, event_size, attributes["query"], attributes["schema"])
    parsed = getattr(ctl_connection, MEMO_ATTRIBUTE).get(bytes(data[20 : 20 + size]))
    if parsed is None or not parsed["_processed"]:  # first parse, or a table the library drops
        return None
    table_id = parsed["table_id"]
    table_map[table_id] = parsed["table_obj"]
    return LeanTableMap(timestamp, log_pos, event_size, table_id)


def lean_events_apply(ctl_connection: Any, allowed: Any) -> bool:
    """Whether `lean_event` may stand in for the wrapper on this reader: the switch is on (the memos
    are on the control connection) and the reader keeps every class it replaces (the library drops
    the events of a class not allowed)."""
    if getattr(ctl_connection, MEMO_ATTRIBUTE, None) is None:
        return False
    event_map = BinLogPacketWrapper._BinLogPacketWrapper__event_map  # type: ignore[attr-defined]
    replaced = (_XID_EVENT, _MARIADB_GTID_EVENT, _GTID_LOG_EVENT, _QUERY_EVENT, _TABLE_MAP_EVENT)
    return all(event_map[t] in allowed for t in replaced)
