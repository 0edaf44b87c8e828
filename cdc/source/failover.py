"""Several servers of one topology (mysql.hosts): may this server be read from the checkpoint?

The verdict on one server (ok/lagging/purged/foreign) is cdc.source.server.classify, which
Server.gtid_resume_problem asks too."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pymysql

from cdc.config import Config
from cdc.errors import PositionGoneError, PreflightError, ServerUnreachable, SourceError
from cdc.source.server import Classification, GtidSet, Server, Verdict, classify

log = logging.getLogger(__name__)


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
                        verdict = classify(state, server.gtids())
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
