"""Throwaway replication topologies for the failover tests: a MariaDB primary with two replicas
(log_slave_updates, GTID replication with MASTER_USE_GTID=slave_pos) and a MySQL primary with one
replica (gtid_mode=ON, SOURCE_AUTO_POSITION=1). Every server is a cdc.dev.stack / cdc.dev.mysql server
of its own: its own datadir under `base`, its own free port, stopped by PID. Not used by `run`.

Helpers: `promote` a replica and repoint the others at it, `wait_caught_up` until a replica has
applied everything its primary has, `kill9` a server (and `restart` it on the same datadir and port).
Replicas are bootstrapped with sql_log_bin=0, so their binlogs hold only what they replicated: every
server of a topology then has the same GTID history, as a real one does."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import pymysql

from cdc.dev.mysql import MySQL
from cdc.dev.stack import MYSQL_PASSWORD, MYSQL_USER, DevStackError, MariaDB, _SqlServer

Node = MariaDB | MySQL


class _QuietBootstrap:
    """Mixin for a replica: its own users are made without writing them to its binlog (they arrive
    from the primary anyway), so it has no GTID of its own."""

    def _bootstrap(self) -> None:
        if isinstance(self, MySQL):
            with (
                pymysql.connect(unix_socket=str(self.socket), user="root", autocommit=True) as conn,
                conn.cursor() as cur,
            ):
                cur.execute("SET SESSION sql_log_bin = 0")
                cur.execute("CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY ''")
                cur.execute("GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION")
                self._create_cdc_user(cur)
            return
        assert isinstance(self, _SqlServer)
        with self.root() as conn, conn.cursor() as cur:
            cur.execute("SET SESSION sql_log_bin = 0")
            self._create_cdc_user(cur)


@dataclass
class ReplicaMariaDB(_QuietBootstrap, MariaDB):
    pass


@dataclass
class ReplicaMySQL(_QuietBootstrap, MySQL):
    pass


def _gtid_args(kind: str, domain: int) -> list[str]:
    if kind == "mariadb":
        return ["--log-slave-updates=ON", "--gtid-strict-mode=ON", f"--gtid-domain-id={domain}"]
    # CDC_SETTINGS already turn gtid_mode and enforce_gtid_consistency on.
    return ["--log-replica-updates=ON"]


def _scalar(server: Node, sql: str) -> object:
    with server.root() as conn, conn.cursor() as cur:
        cur.execute(sql)
        row = cur.fetchone()
        return row[0] if row else None


def gtid_state(server: Node) -> str:
    """What the server has in its binlog: MariaDB gtid_binlog_pos, MySQL gtid_executed."""
    name = "gtid_binlog_pos" if server.kind == "mariadb" else "gtid_executed"
    return str(_scalar(server, f"SELECT @@GLOBAL.{name}") or "").replace("\n", "")


def replicate(replica: Node, primary: Node) -> None:
    """Point `replica` at `primary` by GTID and start replicating."""
    with replica.root() as conn, conn.cursor() as cur:
        if replica.kind == "mariadb":
            cur.execute("STOP SLAVE")
            cur.execute(
                "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=%s, MASTER_USER=%s, MASTER_PASSWORD=%s, "
                "MASTER_CONNECT_RETRY=1, MASTER_USE_GTID=slave_pos",
                (primary.port, MYSQL_USER, MYSQL_PASSWORD),
            )
            cur.execute("START SLAVE")
        else:
            cur.execute("STOP REPLICA")
            cur.execute(
                "CHANGE REPLICATION SOURCE TO SOURCE_HOST='127.0.0.1', SOURCE_PORT=%s, SOURCE_USER=%s, "
                "SOURCE_PASSWORD=%s, SOURCE_CONNECT_RETRY=1, SOURCE_AUTO_POSITION=1, GET_SOURCE_PUBLIC_KEY=1",
                (primary.port, MYSQL_USER, MYSQL_PASSWORD),
            )
            cur.execute("START REPLICA")


def replication_status(replica: Node) -> dict[str, object]:
    statement = "SHOW SLAVE STATUS" if replica.kind == "mariadb" else "SHOW REPLICA STATUS"
    with replica.root() as conn, conn.cursor(pymysql.cursors.DictCursor) as cur:
        cur.execute(statement)
        return dict(cur.fetchone() or {})


_STATUS_KEYS = (
    "Slave_IO_Running", "Slave_SQL_Running", "Replica_IO_Running", "Replica_SQL_Running",
    "Last_IO_Error", "Last_SQL_Error", "Gtid_IO_Pos", "Retrieved_Gtid_Set", "Executed_Gtid_Set",
)  # fmt: skip


def wait_caught_up(replica: Node, primary: Node, timeout: float = 60.0) -> float:
    """Blocks until `replica` has applied everything `primary` has in its binlog now; returns the
    seconds it took. A DevStackError with the replication status when it does not within `timeout`."""
    target = gtid_state(primary)
    started = time.monotonic()
    if target:
        if replica.kind == "mariadb":
            sql = "SELECT MASTER_GTID_WAIT(%s, %s)"  # 0 reached, -1 timed out
            ok = 0
        else:
            sql = "SELECT WAIT_FOR_EXECUTED_GTID_SET(%s, %s)"  # 0 reached, 1 timed out
            ok = 0
        with replica.root() as conn, conn.cursor() as cur:
            cur.execute(sql, (target, timeout))
            row = cur.fetchone()
        if row is None or row[0] != ok:
            status = replication_status(replica)
            detail = {k: v for k, v in status.items() if k in _STATUS_KEYS}
            raise DevStackError(f"replica on {replica.port} did not reach {target} in {timeout}s: {detail}")
    return time.monotonic() - started


def kill9(server: Node) -> None:
    """SIGKILL, no shutdown: what a crashed host looks like to its clients (connections reset)."""
    if server.proc is None or server.proc.poll() is not None:
        return
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait(30)


def restart(server: Node) -> None:
    """Start it again on its own datadir and port (a replica resumes replicating by itself)."""
    server.start()


def purge_binlogs(server: Node, timeout: float = 60.0) -> str:
    """Rotate, then purge every binlog file but the new one; returns its name. Retried until the
    server has really let go of the older files: MariaDB keeps a file while its transactions may still
    be needed for crash recovery (the binlog checkpoint follows InnoDB's redo flush, about once a
    second with innodb_flush_log_at_trx_commit=2) or while a dump thread still reads it."""
    status = "SHOW MASTER STATUS" if server.kind == "mariadb" else "SHOW BINARY LOG STATUS"
    with server.root() as conn, conn.cursor() as cur:
        cur.execute("FLUSH BINARY LOGS")
        cur.execute(status)
        newest = str(cur.fetchone()[0])
        deadline = time.monotonic() + timeout
        while True:
            cur.execute(f"PURGE BINARY LOGS TO '{newest}'")
            cur.execute("SHOW BINARY LOGS")
            left = [str(r[0]) for r in cur.fetchall()]
            if left == [newest]:
                return newest
            if time.monotonic() > deadline:
                raise DevStackError(f"server on {server.port} keeps {left} after PURGE BINARY LOGS TO {newest!r}")
            time.sleep(0.2)


def stop_sql_thread(replica: Node) -> None:
    """The replica keeps receiving but stops applying: it lags, and lags more with every write."""
    with replica.root() as conn, conn.cursor() as cur:
        cur.execute("STOP SLAVE SQL_THREAD" if replica.kind == "mariadb" else "STOP REPLICA SQL_THREAD")


def start_sql_thread(replica: Node) -> None:
    with replica.root() as conn, conn.cursor() as cur:
        cur.execute("START SLAVE SQL_THREAD" if replica.kind == "mariadb" else "START REPLICA SQL_THREAD")


@dataclass
class Topology:
    """One primary and its replicas, all of `kind`; `nodes[0]` is the primary until `promote`."""

    base: Path
    kind: str  # "mariadb" or "mysql"
    replicas: int = 2
    domain: int = 0  # MariaDB gtid_domain_id: another topology uses another one
    first_server_id: int = 301
    tls_dir: Path | None = None
    primary: Node | None = None
    nodes: list[Node] = field(default_factory=list)

    def start(self) -> Topology:
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> Topology:
        args = _gtid_args(self.kind, self.domain)
        for i in range(self.replicas + 1):
            cls: type[Node]
            if self.kind == "mariadb":
                cls = MariaDB if i == 0 else ReplicaMariaDB
            else:
                cls = MySQL if i == 0 else ReplicaMySQL
            node = cls(
                self.base / f"{self.kind}-{i}", server_id=self.first_server_id + i, extra_args=list(args),
                tls_dir=self.tls_dir,
            )  # fmt: skip
            self.nodes.append(node)
            node.start()
        self.primary = self.nodes[0]
        for replica in self.nodes[1:]:
            replicate(replica, self.primary)
        for replica in self.nodes[1:]:
            wait_caught_up(replica, self.primary)
        return self

    @property
    def replica_nodes(self) -> list[Node]:
        return [n for n in self.nodes if n is not self.primary]

    def hosts(self, nodes: list[Node] | None = None) -> list[str]:
        """`mysql.hosts` entries for these nodes (default: the replicas, then the primary)."""
        chosen = nodes if nodes is not None else [*self.replica_nodes, self.primary]
        return [f"127.0.0.1:{n.port}" for n in chosen if n is not None]

    def promote(self, new_primary: Node) -> None:
        """A planned switch: the old primary is made read-only, `new_primary` catches up, stops
        replicating and takes writes, and every other live node replicates from it."""
        old = self.primary
        assert old is not None and new_primary in self.nodes and new_primary is not old
        old_alive = old.proc is not None and old.proc.poll() is None
        if old_alive:
            with old.root() as conn, conn.cursor() as cur:
                cur.execute("SET GLOBAL read_only = 1")
            wait_caught_up(new_primary, old)
        with new_primary.root() as conn, conn.cursor() as cur:
            if self.kind == "mariadb":
                cur.execute("STOP SLAVE")
                cur.execute("RESET SLAVE ALL")
            else:
                cur.execute("STOP REPLICA")
                cur.execute("RESET REPLICA ALL")
            cur.execute("SET GLOBAL read_only = 0")
        self.primary = new_primary
        for node in self.nodes:
            if node is new_primary or node.proc is None or node.proc.poll() is not None:
                continue
            if node is old:
                with node.root() as conn, conn.cursor() as cur:
                    cur.execute("SET GLOBAL read_only = 0")  # a replica: read_only is not what holds it back
            replicate(node, new_primary)

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()
