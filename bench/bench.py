"""Benchmark: a WordPress-shaped binlog, decoded raw by python-mysql-replication and streamed end to
end by wpcdc (binlog -> events -> Kafka, acknowledged). Prints figures; asserts nothing.

Prints: the library's raw decode rate, wpcdc's end-to-end rate for replay and live `run` and their
ratio to the raw rate, CPU seconds per 1,000 row changes of each wpcdc process (reader, producer
child) and in total, peak RSS of the whole streamer (all its processes), kafka.delivery exactly_once
beside at_least_once (live `run` on Apache Kafka, rows/s and CPU s per 1,000 rows), the same on a
binlog 4x as long, a variant where term/post lookups miss (its own raw rate and ratio), the issue's
goals met or not, and commit-to-broker latency of isolated changes under light load. The same workload runs on
MariaDB and on Oracle MySQL (cdc/dev/mysql.py), one after the other, and a table puts them side by side.
Beside wpcdc's 1x replay, Debezium's embedded engine streams the same range (bench/debezium_harness.py,
no Kafka) and the issue's goals against it are printed; both systems get a "first -> last row" rate
and a "start -> last row" rate on the same clock (--no-debezium skips it).

    make bench                       # or: .venv/bin/python bench/bench.py --posts 8000 --servers mysql
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import debezium_harness as dbz
import yaml
from kafka import KafkaConsumer, TopicPartition
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from cdc.dev.mysql import MySQL
from cdc.dev.stack import MYSQL_PASSWORD, MYSQL_USER, MariaDB, Tansu, create_topics, create_wordpress_tables

DB = "wp_bench"
DB_MISS = "wp_bench_miss"  # the lookup-miss variant's site
CAPTURED = ["wp_posts", "wp_postmeta", "wp_term_relationships"]  # the tables Debezium is told to capture
# The goals (#16), printed against each run's figures.
GOAL_RAW_RATIO = 3.0  # wpcdc -> Kafka acked, as a multiple of the raw library's decode rate
GOAL_MISS_RAW_RATIO = 2.2  # the same when term/post lookups miss
GOAL_RSS_MIB = 150  # peak RSS summed over all wpcdc processes
WORDS = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore".split()


def content(rng: random.Random, size: int = 2048) -> str:
    out: list[str] = []
    n = 0
    while n < size:
        w = rng.choice(WORDS)
        out.append(w)
        n += len(w) + 1
    return "<p>" + " ".join(out) + "</p>"


def generate(db: MariaDB | MySQL, posts: int, seed: int = 7, terms: bool = True, database: str = DB) -> int:
    """Writes the mix and returns the number of row changes in the captured tables."""
    rng = random.Random(seed)
    conn = db.root(database)
    cur = conn.cursor()
    rows = 0
    if terms:
        cur.execute("INSERT INTO wp_terms (name, slug) VALUES ('News', 'news'), ('Tech', 'tech'), ('Café', 'cafe')")
        cur.execute(
            "INSERT INTO wp_term_taxonomy (term_id, taxonomy, description) VALUES (1, 'category', ''), "
            "(2, 'category', ''), (3, 'post_tag', '')"
        )
        rows += 6
    post_sql = (
        "INSERT INTO wp_posts (post_author, post_date, post_date_gmt, post_content, post_title, post_excerpt,"
        " post_status, post_name, to_ping, pinged, post_modified, post_modified_gmt, post_content_filtered, guid)"
        " VALUES (1, NOW(), '0000-00-00 00:00:00', %s, %s, '', 'draft', '', '', '', NOW(), NOW(), '', '')"
    )
    for i in range(posts):
        cur.execute(post_sql, (content(rng), f"Post {i} 😀"))
        pid = cur.lastrowid
        cur.execute("UPDATE wp_posts SET guid = %s WHERE ID = %s", (f"http://bench.test/?p={pid}", pid))
        cur.execute(
            "INSERT INTO wp_postmeta (post_id, meta_key, meta_value) VALUES (%s, '_price', %s)",
            (pid, str(rng.randint(1, 999))),
        )
        cur.execute(
            "INSERT INTO wp_postmeta (post_id, meta_key, meta_value) VALUES (%s, '_layout', %s)",
            (pid, 'a:2:{s:5:"width";s:4:"wide";s:4:"tags";a:2:{i:0;s:1:"x";i:1;s:1:"y";}}'),
        )
        cur.execute("INSERT INTO wp_postmeta (post_id, meta_key, meta_value) VALUES (%s, '_edit_lock', '1:1')", (pid,))
        cur.execute("INSERT INTO wp_term_relationships (object_id, term_taxonomy_id) VALUES (%s, %s)", (pid, 1 + i % 3))
        # Publish: the wide row with ~2 KB content before and after.
        cur.execute(
            "UPDATE wp_posts SET post_status = 'publish', post_content = %s, post_date_gmt = NOW() WHERE ID = %s",
            (content(rng), pid),
        )
        rows += 7
        if i % 50 == 49:
            # A plugin's multi-row statement and a small explicit transaction.
            cur.execute("UPDATE wp_posts SET menu_order = menu_order + 1 WHERE ID > %s", (pid - 50,))
            rows += 50
            cur.execute("START TRANSACTION")
            cur.execute("UPDATE wp_postmeta SET meta_value = 'sale' WHERE post_id = %s AND meta_key = '_price'", (pid,))
            cur.execute("DELETE FROM wp_term_relationships WHERE object_id = %s", (pid,))
            cur.execute("COMMIT")
            rows += 2
    conn.close()
    return rows


def generate_misses(db: MariaDB | MySQL, posts: int, seed: int = 9) -> tuple[str, int]:
    """The lookup-miss workload, in its own database (DB_MISS, no terms at all): posts written
    first, then, from the returned position on, changes to them that name facts the replayed range
    does not hold: meta rows of posts created before it (a post lookup per post) and term
    relationships to term_taxonomy ids that do not exist (a term lookup that finds nothing, per
    row unless misses are remembered). Returns the range's start and its row changes."""
    conn = db.root()
    create_wordpress_tables(conn, DB_MISS)
    conn.close()
    generate(db, posts, seed=seed, terms=False, database=DB_MISS)
    rng = random.Random(seed)
    conn = db.root(DB_MISS)
    cur = conn.cursor()
    cur.execute("SELECT ID FROM wp_posts ORDER BY ID")
    ids = [int(r[0]) for r in cur.fetchall()]
    start = db.binlog_end()
    rows = 0
    for i, pid in enumerate(ids):
        cur.execute(
            "INSERT INTO wp_postmeta (post_id, meta_key, meta_value) VALUES (%s, '_views', %s), (%s, '_rating', %s)",
            (pid, str(rng.randint(1, 9999)), pid, str(rng.randint(1, 5))),
        )
        cur.execute("INSERT INTO wp_term_relationships (object_id, term_taxonomy_id) VALUES (%s, %s)", (pid, 7 + i % 5))
        cur.execute("UPDATE wp_postmeta SET meta_value = %s WHERE post_id = %s AND meta_key = '_price'", ("1", pid))
        cur.execute("UPDATE wp_posts SET post_content = %s WHERE ID = %s", (content(rng), pid))
        rows += 5
    conn.close()
    return start, rows


