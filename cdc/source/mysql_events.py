"""MySQL binlog events python-mysql-replication 1.0.x cannot read: compressed transactions and tagged GTIDs.

TRANSACTION_PAYLOAD (type 40, MySQL >= 8.0.20, `binlog_transaction_compression=ON`, settable per
session): the whole transaction (BEGIN, table maps, rows events, XID) as one zstd frame. The library
has no class for it and would drop the rows silently. `TransactionPayloadEvent.events()`
decompresses the frame as a stream and turns each inner event into the same library/fast-decoder
event object an uncompressed binlog would have produced (the inner events go through the reader's
own packet wrapper), so compressed and uncompressed transactions decode identically; only one inner
event (<= binlog_row_event_max_size, 8 KiB by default) is in memory at a time.

GTID_TAGGED_LOG_EVENT (type 42, MySQL >= 8.3, `SET gtid_next='AUTOMATIC:tag'`): the GTID event
serialized in MySQL's "mysql::serialization" format. The library yields a NotImplementedEvent, so
without this class rows of a tagged transaction would carry the previous transaction's GTID.
"""

from __future__ import annotations

import io
import struct
import uuid
from collections.abc import Iterator
from typing import Any

import zstandard
from pymysql.protocol import MysqlPacket
from pymysqlreplication import binlogstream
from pymysqlreplication.event import BinLogEvent, GtidEvent
from pymysqlreplication.row_event import TableMapEvent

TRANSACTION_PAYLOAD_EVENT = 40
GTID_TAGGED_LOG_EVENT = 42

# Payload header fields (libs/mysql/binlog/event/control_events.h, Transaction_payload_event).
_HEADER_END = 0
_PAYLOAD_SIZE = 1
_COMPRESSION_TYPE = 2
_UNCOMPRESSED_SIZE = 3
_ZSTD = 0
_NONE = 255

_HEADER_LEN = 19
_EVENT_SIZE = struct.Struct("<I")
_CHECKSUM_PLACEHOLDER = b"\0\0\0\0"
# The library reads at most this much at a time from the decompressor; inner events are small.
_READ_SIZE = 1 << 16

# Tagged GTID field ids (Gtid_event::define_fields in control_events.h).
_F_FLAGS, _F_SID, _F_GNO, _F_TAG = 0, 1, 2, 3
_SIGNED_FIELDS = {_F_GNO, 4, 5}  # gno, last_committed, sequence_number are int64_t: zigzag-encoded


class PayloadError(Exception):
    """A transaction payload that cannot be read (unknown compression, corrupt frame, bad inner event)."""


