"""Several servers of one topology (mysql.hosts): may this server be read from the checkpoint?

`classify` is pure: the checkpoint's GTID state against what one server says about its own GTIDs.
  ok       the server has every transaction the checkpoint has (it may have more: it is ahead)
  lagging  it lacks transactions the checkpoint already has: reading it now would resume at a
           place that is not the checkpoint's; wait for it or read another server
  purged   it has purged binlogs holding transactions the checkpoint has not read yet
  foreign  it shares no GTID history with the checkpoint: another topology (or a reset one)

MySQL: GTID sets (uuid[:tag]:intervals), compared as sets. MariaDB: per-domain positions
(gtid_binlog_pos semantics), compared by sequence number within a domain; which server ids wrote
in a domain (gtid_binlog_state) tells a server that went past the checkpoint's sequence number
without ever having the checkpoint's transaction (another history: foreign) from one that has not
got there yet (lagging). A server of another topology that reuses the checkpoint's domain and has
not reached its sequence number yet looks lagging: it is then skipped, never read."""

from __future__ import annotations

import enum
import logging
import re
from dataclasses import dataclass, field

import pymysql

from cdc.config import Config
from cdc.errors import PositionGoneError, PreflightError, ServerUnreachable, SourceError
from cdc.source.server import GtidSet, Server

log = logging.getLogger(__name__)

Intervals = tuple[tuple[int, int], ...]


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


_STATE_ELEMENT = re.compile(r"^(\d+)-(\d+)-(\d+)$")


def parse_binlog_state(text: str) -> dict[tuple[int, int], int]:
    """MariaDB gtid_binlog_state (`0-1-5,0-2-9`, the last seq_no of every (domain, server_id))."""
    out: dict[tuple[int, int], int] = {}
    for element in (e.strip() for e in text.replace("\n", "").split(",")):
        m = _STATE_ELEMENT.match(element)
        if m:
            key = (int(m.group(1)), int(m.group(2)))
            out[key] = max(out.get(key, 0), int(m.group(3)))
    return out


def classify(checkpoint: GtidSet, server: ServerGtids) -> Classification:
    """Never raises. An empty checkpoint state (nothing read with GTIDs yet) is ok anywhere."""
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
    gone = _minus(server.purged.intervals, have)
    if gone:
        return Classification(Verdict.PURGED, f"its gtid_purged has {_text(gone)}, which the checkpoint has not read")
    missing = _minus(have, executed)
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


def _minus(
    a: dict[tuple[str, str], Intervals], b: dict[tuple[str, str], Intervals]
) -> dict[tuple[str, str], Intervals]:
    """a - b, per (uuid, tag)."""
    out: dict[tuple[str, str], Intervals] = {}
    for key, ivs in a.items():
        left = list(ivs)
        for c, d in b.get(key, ()):
            nxt: list[tuple[int, int]] = []
            for x, y in left:
                if d < x or c > y:
                    nxt.append((x, y))
                    continue
                if x < c:
                    nxt.append((x, c - 1))
                if d < y:
                    nxt.append((d + 1, y))
            left = nxt
        if left:
            out[key] = tuple(left)
    return out


def _text(intervals: dict[tuple[str, str], Intervals]) -> str:
    return str(GtidSet(intervals))


def read_gtids(server: Server) -> ServerGtids:
    """What `classify` needs from a live server (a few SHOW/SELECT statements)."""
    executed = server.gtid_executed()
    purged = server.gtid_purged()
    writers: dict[tuple[int, int], int] = {}
    if server.is_mariadb():
        writers = parse_binlog_state(server.variables("gtid_binlog_state").get("gtid_binlog_state", ""))
    return ServerGtids(executed, purged, writers)


@dataclass
class Choice:
    config: Config  # the configuration reading this server (Config.for_server)
    name: str  # "host:port"
    server_id: int
    is_mariadb: bool
    verdict: Classification


