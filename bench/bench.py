"""Benchmark: a WordPress-shaped binlog, decoded raw by python-mysql-replication and streamed end to
end by wpcdc (binlog -> events -> Kafka, acknowledged). Prints figures; asserts nothing.

    make bench                       # or: .venv/bin/python bench/bench.py --posts 4000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from cdc.devstack import MYSQL_PASSWORD, MYSQL_USER, MariaDB, Tansu, create_topics, create_wordpress_tables

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


def generate(db: MariaDB, posts: int, seed: int = 7) -> int:
    """Writes the mix and returns the number of row changes in the captured tables."""
    rng = random.Random(seed)
    conn = db.root(DB)
    cur = conn.cursor()
    rows = 0
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


def position(db: MariaDB) -> str:
    conn = db.root()
    with conn.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        file, pos = cur.fetchone()[:2]
    conn.close()
    return f"{file}:{pos}"


def raw_decode(db: MariaDB, start: str, end: str) -> tuple[int, float]:
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


def streamer(config: Path, start: str, end: str) -> tuple[dict[str, object], float, float]:
    began = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "cdc.cli", "replay", "--config", str(config), "--from", start, "--to", end,
         "--sink", "kafka"],
        capture_output=True, text=True, env={**os.environ, "WPCDC_MYSQL_PASSWORD": MYSQL_PASSWORD},
    )  # fmt: skip
    wall = time.perf_counter() - began
    if proc.returncode != 0:
        raise SystemExit(f"streamer failed ({proc.returncode}):\n{proc.stderr}")
    line = next(x for x in proc.stderr.splitlines() if x.startswith("replay summary: "))
    summary = json.loads(line.removeprefix("replay summary: "))
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return summary, wall, peak_mib


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--posts", type=int, default=3000, help="posts to generate (7+ row changes each)")
    ap.add_argument("--dir", type=Path, default=Path("var/bench"))
    args = ap.parse_args()

    shutil.rmtree(args.dir, ignore_errors=True)
    db = MariaDB(args.dir / "mariadb", server_id=301).start()
    broker = Tansu(args.dir / "tansu").start()
    try:
        conn = db.root()
        create_wordpress_tables(conn, DB)
        conn.close()
        create_topics(broker.bootstrap, ["bench.posts", "bench.dead-letter"], partitions=6)
        start = position(db)
        t = time.perf_counter()
        written = generate(db, args.posts)
        gen = time.perf_counter() - t
        end = position(db)
        print(f"generated {written} row changes ({args.posts} posts) in {gen:.1f}s, binlog {start} .. {end}")

        decoded, raw_s = raw_decode(db, start, end)
        raw_rate = decoded / raw_s
        print(f"raw python-mysql-replication decode: {decoded} rows in {raw_s:.2f}s = {raw_rate:,.0f} rows/s")

        config = args.dir / "config.yaml"
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
                    "checkpoint": {"path": str(args.dir / "checkpoint.json")},
                }
            )
        )
        summary, wall, peak = streamer(config, start, end)
        pipeline_s = float(summary["seconds"])  # type: ignore[arg-type]
        e2e_rate = decoded / pipeline_s
        events = summary["events"]
        print(
            f"wpcdc end to end (binlog -> events -> Kafka acked): {decoded} row changes, {events} events "
            f"in {pipeline_s:.2f}s = {e2e_rate:,.0f} row changes/s ({wall:.2f}s wall incl. start-up)"
        )
        print(f"ratio end-to-end / raw decode: {e2e_rate / raw_rate:.2f}")
        print(f"streamer peak RSS: {peak:.0f} MiB")
        print(f"filtered: {summary['filtered']}; dead letters: {summary['dead_letters']}")
        print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    finally:
        broker.stop()
        db.stop()


if __name__ == "__main__":
    main()