def _lenenc(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    """MySQL's net_field_length: the payload header uses it for field types, lengths and values."""
    first = data[pos]
    if first < 0xFB:
        return first, pos + 1
    if first == 0xFC:
        return int.from_bytes(data[pos + 1 : pos + 3], "little"), pos + 3
    if first == 0xFD:
        return int.from_bytes(data[pos + 1 : pos + 4], "little"), pos + 4
    if first == 0xFE:
        return int.from_bytes(data[pos + 1 : pos + 9], "little"), pos + 9
    raise PayloadError(f"invalid length-encoded integer 0x{first:02x} in the payload header")


def parse_payload_header(data: bytes | memoryview) -> tuple[dict[int, int], int]:
    """The payload event's header fields ({field type: value}) and where the payload starts."""
    fields: dict[int, int] = {}
    pos = 0
    while True:
        if pos >= len(data):
            raise PayloadError("the payload header has no end mark")
        kind, pos = _lenenc(data, pos)
        if kind == _HEADER_END:
            return fields, pos
        length, pos = _lenenc(data, pos)
        if kind in (_PAYLOAD_SIZE, _COMPRESSION_TYPE, _UNCOMPRESSED_SIZE):
            fields[kind], _ = _lenenc(data, pos)
        pos += length  # unknown fields of newer servers are skipped by their declared length


class TransactionPayloadEvent(BinLogEvent):
    """A compressed transaction. Iterate `events()` for the inner events, in order; each carries
    `payload` (this event) and `payload_index` (its 0-based ordinal inside the payload)."""

    def __init__(self, from_packet: Any, event_size: int, table_map: Any, ctl_connection: Any, **kwargs: Any):
        super().__init__(from_packet, event_size, table_map, ctl_connection, **kwargs)
        # The arguments the reader built this event's wrapper with: the inner events get the same.
        self._wrapper_args: tuple[Any, ...] | None = getattr(from_packet, "wpcdc_wrapper_args", None)
        # A view into the packet, not a copy: the compressed transaction can be many MiB.
        raw = self.packet.packet
        body = memoryview(raw._data)[raw._position : raw._position + event_size]
        self.packet.advance(event_size)
        fields, start = parse_payload_header(body)
        self.compression_type = fields.get(_COMPRESSION_TYPE, _ZSTD)
        self.payload_size = fields.get(_PAYLOAD_SIZE, len(body) - start)
        self.uncompressed_size = fields.get(_UNCOMPRESSED_SIZE, 0)
        self._payload: bytes | memoryview = body[start : start + self.payload_size]
        if len(self._payload) != self.payload_size:
            raise PayloadError(
                f"the payload header declares {self.payload_size} bytes, the event holds {len(self._payload)}"
            )

    def _stream(self) -> Any:
        if self.compression_type == _ZSTD:
            # read_across_frames: the server writes one frame, but nothing in the format promises it.
            return zstandard.ZstdDecompressor().stream_reader(
                self._payload, read_size=_READ_SIZE, read_across_frames=True
            )
        if self.compression_type == _NONE:
            return io.BytesIO(self._payload)
        raise PayloadError(f"unknown compression type {self.compression_type} (this wpcdc knows ZSTD and NONE)")

    def events(self) -> Iterator[Any]:
        if self._wrapper_args is None:
            raise PayloadError("the payload was not read through wpcdc's packet wrapper")
        table_map, ctl_connection, args, kwargs = self._wrapper_args
        params = dict(kwargs)
        wrapper_class = binlogstream.BinLogPacketWrapper
        stream = self._stream()
        # The end of the payload: what SHOW BINLOG EVENTS prints as every inner event's end_log_pos.
        next_pos = self.packet.log_pos
        index = 0
        decoded = 0
        try:
            while True:
                header = _read_exact(stream, _HEADER_LEN)
                if not header:
                    break
                if len(header) < _HEADER_LEN:
                    raise PayloadError(f"inner event {index} is cut off in its header")
                size = _EVENT_SIZE.unpack_from(header, 9)[0]
                if size < _HEADER_LEN:
                    raise PayloadError(f"inner event {index} declares an impossible size {size}")
                body = _read_exact(stream, size - _HEADER_LEN)
                if len(body) != size - _HEADER_LEN:
                    raise PayloadError(f"inner event {index} is cut off ({len(body)} of {size - _HEADER_LEN} bytes)")
                decoded += size
                # Inner events carry no checksum and end_log_pos 0. Dressed as an outer event
                # (checksum placeholder, size and end_log_pos patched), they take exactly the
                # reader's own decoding path: the library's parsers expect the 4 trailing bytes.
                packet = MysqlPacket(
                    b"\0"
                    + header[:9]
                    + _EVENT_SIZE.pack(size + 4)
                    + _EVENT_SIZE.pack(next_pos)
                    + header[17:]
                    + body
                    + _CHECKSUM_PLACEHOLDER,
                    "utf8",
                )
                wrapper = wrapper_class(packet, table_map, ctl_connection, *_inner_args(args, params))
                ev = wrapper.event
                if isinstance(ev, TableMapEvent):
                    # What the reader's fetchone does after a table map: its parse leaves a first
                    # Table (primary key not yet read from the metadata) in the map, get_table() the final one.
                    table_map[ev.table_id] = ev.get_table()
                if ev is not None:
                    ev.payload = self
                    ev.payload_index = index
                    yield ev
                index += 1
        except zstandard.ZstdError as exc:
            raise PayloadError(f"the zstd frame is corrupt after inner event {index}: {exc}") from None
        if self.uncompressed_size and decoded != self.uncompressed_size:
            raise PayloadError(f"the payload decompressed to {decoded} bytes, its header says {self.uncompressed_size}")

    def __repr__(self) -> str:
        return f"<TransactionPayloadEvent {self.payload_size} bytes, {self.uncompressed_size} uncompressed>"


def _read_exact(stream: Any, n: int) -> bytes:
    """Up to n bytes; fewer only at the end of the stream (a decompressor may return short reads)."""
    data = stream.read(n)
    if len(data) == n or not data:
        return bytes(data)
    parts = [data]
    got = len(data)
    while got < n:
        more = stream.read(n - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


# Where BinLogPacketWrapper takes these among its positional parameters after (packet, table_map,
# ctl_connection), in the order BinLogStreamReader.fetchone passes them (library 1.0.x).
WRAPPER_PARAMS = (
    "mysql_version", "use_checksum", "allowed_events", "only_tables", "ignored_tables", "only_schemas",
    "ignored_schemas", "freeze_schema", "ignore_decode_errors", "verify_checksum", "optional_meta_data",
    "enable_logging", "use_column_name_cache", "post_header_lengths",
)  # fmt: skip
_USE_CHECKSUM = WRAPPER_PARAMS.index("use_checksum")
_VERIFY_CHECKSUM = WRAPPER_PARAMS.index("verify_checksum")


def _inner_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
    out = list(args)
    if kwargs or len(out) != len(WRAPPER_PARAMS):  # not how BinLogStreamReader.fetchone calls it
        raise PayloadError("the packet wrapper was called in a way this wpcdc does not know (library version?)")
    out[_USE_CHECKSUM] = True  # the placeholder is there for the parsers...
    out[_VERIFY_CHECKSUM] = False  # ...and must not be checked (the outer event's CRC covered it)
    return out


# -- tagged GTIDs ---------------------------------------------------------------------------------


def read_varlen_unsigned(data: bytes, pos: int) -> tuple[int, int]:
    """mysql::serialization variable-length integer: the trailing one-bits of the first byte say
    how many more bytes follow (little endian); 0xff means 8 bytes of plain value follow."""
    first = data[pos]
    if first == 0xFF:
        return int.from_bytes(data[pos + 1 : pos + 9], "little"), pos + 9
    n = 1
    while first & (1 << (n - 1)):
        n += 1
    end = pos + n
    if end > len(data):
        raise ValueError("variable-length integer runs past the end of the event")
    return int.from_bytes(data[pos:end], "little") >> n, end


def read_varlen_signed(data: bytes, pos: int) -> tuple[int, int]:
    value, pos = read_varlen_unsigned(data, pos)
    return (-(value >> 1) - 1 if value & 1 else value >> 1), pos


def parse_tagged_gtid(body: bytes) -> tuple[bytes, str, int, int]:
    """(sid, tag, gno, flags) of a GTID_TAGGED_LOG_EVENT body (without header and checksum)."""
    if not body or body[0] != 2:
        raise ValueError(f"unknown tagged GTID serialization version {body[0] if body else None}")
    size, pos = read_varlen_unsigned(body, 1)
    last_non_ignorable, pos = read_varlen_unsigned(body, pos)
    end = min(size, len(body))
    sid = b""
    tag = ""
    gno = 0
    flags = 0
    seen_gno = False
    while pos < end:
        field, pos = read_varlen_unsigned(body, pos)
        if field == _F_SID:
            raw = bytearray()
            for _ in range(16):
                byte, pos = read_varlen_unsigned(body, pos)
                raw.append(byte)
            sid = bytes(raw)
        elif field == _F_TAG:
            length, pos = read_varlen_unsigned(body, pos)
            tag = body[pos : pos + length].decode("ascii")
            pos += length
        elif field in _SIGNED_FIELDS:
            value, pos = read_varlen_signed(body, pos)
            if field == _F_GNO:
                gno, seen_gno = value, True
        elif field <= 11:  # the other known fields are all unsigned integers
            value, pos = read_varlen_unsigned(body, pos)
            if field == _F_FLAGS:
                flags = value
        elif field <= last_non_ignorable:
            raise ValueError(f"unknown non-ignorable field {field} in a tagged GTID event")
        else:
            break  # an ignorable field of a newer server: its size is unknown, and we have what we need
    if len(sid) != 16 or not seen_gno:
        raise ValueError("tagged GTID event without a source id or a transaction number")
    return sid, tag, gno, flags


class TaggedGtidEvent(GtidEvent):
    """A GtidEvent (so the reader treats it as one) whose `gtid` is `uuid:tag:gno`."""

    def __init__(self, from_packet: Any, event_size: int, table_map: Any, ctl_connection: Any, **kwargs: Any):
        BinLogEvent.__init__(self, from_packet, event_size, table_map, ctl_connection, **kwargs)
        self.sid, self.tag, self.gno, flags = parse_tagged_gtid(self.packet.read(event_size))
        self.commit_flag = flags == 1

    @property
    def gtid(self) -> str:
        # Lower-case UUID like the library's GtidEvent.gtid; the tag as the server wrote it.
        sid = uuid.UUID(bytes=self.sid)
        return f"{sid}:{self.tag}:{self.gno}" if self.tag else f"{sid}:{self.gno}"

    def __repr__(self) -> str:
        return f'<TaggedGtidEvent "{self.gtid}">'


EVENT_CLASSES = (TransactionPayloadEvent, TaggedGtidEvent)


def install(event_map: dict[int, Any]) -> None:
    event_map[TRANSACTION_PAYLOAD_EVENT] = TransactionPayloadEvent
    event_map[GTID_TAGGED_LOG_EVENT] = TaggedGtidEvent
