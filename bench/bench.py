"""Benchmark: a WordPress-shaped binlog, decoded raw by python-mysql-replication and streamed end to
end by wpcdc (binlog -> events -> Kafka, acknowledged). Prints figures; asserts nothing.

Prints: the library's raw decode rate, wpcdc's end-to-end rate for replay and live `run` and their
ratio to the raw rate, peak RSS of the whole streamer (both processes), kafka.delivery exactly_once
beside at_least_once (live `run` on Apache Kafka, rows/s and CPU s per 1,000 rows), the same on a binlog 4x as
long, and commit-to-broker latency of isolated changes under light load. The same workload runs on
MariaDB and on Oracle MySQL (cdc/dev/mysql.py), one after the other, and a table puts them side by side.

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
from pathlib import Path

import yaml
from kafka import KafkaConsumer, TopicPartition
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from cdc.dev.mysql import MySQL
from cdc.dev.stack import MYSQL_PASSWORD, MYSQL_USER, MariaDB, Tansu, create_topics, create_wordpress_tables

DB = "wp_bench"
WORDS = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore".split()


def content(rng: random.Random, size: int = 2048) -> str:
    out: list[str] = []
    n = 0
    while n < size:
        w = rng.choice(WORDS)
        out.append(w)
        n += len(w) + 1
    return "<p>" + " ".join(out) + "</p>"


def generate(db: MariaDB | MySQL, posts: int, seed: int = 7, terms: bool = True) -> int:
    """Writes the mix and returns the number of row changes in the captured tables."""
    rng = random.Random(seed)
    conn = db.root(DB)
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


def raw_decode(db: MariaDB | MySQL, start: str, end: str) -> tuple[int, float]:
    file, pos = start.split(":")
    reader = BinLogStreamReader(
        connection_settings={"host": "127.0.0.1", "port": db.port, "user": "root", "passwd": ""},
        server_id=55555,
        resume_stream=True,
        log_file=file,
        log_pos=int(pos),
        blocking=False,
        only_schemas=[DB],
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


class TreeRss:
    """Peak of the summed RSS of a process and its descendants (the streamer is two processes)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kib = 0
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
                        out += TreeRss._tree(int(child))
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

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak_kib = max(self.peak_kib, sum(self._rss(p) for p in self._tree(self.pid)))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_kib / 1024


def wpcdc(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cdc.cli", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "WPCDC_MYSQL_PASSWORD": MYSQL_PASSWORD},
    )  # fmt: skip


def replay(config: Path, start: str, end: str) -> tuple[dict[str, object], float]:
    proc = wpcdc("replay", "--config", str(config), "--from", start, "--to", end, "--sink", "kafka")
    rss = TreeRss(proc.pid)
    _, err = proc.communicate()
    peak = rss.stop()
    if proc.returncode != 0:
        raise SystemExit(f"streamer failed ({proc.returncode}):\n{err}")
    line = next(x for x in err.splitlines() if x.startswith("replay summary: "))
    return json.loads(line.removeprefix("replay summary: ")), peak


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
    rss = TreeRss(proc.pid)
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
    return rows / max(done - connected[0], 1e-6), rss.stop()


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its descendants (the streamer and its producer process)."""
    total = 0
    for p in TreeRss._tree(pid):
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
    args = ap.parse_args()

    shutil.rmtree(args.dir, ignore_errors=True)
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, Tansu")
    results = {kind: bench_server(kind, args) for kind in args.servers.split(",")}
    if len(results) > 1:
        print("\nside by side (same workload):")
        kinds = list(results)
        print(f"  {'':44}" + "".join(f"{results[k]['server']:>26}" for k in kinds))
        for figure in next(iter(results.values())):
            if figure != "server":
                print(f"  {figure:44}" + "".join(f"{results[k].get(figure, '-'):>26}" for k in kinds))


def bench_server(kind: str, args: argparse.Namespace) -> dict[str, str]:
    base = args.dir / kind
    # Started inside the try: the servers have sessions of their own, a Ctrl-C does not reach them.
    db: MariaDB | MySQL = (MySQL if kind == "mysql" else MariaDB)(base / kind, server_id=301)
    broker = Tansu(base / "tansu")
    out: dict[str, str] = {}
    try:
        db.start()
        broker.start()
        conn = db.root()
        create_wordpress_tables(conn, DB)
        conn.close()
        create_topics(broker.bootstrap, ["bench.posts", "bench.dead-letter"], partitions=6)
        config = base / "config.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "mysql": {"host": "127.0.0.1", "port": db.port, "user": MYSQL_USER, "server_id": 4242},
                    "wordpress": {"database": DB},
                    "kafka": {
                        "bootstrap_servers": [broker.bootstrap],
                        "topic": "bench.posts",
                        "dead_letter_topic": "bench.dead-letter",
                    },
                    "checkpoint": {"path": str((base / "checkpoint.json").resolve())},
                }
            )
        )
        out["server"] = f"{'MySQL' if kind == 'mysql' else 'MariaDB'} {db.version.split('-')[0]}"
        print(f"\n== {out['server']} ({db.version}) on :{db.port}")
        start = db.binlog_end()
        t = time.perf_counter()
        rows_1x = generate(db, args.posts, seed=7)
        end_1x = db.binlog_end()
        print(f"generated 1x: {rows_1x} row changes ({args.posts} posts) in {time.perf_counter() - t:.1f}s")
        time.sleep(args.settle)  # let InnoDB's purge threads finish: they share the 2 cores

        decoded, raw_s = raw_decode(db, start, end_1x)
        raw_rate = decoded / raw_s
        print(f"python-mysql-replication as shipped, decode only: {raw_rate:8,.0f} rows/s ({decoded} rows)")
        out["library decode only, rows/s"] = f"{raw_rate:,.0f}"

        runs = [replay(config, start, end_1x) for _ in range(3)]
        summary, peak_1x = runs[0][0], max(r[1] for r in runs)
        rate_1x = statistics.median(decoded / float(r[0]["seconds"]) for r in runs)  # type: ignore[arg-type]
        print(
            f"wpcdc replay, binlog -> events -> Kafka acked:  {rate_1x:8,.0f} rows/s (median of 3) "
            f"({summary['events']} events)  ratio to raw decode {rate_1x / raw_rate:.2f}  peak RSS {peak_1x:.0f} MiB"
        )
        out["wpcdc replay -> Kafka acked, rows/s"] = f"{rate_1x:,.0f} ({rate_1x / raw_rate:.2f}x raw)"
        out["events (1x)"] = str(summary["events"])
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
        summary4, peak_4x = replay(config, start, end_4x)
        rows_4x = rows_1x + rows_more
        rate_4x = rows_4x / float(summary4["seconds"])  # type: ignore[arg-type]
        rate_change, rss_change = 100 * (rate_4x / rate_1x - 1), 100 * (peak_4x / peak_1x - 1)
        print(
            f"scale: 1x {rate_1x:,.0f} rows/s, {peak_1x:.0f} MiB; 4x ({rows_4x} rows) {rate_4x:,.0f} rows/s, "
            f"{peak_4x:.0f} MiB  (rate {rate_change:+.0f} %, RSS {rss_change:+.0f} %)"
        )
        out["4x replay, rows/s / peak RSS MiB"] = f"{rate_4x:,.0f} / {peak_4x:.0f}"

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
