"""Debezium's embedded engine beside wpcdc in `make bench`: builds the Java harness in bench/debezium/
once per connector (cached under ~/.cache/wpcdc/debezium-3.6.1/, so later runs resolve nothing),
finds where a binlog range starts in the terms Debezium resumes from (file:pos and the GTID state),
runs it and reads its result line. The goal maths against wpcdc's figures is here too (pure, unit
tested in tests/unit/test_bench_debezium.py).

MySQL runs Debezium 3.6.1.Final's MySQL connector. MariaDB cannot: 3.6.1's MySQL connector takes
MariaDB 10.11 for a MySQL >= 8.4 ("MySQL version 10.11.19-MariaDB... should support SHOW BINARY LOG
STATUS but it failed"), Maven Central has no debezium-connector-mariadb 3.6.x (its newest is
3.5.0.Final), and that jar does not run on 3.6.1's core (NoSuchMethodError
DefaultQueueProvider.<init>(int)). The MariaDB leg therefore runs 3.5.0.Final throughout.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent / "debezium"
RESULT_PREFIX = "debezium result: "
# connector -> the Debezium version it runs (see the module docstring for MariaDB's).
VERSIONS = {"mysql": "3.6.1.Final", "mariadb": "3.5.0.Final"}
CONNECTOR_CLASSES = {
    "mysql": "io.debezium.connector.mysql.MySqlConnector",
    "mariadb": "io.debezium.connector.mariadb.MariaDbConnector",
}
GOAL_RATE_RATIO = 1.5  # wpcdc -> Kafka acked over Debezium's streaming rate, first -> last row
GOAL_CPU_RATIO = 1 / 3  # wpcdc's CPU per row change over Debezium's
SHORT_RUN_S = 20.0  # a run shorter than this is repeated (median of 3)


class HarnessError(Exception):
    """Java, Maven or the build is missing or failed: the message names what and the fix."""


def cache_root() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "wpcdc"
    return base / "debezium-3.6.1"


def _sources_digest(connector: str, version: str) -> str:
    h = hashlib.sha256(f"{connector} {version}\n".encode())
    for path in sorted([HERE / "pom.xml", *(HERE / "src").rglob("*.java")]):
        h.update(path.relative_to(HERE).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def classpath(connector: str) -> str:
    """The harness's classpath for one connector, built with Maven on first use (and when
    bench/debezium changes). Raises HarnessError naming what is missing; never skips."""
    if connector not in VERSIONS:
        raise HarnessError(f"no Debezium connector for server kind {connector!r} (known: {', '.join(VERSIONS)})")
    version = VERSIONS[connector]
    if not shutil.which("java"):
        raise HarnessError(
            "java is not installed and the Debezium comparison needs Java 17+: run `make kafka` "
            "(installs openjdk-17-jre-headless and maven on Debian), or pass --no-debezium"
        )
    home = cache_root() / f"{connector}-{version}"
    digest = _sources_digest(connector, version)
    jar, libs, stamp = home / "debezium-bench.jar", home / "lib", home / ".complete"
    if not (stamp.exists() and stamp.read_text().strip() == digest and jar.exists() and libs.is_dir()):
        _build(connector, version, home, digest)
    return f"{jar}{os.pathsep}{libs}{os.sep}*"


def _build(connector: str, version: str, home: Path, digest: str) -> None:
    mvn = shutil.which("mvn")
    if not mvn:
        raise HarnessError(
            f"the Debezium harness is not built in {home} and Maven (mvn) is not installed to build it: "
            "run `make kafka` (installs maven on Debian) or `apt-get install maven`, or pass --no-debezium"
        )
    build = home / "build"
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir(parents=True)
    shutil.copy(HERE / "pom.xml", build / "pom.xml")
    shutil.copytree(HERE / "src", build / "src")
    repo = cache_root() / "repository"
    print(f"building the Debezium {version} ({connector}) harness into {home} (cached for later runs)", flush=True)
    args = [
        mvn, "-q", "-B", f"-Dmaven.repo.local={repo}", f"-Ddebezium.version={version}",
        f"-Ddebezium.connector={connector}", "package", "dependency:copy-dependencies",
        f"-DoutputDirectory={build / 'lib'}", "-DincludeScope=runtime",
    ]  # fmt: skip
    # Offline first (a rebuild after an edit needs nothing new), Maven Central when that lacks something.
    done = subprocess.run([*args, "-o"], cwd=build, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        done = subprocess.run(args, cwd=build, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0 or not (build / "target" / "debezium-bench.jar").exists():
        raise HarnessError(
            f"could not build the Debezium {version} harness (mvn exited {done.returncode}):\n"
            f"{done.stdout[-3000:]}\nfix: check that Maven Central is reachable (or pass --no-debezium)"
        )
    shutil.rmtree(home / "lib", ignore_errors=True)
    (build / "lib").rename(home / "lib")
    shutil.copy(build / "target" / "debezium-bench.jar", home / "debezium-bench.jar")
    shutil.rmtree(build, ignore_errors=True)
    (home / ".complete").write_text(digest + "\n")


def gtid_state(kind: str, status_row: tuple[object, ...] | None, mariadb_pos: str | None) -> str:
    """The GTID state at a binlog position, as Debezium's offset holds it: MySQL's Executed_Gtid_Set
    (the 5th column of SHOW BINARY LOG STATUS, newlines removed) or MariaDB's @@gtid_binlog_pos.
    Debezium resumes by it whenever the server has GTIDs (MySQL with gtid_mode=ON, MariaDB always)."""
    if kind == "mariadb":
        return mariadb_pos or ""
    if status_row is None or len(status_row) < 5 or not status_row[4]:
        return ""
    return str(status_row[4]).replace("\n", "")


@dataclass
class Result:
    rows: int
    expected: int
    first_to_last_s: float  # the first change record handed to the consumer to the last, inside the JVM
    steady_cpu_s: float  # the JVM's CPU time (all threads) over the same span
    by_table: dict[str, int]
    error: str | None


def parse_result(stdout: str) -> Result:
    """The harness's one result line. Raises HarnessError when there is none or it reports a failure
    or a count other than the one expected."""
    line = next((x for x in stdout.splitlines() if x.startswith(RESULT_PREFIX)), None)
    if line is None:
        raise HarnessError("the Debezium harness printed no result line")
    data = json.loads(line.removeprefix(RESULT_PREFIX))
    r = Result(
        int(data["rows"]), int(data["expected"]), float(data["first_to_last_s"]),
        float(data.get("cpu_last_s", 0.0)) - float(data.get("cpu_first_s", 0.0)),
        {str(k): int(v) for k, v in data.get("by_table", {}).items()}, data.get("error"),
    )  # fmt: skip
    if r.error:
        raise HarnessError(f"Debezium failed: {r.error}")
    if r.rows != r.expected:
        raise HarnessError(f"Debezium delivered {r.rows} change records, expected {r.expected}")
    return r


def command(  # the password goes in the environment (WPCDC_MYSQL_PASSWORD), not argv
    cp: str, connector: str, *, host: str, port: int, user: str, database: str,
    tables: list[str], start: str, gtids: str, rows: int, workdir: Path, server_id: int = 5401,
) -> list[str]:  # fmt: skip
    file, pos = start.split(":")
    return [
        "java", "-cp", cp, "wpcdc.bench.DebeziumBench", f"connector={CONNECTOR_CLASSES[connector]}",
        f"host={host}", f"port={port}", f"user={user}", f"database={database}",
        f"tables={','.join(tables)}", f"file={file}", f"pos={pos}", f"gtids={gtids}", f"rows={rows}",
        f"server_id={server_id}", f"dir={workdir}", "idle_seconds=60",
    ]  # fmt: skip


def ratio_goals(wpcdc_rate: float, dbz_rate: float, wpcdc_cpu: float, dbz_cpu: float) -> list[str]:
    """The issue's two goals against Debezium, in bench.py's goal-line style. Rates in rows/s
    (first -> last row, both), CPU in seconds per 1,000 row changes (all processes, both)."""
    rate = wpcdc_rate / dbz_rate if dbz_rate > 0 else float("inf")
    cpu = wpcdc_cpu / dbz_cpu if dbz_cpu > 0 else float("inf")
    rate_met = "met" if rate >= GOAL_RATE_RATIO else "NOT met"
    cpu_met = "met" if cpu <= GOAL_CPU_RATIO + 1e-9 else "NOT met"
    return [
        f"goal wpcdc / Debezium streaming rate: {rate:.2f}x (>= {GOAL_RATE_RATIO:g}x: {rate_met})",
        f"goal CPU per row change wpcdc / Debezium: {cpu:.2f} (<= 0.33: {cpu_met})",
    ]
