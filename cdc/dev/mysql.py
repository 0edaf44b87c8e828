"""A throwaway Oracle MySQL server for tests and benchmarks, the twin of stack.MariaDB.

Debian 12 packages no MySQL server, so the binaries are Debian sid's own `mysql-server-core` (9.x),
fetched once with a private apt configuration (the system's apt state is untouched), unpacked with
`dpkg-deb -x` into a cache outside the repository (~/.cache/wpcdc/mysql-<version>, or
$WPCDC_MYSQL_CACHE) and run through sid's own dynamic loader, since bookworm's libc/libstdc++ are too
old for them. `WPCDC_MYSQL_ROOT` points at an already unpacked root instead (usr/sbin/mysqld inside).
A server that cannot be had is a loud DevStackError, never a skipped test.

`python -m cdc.dev.mysql` (make mysql) fetches it and prints the version."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pymysql

from cdc.dev.stack import DevStackError, _SqlServer, _tail, _user

_PACKAGES = ("mysql-server-core", "mysql-client-core")
_LIB = "usr/lib/x86_64-linux-gnu"
_LOADER = f"{_LIB}/ld-linux-x86-64.so.2"
_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


# The binlog settings the suite runs MySQL with; docker/docker-compose.yml's MySQL has the same
# (tests/unit/test_docker.py), so what the suite proves is what the compose stack runs.
CDC_SETTINGS = (
    "--binlog-format=ROW",
    "--binlog-row-image=FULL",
    "--binlog-row-metadata=FULL",
    "--gtid-mode=ON",
    "--enforce-gtid-consistency=ON",
)


def cache_dir() -> Path:
    env = os.environ.get("WPCDC_MYSQL_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "wpcdc"


def _complete_roots() -> list[Path]:
    base = cache_dir()
    found = [p for p in base.glob("mysql-*") if (p / ".complete").exists()] if base.is_dir() else []
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def mysql_root(fetch: bool = True) -> Path:
    """The unpacked root holding usr/sbin/mysqld: $WPCDC_MYSQL_ROOT, the newest complete cache entry,
    or (fetch=True) a fresh download."""
    env = os.environ.get("WPCDC_MYSQL_ROOT")
    if env:
        root = Path(env)
        if not (root / "usr/sbin/mysqld").exists():
            raise DevStackError(f"WPCDC_MYSQL_ROOT={env} has no usr/sbin/mysqld")
        return root
    roots = _complete_roots()
    if roots:
        return roots[0]
    if not fetch:
        raise DevStackError("no MySQL server in the cache; run `make mysql` (python -m cdc.dev.mysql)")
    return fetch_mysql()


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # two helpers/runs fetching at once share one download
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _debian_mirror() -> str:
    """The mirror the system's apt already uses (so a fetch works wherever apt-get works)."""
    candidates = [Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")]
    for path in candidates:
        if not path.exists():
            continue
        text = path.read_text(errors="replace")
        for uri in re.findall(r"^URIs:\s*(\S+)", text, re.M) + re.findall(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)", text, re.M):
            if uri.rstrip("/").endswith("/debian"):
                return uri.rstrip("/")
    return "http://deb.debian.org/debian"


def _run(cmd: list[str], what: str, cwd: Path | None = None) -> str:
    done = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        raise DevStackError(f"{what} failed ({done.returncode}): {' '.join(cmd[:3])} …\n{done.stdout[-3000:]}")
    return done.stdout


def fetch_mysql() -> Path:
    """Download Debian sid's mysql-server-core closure and unpack it into the cache. Loud on failure:
    sid moves (a library transition can break the closure for a while), so the error says what to do."""
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        raise DevStackError(
            "no MySQL server: fetching one needs apt-get and dpkg-deb (Debian/Ubuntu); "
            "or point WPCDC_MYSQL_ROOT at a root with usr/sbin/mysqld"
        )
    base = cache_dir()
    with _lock(base / "mysql.lock"):
        roots = _complete_roots()
        if roots:  # another process fetched it while this one waited for the lock
            return roots[0]
        with tempfile.TemporaryDirectory(prefix="mysql-fetch-", dir=base) as scratch_name:
            scratch = Path(scratch_name)
            (scratch / "lists/partial").mkdir(parents=True)
            (scratch / "cache/archives/partial").mkdir(parents=True)
            (scratch / "status").write_text("")
            (scratch / "sources.list").write_text(f"deb [signed-by={_KEYRING}] {_debian_mirror()} sid main\n")
            opts = [
                f"-oDir::Etc::SourceList={scratch / 'sources.list'}", "-oDir::Etc::SourceParts=/dev/null",
                f"-oDir::State::Lists={scratch / 'lists'}", f"-oDir::Cache={scratch / 'cache'}",
                f"-oDir::State::status={scratch / 'status'}", "-oAPT::Sandbox::User=root",
                "-oDebug::NoLocking=1", "-qq",
            ]  # fmt: skip
            _run(["apt-get", *opts, "update"], "apt-get update (Debian sid index)")
            policy = _run(["apt-cache", *opts, "policy", _PACKAGES[0]], "apt-cache policy")
            m = re.search(r"Candidate:\s*(\S+)", policy)
            if not m or m.group(1) == "(none)":
                raise DevStackError(f"Debian sid offers no {_PACKAGES[0]} today:\n{policy}")
            version = m.group(1).split("-")[0].split(":")[-1]
            depends = _run(
                ["apt-cache", *opts, "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
                 "--no-breaks", "--no-replaces", "--no-enhances", *_PACKAGES],
                "apt-cache depends",
            )  # fmt: skip
            names = sorted(
                {
                    line.strip()
                    for line in depends.splitlines()
                    if line and not line.startswith((" ", "<")) and "perl" not in line
                }
            )
            debs = scratch / "debs"
            debs.mkdir()
            _run(["apt-get", *opts, "download", *names], f"apt-get download of {len(names)} packages", cwd=debs)
            unpacked = scratch / "root"
            for deb in sorted(debs.glob("*.deb")):
                _run(["dpkg-deb", "-x", str(deb), str(unpacked)], f"dpkg-deb -x {deb.name}")
            if not (unpacked / "usr/sbin/mysqld").exists():
                raise DevStackError(f"the unpacked {_PACKAGES[0]} has no usr/sbin/mysqld (packaging changed?)")
            target = base / f"mysql-{version}"
            if target.exists():
                shutil.rmtree(target)
            unpacked.rename(target)
            (target / ".complete").write_text(f"{version}\n")
            return target


def _cmd(root: Path, binary: str) -> list[str]:
    """A binary of the unpacked root run through its own loader and libraries."""
    loader = root / _LOADER
    if not loader.exists():  # a root built for this system's libc (WPCDC_MYSQL_ROOT) needs no loader
        return [str(root / binary)]
    return [str(loader), "--library-path", str(root / _LIB), str(root / binary)]


def mysql_command(binary: str = "usr/bin/mysqlbinlog") -> list[str]:
    """argv prefix for a client tool of the fetched MySQL (mysql, mysqlbinlog)."""
    return _cmd(mysql_root(), binary)


def mysqld_version(root: Path | None = None) -> str:
    out = _run([*_cmd(root or mysql_root(), "usr/sbin/mysqld"), "--no-defaults", "--version"], "mysqld --version")
    m = re.search(r"Ver\s+(\S+)", out)
    return m.group(1) if m else out.strip()


@dataclass
class MySQL(_SqlServer):
    """An Oracle MySQL 8.0+ server with ROW/FULL/FULL binlog and GTIDs in its own datadir (and TLS when
    tls_dir is given: see stack.make_tls_files). Same interface as stack.MariaDB."""

    server_id: int = 201
    kind: str = "mysql"

    _log_name: ClassVar[str] = "mysqld.err"
    # SHOW MASTER STATUS is gone since MySQL 8.4; SHOW BINARY LOG STATUS exists since 8.2.
    _binlog_status: ClassVar[str] = "SHOW BINARY LOG STATUS"
    _start_timeout: ClassVar[float] = 60.0
    _connect_timeout: ClassVar[float] = 30.0
    _stop_timeout: ClassVar[float] = 60.0

    @property
    def _files(self) -> Path:
        return self.base / "files"

    def _server_command(self) -> list[str]:
        return _cmd(mysql_root(), "usr/sbin/mysqld")

    def _initialize(self, server: list[str], fresh: bool) -> None:
        self._tmpdir.mkdir(parents=True, exist_ok=True)
        if not fresh:
            return
        self._files.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [*server, "--no-defaults", "--initialize-insecure", f"--datadir={self.datadir}",
             f"--secure-file-priv={self._files}", f"--log-error={self.log}", "--user=" + _user(),
             "--innodb-buffer-pool-size=64M", "--innodb-redo-log-capacity=64M"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        if done.returncode != 0:
            detail = f"{done.stdout[-2000:]}\n{_tail(self.log)}"
            raise DevStackError(f"mysqld --initialize-insecure failed ({done.returncode}):\n{detail}")

    def _server_args(self) -> list[str]:
        return [
            f"--secure-file-priv={self._files}", f"--tmpdir={self._tmpdir}", *CDC_SETTINGS, "--mysqlx=OFF",
            # Small: the suite runs MariaDB and MySQL side by side on a 2-core machine.
            "--innodb-buffer-pool-size=64M", "--innodb-redo-log-capacity=64M", "--innodb-log-buffer-size=8M",
            "--performance-schema=OFF", "--temptable-max-ram=64M",
            # What WordPress's wpdb leaves of MySQL's default sql_mode on every connection (it drops
            # NO_ZERO_DATE, STRICT_*, ONLY_FULL_GROUP_BY): WordPress's schema has zero-date defaults.
            "--sql-mode=NO_ZERO_IN_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION",
        ]  # fmt: skip

    def _bootstrap(self) -> None:
        # --initialize-insecure makes root@localhost only, and --skip-name-resolve keeps TCP clients
        # as 127.0.0.1: a root for TCP is made over the socket first.
        with pymysql.connect(unix_socket=str(self.socket), user="root", autocommit=True) as conn, conn.cursor() as cur:
            cur.execute("CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY ''")
            cur.execute("GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION")
            # caching_sha2_password: MySQL's default and (9.x) only built-in password plugin.
            self._create_cdc_user(cur)


def main() -> int:
    try:
        root = mysql_root()
        print(f"MySQL {mysqld_version(root)} in {root}")
    except DevStackError as exc:
        print(f"error: no MySQL server for the tests: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