def raw_decode(
    db: MariaDB | MySQL, start: str, end: str, schema: str = DB, tables: list[str] | None = None
) -> tuple[int, float]:
    file, pos = start.split(":")
    reader = BinLogStreamReader(
        connection_settings={"host": "127.0.0.1", "port": db.port, "user": "root", "passwd": ""},
        server_id=55555,
        resume_stream=True,
        log_file=file,
        log_pos=int(pos),
        blocking=False,
        only_schemas=[schema],
        only_tables=tables,
        only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent],
        enable_logging=False,
    )
    began = time.perf_counter()
    n = 0
    for ev in reader:
        n += len(ev.rows)
    elapsed = time.perf_counter() - began
    reader.close()
    return n, elapsed


_TICK = os.sysconf("SC_CLK_TCK")


class ProcessTree:
    """Watches a process and its descendants (the streamer is a reader and a producer child): the
    peak of their summed RSS and each one's CPU time (user + sys, from /proc: stable where wall time
    on a shared machine is not). `wait()` reaps the root; its own CPU is read exactly while it is a
    zombie, each descendant's is its last sample (every 10 ms, so at most a tick short)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.peak_kib = 0
        self.cpu: dict[int, float] = {}  # pid -> user + sys seconds
        self.names: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _tree(pid: int) -> list[int]:
        out = [pid]
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/children") as fh:
                    for child in fh.read().split():
                        out += ProcessTree._tree(int(child))
        except OSError:
            pass
        return out

    @staticmethod
    def _rss(pid: int) -> int:
        try:
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    @staticmethod
    def _cpu(pid: int) -> float | None:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (the stat's 14th and 15th)

    def _name(self, pid: int) -> str:
        if pid == self.pid:
            return "reader"
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except OSError:
            return "other"
        if b"resource_tracker" in cmdline:
            return "resource tracker"
        if b"spawn_main" in cmdline or b"cdc.sink" in cmdline:
            return "producer"
        return "other"

    def _sample(self) -> None:
        pids = self._tree(self.pid)
        self.peak_kib = max(self.peak_kib, sum(self._rss(p) for p in pids))
        for p in pids:
            if self.names.get(p, "other") == "other":  # a child reads as its parent until it execs
                self.names[p] = self._name(p)
            cpu = self._cpu(p)
            if cpu is not None:
                self.cpu[p] = cpu

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self._sample()

    def wait(self) -> int:
        """Reaps the root once it exited and stops watching; returns its exit code."""
        os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: /proc still has it
        own = self._cpu(self.pid)
        self.stop()
        if own is not None:
            self.cpu[self.pid] = own
        return self.proc.wait()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def peak_mib(self) -> float:
        return self.peak_kib / 1024

    def cpu_by_name(self) -> dict[str, float]:
        """Seconds per process, named reader, producer (producer 2, ... when several), resource tracker."""
        out: dict[str, float] = {}
        for pid in sorted(self.cpu, key=lambda p: (p != self.pid, p)):
            name = self.names.get(pid, "other")
            label, n = name, 1
            while label in out:
                n += 1
                label = f"{name} {n}"
            out[label] = self.cpu[pid]
        return out


def cpu_short(cpu: dict[str, float], rows: int) -> str:
    per = [1000 * v / rows for v in cpu.values()]
    return " + ".join(f"{v:.3f}" for v in per) + f" = {sum(per):.3f}"


def cpu_line(cpu: dict[str, float], rows: int) -> str:
    """CPU seconds per 1,000 row changes, per process and in total."""
    per = {name: 1000 * s / rows for name, s in cpu.items()}
    parts = [f"{name} {v:.3f}" for name, v in per.items()]
    return f"{' + '.join(parts)} = {sum(per.values()):.3f} CPU s / 1k rows"


def wpcdc(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cdc.cli", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "WPCDC_MYSQL_PASSWORD": MYSQL_PASSWORD},
    )  # fmt: skip


@dataclass
class Run:
    summary: dict[str, object]
    peak_mib: float
    cpu: dict[str, float]  # user + sys seconds per process
    # On the bench's clock, as for Debezium: the reader's "connected to the binlog" line (logged when
    # the first item is read) to the summary line (printed once every event is acked), and the
    # process's spawn to the summary line. steady_cpu: all its processes' CPU seconds from the first
    # of those lines to their exits (the producer child exits before the summary, having flushed:
    # its last acknowledgement is in its close).
    first_to_last: float = 0.0
    start_to_last: float = 0.0
    steady_cpu: float = 0.0

    @property
    def seconds(self) -> float:
        return float(self.summary["seconds"])  # type: ignore[arg-type]


def drain(proc: subprocess.Popen[str], marks: dict[str, tuple[float, dict[int, float]]] | None = None) -> str:
    """Reads stdout (discarded) and stderr to their ends without reaping the process (so `wait` can
    still read its CPU time); returns stderr. `marks`: line fragments -> filled with the perf_counter
    at which the first stderr line holding each arrived and each process's CPU seconds then."""
    assert proc.stdout is not None and proc.stderr is not None
    out = threading.Thread(target=proc.stdout.read, daemon=True)
    out.start()
    lines: list[str] = []
    for line in proc.stderr:
        if marks is not None:
            for fragment in marks:
                if not marks[fragment][0] and fragment in line:
                    now = time.perf_counter()
                    cpu = {p: ProcessTree._cpu(p) for p in ProcessTree._tree(proc.pid)}
                    marks[fragment] = (now, {p: c for p, c in cpu.items() if c is not None})
        lines.append(line)
    out.join()
    return "".join(lines)


