"""Plain SQL questions to the source server: settings, binlog files, grants, tables."""

from __future__ import annotations

import enum
import os
import re
import ssl
import struct
import threading
import uuid as _uuid
from dataclasses import dataclass, field
from typing import Any

import pymysql

from cdc.config import Config
from cdc.core.position import BinlogPosition
from cdc.errors import PositionGoneError, PreflightError, ServerUnreachable, SourceError

# `log_bin=ON` in my.cnf is taken as the base name: MariaDB would write ON.000001, ON.000002, …
LOG_BIN_FIX = (
    "put log_bin=mysql-bin under [mysqld] in my.cnf (or start with --log-bin=mysql-bin; the files are then "
    "mysql-bin.000001, …) and restart the server"
)


_SSL_CONTEXTS: dict[tuple[Any, ...], ssl.SSLContext] = {}
_SSL_CONTEXTS_LOCK = threading.Lock()


def _file_identity(path: object) -> tuple[object, ...]:
    """What tells a rewritten certificate file from the one a context was built with."""
    if not isinstance(path, str):
        return (path,)
    try:
        st = os.stat(path)
    except OSError:
        return (path, None)  # building the context raises what PyMySQL always raised for it
    return (path, st.st_ino, st.st_size, st.st_mtime_ns)


class _Connection(pymysql.connections.Connection):  # type: ignore[misc]
    """PyMySQL's connection, with the TLS context it builds per connection built once per process
    for each set of TLS settings. It builds one even without mysql.tls (it then offers TLS and
    verifies nothing), and create_default_context parses the system CA bundle each time: ~20 ms of
    CPU per connection, and a streamer opens several. The context is PyMySQL's own, from its own
    code, so verification is what it was; the key holds the settings and the certificate files'
    identities, so a CA or client certificate replaced on disk is read again by the next connection."""

    def _create_ssl_ctx(self, sslp: Any) -> ssl.SSLContext:
        if isinstance(sslp, ssl.SSLContext):
            return sslp
        key = tuple(
            (name, _file_identity(value) if name in ("ca", "capath", "cert", "key") else value)
            for name, value in sorted(sslp.items())
        )
        with _SSL_CONTEXTS_LOCK:
            ctx = _SSL_CONTEXTS.get(key)
            if ctx is None:
                ctx = _SSL_CONTEXTS[key] = super()._create_ssl_ctx(sslp)
        return ctx


def open_connection(**settings: Any) -> pymysql.connections.Connection:
    """pymysql.connect with the handshake bounded by connect_timeout. PyMySQL reads the handshake
    with read_timeout, so a server that accepts TCP but never answers (SIGSTOPped, swapping) held
    every connect, the restart probe included, for read_timeout; queries still get read_timeout."""
    read_timeout = settings.get("read_timeout")
    connect_timeout = settings.get("connect_timeout")
    if not read_timeout or not connect_timeout or connect_timeout >= read_timeout:
        return _Connection(**settings)
    conn = _Connection(**{**settings, "read_timeout": connect_timeout})
    conn._read_timeout = read_timeout  # PyMySQL applies it before the next read
    return conn


def connect(config: Config, database: str | None = None) -> pymysql.connections.Connection:
    m = config.mysql
    try:
        return open_connection(
            host=m.host,
            port=m.port,
            user=m.user,
            password=m.resolved_password(),
            database=database,
            connect_timeout=m.connect_timeout_seconds,
            read_timeout=m.read_timeout_seconds,
            charset="utf8mb4",
            autocommit=True,
            **m.tls_settings(),  # type: ignore[arg-type]
        )
    except pymysql.err.OperationalError as exc:
        code = exc.args[0] if exc.args else None
        message = exc.args[1] if len(exc.args) > 1 else str(exc)
        if code == 1045:
            raise PreflightError(
                f"MySQL rejected user {m.user!r} at {m.host}:{m.port}: access denied",
                "check mysql.user and the password (WPCDC_MYSQL_PASSWORD, mysql.password_file or mysql.password)",
            ) from None
        if code == 1049:
            raise PreflightError(
                f"database {database!r} does not exist on {m.host}:{m.port}",
                "set wordpress.database to the schema that holds the WordPress tables",
            ) from None
        raise ServerUnreachable(
            f"cannot connect to MySQL at {m.host}:{m.port}: {message}",
            "check mysql.host and mysql.port, and that the server is up and reachable",
        ) from None


