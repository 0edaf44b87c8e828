"""The dump connection's packets, read in large chunks.

PyMySQL reads every packet through an 8 KiB BufferedReader, with two calls of its own per packet
(header, body), each with its own error handling; a busy binlog stream is tens of thousands of
packets a second, and the 8 KiB buffer also means a system call every few rows events. Here the
socket is read up to CHUNK bytes at a time, and each packet is cut from that buffer by one function.
The packets are the same `MysqlPacket` objects over the same bytes, and every failure is the same
error PyMySQL raises (a lost or timed-out socket: CR_SERVER_LOST, which the binlog reader turns into
its "connection lost" error; a server error packet: its exception), so heartbeats, the end of the
stream and lost connections behave as before.

TLS too: the buffer sits over the connection's socket object, plain or `ssl.SSLSocket`, whose reads
return decrypted bytes (at most one 16 KiB TLS record per read, so TLS reads in smaller pieces).
A packet larger than the buffer is read straight into a bytes object of its size, as PyMySQL does:
a huge event (a compressed transaction) costs no second copy.
"""

from __future__ import annotations

import io
import struct
from typing import Any

from pymysql import err
from pymysql.constants import CR
from pymysql.protocol import MysqlPacket

CHUNK = 1 << 18  # 256 KiB: most of what a socket has ready under load, a few hundred rows events
_MAX_PACKET_LEN = 2**24 - 1  # a payload of this length continues in the next packet
_HEADER = struct.Struct("<HBB")
_LOST = "Lost connection to MySQL server during query"  # PyMySQL's words: logs and tests know them


READY_ATTRIBUTE = "_wpcdc_packet_ready"


def install(conn: Any) -> None:
    """Read `conn`'s packets through a CHUNK-sized buffer from now on. Only between commands (right
    after connecting): PyMySQL's own buffer must hold nothing unread, as it then does.
    `ready(conn)` then tells whether the next packet has begun to arrive in that buffer."""
    old = conn._rfile
    raw = _CountingRaw(conn._sock.makefile("rb", buffering=0))
    conn._rfile = io.BufferedReader(raw, CHUNK)
    old.close()  # the socket stays open; only this reader's reference to it goes
    reader = _Reader(conn, raw)
    conn._read_packet = reader.read_packet
    setattr(conn, READY_ATTRIBUTE, reader.ready)


def ready(conn: Any) -> bool:
    """True when the next packet of `conn` has begun to arrive (reading it waits at most for the
    rest of it, which the server is sending); False for a connection without the chunked reader."""
    check = getattr(conn, READY_ATTRIBUTE, None)
    return check is not None and bool(check())


class _CountingRaw(io.RawIOBase):
    """The socket's raw reader, counting the bytes it hands to the buffer above it."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self.received = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        n = self._raw.readinto(buffer)
        if n:
            self.received += n
        return n  # type: ignore[no-any-return]

    def close(self) -> None:
        self._raw.close()
        super().close()


class _Reader:
    __slots__ = ("_conn", "_consumed", "_raw")

    def __init__(self, conn: Any, raw: _CountingRaw) -> None:
        self._conn = conn
        self._raw = raw
        self._consumed = 0  # bytes taken from the buffer: what was received minus this is buffered

    def ready(self) -> bool:
        # Not "the whole next packet is here": finding out means BufferedReader.peek, which copies
        # the whole buffer (6 % of the reader's CPU). The server writes events whole, so the rest of
        # a packet that has begun to arrive is on its way, not waiting for a commit.
        return self._raw.received > self._consumed

    def read_packet(self, packet_type: type[MysqlPacket] = MysqlPacket) -> MysqlPacket:
        """What `Connection._read_packet` does, from the big buffer."""
        conn = self._conn
        if conn._current_timeout != conn._read_timeout:
            conn._sock.settimeout(conn._read_timeout)
            conn._current_timeout = conn._read_timeout
        parts: list[bytes] | None = None
        try:
            read = conn._rfile.read
            while True:
                header = read(4)
                if len(header) < 4:
                    raise _Lost()
                low, high, seq = _HEADER.unpack(header)
                size = low + (high << 16)
                if seq != conn._next_seq_id:
                    conn._force_close()
                    if seq == 0:  # MariaDB sends its shutdown error with sequence number 0
                        raise err.OperationalError(CR.CR_SERVER_LOST, _LOST)
                    raise err.InternalError(f"Packet sequence number wrong - got {seq} expected {conn._next_seq_id}")
                conn._next_seq_id = (seq + 1) % 256
                data = read(size)
                self._consumed += 4 + len(data)
                if len(data) < size:
                    raise _Lost()
                if size < _MAX_PACKET_LEN:
                    break
                if parts is None:
                    parts = []
                parts.append(data)
        except _Lost:
            conn._force_close()
            raise err.OperationalError(CR.CR_SERVER_LOST, _LOST) from None
        except OSError as e:
            conn._force_close()
            raise err.OperationalError(CR.CR_SERVER_LOST, f"{_LOST} ({e})") from None
        except (err.OperationalError, err.InternalError):
            raise
        except BaseException:
            conn._force_close()
            raise
        if parts is not None:
            parts.append(data)
            data = b"".join(parts)
        packet = packet_type(data, conn.encoding)
        if data[0] == 0xFF:  # MysqlPacket.is_error_packet, without a call per packet
            if conn._result is not None and conn._result.unbuffered_active is True:
                conn._result.unbuffered_active = False
            packet.raise_for_error()
        return packet


class _Lost(Exception):
    pass