def replay(config: Path, start: str, end: str) -> Run:
    spawned = time.perf_counter()
    proc = wpcdc("replay", "--config", str(config), "--from", start, "--to", end, "--sink", "kafka")
    tree = ProcessTree(proc)
    marks: dict[str, tuple[float, dict[int, float]]] = {
        "connected to the binlog": (0.0, {}),
        "replay summary: ": (0.0, {}),
    }
    err = drain(proc, marks)
    code = tree.wait()
    if code != 0:
        raise SystemExit(f"streamer failed ({code}):\n{err}")
    line = next(x for x in err.splitlines() if x.startswith("replay summary: "))
    (first, cpu_first), (last, _) = marks["connected to the binlog"], marks["replay summary: "]
    steady = sum(cpu - cpu_first.get(pid, 0.0) for pid, cpu in tree.cpu.items())
    return Run(
        json.loads(line.removeprefix("replay summary: ")), tree.peak_mib(), tree.cpu_by_name(),
        first_to_last=last - first if first else 0.0, start_to_last=last - spawned, steady_cpu=steady,
    )  # fmt: skip


def live(config: Path, bootstrap: str, start: str, rows: int, events: int) -> tuple[float, float]:
    """`wpcdc run` from `start`: rows/s from the reader connecting to the last event being readable
    on the broker (the checkpoint lags by up to a heartbeat, so it is not the finish line)."""
    subprocess.run(
        [sys.executable, "-m", "cdc.cli", "checkpoint", "set", start, "--config", str(config)],
        check=True, capture_output=True, env={**os.environ, "WPCDC_MYSQL_PASSWORD": MYSQL_PASSWORD},
    )  # fmt: skip
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=5)
    parts = [TopicPartition("bench.posts", p) for p in sorted(consumer.partitions_for_topic("bench.posts") or [])]
    consumer.assign(parts)
    consumer.seek_to_end(*parts)
    for p in parts:
        consumer.position(p)  # resolve the end offsets now, before anything new is written
    proc = wpcdc("run", "--config", str(config))
    tree = ProcessTree(proc)
    connected: list[float] = []

    def watch() -> None:  # the clock starts where replay's does: when the reader connects
        assert proc.stderr is not None
        for line in proc.stderr:
            if "connected to the binlog" in line and not connected:
                connected.append(time.perf_counter())

    threading.Thread(target=watch, daemon=True).start()
    seen = 0
    deadline = time.monotonic() + 300
    while seen < events and time.monotonic() < deadline:
        seen += sum(len(msgs) for msgs in consumer.poll(timeout_ms=20).values())
    done = time.perf_counter()
    consumer.close()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    if seen < events:
        raise SystemExit(f"live run delivered {seen} of {events} events")
    tree.stop()
    return rows / max(done - connected[0], 1e-6), tree.peak_mib()


