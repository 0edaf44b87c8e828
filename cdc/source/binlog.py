"""The binlog source: row changes and transaction boundaries of the WordPress tables, in binlog order.

python-mysql-replication does the decoding. This module owns what the library gets wrong for a CDC
tool (see shared/notes/binlog-pitfalls.md): it never lets the library reconnect on its own, it
reports transaction boundaries so that checkpoints are only ever taken between transactions, and it
refuses to start inside a transaction.
"""

from __future__ import annotations

import logging
import re
import struct
from collections.abc import Callable, Iterator
from typing import Any

import pymysql
from pymysqlreplication import BinLogStreamReader, binlogstream
from pymysqlreplication.constants import FIELD_TYPE
from pymysqlreplication.constants.BINLOG import FORMAT_DESCRIPTION_EVENT, ROTATE_EVENT, TABLE_MAP_EVENT
from pymysqlreplication.event import (
    GtidEvent,
    HeartbeatLogEvent,
    MariadbGtidEvent,
    NotImplementedEvent,
    QueryEvent,
    RotateEvent,
    XAPrepareEvent,
    XidEvent,
)
from pymysqlreplication.row_event import (
    DeleteRowsEvent,
    PartialUpdateRowsEvent,
    TableMapEvent,
    UpdateRowsEvent,
    WriteRowsEvent,
)

from cdc.config import Config
from cdc.core.changes import (
    Idle,
    PreparedRef,
    RowChange,
    SourceItem,
    TableChange,
    TransactionEnd,
    UndecodableRows,
    XAOutcome,
    XAPrepared,
)
from cdc.core.position import BinlogPosition
from cdc.core.tables import TableKind, TableMatcher, WordPressTable
from cdc.errors import PositionGoneError, SourceError
from cdc.source import fast_decoding, mysql_events, packets
from cdc.source.mysql_events import PayloadError, TransactionPayloadEvent
from cdc.source.server import GtidSet, open_connection

log = logging.getLogger(__name__)

# Event types whose rows the library cannot decode and would silently skip: MariaDB's compressed
# rows events (log_bin_compress). Seeing one means rows are being lost, so the source stops.
# (MySQL's TRANSACTION_PAYLOAD_EVENT, type 40, is decoded: see mysql_events.)
_UNDECODABLE_EVENT_TYPES = {165, 166, 167, 168, 169, 170, 171}
_CAPTURED = frozenset({TableKind.POSTS, TableKind.POSTMETA, TableKind.TERM_RELATIONSHIPS})
_MARIADB_GTID_STANDALONE = 0x01
_MARIADB_GTID_PREPARED_XA = 0x40  # FL_PREPARED_XA: this transaction is XA START ... XA PREPARE
# How the server writes an XID in the binlog (XA COMMIT X'7831',X'',1); a quoted form as a fallback.
_XID_HEX = re.compile(r"X'([0-9A-F]*)'\s*,\s*X'([0-9A-F]*)'\s*,\s*(\d+)", re.I)
# Table-level DDL that changes a captured table's rows (or its name) without any rows event.
_NAME = r"(?:`(?:[^`]|``)+`|[0-9A-Za-z_$]+)(?:\s*\.\s*(?:`(?:[^`]|``)+`|[0-9A-Za-z_$]+))?"
_NAME_RE = re.compile(_NAME)
_TRUNCATE = re.compile(rf"^TRUNCATE\s+(?:TABLE\s+)?({_NAME})", re.I)
_DROP = re.compile(rf"^DROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?({_NAME}(?:\s*,\s*{_NAME})*)", re.I | re.S)
_RENAME = re.compile(r"^RENAME\s+TABLES?\s+(.*)$", re.I | re.S)
_RENAME_PAIR = re.compile(rf"({_NAME})\s+TO\s+({_NAME})", re.I)
_ALTER_RENAME = re.compile(
    rf"^ALTER\s+(?:ONLINE\s+)?(?:IGNORE\s+)?TABLE\s+({_NAME})\s.*?\bRENAME\s+(?:TO\s+|AS\s+)?(?!(?:COLUMN|INDEX|KEY)\b)({_NAME})",
    re.I | re.S,
)
_COMMENT = re.compile(r"/\*.*?\*/", re.S)
_XID_TEXT = re.compile(r"'((?:[^']|'')*)'(?:\s*,\s*'((?:[^']|'')*)')?(?:\s*,\s*(\d+))?")


class _LibraryReconnected(Exception):
    pass


fast_decoding.install()