class ServerChooser:
    """Picks the server of mysql.hosts to read: the first, in list order from the one read last, that
    can serve the checkpoint. A server of another topology stops wpcdc with the fix (it is a mistake
    in mysql.hosts, and reading it would publish another site's changes); a lagging, purged or
    unreachable one is skipped; when none can serve now the failure is transient (retried with the
    usual backoff: a lagging server catches up, a stopped one comes back), except that when every
    server answered and each of them purged what the checkpoint needs, the purged path runs."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._hosts = config.mysql.servers()
        self.servers = list(config.mysql.hosts) or [f"{h}:{p}" for h, p in self._hosts]
        self.current = 0

    def choose(
        self,
        state: GtidSet | None,
        checkpoint_server_id: int | None,
        start: int | None = None,
        accept_purged: bool = False,
    ) -> Choice:
        """`state`: the checkpoint's GTID state (None: no checkpoint yet, or a file/position one, which
        only the server it was written on, `checkpoint_server_id`, can serve). Starts with the server
        read last (it is skipped if it cannot serve). `accept_purged` (snapshot.mode when_needed, after
        a PositionGoneError): a purged server is taken too; its `verdict` says so."""
        first = self.current if start is None else start
        order = [(first + i) % len(self._hosts) for i in range(len(self._hosts))]
        seen: list[str] = []
        purged: list[str] = []
        waiting = False
        for index in order:
            host, port = self._hosts[index]
            name = self.servers[index]
            cfg = self.config.for_server(host, port)
            try:
                with Server(cfg) as server:
                    server_id = server.server_id()
                    mariadb = server.is_mariadb()
                    if state is None and checkpoint_server_id is not None and server_id != checkpoint_server_id:
                        verdict = Classification(
                            Verdict.LAGGING,
                            f"the checkpoint is a binlog file and position of server_id {checkpoint_server_id} "
                            f"(no GTID state), and this is server_id {server_id}",
                        )
                    elif state is None:
                        verdict = Classification(Verdict.OK, "no GTID state to compare")
                    else:
                        verdict = classify(state, read_gtids(server))
            except ServerUnreachable as exc:
                log.warning(
                    "skipping %s: unreachable (%s)",
                    name,
                    exc.problem,
                    extra={"event": "source_skipped", "server": name, "verdict": "unreachable"},
                )
                seen.append(f"{name}: unreachable ({exc.problem})")
                waiting = True
                continue
            except (PreflightError, pymysql.err.MySQLError) as exc:
                why = exc.problem if isinstance(exc, PreflightError) else str(exc)
                log.warning(
                    "skipping %s: refused (%s)", name, why,
                    extra={"event": "source_skipped", "server": name, "verdict": "refused"},
                )  # fmt: skip
                seen.append(f"{name}: refused ({why})")
                waiting = True
                continue
            if verdict.verdict is Verdict.OK or (accept_purged and verdict.verdict is Verdict.PURGED):
                self.current = index
                return Choice(cfg, name, server_id, mariadb, verdict)
            if verdict.verdict is Verdict.FOREIGN:
                raise SourceError(
                    f"{name} (listed in mysql.hosts) belongs to another replication topology: {verdict.detail}",
                    f"remove {name} from mysql.hosts, or, if the checkpoint is the wrong one, "
                    "`wpcdc checkpoint reset` and start afresh",
                    fatal=True,
                )
            if verdict.verdict is Verdict.PURGED:
                purged.append(f"{name}: {verdict.detail}")
            else:
                waiting = True
            seen.append(f"{name}: {verdict.verdict.value} ({verdict.detail})")
            log.warning(
                "skipping %s: %s (%s)", name, verdict.verdict.value, verdict.detail,
                extra={"event": "source_skipped", "server": name, "verdict": verdict.verdict.value},
            )  # fmt: skip
        if purged and not waiting:
            raise PositionGoneError(
                "every server of mysql.hosts purged binlogs the checkpoint still needs: " + "; ".join(purged),
                "re-snapshot (snapshot.mode: when_needed does it by itself), or `wpcdc checkpoint reset` knowing "
                "there is a gap; keep binlogs longer (binlog_expire_logs_seconds)",
            )
        raise SourceError(
            "no server of mysql.hosts can serve the checkpoint now: " + "; ".join(seen),
            "wpcdc retries with backoff; a lagging replica is read once it has caught up",
        )