@dataclass
class DebeziumRun:
    rows: int
    first_to_last: float  # inside the JVM: first change record to the last
    start_to_last: float  # the bench's clock: the JVM's spawn to its result line (start-up included)
    cpu: float  # the JVM's user + sys seconds, the whole process (start-up and shutdown included)
    peak_mib: float
    steady_cpu: float  # the JVM's CPU seconds from the first change record to the last


def start_state(db: MariaDB | MySQL, kind: str) -> tuple[str, str]:
    """FILE:POS where the next transaction starts, and the GTID state there (what Debezium resumes
    by when the server has GTIDs), read together."""
    with db.root() as conn, conn.cursor() as cur:
        cur.execute("SHOW BINARY LOG STATUS" if kind == "mysql" else "SHOW MASTER STATUS")
        row = cur.fetchone()
        mariadb_pos = None
        if kind == "mariadb":
            cur.execute("SELECT @@gtid_binlog_pos")
            mariadb_pos = cur.fetchone()[0]
    return f"{row[0]}:{row[1]}", dbz.gtid_state(kind, row, mariadb_pos)


def debezium_run(cp: str, kind: str, db: MariaDB | MySQL, start: str, gtids: str, rows: int, work: Path) -> DebeziumRun:
    """One run of Debezium's embedded engine over the range from `start` until `rows` change records
    of the captured tables arrived. Raises SystemExit naming the failure (the engine's log is kept)."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cmd = dbz.command(
        cp, kind, host="127.0.0.1", port=db.port, user=MYSQL_USER, database=DB, tables=CAPTURED,
        start=start, gtids=gtids, rows=rows, workdir=work / "state",
    )  # fmt: skip
    log = work / "debezium.log"
    spawned = time.perf_counter()
    with log.open("w") as err:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=err, text=True,
            env={**os.environ, "WPCDC_MYSQL_PASSWORD": MYSQL_PASSWORD},
        )  # fmt: skip
        tree = ProcessTree(proc)
        assert proc.stdout is not None
        lines, result_at = [], 0.0
        for line in proc.stdout:
            if not result_at and line.startswith(dbz.RESULT_PREFIX):
                result_at = time.perf_counter()
            lines.append(line)
        code = tree.wait()
    try:
        result = dbz.parse_result("".join(lines))
    except dbz.HarnessError as e:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"Debezium run failed (exit {code}): {e}\nlast lines of {log}:\n{tail}") from None
    cpu = sum(tree.cpu.values())
    return DebeziumRun(
        result.rows, result.first_to_last_s, result_at - spawned, cpu, tree.peak_mib(), result.steady_cpu_s
    )


def replays_beside_debezium(
    config: Path, start: str, end: str, debezium: Callable[[int], DebeziumRun] | None
) -> tuple[list[Run], list[DebeziumRun]]:
    """wpcdc's three replays of the range, each followed by a Debezium run when asked for, so a
    change in the machine's load falls on both. Debezium runs once, or three times when its first
    run is short (< 20 s start -> last row): its figures are their medians."""
    runs: list[Run] = []
    d_runs: list[DebeziumRun] = []
    for i in range(3):
        runs.append(replay(config, start, end))
        if debezium is not None and (i == 0 or d_runs[0].start_to_last < dbz.SHORT_RUN_S):
            d_runs.append(debezium(i + 1))
    return runs, d_runs


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its descendants (the streamer and its producer process)."""
    total = 0
    for p in ProcessTree._tree(pid):
        try:
            with open(f"/proc/{p}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def delivery_run(config: Path, bootstrap: str, start: str, rows: int, events: int) -> tuple[float, float]:
    """`wpcdc run` from `start` on Apache Kafka, read back with isolation.level=read_committed (what
    an exactly_once consumer sets): rows/s and CPU seconds of the streamer per 1,000 rows, from the
    reader connecting to the last event being readable."""
    env = {**os.environ, "WPCDC_MYSQL_PASSWORD": MYSQL_PASSWORD}
    subprocess.run(
        [sys.executable, "-m", "cdc.cli", "checkpoint", "set", start, "--config", str(config)],
        check=True, capture_output=True, env=env,
    )  # fmt: skip
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=5, isolation_level="read_committed"
    )
    parts = [TopicPartition("bench.posts", p) for p in sorted(consumer.partitions_for_topic("bench.posts") or [])]
    consumer.assign(parts)
    consumer.seek_to_end(*parts)
    for p in parts:
        consumer.position(p)
    proc = wpcdc("run", "--config", str(config))
    connected: list[tuple[float, float]] = []

    def watch() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "connected to the binlog" in line and not connected:
                connected.append((time.perf_counter(), tree_cpu_seconds(proc.pid)))

    threading.Thread(target=watch, daemon=True).start()
    seen = 0
    deadline = time.monotonic() + 300
    while seen < events and time.monotonic() < deadline:
        seen += sum(len(msgs) for msgs in consumer.poll(timeout_ms=20).values())
    done, cpu = time.perf_counter(), tree_cpu_seconds(proc.pid)
    consumer.close()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    if seen < events:
        raise SystemExit(f"run delivered {seen} of {events} events readable with read_committed")
    began, cpu_began = connected[0]
    return rows / max(done - began, 1e-6), 1000 * (cpu - cpu_began) / rows