class _OneShotConnector:
    """Gives the library its connections, but only once for the dump stream.

    On errors 2013/2006 the library closes the stream and reconnects by itself, from wherever its
    attributes point (the start of a file, or the original GTID set). A second stream connection
    therefore means "the library is reconnecting"; we refuse it so the error surfaces and the
    pipeline restarts from its own last transaction boundary instead.
    """

    def __init__(self, speedups: bool, stream_read_timeout: float | None = None) -> None:
        self.stream_connections = 0
        self.speedups = speedups
        # The server sends a heartbeat every mysql.heartbeat_seconds when it has nothing else: a
        # stream silent for a few of them is dead (frozen or unreachable server), not idle.
        self.stream_read_timeout = stream_read_timeout

    def __call__(self, **settings: Any) -> pymysql.connections.Connection:
        is_ctl = "cursorclass" in settings  # the library's control connection sets a DictCursor
        if not is_ctl:
            self.stream_connections += 1
            if self.stream_connections > 1:
                raise _LibraryReconnected()
            if self.stream_read_timeout is not None:
                settings = {**settings, "read_timeout": self.stream_read_timeout}
        conn = open_connection(**settings)
        if is_ctl and self.speedups:
            fast_decoding.enable(conn)  # every event is handed the control connection: the switch rides on it
        elif self.speedups:
            packets.install(conn)  # connected, nothing unread: the dump's packets come from large reads
        return conn


# The packet wrapper's positional arguments after (packet, table map, control connection), in the
# order fetchone passes them (python-mysql-replication 1.0.x): the reader's attributes of these names.
_FETCHONE_ARGS = (
    "mysql_version", "use_checksum", "allowed_events_in_packet", "only_tables", "ignored_tables", "only_schemas",
    "ignored_schemas", "freeze_schema", "ignore_decode_errors", "verify_checksum", "optional_meta_data",
    "enable_logging", "use_column_name_cache", "post_header_lengths",
)  # fmt: skip