def binlog_status_statement(version: str) -> str:
    """The statement that names the binlog end for a server's `SELECT VERSION()`: MySQL 8.2 added
    SHOW BINARY LOG STATUS and 8.4 removed SHOW MASTER STATUS; MariaDB keeps SHOW MASTER STATUS."""
    if "mariadb" in version.lower():
        return "SHOW MASTER STATUS"
    m = re.match(r"(\d+)\.(\d+)", version)
    if m and (int(m.group(1)), int(m.group(2))) >= (8, 2):
        return "SHOW BINARY LOG STATUS"
    return "SHOW MASTER STATUS"


class Server:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.conn = connect(config)
        self._version: str | None = None

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def query(self, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
        try:
            with self.conn.cursor() as cur:
                cur.execute(sql, args)
                return list(cur.fetchall())
        except pymysql.err.OperationalError as exc:
            if exc.args and exc.args[0] in (1227, 1142, 1044, 1045):
                raise PreflightError(
                    f"user {self.config.mysql.user!r} may not run {sql.split(' WHERE')[0]!r}: {exc.args[1]}",
                    "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* and SELECT on the WordPress schema "
                    "to the wpcdc user",
                ) from None
            raise

    def variables(self, *names: str) -> dict[str, str]:
        rows = self.query("SHOW GLOBAL VARIABLES WHERE Variable_name IN (" + ",".join(["%s"] * len(names)) + ")", names)
        return {str(k).lower(): str(v) for k, v in rows}

    def version(self) -> str:
        if self._version is None:
            self._version = str(self.query("SELECT VERSION()")[0][0])
        return self._version

    def is_mariadb(self) -> bool:
        return "mariadb" in self.version().lower()

    def server_id(self) -> int:
        return int(self.query("SELECT @@server_id")[0][0])

    def binary_logs(self) -> list[str]:
        return [name for name, _ in self.binary_log_sizes()]

    def binary_log_sizes(self) -> list[tuple[str, int]]:
        try:
            return [(str(r[0]), int(r[1])) for r in self.query("SHOW BINARY LOGS")]
        except pymysql.err.OperationalError as exc:
            if exc.args and exc.args[0] == 1381:  # binary logging not enabled
                return []
            raise

    def current_position(self) -> BinlogPosition:
        rows = self.query(binlog_status_statement(self.version()))
        if not rows:
            raise self._binlog_off()
        return BinlogPosition(str(rows[0][0]), int(rows[0][1]))

    def oldest_position(self) -> BinlogPosition:
        logs = self.binary_logs()
        if not logs:
            raise self._binlog_off()
        return BinlogPosition(logs[0], 4)

    def resume_position(self, position: BinlogPosition, gtid: str | None, what: str = "checkpoint") -> BinlogPosition:
        """Where to resume for a checkpoint at `position` whose last transaction was `gtid`: the
        position itself while its file exists; the start of the oldest file when `position`'s file was
        purged but provably had nothing after `gtid` (a quiet rotation, then a purge); else
        PositionGoneError (a real gap)."""
        logs = self.binary_logs()
        if position.file in logs:
            return position
        if logs and gtid and position < BinlogPosition(logs[0], 4) and self._nothing_after(gtid, logs[0]):
            return BinlogPosition(logs[0], 4)
        raise self._gone(position, logs, what)

    def _nothing_after(self, gtid: str, file: str) -> bool:
        """True when the server wrote no transaction after GTID `gtid` before `file` began (MariaDB; MySQL below).

        A MariaDB binlog file starts with a Gtid_list event: the last GTID of every domain and server
        written before the file. If the only domain there is `gtid`'s and its newest GTID is `gtid`
        itself, the purged files held nothing after it. Other domains could have written after it
        unseen (their GTIDs carry no order against ours), so then the answer is no."""
        if ":" in gtid:
            return self._nothing_after_mysql(gtid, file)
        parts = gtid.split("-")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            return False
        try:
            rows = self.query(f"SHOW BINLOG EVENTS IN '{file}' LIMIT 3")
        except pymysql.err.MySQLError:
            return False
        for row in rows:
            if str(row[2]) != "Gtid_list":
                continue
            listed = [g.split("-") for g in str(row[5]).strip().strip("[]").split(",") if g.strip()]
            if not listed or any(len(g) != 3 or not all(p.strip().isdigit() for p in g) for g in listed):
                return False
            domain, _, seq = parts
            if any(g[0].strip() != domain for g in listed):
                return False
            newest = max(listed, key=lambda g: int(g[2]))
            return [p.strip() for p in newest] == parts and int(newest[2]) == int(seq)
        return False

    def _nothing_after_mysql(self, gtid: str, file: str) -> bool:
        """The MySQL form of _nothing_after: a MySQL binlog file starts with a Previous_gtids event,
        the GTID set executed before the file. If that set names only `gtid`'s server (uuid, no tags)
        and its highest transaction number is `gtid`'s, nothing with a GTID came after it; with
        gtid_mode=ON nothing without one can have (anonymous transactions are refused). Anything
        else (other servers, tags, gtid_mode not ON) is not provable: the answer is no."""
        uuid, _, number = gtid.partition(":")
        if not number.isdigit() or ":" in number:
            return False
        try:
            rows = self.query(f"SHOW BINLOG EVENTS IN '{file}' LIMIT 3")
            previous = [row for row in rows if str(row[2]) == "Previous_gtids"]
            if not previous or str(self.query("SELECT @@GLOBAL.gtid_mode")[0][0]).upper() != "ON":
                return False
        except pymysql.err.MySQLError:
            return False
        for row in previous:
            members = [m.strip() for m in str(row[5]).replace("\n", "").split(",") if m.strip()]
            if len(members) != 1:
                return False
            listed_uuid, *intervals = members[0].split(":")
            if listed_uuid.lower() != uuid.lower() or not intervals:
                return False
            ends = []
            for interval in intervals:
                low, _, high = interval.partition("-")
                if not low.isdigit() or (high and not high.isdigit()):
                    return False  # a tag (MySQL >= 8.3) or something unknown
                ends.append(int(high or low))
            return max(ends) == int(number)
        return False

    def _binlog_off(self, what: str = "") -> PreflightError:
        m = self.config.mysql
        reading = f": the {what} cannot be read" if what else ""
        return PreflightError(f"binary logging is off on {m.host}:{m.port} (log_bin=OFF){reading}", LOG_BIN_FIX)

    def require_position(self, position: BinlogPosition, what: str = "checkpoint") -> None:
        logs = self.binary_logs()
        if position.file not in logs:
            raise self._gone(position, logs, what)

    def _gone(self, position: BinlogPosition, logs: list[str], what: str) -> PreflightError | PositionGoneError:
        """Why a position whose file is not in `logs` cannot be read: binary logging is off, the file
        was purged, or it is newer than any file here (or a name this server never used)."""
        if not logs:
            return self._binlog_off(f"{what} {position}")
        oldest, newest = logs[0], logs[-1]
        named, first, last = _file_number(position.file), _file_number(oldest), _file_number(newest)
        if named is not None and first is not None and named[0] == first[0] and named[1] < first[1]:
            return PositionGoneError(
                f"the {what} {position} names binlog file {position.file}, which the server no longer has "
                f"(oldest available: {oldest})",
                f"events between the {what} and {oldest}:4 are gone. Either replay from the oldest file knowing "
                f"there is a gap (`wpcdc checkpoint set {oldest}:4`) or re-snapshot, and raise "
                "binlog_expire_logs_seconds so the binlog outlives wpcdc's downtime",
            )
        # Not purged: a file after the newest (another server's position, or this server's binlog was
        # reset by RESET MASTER or a restore), or a name this server never used.
        m = self.config.mysql
        newer = named is not None and last is not None and named[0] == last[0] and named[1] > last[1]
        return PositionGoneError(
            f"the {what} {position} names binlog file {position.file}, "
            + ("newer than any" if newer else "which is not one")
            + f" on {m.host}:{m.port} (it has {oldest} to {newest})",
            f"point mysql.host/mysql.port at the server that wrote the {what}; if this server's binlog was reset "
            "(RESET MASTER, a restore), start afresh: `wpcdc checkpoint reset`, then `wpcdc snapshot` for the "
            "current state of the posts",
        )

    def require_boundary(self, position: BinlogPosition, what: str = "position") -> None:
        """Refuse a position inside a transaction (or not at an event), as `run` would once it reads
        there: asks the server for the events that follow it. Call after require_position."""
        try:
            events = self.query("SHOW BINLOG EVENTS IN %s FROM %s LIMIT 20", (position.file, position.pos))
        except pymysql.err.OperationalError as exc:
            if not exc.args or exc.args[0] != 1220:  # ER_ERROR_WHEN_EXECUTING_COMMAND: bad offset
                raise
            raise SourceError(
                f"the {what} {position} is not the start of an event in {position.file}: {exc.args[1]}",
                _BOUNDARY_FIX,
                fatal=True,
            ) from None
        for row in events:
            kind = str(row[2])
            # The first event that decides, read as the binlog source reads it (cdc/source/binlog.py):
            # a GTID or a query starts a transaction; a table map, rows or the XID belong to one
            # that started earlier. The rest (annotations, format and GTID-list events) decide nothing.
            if kind in ("Gtid", "Anonymous_Gtid", "Query"):
                return
            if _inside_transaction(kind):
                raise SourceError(
                    f"the {what} {position} is inside a transaction (the event there is {kind}); rows of that "
                    "transaction would be lost, and `run` would refuse to start there",
                    _BOUNDARY_FIX,
                    fatal=True,
                )

    def gtid_executed(self) -> GtidSet:
        """The server's executed GTIDs (MySQL gtid_executed, tags kept; MariaDB gtid_binlog_pos)."""
        name = "gtid_binlog_pos" if self.is_mariadb() else "gtid_executed"
        value = self.variables(name).get(name, "")
        return GtidSet.parse(value)

    def gtid_purged(self) -> GtidSet:
        """What the server no longer has in its binlog: MySQL gtid_purged; MariaDB the Gtid_list that
        opens the oldest file (every domain's last GTID written before it)."""
        if not self.is_mariadb():
            return GtidSet.parse(self.variables("gtid_purged").get("gtid_purged", ""))
        logs = self.binary_logs()
        return self.gtid_state_at(BinlogPosition(logs[0], 4)) if logs else GtidSet()

    def uses_gtid(self, mode: str) -> bool:
        """Whether `source.position` (`auto` | `gtid` | `file`) means GTID positions on this server.
        `auto`: MySQL with gtid_mode=ON (ON_PERMISSIVE lets anonymous transactions through, which no
        GTID state could resume after); MariaDB with gtid_strict_mode=ON (without it a domain's seq_no
        may go backwards or a replica may diverge, so "the last GTID per domain" need not describe what
        was read). `gtid` insists and refuses a MySQL server without gtid_mode=ON."""
        if mode == "file":
            return False
        if self.is_mariadb():
            return mode == "gtid" or self.variables("gtid_strict_mode").get("gtid_strict_mode", "").upper() in (
                "ON",
                "1",
            )
        gtid_mode = self.variables("gtid_mode").get("gtid_mode", "OFF").upper()
        if gtid_mode == "ON":
            return True
        if mode == "gtid":
            m = self.config.mysql
            raise PreflightError(
                f"source.position is gtid but {m.host}:{m.port} has gtid_mode={gtid_mode}",
                "turn GTIDs on (gtid_mode=ON, enforce_gtid_consistency=ON) or set source.position: file (or auto)",
            )
        return False

    def gtids(self) -> ServerGtids:
        """What `classify` needs from this server (a few SHOW/SELECT statements)."""
        writers: dict[tuple[int, int], int] = {}
        if self.is_mariadb():
            writers = parse_binlog_state(self.variables("gtid_binlog_state").get("gtid_binlog_state", ""))
        return ServerGtids(self.gtid_executed(), self.gtid_purged(), writers)

    def gtid_resume_problem(self, state: GtidSet) -> SourceError | PositionGoneError | None:
        """Why this server cannot continue GTID state `state` (a checkpoint's), or None when it can
        (`classify`'s verdict, as the error `run` and `check` show):
        - it lacks transactions the state has: SourceError (not fatal: it lags and may catch up);
        - it shares no GTID history with the state (another topology): a fatal SourceError;
        - it purged transactions the state lacks: PositionGoneError (a gap, the purged path).
        It asks, it does not stream."""
        m = self.config.mysql
        where = f"{m.host}:{m.port}"
        found = classify(state, self.gtids())
        if found.verdict is Verdict.LAGGING:
            return SourceError(
                f"{where} lacks transactions the checkpoint has already read: {found.detail}",
                "it lags behind; wpcdc waits for it (or read from a server that is up to date)",
            )
        if found.verdict is Verdict.FOREIGN:
            return SourceError(
                f"{where} belongs to another replication topology than the checkpoint: {found.detail}",
                "point wpcdc at a server of the topology the checkpoint was read from, or, if the checkpoint "
                "is the wrong one, `wpcdc checkpoint reset` and start afresh",
                fatal=True,
            )
        if found.verdict is Verdict.PURGED:
            return PositionGoneError(
                f"{where} no longer has transactions the checkpoint has not read yet: {found.detail}",
                "re-snapshot (snapshot.mode: when_needed does it by itself), or `wpcdc checkpoint reset` knowing "
                "there is a gap, and raise binlog_expire_logs_seconds so the binlog outlives wpcdc's downtime",
            )
        return None

    def gtid_state_at(self, position: BinlogPosition) -> GtidSet:
        """The GTID state of the binlog just before `position` (a transaction boundary): the set that
        opens its file (MySQL Previous_gtids; MariaDB Gtid_list, as gtid_binlog_pos) plus the GTIDs of
        the transactions before `position` in that file, read with SHOW BINLOG EVENTS. Not the server's
        gtid_executed: that is the state at the end of the binlog, not at an older position."""
        state = GtidSet()
        at, seen = 4, -1
        while True:
            rows = self.query("SHOW BINLOG EVENTS IN %s FROM %s LIMIT 5000", (position.file, at))
            for row in rows:
                start, kind, info = int(row[1]), str(row[2]), str(row[5])
                if start <= seen:
                    continue  # the page overlap (each page starts at the last event of the one before)
                seen = start
                if kind == "Previous_gtids":
                    state = GtidSet.parse(info)
                elif kind == "Gtid_list":
                    state = _gtid_list(info)
                elif start >= position.pos and kind not in _FILE_HEADER_EVENTS:
                    return state
                elif kind.startswith("Gtid") and (m := _GTID_INFO.search(info)):
                    state = state.add(m.group(1) or m.group(2))
            if len(rows) < 5000:
                return state
            # From the last event's own start, not its end_log_pos: MariaDB >= 11.4 may write 0 there.
            at = seen

    def grants(self) -> list[str]:
        return [str(r[0]) for r in self.query("SHOW GRANTS FOR CURRENT_USER()")]

    def tables(self, database: str) -> list[str]:
        rows = self.query("SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (database,))
        return [str(r[0]) for r in rows]


_BOUNDARY_FIX = (
    "use a transaction boundary: a position wpcdc wrote (its checkpoint, a replay summary's `to`), the "
    "position of a GTID/BEGIN event (`SHOW BINLOG EVENTS IN 'FILE'`, `mysqlbinlog`), or the end of the binlog "
    "(`SHOW MASTER STATUS`)"
)


def _inside_transaction(kind: str) -> bool:
    """SHOW BINLOG EVENTS' Event_type of a table map, a rows event (MySQL's Write_rows, MariaDB's
    Write_rows_v1, …_compressed_v1) or the XID that commits."""
    return kind in ("Table_map", "Xid") or ("_rows" in kind.lower() and kind not in ("Annotate_rows", "Rows_query"))


def _file_number(name: str) -> tuple[str, int] | None:
    """'mysql-bin.000042' -> ('mysql-bin', 42); None when the name has no numeric extension."""
    base, dot, number = name.rpartition(".")
    return (base, int(number)) if dot and number.isdigit() else None


_TAG = re.compile(r"^[a-z_][a-z0-9_]{0,31}$")
_INTERVAL = re.compile(r"^(\d+)(?:-(\d+))?$")
_UUID = re.compile(r"^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$")
_MARIADB_GTID = re.compile(r"^(\d+)-(\d+)-(\d+)$")


@dataclass(frozen=True)
class GtidSet:
    """A MySQL GTID set with tags (MySQL >= 8.3: `uuid:1-5:tag:1-3`), or a MariaDB GTID list
    (`domain-server-seq,…`). python-mysql-replication 1.0.x rejects tags ("GTID format is
    incorrect"), so wpcdc parses sets itself and keeps the tags."""

    # (uuid, tag or "") -> sorted, merged closed intervals
    intervals: dict[tuple[str, str], tuple[tuple[int, int], ...]] = field(default_factory=dict)
    # domain -> (server_id, seq_no), MariaDB only
    mariadb: dict[int, tuple[int, int]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> GtidSet:
        raw: dict[tuple[str, str], list[tuple[int, int]]] = {}
        mariadb: dict[int, tuple[int, int]] = {}
        for element in (e.strip() for e in text.replace("\n", "").split(",")):
            if not element:
                continue
            m = _MARIADB_GTID.match(element)
            if m:
                mariadb[int(m.group(1))] = (int(m.group(2)), int(m.group(3)))
                continue
            sid, *parts = element.split(":")
            sid = sid.strip().lower()
            if not _UUID.match(sid) or not parts:
                raise ValueError(f"{element!r} is not a GTID set element (uuid[:tag]:interval…)")
            sid = str(_uuid.UUID(sid))
            tag = ""
            for part in (p.strip().lower() for p in parts):
                iv = _INTERVAL.match(part)
                if iv:
                    start = int(iv.group(1))
                    end = int(iv.group(2) or start)
                    if start < 1 or end < start:
                        raise ValueError(f"bad interval {part!r} in {element!r}")
                    raw.setdefault((sid, tag), []).append((start, end))
                elif _TAG.match(part):
                    tag = part
                else:
                    raise ValueError(f"{part!r} in {element!r} is neither an interval nor a tag")
        return cls({key: _merge(ivs) for key, ivs in raw.items()}, mariadb)

    def __contains__(self, gtid: object) -> bool:
        """A single GTID: `uuid:gno`, `uuid:tag:gno` or MariaDB's `domain-server-seq`."""
        if not isinstance(gtid, str):
            return False
        m = _MARIADB_GTID.match(gtid)
        if m:
            domain, seq = int(m.group(1)), int(m.group(3))
            return domain in self.mariadb and seq <= self.mariadb[domain][1]
        parts = gtid.lower().split(":")
        if len(parts) not in (2, 3) or not parts[-1].isdigit():
            return False
        sid, tag, gno = str(_uuid.UUID(parts[0])), parts[1] if len(parts) == 3 else "", int(parts[-1])
        return any(a <= gno <= b for a, b in self.intervals.get((sid, tag), ()))

    def __bool__(self) -> bool:
        return bool(self.intervals or self.mariadb)

    def add(self, gtid: str | None) -> GtidSet:
        """This set with one more transaction: MySQL `uuid[:tag]:gno` joins its intervals; MariaDB
        `domain-server-seq` becomes its domain's position (gtid_binlog_pos keeps the last GTID per
        domain, whatever server wrote it). None, or anything else, changes nothing."""
        if not gtid:
            return self
        m = _MARIADB_GTID.match(gtid)
        if m:
            mariadb = dict(self.mariadb)
            mariadb[int(m.group(1))] = (int(m.group(2)), int(m.group(3)))
            return GtidSet(self.intervals, mariadb)
        parts = gtid.lower().split(":")
        if len(parts) not in (2, 3) or not parts[-1].isdigit():
            return self
        key = (str(_uuid.UUID(parts[0])), parts[1] if len(parts) == 3 else "")
        gno = int(parts[-1])
        ivs = self.intervals.get(key, ())
        if ivs and ivs[-1][1] + 1 == gno:  # the common case: the next transaction of the same source
            merged = (*ivs[:-1], (ivs[-1][0], gno))
        elif ivs and ivs[-1][0] <= gno <= ivs[-1][1]:
            return self
        else:
            merged = _merge([*ivs, (gno, gno)])
        return GtidSet({**self.intervals, key: merged}, self.mariadb)

    def missing_from(self, other: GtidSet) -> GtidSet:
        """What this set has and `other` lacks. MySQL: the set difference, tags kept. MariaDB: the
        domains where this position is ahead of `other`'s (or that `other` lacks), with this seq_no."""
        intervals: dict[tuple[str, str], tuple[tuple[int, int], ...]] = {}
        for key, ivs in self.intervals.items():
            left = _subtract(ivs, other.intervals.get(key, ()))
            if left:
                intervals[key] = left
        mariadb = {
            d: (srv, seq)
            for d, (srv, seq) in self.mariadb.items()
            if d not in other.mariadb or seq > other.mariadb[d][1]
        }
        return GtidSet(intervals, mariadb)

    def encoded(self) -> bytes:
        """The MySQL wire encoding of the set, as COM_BINLOG_DUMP_GTID carries it (sql/rpl_gtid_set.cc
        Gtid_set::encode). Without tags: n_sids, then per uuid its 16 bytes, n_intervals and
        [start, end) pairs, all u64 little-endian. With any tag (MySQL >= 8.3) every (uuid, tag) is an
        entry of its own, carries its tag (length << 1 in one byte, then the bytes; 0 untagged) after
        the uuid, and the count becomes (1 << 56) | (n << 8) | 1. python-mysql-replication 1.0.x knows
        only the first form and rejects tags."""
        entries = sorted(self.intervals.items(), key=lambda kv: (_uuid.UUID(kv[0][0]).bytes, kv[0][1]))
        tagged = any(tag for (_, tag), _ in entries)
        out = bytearray(struct.pack("<Q", (1 << 56) | (len(entries) << 8) | 1 if tagged else len(entries)))
        for (sid, tag), ivs in entries:
            out += _uuid.UUID(sid).bytes
            if tagged:
                out += bytes([len(tag) << 1]) + tag.encode("ascii")
            out += struct.pack("<Q", len(ivs))
            for a, b in ivs:
                out += struct.pack("<QQ", a, b + 1)
        return bytes(out)

    def __str__(self) -> str:
        """MySQL's own notation: per uuid the untagged intervals, then each tag with its intervals."""
        out: list[str] = []
        for sid in sorted({sid for sid, _ in self.intervals}):
            text = sid
            for (s, tag), ivs in sorted(self.intervals.items()):
                if s != sid:
                    continue
                if tag:
                    text += f":{tag}"
                text += "".join(f":{a}" if a == b else f":{a}-{b}" for a, b in ivs)
            out.append(text)
        out += [f"{d}-{srv}-{seq}" for d, (srv, seq) in sorted(self.mariadb.items())]
        return ",".join(out)


def _subtract(ivs: tuple[tuple[int, int], ...], minus: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
    out: list[tuple[int, int]] = []
    for a, b in ivs:
        for c, d in minus:
            if d < a or c > b:
                continue
            if c > a:
                out.append((a, c - 1))
            a = d + 1
            if a > b:
                break
        if a <= b:
            out.append((a, b))
    return tuple(out)


# SHOW BINLOG EVENTS' Info of a GTID event: MySQL `SET @@SESSION.GTID_NEXT= 'uuid[:tag]:n'`,
# MariaDB `BEGIN GTID 0-1-5` (or `GTID 0-1-5` for DDL, `XA START … GTID …`).
# What opens every binlog file, before its first transaction (Pos 4 is the format description).
_FILE_HEADER_EVENTS = frozenset({"Format_desc", "Previous_gtids", "Gtid_list", "Binlog_checkpoint", "Start_encryption"})
_GTID_INFO = re.compile(r"GTID_NEXT\s*=\s*'([^']+)'|GTID (\d+-\d+-\d+)")


def _gtid_list(info: str) -> GtidSet:
    """MariaDB's Gtid_list `[0-1-5,0-2-9,1-3-4]` as gtid_binlog_pos: per domain the GTID listed last
    (MariaDB lists every server's last GTID of a domain, the domain's newest one last)."""
    state = GtidSet()
    for element in info.strip().strip("[]").split(","):
        if _MARIADB_GTID.match(element.strip()):
            state = state.add(element.strip())
    return state


def _merge(intervals: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    merged: list[tuple[int, int]] = []
    for a, b in sorted(intervals):
        if merged and a <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return tuple(merged)


# -- may this server continue a checkpoint's GTID state? ---------------------------------------
#
# `classify` is pure: the checkpoint's GTID state against what one server says about its own GTIDs.
#   ok       the server has every transaction the checkpoint has (it may have more: it is ahead)
#   lagging  it lacks transactions the checkpoint already has: reading it now would resume at a
#            place that is not the checkpoint's; wait for it or read another server
#   purged   it has purged binlogs holding transactions the checkpoint has not read yet
#   foreign  it shares no GTID history with the checkpoint: another topology (or a reset one)
#
# MySQL: GTID sets (uuid[:tag]:intervals), compared as sets. MariaDB: per-domain positions
# (gtid_binlog_pos semantics), compared by sequence number within a domain; which server ids wrote
# in a domain (gtid_binlog_state) tells a server that went past the checkpoint's sequence number
# without ever having the checkpoint's transaction (another history: foreign) from one that has not
# got there yet (lagging). A server of another topology that reuses the checkpoint's domain and has
# not reached its sequence number yet looks lagging: it is then skipped, never read.


class Verdict(enum.Enum):
    OK = "ok"
    LAGGING = "lagging"
    PURGED = "purged"
    FOREIGN = "foreign"


@dataclass(frozen=True)
class ServerGtids:
    """What a server says about its GTIDs. MySQL: `executed` = gtid_executed, `purged` = gtid_purged.
    MariaDB: `executed` = gtid_binlog_pos, `purged` = the GTID position at the start of its oldest
    binlog file (everything up to it is gone), `writers` = gtid_binlog_state per (domain, server_id)."""

    executed: GtidSet
    purged: GtidSet = field(default_factory=GtidSet)
    writers: dict[tuple[int, int], int] = field(default_factory=dict)


@dataclass(frozen=True)
class Classification:
    verdict: Verdict
    detail: str  # for the log line or the error: what is missing, purged or unknown


def parse_binlog_state(text: str) -> dict[tuple[int, int], int]:
    """MariaDB gtid_binlog_state (`0-1-5,0-2-9`, the last seq_no of every (domain, server_id))."""
    out: dict[tuple[int, int], int] = {}
    for element in (e.strip() for e in text.replace("\n", "").split(",")):
        m = _MARIADB_GTID.match(element)
        if m:
            key = (int(m.group(1)), int(m.group(2)))
            out[key] = max(out.get(key, 0), int(m.group(3)))
    return out


def classify(checkpoint: GtidSet, server: ServerGtids) -> Classification:
    """Never raises. An empty checkpoint state (nothing read with GTIDs yet) needs every transaction
    the server ever wrote: ok anywhere that purged none."""
    if not checkpoint and server.purged:
        return Classification(
            Verdict.PURGED, f"it purged {server.purged}, and the checkpoint has read nothing with GTIDs yet"
        )
    if checkpoint.mariadb or server.executed.mariadb:
        return _classify_mariadb(checkpoint, server)
    return _classify_mysql(checkpoint, server)


def _classify_mysql(checkpoint: GtidSet, server: ServerGtids) -> Classification:
    have = checkpoint.intervals
    if not have:
        return Classification(Verdict.OK, "the checkpoint has no GTIDs yet")
    executed = server.executed.intervals
    if not executed:
        return Classification(Verdict.LAGGING, "it has executed no GTIDs yet")
    if not {uuid for uuid, _ in have} & {uuid for uuid, _ in executed}:
        return Classification(
            Verdict.FOREIGN,
            f"none of the checkpoint's source UUIDs ({', '.join(sorted({u for u, _ in have}))}) is in its "
            f"gtid_executed {server.executed}",
        )
    gone = server.purged.missing_from(checkpoint).intervals
    if gone:
        return Classification(Verdict.PURGED, f"its gtid_purged has {_text(gone)}, which the checkpoint has not read")
    missing = checkpoint.missing_from(server.executed).intervals
    if missing:
        return Classification(Verdict.LAGGING, f"it lacks {_text(missing)}, which the checkpoint already has")
    return Classification(Verdict.OK, "it has every transaction the checkpoint has")


def _classify_mariadb(checkpoint: GtidSet, server: ServerGtids) -> Classification:
    have = checkpoint.mariadb
    if not have:
        return Classification(Verdict.OK, "the checkpoint has no GTIDs yet")
    executed = server.executed.mariadb
    if not executed:
        return Classification(Verdict.LAGGING, "its binlog has no GTIDs yet")
    if not set(have) & set(executed):
        return Classification(
            Verdict.FOREIGN,
            f"it has none of the checkpoint's GTID domains ({', '.join(map(str, sorted(have)))}); "
            f"its gtid_binlog_pos is {server.executed}",
        )
    for domain, (server_id, seq) in sorted(have.items()):
        if domain not in executed:
            continue
        at = executed[domain][1]
        wrote = server.writers.get((domain, server_id))
        if server.writers and wrote is None and at >= seq:
            return Classification(
                Verdict.FOREIGN,
                f"it is at {domain}-{executed[domain][0]}-{at} in domain {domain} but never had a transaction "
                f"of server {server_id}, which wrote the checkpoint's {domain}-{server_id}-{seq}",
            )
    for domain, (_server_id, purged_to) in sorted(server.purged.mariadb.items()):
        read = have.get(domain, (0, 0))[1]
        if read < purged_to:
            return Classification(
                Verdict.PURGED,
                f"its oldest binlog starts after {domain}-{server.purged.mariadb[domain][0]}-{purged_to}; the "
                f"checkpoint has read domain {domain} only to sequence number {read}",
            )
    for domain, (server_id, seq) in sorted(have.items()):
        at = executed.get(domain, (0, 0))[1]
        if at < seq:
            return Classification(
                Verdict.LAGGING,
                f"it is at sequence number {at} in domain {domain}; the checkpoint already has "
                f"{domain}-{server_id}-{seq}",
            )
    return Classification(Verdict.OK, "it has every transaction the checkpoint has")


def _text(intervals: dict[tuple[str, str], tuple[tuple[int, int], ...]]) -> str:
    return str(GtidSet(intervals))