def delivery_costs(base: Path, db_port: int, start: str, rows: int, events: int) -> dict[str, tuple[float, float]]:
    """at_least_once beside exactly_once on the same binlog range, both on one Apache Kafka broker
    (Tansu does not honour transactions) with checkpoint.store kafka: rows/s, CPU s per 1,000 rows."""
    from kafka.admin import KafkaAdminClient, NewTopic

    from cdc.dev.kafka import Kafka

    broker = Kafka(base / "apache-kafka")
    out: dict[str, tuple[float, float]] = {}
    try:
        broker.start()
        create_topics(broker.bootstrap, ["bench.posts", "bench.dead-letter"], partitions=6)
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, client_id="wpcdc-bench")
        admin.create_topics([NewTopic("bench.checkpoints", 1, 1, topic_configs={"cleanup.policy": "compact"})])
        admin.close()
        for delivery in ("at_least_once", "exactly_once"):
            config = base / f"config-{delivery}.yaml"
            config.write_text(
                yaml.safe_dump(
                    {
                        "mysql": {"host": "127.0.0.1", "port": db_port, "user": MYSQL_USER, "server_id": 4242},
                        "wordpress": {"database": DB},
                        "kafka": {
                            "bootstrap_servers": [broker.bootstrap],
                            "topic": "bench.posts",
                            "dead_letter_topic": "bench.dead-letter",
                            "delivery": delivery,
                        },
                        "checkpoint": {
                            "path": str((base / f"checkpoint-{delivery}.json").resolve()),
                            "store": "kafka",
                            "kafka_topic": "bench.checkpoints",
                            "kafka_key": f"bench-{delivery}",
                        },
                    }
                )
            )
            out[delivery] = delivery_run(config, broker.bootstrap, start, rows, events)
    finally:
        broker.stop()
    return out