class _Reader(BinLogStreamReader):
    """The library's reader, with wpcdc's own dump request when starting from a GTID state.

    python-mysql-replication 1.0.x encodes a MySQL GTID set without tags (it rejects them) and
    declares a COM_BINLOG_DUMP_GTID payload 4 bytes shorter than it sends; its MariaDB dump packet
    declares 14 bytes and sends 15 (shared/notes/binlog-pitfalls.md): a stray byte left unread on the
    server. `gtid_start` set: this class sends correct packets. Unset: the library's file/position
    request, which is correct."""

    gtid_start: GtidSet | None = None
    # With fast decoding: events from _lean_events instead of the library's fetchone.
    lean: bool = False

    def __iter__(self) -> Iterator[Any]:
        return self._lean_events() if self.lean else super().__iter__()

    def _lean_events(self) -> Iterator[Any]:
        """The events the library's fetchone returns, one after the other, with the same effects on
        the reader (position, file, table map, format description, end position). fetchone reads a
        dozen name-mangled attributes to build the packet wrapper's argument tuple for every event,
        calls three methods to classify each packet and the wrapper finds its arguments by name
        again; here the arguments (and their names) are built again only after what changes them (a
        connection, a format description) and a packet's first byte is tested inline."""
        allowed = self._BinLogStreamReader__allowed_events  # type: ignore[attr-defined]
        end_log_pos, skip_to_timestamp = self.end_log_pos, self.skip_to_timestamp
        args: tuple[Any, ...] = ()
        params: dict[str, Any] | None = None
        lean = False
        ctl: Any = None
        while True:
            if end_log_pos and self.is_past_end_log_pos:
                return
            if not self._BinLogStreamReader__connected_stream:  # type: ignore[attr-defined]
                self._BinLogStreamReader__connect_to_stream()  # a second time: the one-shot connector refuses it
                params = None
            if not self._BinLogStreamReader__connected_ctl:  # type: ignore[attr-defined]
                self._BinLogStreamReader__connect_to_ctl()  # type: ignore[attr-defined]
                params = None
            try:
                pkt = self._stream_connection._read_packet()
            except pymysql.OperationalError as error:
                if error.args and error.args[0] in binlogstream.MYSQL_EXPECTED_ERROR_CODES:
                    # Where the library closes the stream to reconnect (which the connector refuses).
                    self._stream_connection.close()
                    self._BinLogStreamReader__connected_stream = False
                    continue
                raise
            data = pkt._data
            if data[0] == 0xFE and len(data) < 9:  # EOF: the end of a non-blocking dump
                self.close()
                return
            if data[0] != 0 or len(data) < 7:  # not an OK packet: skipped, as fetchone does
                continue
            if params is None:
                args = tuple(
                    self.mysql_version if name == "mysql_version" else getattr(self, "_BinLogStreamReader__" + name)
                    for name in _FETCHONE_ARGS
                )
                params = fast_decoding.wrapper_params(args)
                ctl = self._ctl_connection
                lean = fast_decoding.lean_events_apply(ctl, allowed)
            # Looked up per event as fetchone does: fast_decoding.install() puts its class there.
            wrapper = binlogstream.BinLogPacketWrapper
            if lean and wrapper is fast_decoding.FastPacketWrapper:
                ev = fast_decoding.lean_event(data, params, self.table_map, ctl)
                if ev is not None:  # the wrapper's effects on the reader, as below
                    if ev.log_pos:
                        self.log_pos = ev.log_pos
                    if end_log_pos and self.log_pos >= end_log_pos:
                        self.is_past_end_log_pos = True
                    if skip_to_timestamp and ev.timestamp < skip_to_timestamp:
                        continue
                    yield ev
                    continue
            if wrapper is fast_decoding.FastPacketWrapper:
                wrapped = wrapper.wrap(pkt, self.table_map, self._ctl_connection, args, params)
            else:
                wrapped = wrapper(pkt, self.table_map, self._ctl_connection, *args)
            event_type = wrapped.event_type
            ev = wrapped.event
            # The event and its wrapper point at each other: a cycle per event that only the cyclic
            # garbage collector frees (and traverses while the event lives). Nothing reads the event
            # through its wrapper after this, so the cycle is cut and the pair is freed when dropped.
            wrapped.event = None
            if event_type == ROTATE_EVENT:
                self.log_pos = ev.position
                self.log_file = ev.next_binlog
                if wrapped.timestamp != 0:  # table ids are not stable across a server restart
                    self.table_map = {}
            elif wrapped.log_pos:
                self.log_pos = wrapped.log_pos
            if end_log_pos and self.log_pos >= end_log_pos:
                self.is_past_end_log_pos = True
            if event_type == FORMAT_DESCRIPTION_EVENT and ev is not None:
                self.mysql_version = ev.mysql_version
                self._BinLogStreamReader__post_header_lengths = ev.post_header_len
                params = None
            if skip_to_timestamp and wrapped.timestamp < skip_to_timestamp:
                continue
            if event_type == TABLE_MAP_EVENT and ev is not None:
                self.table_map[ev.table_id] = ev.get_table()
            if ev is None or ev.__class__ not in allowed:
                continue
            yield ev

    def _BinLogStreamReader__connect_to_stream(self) -> None:  # the library's private hook, by its mangled name
        if self.gtid_start is None:
            super()._BinLogStreamReader__connect_to_stream()  # type: ignore[misc]
            return
        conn = self.pymysql_wrapper(**self._BinLogStreamReader__connection_settings)  # type: ignore[attr-defined]
        self._stream_connection = conn
        self._BinLogStreamReader__use_checksum = self._BinLogStreamReader__checksum_enabled()  # type: ignore[attr-defined]
        blocking = self._BinLogStreamReader__blocking  # type: ignore[attr-defined]
        server_id = self._BinLogStreamReader__server_id  # type: ignore[attr-defined]
        with conn.cursor() as cur:
            if self._BinLogStreamReader__use_checksum:  # type: ignore[attr-defined]
                cur.execute("SET @master_binlog_checksum = @@global.binlog_checksum")
            if self.slave_heartbeat:
                # As the library does: under half the read timeout, or the stream would time out first.
                net_timeout = float(self._BinLogStreamReader__connection_settings.get("read_timeout") or 4294967)  # type: ignore[attr-defined]
                period = min(net_timeout / 2.0, float(self.slave_heartbeat), 4294967.0)
                cur.execute("SET @master_heartbeat_period = %s", (int(period * 1_000_000_000),))
            cur.execute("SET @mariadb_slave_capability = 4")  # MARIA_SLAVE_CAPABILITY_GTID
            if self.is_mariadb:
                cur.execute("SET @slave_connect_state = %s", (str(self.gtid_start),))
                # Strict: the server refuses a state its binlog does not continue (a lagging or
                # diverged server) instead of starting somewhere near it.
                cur.execute("SET @slave_gtid_strict_mode = 1")
                cur.execute("SET @slave_gtid_ignore_duplicates = 0")
        flags = 0 if blocking else 0x01  # BINLOG_DUMP_NON_BLOCK
        if self.is_mariadb:
            # COM_BINLOG_DUMP: position 4 and an empty file name; the server starts from @slave_connect_state.
            payload = struct.pack("<BIHI", 0x12, 4, flags, server_id)
        else:
            data = self.gtid_start.encoded()
            # COM_BINLOG_DUMP_GTID with BINLOG_THROUGH_GTID: no file name, position 4, the GTID set.
            payload = struct.pack("<BHII", 0x1E, flags | 0x04, server_id, 0) + struct.pack("<QI", 4, len(data)) + data
        conn._write_bytes(struct.pack("<I", len(payload))[:3] + b"\0" + payload)
        conn._next_seq_id = 1
        self._BinLogStreamReader__connected_stream = True


def connection_settings(config: Config) -> dict[str, Any]:
    m = config.mysql
    return {
        "host": m.host,
        "port": m.port,
        "user": m.user,
        "password": m.resolved_password(),
        "connect_timeout": m.connect_timeout_seconds,
        "read_timeout": m.read_timeout_seconds,
        "charset": "utf8mb4",
        **m.tls_settings(),
    }


class BinlogSource:
    def __init__(
        self,
        config: Config,
        start: BinlogPosition,
        *,
        blocking: bool = True,
        stop_at: BinlogPosition | None = None,
        gtid_start: GtidSet | None = None,
        is_mariadb: bool = False,
        prefetch: Callable[[WordPressTable, str, list[dict[str, Any]]], None] | None = None,
        prefetch_changes: Callable[[list[RowChange]], None] | None = None,
    ) -> None:
        """From `start`, or with `gtid_start` from the first transaction that set lacks (then `start`
        only names the place in messages and until the server's first rotate event; `is_mariadb`
        picks the request: MariaDB's slave_connect_state or MySQL's COM_BINLOG_DUMP_GTID)."""
        self._config = config
        self._start = start
        self._gtid_start = gtid_start
        self._is_mariadb = is_mariadb
        self._blocking = blocking
        self._stop_at = stop_at
        # Called with each rows event's decoded rows before the first of them is yielded (the mapper
        # asks for what they will look up in one query); never for rows held in an XA transaction.
        self._prefetch = prefetch
        # With fast decoding (the chunked packet reader says what is already received): called once
        # for the row changes of a run of consecutive transactions read without waiting, before the
        # first of them is yielded (WordPress writes each statement in its own transaction, so one
        # rows event rarely names two posts). Replaces `prefetch` then.
        self._prefetch_changes = prefetch_changes if config.source.fast_decoding else None
        self._tables = TableMatcher(config.wordpress.table_prefix)
        self._reader: BinLogStreamReader | None = None

    def close(self) -> None:
        if self._reader is not None:
            try:
                self._reader.close()
            except Exception:  # closing a broken socket must not mask the error that broke it
                log.debug("error while closing the binlog reader", exc_info=True)
            self._reader = None

    def _open(self) -> BinLogStreamReader:
        cfg = self._config
        reader = _Reader(
            connection_settings=connection_settings(cfg),
            server_id=cfg.mysql.server_id,
            resume_stream=True,
            log_file=self._start.file,
            log_pos=self._start.pos,
            blocking=self._blocking,
            # File/position resume works against MariaDB only with is_mariadb=False (see the notes);
            # a GTID start goes through _Reader's own packets.
            is_mariadb=self._gtid_start is not None and self._is_mariadb,
            only_schemas=[cfg.wordpress.database],
            only_events=[
                WriteRowsEvent,
                UpdateRowsEvent,
                DeleteRowsEvent,
                TableMapEvent,
                PartialUpdateRowsEvent,
                XAPrepareEvent,
                # The library drops events whose class is not listed, the table maps included.
                *fast_decoding.EVENT_CLASSES,
                *mysql_events.EVENT_CLASSES,
                XidEvent,
                QueryEvent,
                GtidEvent,
                MariadbGtidEvent,
                RotateEvent,
                HeartbeatLogEvent,
                NotImplementedEvent,
            ],
            filter_non_implemented_events=False,
            slave_heartbeat=cfg.mysql.heartbeat_seconds if self._blocking else None,
            pymysql_wrapper=_OneShotConnector(
                cfg.source.fast_decoding, cfg.mysql.stall_seconds() if self._blocking else None
            ),
            enable_logging=False,
        )
        reader.gtid_start = self._gtid_start
        reader.lean = cfg.source.fast_decoding
        return reader

    def items(self) -> Iterator[SourceItem]:
        """Row changes and boundaries from the start position; raises SourceError on any failure."""
        self._reader = self._open()
        try:
            if self._prefetch_changes is None:
                yield from self._read(self._reader)
            else:
                reader = self._reader
                yield from read_ahead(
                    self._read(reader, prefetch=False),
                    lambda: packets.ready(getattr(reader, "_stream_connection", None)),
                    self._prefetch_changes,
                )
            if self._blocking and self._stop_at is None:
                # A blocking dump never runs out of binlog: it ends only when the server ends it (MySQL
                # sends its dump threads an EOF packet when it shuts down). A lost connection, not the end.
                raise SourceError("the server ended the binlog stream (shut down or restarted?)")
        except _LibraryReconnected:
            raise SourceError(
                "the binlog connection was lost (the server closed it, or sent neither events nor heartbeats "
                f"for {self._config.mysql.stall_seconds():g}s)"
            ) from None
        except pymysql.err.OperationalError as exc:
            raise self._classify(exc) from None
        except pymysql.err.InternalError as exc:
            raise self._classify(exc) from None
        except (OSError, pymysql.err.Error) as exc:
            raise SourceError(f"binlog connection failed: {exc}") from None
        finally:
            self.close()

    def _classify(self, exc: Exception) -> SourceError | PositionGoneError:
        code = exc.args[0] if exc.args else None
        message = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
        if code == 1236:
            if "same server_uuid/server_id" in message or "same server_id" in message:
                # Another binlog reader connected with our server_id and the server dropped us for it:
                # transient (we reconnect with backoff), but the operator must hear why.
                return SourceError(
                    f"the server dropped this binlog reader: another one connected with server_id "
                    f"{self._config.mysql.server_id} ({message})",
                    "give every binlog reader its own mysql.server_id (wpcdc replay uses mysql.server_id + 1)",
                )
            if self._gtid_start is not None:
                return self._gtid_refused(message)
            if "first log file" in message or "not find" in message.lower():
                return PositionGoneError(
                    f"binlog position {self._start} is not on the server: {message}",
                    "the file was purged; run `wpcdc check` to see the oldest file, then either replay "
                    "from it knowing there is a gap, or re-snapshot",
                )
            return SourceError(
                f"the server refused to stream from {self._start}: {message}",
                "use a position where a transaction starts (a checkpoint written by wpcdc, or the "
                "position of a GTID/BEGIN event in `mysqlbinlog` output)",
                fatal=True,
            )
        if code in (1045, 1227, 1044):
            return SourceError(
                f"MySQL refused the replication connection: {message}",
                "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* and SELECT on the WordPress "
                "schema to the configured mysql.user, and check mysql.password",
                fatal=True,
            )
        return SourceError(f"binlog connection failed: {message} (error {code})")

    def _gtid_refused(self, message: str) -> SourceError | PositionGoneError:
        """The server's answer to a GTID start it cannot serve: the transactions after the state were
        purged (a gap), or the server lacks some of the state's (it lags behind, or belongs to another
        topology). Neither is read from a wrong place; the second is not fatal (another server of
        mysql.hosts, or this one after it caught up, can serve the state)."""
        state = str(self._gtid_start)
        low = message.lower()
        if "purged" in low or "not find gtid state" in low or "could not find" in low:
            return PositionGoneError(
                f"the server no longer has the binlog after the checkpoint's GTID state {state}: {message}",
                "the transactions after it were purged; re-snapshot (snapshot.mode: when_needed does it by itself), "
                "or `wpcdc checkpoint reset` knowing there is a gap, and raise binlog_expire_logs_seconds",
            )
        return SourceError(
            f"the server cannot continue the checkpoint's GTID state {state}: {message}",
            "the server lacks transactions the checkpoint has (it lags behind, or belongs to another replication "
            "topology); wait for it to catch up, or point mysql.host at a server of the same topology",
        )

    def _read(self, reader: BinLogStreamReader, prefetch: bool = True) -> Iterator[SourceItem]:
        file = self._start.file
        gtid: str | None = None
        # None until the first event proves the start position is a transaction boundary.
        in_txn: bool | None = None
        stop_at = self._stop_at
        match = self._tables.match
        prefetch_event = self._prefetch if prefetch else None
        # Where the current transaction can be read again from: the end of the previous one.
        txn_from = self._start
        # Row items of an XA transaction, held until its XA PREPARE: its outcome is decided later.
        xa: list[RowChange | UndecodableRows] | None = None
        # The next captured row's ordinal within its transaction (RowChange.txn_row): with the GTID,
        # it names the row the same way on every server of the topology.
        txn_row = 0
        kinds = _KINDS

        for ev in _unpack_payloads(reader):
            kind = kinds.get(type(ev))
            if kind is None:
                kind = kinds[type(ev)] = _kind(type(ev))
            if kind == _ROTATE:
                file = ev.next_binlog
                if not in_txn:
                    txn_from = BinlogPosition(file, ev.position)
                continue
            if kind == _HEARTBEAT:
                # A heartbeat is sent only when the dump thread has nothing left to send, so its
                # log_pos is the end of the last whole transaction in ev.ident (a boundary).
                at = ev.packet.log_pos
                yield Idle(ev.timestamp, BinlogPosition(ev.ident, at) if at > 4 and in_txn is not True else None)
                continue
            if kind == _MARIADB_GTID:
                gtid = ev.gtid
                txn_row = 0
                # A MariaDB GTID event opens the transaction (it replaces BEGIN); a standalone one
                # (DDL) is closed by its single query.
                in_txn = not ev.flags & _MARIADB_GTID_STANDALONE
                xa = [] if ev.flags & _MARIADB_GTID_PREPARED_XA else None
                continue
            if kind == _MYSQL_GTID:  # followed by a BEGIN query, which opens the transaction
                gtid = ev.gtid
                txn_row = 0
                in_txn = False
                xa = None
                continue
            if kind == _XA_PREPARE:
                # The end of an XA transaction's part in the binlog, not its commit.
                if in_txn is None:
                    self._mid_transaction()
                in_txn = False
                end = _boundary(file, ev, gtid)
                xid = xid_key(ev.xid_gtrid, ev.xid_bqual, ev.xid_format_id)
                yield XAPrepared(PreparedRef(xid, txn_from, end.next_position), end, xa or [], ev.one_phase)
                xa = None
                gtid, txn_row = None, 0  # a transaction without a GTID event (anonymous) must not take this one's
                txn_from = end.next_position
                if stop_at is not None and stop_at <= end.next_position:
                    return
                continue
            if kind == _QUERY or kind == _XID:
                outcome: bool | None = None
                if kind == _QUERY:
                    query = ev.query.strip().upper()
                    if query == "BEGIN":
                        in_txn = True
                        continue
                    if query.startswith("XA "):
                        verb = query[3:].lstrip()
                        if verb.startswith("START"):  # MySQL: XA START opens the transaction (no BEGIN)
                            in_txn = True
                            xa = []
                            continue
                        if not in_txn and verb.startswith(("COMMIT", "ROLLBACK")):
                            outcome = verb.startswith("COMMIT")
                    # COMMIT ends a non-transactional group; any other query outside a transaction
                    # (DDL) is a transaction of its own; inside one (SAVEPOINT, …) it ends nothing.
                    if query not in ("COMMIT", "ROLLBACK") and in_txn:
                        continue
                elif in_txn is None:
                    self._mid_transaction()
                in_txn = False
                end = _boundary(file, ev, gtid)
                xid = None
                if outcome is not None:
                    xid = parse_xid(ev.query.strip()[3:].lstrip()[6 if outcome else 8 :].lstrip())
                    if xid is None:
                        log.error(
                            "cannot read the XID of %r at %s:%d; the prepared transaction it decides stays held",
                            ev.query.strip()[:200], file, event_start(ev), extra={"event": "xa_unreadable"},
                        )  # fmt: skip
                if outcome is None and kind == _QUERY and query[:1] in "TDRA":
                    yield from self._table_changes(ev, file, gtid)
                yield end if xid is None else XAOutcome(xid, bool(outcome), end)
                gtid, txn_row = None, 0
                txn_from = end.next_position
                if stop_at is not None and stop_at <= end.next_position:
                    return
                continue
            if kind == _TABLE_MAP:
                if in_txn is None:
                    self._mid_transaction()
                continue
            if kind == _NOT_IMPLEMENTED:
                if ev.event_type in _UNDECODABLE_EVENT_TYPES:
                    raise SourceError(
                        f"binlog event type {ev.event_type} at {file}:{event_start(ev)} "
                        "holds compressed rows that cannot be decoded",
                        "turn off log_bin_compress (MariaDB)",
                        fatal=True,
                    )
                continue
            # A rows event.
            if in_txn is None:
                self._mid_transaction()
            wp = match(ev.table)
            if wp is None:
                continue
            pos = event_start(ev)
            inner = getattr(ev, "payload_index", None)
            ts = ev.timestamp
            op = "update" if kind == _UPDATE or kind == _PARTIAL_UPDATE else "insert" if kind == _INSERT else "delete"
            try:
                if kind == _PARTIAL_UPDATE:
                    _refuse_partial_json(ev)
                rows = ev.rows
            except Exception as exc:  # undecodable row images: dead-letter them, do not crash-loop here
                raw = bytes(ev.packet.packet.get_all_data())
                error = f"{type(exc).__name__}: {exc}"
                bad = UndecodableRows(op, ev.table, wp, file, pos, ts, gtid, error, raw, inner, txn_row)
                txn_row += 1
                if xa is not None:
                    xa.append(bad)
                else:
                    yield bad
                continue
            base = txn_row
            txn_row += len(rows)
            if xa is not None:
                xa.extend(_row_changes(op, ev.table, wp, rows, file, pos, ts, gtid, inner, base))
                continue
            if prefetch_event is not None:
                prefetch_event(wp, op, rows)
            if op == "update":
                for i, r in enumerate(rows):
                    yield RowChange(
                        "update", ev.table, wp, r["before_values"], r["after_values"], file, pos, i, ts, gtid, inner,
                        base + i,
                    )  # fmt: skip
            elif op == "insert":
                for i, r in enumerate(rows):
                    yield RowChange("insert", ev.table, wp, None, r["values"], file, pos, i, ts, gtid, inner, base + i)
            else:
                for i, r in enumerate(rows):
                    yield RowChange("delete", ev.table, wp, r["values"], None, file, pos, i, ts, gtid, inner, base + i)

    def _table_changes(self, ev: QueryEvent, file: str, gtid: str | None) -> Iterator[TableChange]:
        raw = getattr(ev, "schema", b"")  # the statement's default database (USE ...)
        schema = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw or "")
        found = table_ddl(ev.query, schema, self._config.wordpress.database)
        pos = event_start(ev)
        for i, (kind, table, renamed_from, renamed_to) in enumerate(found):
            wp = self._tables.match(table)
            if wp is None or wp.kind not in _CAPTURED:
                continue
            statement = ev.query.strip()[:1000]
            yield TableChange(kind, table, wp, renamed_from, renamed_to, i, file, pos, ev.timestamp, gtid, statement)

    def _mid_transaction(self) -> None:
        raise SourceError(
            f"binlog position {self._start} is inside a transaction; rows of that transaction would be lost",
            "start from a transaction boundary: a checkpoint written by wpcdc, or the position of a "
            "GTID/BEGIN event as shown by `mysqlbinlog`",
            fatal=True,
        )