def latency(db: MariaDB | MySQL, config: Path, bootstrap: str, n: int = 200) -> list[float]:
    """Isolated changes (one every 50 ms) while `wpcdc run` is caught up: ms from COMMIT returning
    to the event being readable from the broker."""
    subprocess.run(
        [sys.executable, "-m", "cdc.cli", "checkpoint", "reset", "--config", str(config)], check=True,
        capture_output=True,
    )  # fmt: skip
    proc = wpcdc("run", "--config", str(config))
    # A broker holds a fetch up to fetch_max_wait_ms when it has nothing: keep that out of the figure.
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=5)
    parts = [TopicPartition("bench.posts", p) for p in sorted(consumer.partitions_for_topic("bench.posts") or [])]
    consumer.assign(parts)
    consumer.seek_to_end(*parts)
    sent: dict[str, float] = {}
    got: dict[str, float] = {}
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            for msgs in consumer.poll(timeout_ms=50).values():
                now = time.perf_counter()
                for m in msgs:
                    e = json.loads(m.value)
                    title = e.get("data", {}).get("post", {}).get("post_title", "")
                    if e["event_type"] == "post_created" and title.startswith("latency-"):
                        got.setdefault(title, now)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    conn = db.root(DB)
    cur = conn.cursor()
    connected = threading.Event()

    def drain() -> None:  # read stderr (so the pipe never fills) and note when the reader connected
        assert proc.stderr is not None
        for line in proc.stderr:
            if "connected to the binlog" in line:
                connected.set()

    threading.Thread(target=drain, daemon=True).start()
    if not connected.wait(60):
        raise SystemExit("latency: wpcdc run did not connect to the binlog within 60 s")
    time.sleep(1)  # caught up: nothing was written since it started at the end
    for i in range(n):
        title = f"latency-{i}"
        cur.execute(
            "INSERT INTO wp_posts (post_title, post_content, post_excerpt, to_ping, pinged, post_content_filtered)"
            " VALUES (%s, '', '', '', '', '')",
            (title,),
        )
        sent[title] = time.perf_counter()
        time.sleep(0.05)
    deadline = time.monotonic() + 10
    while len(got) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    reader.join()
    consumer.close()
    conn.close()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    return sorted((got[t] - sent[t]) * 1000 for t in sent if t in got)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--posts", type=int, default=4000, help="posts in the 1x binlog (8 row changes each)")
    ap.add_argument("--dir", type=Path, default=Path("var/bench"))
    ap.add_argument("--settle", type=float, default=10.0, help="seconds to let the server go idle after writing")
    ap.add_argument("--servers", default="mariadb,mysql", help="comma-separated: mariadb, mysql")
    ap.add_argument(
        "--no-delivery", dest="delivery", action="store_false",
        help="skip kafka.delivery at_least_once vs exactly_once (on Apache Kafka, needs Java)",
    )  # fmt: skip
    ap.add_argument(
        "--no-debezium", dest="debezium", action="store_false",
        help="skip Debezium's embedded engine on the same range (needs Java 17 and Maven; built once)",
    )  # fmt: skip
    args = ap.parse_args()

    shutil.rmtree(args.dir, ignore_errors=True)
    args.debezium_cp = {}
    if args.debezium:  # built (or found cached) before any server starts: a missing Java fails here
        try:
            args.debezium_cp = {kind: dbz.classpath(kind) for kind in args.servers.split(",")}
        except dbz.HarnessError as e:
            raise SystemExit(f"bench: {e}") from None
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, Tansu")
    results = {kind: bench_server(kind, args) for kind in args.servers.split(",")}
    if len(results) > 1:
        print("\nside by side (same workload):")
        kinds = list(results)
        print(f"  {'':44}" + "".join(f"{results[k]['server']:>26}" for k in kinds))
        for figure in next(iter(results.values())):
            if figure != "server":
                print(f"  {figure:44}" + "".join(f"{results[k].get(figure, '-'):>26}" for k in kinds))


def write_config(base: Path, db: MariaDB | MySQL, broker: Tansu, database: str) -> Path:
    config = base / f"config-{database}.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "mysql": {"host": "127.0.0.1", "port": db.port, "user": MYSQL_USER, "server_id": 4242},
                "wordpress": {"database": database},
                "kafka": {
                    "bootstrap_servers": [broker.bootstrap],
                    "topic": "bench.posts",
                    "dead_letter_topic": "bench.dead-letter",
                },
                "checkpoint": {"path": str((base / f"checkpoint-{database}.json").resolve())},
            }
        )
    )
    return config


def median_cpu(runs: list[Run]) -> dict[str, float]:
    """Each process's median CPU seconds over the runs."""
    names = dict.fromkeys(n for r in runs for n in r.cpu)
    return {n: statistics.median(r.cpu.get(n, 0.0) for r in runs) for n in names}


def goal(what: str, value: float, target: float, unit: str, at_most: bool = False, digits: int = 2) -> str:
    met = value <= target if at_most else value >= target
    bound = f"{'<=' if at_most else '>='} {target:g}{unit}"
    return f"goal {what}: {value:.{digits}f}{unit} ({bound}: {'met' if met else 'NOT met'})"


def start_servers(db: MariaDB | MySQL, broker: Tansu) -> None:
    """Both servers up, the WordPress tables in `DB`, the bench's topics created."""
    db.start()
    broker.start()
    conn = db.root()
    create_wordpress_tables(conn, DB)
    conn.close()
    create_topics(broker.bootstrap, ["bench.posts", "bench.dead-letter"], partitions=6)