# What the source loop does with an event, by its class: the first isinstance test that holds, in
# the loop's order, found once per class instead of a chain of up to ten isinstance tests per
# event. Anything else is a rows event: delete unless it is an update or insert.
_ROTATE, _HEARTBEAT, _MARIADB_GTID, _MYSQL_GTID, _XA_PREPARE, _QUERY, _XID, _TABLE_MAP = range(8)
_NOT_IMPLEMENTED, _PARTIAL_UPDATE, _UPDATE, _INSERT, _DELETE = range(8, 13)
_KIND_ORDER: tuple[tuple[type, int], ...] = (
    (fast_decoding.LeanXid, _XID), (fast_decoding.LeanQuery, _QUERY), (fast_decoding.LeanTableMap, _TABLE_MAP),
    (fast_decoding.LeanMariadbGtid, _MARIADB_GTID), (fast_decoding.LeanMysqlGtid, _MYSQL_GTID),
    (RotateEvent, _ROTATE), (HeartbeatLogEvent, _HEARTBEAT), (MariadbGtidEvent, _MARIADB_GTID),
    (GtidEvent, _MYSQL_GTID), (XAPrepareEvent, _XA_PREPARE), (QueryEvent, _QUERY), (XidEvent, _XID),
    (TableMapEvent, _TABLE_MAP), (NotImplementedEvent, _NOT_IMPLEMENTED),
    (PartialUpdateRowsEvent, _PARTIAL_UPDATE), (UpdateRowsEvent, _UPDATE), (WriteRowsEvent, _INSERT),
)  # fmt: skip
_KINDS: dict[type, int] = {}


def _kind(cls: type) -> int:
    return next((kind for base, kind in _KIND_ORDER if issubclass(cls, base)), _DELETE)


# Row changes per read-ahead batch at most: one prefetch query per table kind and blog for them
# (lookup.py splits larger id lists), and the memory of a few hundred rows.
READ_AHEAD_ROWS = 500


def read_ahead(
    items: Iterator[SourceItem], ready: Callable[[], bool], prefetch: Callable[[list[RowChange]], None]
) -> Iterator[SourceItem]:
    """`items` in the same order, held back only while the next packet has already begun to arrive
    (so a quiet stream is never waited on) and until READ_AHEAD_ROWS row changes: `prefetch` sees the row
    changes of everything held before the first of them is yielded. Anything but a row change or a
    transaction end (heartbeats, DDL, XA, dead letters) is passed on at once with what is held; an
    error after held items comes after them, as it would have without holding."""
    held: list[SourceItem] = []
    rows: list[RowChange] = []

    def release(prefetched: bool = True) -> list[SourceItem]:
        if rows and prefetched:
            prefetch(rows)
        out = list(held)
        held.clear()
        rows.clear()
        return out

    source = iter(items)
    while True:
        try:
            item = next(source)
        except StopIteration:
            break
        except Exception:
            # The held items first, looked up one by one (a lookup failure must not hide this error).
            yield from release(prefetched=False)
            raise
        kind = type(item)
        held.append(item)
        if kind is RowChange:
            rows.append(item)  # type: ignore[arg-type]
            if len(rows) < READ_AHEAD_ROWS:
                continue
        elif kind is TransactionEnd and rows and ready():
            continue
        yield from release()
    yield from release()