def bench_server(kind: str, args: argparse.Namespace) -> dict[str, str]:
    base = args.dir / kind
    # Started inside the try: the servers have sessions of their own, a Ctrl-C does not reach them.
    db: MariaDB | MySQL = (MySQL if kind == "mysql" else MariaDB)(base / kind, server_id=301)
    broker = Tansu(base / "tansu")
    out: dict[str, str] = {}
    try:
        start_servers(db, broker)
        config, config_miss = (write_config(base, db, broker, database) for database in (DB, DB_MISS))
        out["server"] = f"{'MySQL' if kind == 'mysql' else 'MariaDB'} {db.version.split('-')[0]}"
        print(f"\n== {out['server']} ({db.version}) on :{db.port}")
        start, gtids = start_state(db, kind)
        t = time.perf_counter()
        rows_1x = generate(db, args.posts, seed=7)
        end_1x = db.binlog_end()
        print(f"generated 1x: {rows_1x} row changes ({args.posts} posts) in {time.perf_counter() - t:.1f}s")
        time.sleep(args.settle)  # let InnoDB's purge threads finish: they share the 2 cores

        decoded, raw_s = raw_decode(db, start, end_1x)
        raw_rate = decoded / raw_s
        print(f"python-mysql-replication as shipped, decode only: {raw_rate:8,.0f} rows/s ({decoded} rows)")
        out["library decode only, rows/s"] = f"{raw_rate:,.0f}"

        run_debezium: Callable[[int], DebeziumRun] | None = None
        if args.debezium:
            captured, _ = raw_decode(db, start, end_1x, tables=CAPTURED)  # the count the harness waits for
            cp = args.debezium_cp[kind]

            def one_debezium(n: int) -> DebeziumRun:
                return debezium_run(cp, kind, db, start, gtids, captured, base / "debezium" / f"run-{n}")

            run_debezium = one_debezium

        runs, d_runs = replays_beside_debezium(config, start, end_1x, run_debezium)
        summary, peak_1x = runs[0].summary, max(r.peak_mib for r in runs)
        rate_1x = statistics.median(decoded / r.seconds for r in runs)
        cpu_1x = median_cpu(runs)
        print(
            f"wpcdc replay, binlog -> events -> Kafka acked:  {rate_1x:8,.0f} rows/s (median of 3) "
            f"({summary['events']} events)  ratio to raw decode {rate_1x / raw_rate:.2f}  peak RSS {peak_1x:.0f} MiB"
        )
        print(f"  CPU per 1,000 row changes (user + sys, median of 3): {cpu_line(cpu_1x, decoded)}")
        print("  " + goal("wpcdc / raw decode", rate_1x / raw_rate, GOAL_RAW_RATIO, "x"))
        print("  " + goal("peak RSS, all wpcdc processes", peak_1x, GOAL_RSS_MIB, " MiB", at_most=True, digits=0))
        first_1x = statistics.median(decoded / r.first_to_last for r in runs)
        whole_1x = statistics.median(decoded / r.start_to_last for r in runs)
        steady_1x = statistics.median(1000 * r.steady_cpu / decoded for r in runs)
        print(
            f"  same basis as Debezium (median of 3): first -> last row {first_1x:,.0f} rows/s, "
            f"start -> last row {whole_1x:,.0f} rows/s; CPU first -> last row only {steady_1x:.3f} s / 1k rows"
        )
        out["wpcdc replay -> Kafka acked, rows/s"] = f"{rate_1x:,.0f} ({rate_1x / raw_rate:.2f}x raw)"
        out["wpcdc first->last / start->last, rows/s"] = f"{first_1x:,.0f} / {whole_1x:,.0f}"
        out["CPU s / 1k rows: reader + producer"] = cpu_short(cpu_1x, decoded)
        out["events (1x)"] = str(summary["events"])
        if d_runs:
            d_first = statistics.median(r.rows / r.first_to_last for r in d_runs)
            d_whole = statistics.median(r.rows / r.start_to_last for r in d_runs)
            d_cpu = statistics.median(1000 * r.cpu / r.rows for r in d_runs)
            d_peak = max(r.peak_mib for r in d_runs)
            d_steady = statistics.median(1000 * r.steady_cpu / r.rows for r in d_runs)
            version = dbz.VERSIONS[kind].removesuffix(".Final")
            print(
                f"Debezium {version} embedded, first -> last row (no Kafka): {d_first:,.0f} rows/s ({captured} rows), "
                f"start -> last row {d_whole:,.0f} rows/s, CPU {d_cpu:.3f} s / 1k rows (JVM user+sys from /proc), "
                f"peak RSS {d_peak:.0f} MiB  ({f'median of {len(d_runs)} runs' if len(d_runs) > 1 else '1 run'}; "
                f"CPU first -> last row only {d_steady:.3f} s / 1k rows)"
            )
            for line in dbz.ratio_goals(first_1x, d_first, sum(cpu_1x.values()) * 1000 / decoded, d_cpu):
                print("  " + line)
            out["Debezium first->last / start->last, rows/s"] = f"{d_first:,.0f} / {d_whole:,.0f} ({version})"
            out["Debezium CPU s / 1k rows / peak RSS MiB"] = f"{d_cpu:.3f} / {d_peak:.0f}"
            out["CPU s / 1k rows first->last: wpcdc / Dbz"] = f"{steady_1x:.3f} / {d_steady:.3f}"
            out["wpcdc / Debezium: rate, CPU per row"] = (
                f"{first_1x / d_first:.2f}x, {sum(cpu_1x.values()) * 1000 / decoded / d_cpu:.2f}"
            )
        live_rate, live_peak = live(config, broker.bootstrap, start, decoded, int(summary["events"]))  # type: ignore[arg-type]
        print(f"wpcdc run (live), same range:                 {live_rate:8,.0f} rows/s  peak RSS {live_peak:.0f} MiB")
        out["wpcdc run (live), rows/s"] = f"{live_rate:,.0f}"
        out["peak RSS replay 1x / live, MiB"] = f"{peak_1x:.0f} / {live_peak:.0f}"
        if args.delivery:
            costs = delivery_costs(base, db.port, start, decoded, int(summary["events"]))  # type: ignore[arg-type]
            for delivery, (rate, cpu) in costs.items():
                print(f"wpcdc run on Apache Kafka, {delivery:13}:   {rate:8,.0f} rows/s  {cpu:.2f} CPU s / 1,000 rows")
                out[f"Apache Kafka run {delivery}, rows/s / CPU s per 1k"] = f"{rate:,.0f} / {cpu:.2f}"

        t = time.perf_counter()
        rows_more = generate(db, args.posts * 3, seed=8, terms=False)
        end_4x = db.binlog_end()
        print(f"generated 3x more: {rows_more} row changes in {time.perf_counter() - t:.1f}s")
        time.sleep(args.settle)
        run4 = replay(config, start, end_4x)
        peak_4x = run4.peak_mib
        rows_4x = rows_1x + rows_more
        rate_4x = rows_4x / run4.seconds
        rate_change, rss_change = 100 * (rate_4x / rate_1x - 1), 100 * (peak_4x / peak_1x - 1)
        print(
            f"scale: 1x {rate_1x:,.0f} rows/s, {peak_1x:.0f} MiB; 4x ({rows_4x} rows) {rate_4x:,.0f} rows/s, "
            f"{peak_4x:.0f} MiB  (rate {rate_change:+.0f} %, RSS {rss_change:+.0f} %)"
        )
        print(f"  4x CPU per 1,000 row changes: {cpu_line(run4.cpu, rows_4x)}")
        out["4x replay, rows/s / peak RSS MiB"] = f"{rate_4x:,.0f} / {peak_4x:.0f}"
        out["4x CPU s / 1k rows: reader + producer"] = cpu_short(run4.cpu, rows_4x)

        t = time.perf_counter()
        start_miss, rows_miss = generate_misses(db, args.posts)
        end_miss = db.binlog_end()
        print(f"generated the lookup-miss variant: {rows_miss} row changes in {time.perf_counter() - t:.1f}s")
        time.sleep(args.settle)
        decoded_miss, raw_miss_s = raw_decode(db, start_miss, end_miss, DB_MISS)
        raw_miss = decoded_miss / raw_miss_s
        miss_runs = [replay(config_miss, start_miss, end_miss) for _ in range(3)]
        rate_miss = statistics.median(decoded_miss / r.seconds for r in miss_runs)
        cpu_miss = median_cpu(miss_runs)
        print(
            f"lookups miss: raw decode {raw_miss:,.0f} rows/s, wpcdc replay -> Kafka acked {rate_miss:,.0f} rows/s "
            f"(median of 3, {miss_runs[0].summary['events']} events), "
            f"peak RSS {max(r.peak_mib for r in miss_runs):.0f} MiB"
        )
        print(f"  CPU per 1,000 row changes (median of 3): {cpu_line(cpu_miss, decoded_miss)}")
        print("  " + goal("wpcdc / raw decode when lookups miss", rate_miss / raw_miss, GOAL_MISS_RAW_RATIO, "x"))
        out["lookups miss: wpcdc replay, rows/s"] = f"{rate_miss:,.0f} ({rate_miss / raw_miss:.2f}x raw)"
        out["lookups miss: CPU s / 1k rows"] = cpu_short(cpu_miss, decoded_miss)

        lat = latency(db, config, broker.bootstrap)
        if lat:
            p50, p99 = statistics.median(lat), lat[min(len(lat) - 1, int(len(lat) * 0.99))]
            print(f"light-load latency, commit -> readable on the broker: p50 {p50:.0f} ms, p99 {p99:.0f} ms "
                  f"({len(lat)} isolated inserts)")  # fmt: skip
            out["light-load latency p50 / p99, ms"] = f"{p50:.0f} / {p99:.0f}"
        else:
            print("light-load latency: no events arrived")
    finally:
        broker.stop()
        db.stop()
    return out


if __name__ == "__main__":
    main()