def _row_changes(
    op: str, table: str, wp: Any, rows: list[dict[str, Any]], file: str, pos: int, ts: int, gtid: str | None,
    inner: int | None = None, base: int = 0,
) -> Iterator[RowChange]:  # fmt: skip
    for i, r in enumerate(rows):
        if op == "update":
            yield RowChange(
                op, table, wp, r["before_values"], r["after_values"], file, pos, i, ts, gtid, inner, base + i
            )
        elif op == "insert":
            yield RowChange(op, table, wp, None, r["values"], file, pos, i, ts, gtid, inner, base + i)
        else:
            yield RowChange(op, table, wp, r["values"], None, file, pos, i, ts, gtid, inner, base + i)


def table_ddl(query: str, schema: str, database: str) -> list[tuple[str, str, str | None, str | None]]:
    """(kind, table, renamed_from, renamed_to) for each table of `database` that a TRUNCATE / DROP
    TABLE / RENAME TABLE / ALTER TABLE ... RENAME statement empties, removes or renames; `schema` is
    the statement's default database. A rename *to* a name in `database` counts too (the table with
    that name is now another one). Names of other databases come back as written."""
    text = _COMMENT.sub(" ", query).strip()

    def parts(name: str) -> tuple[str, str]:
        p = [x.strip().strip("`").replace("``", "`") for x in _split_name(name)]
        return (p[0], p[1]) if len(p) == 2 else (schema, p[0])

    def local(name: str) -> str | None:
        db, table = parts(name)
        return table if db == database else None

    def written(name: str) -> str:
        db, table = parts(name)
        return table if db == database else f"{db}.{table}"

    out: list[tuple[str, str, str | None, str | None]] = []

    def renamed(old: str, new: str) -> None:
        for side in (old, new):
            if (t := local(side)) is not None:
                out.append(("renamed", t, written(old), written(new)))

    if m := _TRUNCATE.match(text):
        if (t := local(m[1])) is not None:
            out.append(("truncated", t, None, None))
    elif m := _DROP.match(text):
        out += [("dropped", t, None, None) for n in _NAME_RE.findall(m[1]) if (t := local(n)) is not None]
    elif m := _RENAME.match(text):
        for old, new in _RENAME_PAIR.findall(m[1]):
            renamed(old, new)
    elif m := _ALTER_RENAME.match(text):
        renamed(m[1], m[2])
    return out


def _split_name(name: str) -> list[str]:
    """`db`.`t` -> [`db`, `t`] without splitting on a dot inside backquotes."""
    parts, current, quoted = [], "", False
    for ch in name:
        if ch == "`":
            quoted = not quoted
        if ch == "." and not quoted:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return parts


def xid_key(gtrid: bytes, bqual: bytes, format_id: int) -> str:
    """An XID as the server writes it in XA COMMIT/ROLLBACK statements: X'gtrid',X'bqual',formatID."""
    return f"X'{gtrid.hex()}',X'{bqual.hex()}',{format_id}"


def parse_xid(text: str) -> str | None:
    m = _XID_HEX.match(text)
    if m:
        return xid_key(bytes.fromhex(m[1]), bytes.fromhex(m[2]), int(m[3]))
    m = _XID_TEXT.match(text)
    if m:
        unquote = lambda v: (v or "").replace("''", "'").encode()  # noqa: E731
        return xid_key(unquote(m[1]), unquote(m[2]), int(m[3] or 1))
    return None


def event_start(ev: Any) -> int:
    """Where the event starts in its file, as SHOW BINLOG EVENTS (Pos) and mysqlbinlog (`# at`) show it.

    The header's log_pos is the end of the event and the header's event_size its whole length. The
    library's `ev.event_size` is shorter (it leaves out the 19-byte header and the 4-byte checksum),
    so subtracting that one lands 23 bytes inside the event. Every position wpcdc publishes comes
    from here. An event inside a compressed transaction has no position of its own (its header says
    0; SHOW BINLOG EVENTS prints the payload's end): it is identified by its payload's start and its
    `payload_index` (RowChange.event).
    """
    payload = getattr(ev, "payload", None)
    if payload is not None:
        ev = payload
    return int(ev.packet.log_pos - ev.packet.event_size)


class PartialJsonImage(Exception):
    pass


def _refuse_partial_json(ev: PartialUpdateRowsEvent) -> None:
    """binlog_row_value_options=PARTIAL_JSON (settable per session) turns every UPDATE into a
    PARTIAL_UPDATE_ROWS event. Only JSON columns get partial (diff) after images; other columns are
    full, so tables without JSON columns (every WordPress core table) decode exactly. For a table
    with a JSON column the library returns the diff, or None for an unchanged column: a wrong after
    image. Such events are dead-lettered (with their raw bytes), never emitted as updates, and never
    a stop that every restart would hit again."""
    json_columns = [c.name for c in ev.columns if c.type == FIELD_TYPE.JSON]
    if json_columns:
        raise PartialJsonImage(
            f"partial JSON after image (binlog_row_value_options=PARTIAL_JSON) of {ev.schema}.{ev.table}, "
            f"JSON column(s) {', '.join(map(str, json_columns))}; SET GLOBAL binlog_row_value_options='' "
            "on the source (and in the sessions that set it) so updates are logged with full images"
        )


def _unpack_payloads(reader: BinLogStreamReader) -> Iterator[Any]:
    """The reader's events, each compressed transaction replaced by its inner events, streamed."""
    for ev in reader:
        if not isinstance(ev, TransactionPayloadEvent):
            yield ev
            continue
        try:
            yield from ev.events()
        except PayloadError as exc:
            start = event_start(ev)
            raise SourceError(
                f"the compressed transaction at {reader.log_file}:{start} cannot be read: {exc}",
                f"check it with `mysqlbinlog --start-position={start} {reader.log_file}`; if the server "
                "wrote it correctly this is a wpcdc bug (please report it with that output); to go on without "
                f"this transaction, `wpcdc checkpoint set {reader.log_file}:{ev.packet.log_pos}`",
                fatal=True,
            ) from None


def _boundary(file: str, ev: Any, gtid: str | None) -> TransactionEnd:
    next_pos = ev.packet.log_pos
    if next_pos <= 0:
        raise SourceError(
            f"the server wrote end_log_pos=0 in {file}; positions cannot be trusted",
            "set binlog_legacy_event_pos=ON (MariaDB >= 11.4)",
            fatal=True,
        )
    return TransactionEnd(BinlogPosition(file, next_pos), gtid, ev.timestamp)
