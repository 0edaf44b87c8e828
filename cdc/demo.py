"""`make demo`: a throwaway MariaDB (binlog on) and Tansu broker, the WordPress tables, `wpcdc run`
against them, a few scripted edits, and the events as a consumer reads them, one line each.
Runs until Ctrl-C (or with --once, until the scripted edits are shown), then stops what it started."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import yaml
from kafka import KafkaConsumer, TopicPartition

from cdc.devstack import MYSQL_PASSWORD, MYSQL_USER, MariaDB, Tansu, create_topics, create_wordpress_tables

DB = "wordpress"
TOPIC = "wordpress.posts"


def gist(e: dict[str, Any]) -> str:
    """The change in a few words, for a person."""
    d = e.get("data", {})
    t = e["event_type"]
    if t in ("post_created", "post_deleted"):
        p = d["post"]
        return f'{p["post_type"]} "{p["post_title"]}" ({p["post_status"]})'
    if t == "post_updated":
        parts = []
        for col, ch in d["changes"].items():
            old, new = (str(ch["old"])[:30], str(ch["new"])[:30])
            parts.append(f"{col}: {old!r} -> {new!r}")
        return "; ".join(parts)
    if "from" in d:
        return f"{d['from'] or '(new)'} -> {d['to']}"
    if "meta_key" in d:
        shown = d.get("value_decoded", d.get("value"))
        return f"{d['meta_key']} = {orjson.dumps(shown).decode()[:60]}"
    if "taxonomy" in d:
        return f"{d['taxonomy']}: {d['slug']} ({d['name']})"
    return ""


def line(e: dict[str, Any]) -> str:
    return f"{e['occurred_at'][11:19]}  {e['event_type']:<18} {e['blog_id']}:{e['post_id']:<5} {gist(e)}"


def edits(db: MariaDB) -> None:
    conn = db.root(DB)
    cur = conn.cursor()

    def sql(q: str, *a: Any) -> int:
        cur.execute(q, a)
        return int(cur.lastrowid or 0)

    sql("INSERT INTO wp_terms (name, slug) VALUES ('News', 'news')")
    sql("INSERT INTO wp_term_taxonomy (term_id, taxonomy, description) VALUES (1, 'category', '')")
    pid = sql(
        "INSERT INTO wp_posts (post_title, post_content, post_excerpt, to_ping, pinged, post_content_filtered,"
        " post_status, post_date, post_modified, post_modified_gmt) VALUES ('Hello wpcdc', '<p>First draft</p>',"
        " '', '', '', '', 'draft', NOW(), NOW(), UTC_TIMESTAMP())"
    )
    sql("UPDATE wp_posts SET guid = %s WHERE ID = %s", f"http://demo.test/?p={pid}", pid)
    sql("INSERT INTO wp_postmeta (post_id, meta_key, meta_value) VALUES (%s, '_edit_lock', '1700000000:1')", pid)
    sql(
        "INSERT INTO wp_postmeta (post_id, meta_key, meta_value) VALUES (%s, 'layout', %s)",
        pid,
        'a:2:{s:5:"width";s:4:"wide";s:7:"sidebar";b:0;}',
    )
    sql("INSERT INTO wp_term_relationships (object_id, term_taxonomy_id) VALUES (%s, 1)", pid)
    sql(
        "UPDATE wp_posts SET post_status = 'publish', post_name = 'hello-wpcdc', post_date_gmt = UTC_TIMESTAMP()"
        " WHERE ID = %s",
        pid,
    )
    sql("UPDATE wp_posts SET post_title = 'Hello, wpcdc 😀' WHERE ID = %s", pid)
    # What a plugin does with $wpdb->update: no hooks fire, but the binlog sees it.
    sql("UPDATE wp_posts SET post_status = 'private' WHERE ID = %s", pid)
    sql("UPDATE wp_postmeta SET meta_value = 'narrow' WHERE post_id = %s AND meta_key = 'layout'", pid)
    conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dir", type=Path, default=Path("var/demo"))
    ap.add_argument("--once", action="store_true", help="exit after the scripted edits are shown")
    args = ap.parse_args()
    base = args.dir.resolve()
    shutil.rmtree(base, ignore_errors=True)
    print(f"starting a throwaway MariaDB and a Tansu broker under {base} ...", flush=True)
    db = MariaDB(base / "mariadb").start()
    broker = Tansu(base / "tansu").start()
    streamer: subprocess.Popen[bytes] | None = None
    consumer: KafkaConsumer | None = None
    try:
        conn = db.root()
        create_wordpress_tables(conn, DB)
        conn.close()
        create_topics(broker.bootstrap, [TOPIC, TOPIC + ".dead-letter"], partitions=3)
        config = base / "config.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "mysql": {"host": "127.0.0.1", "port": db.port, "user": MYSQL_USER, "server_id": 4201},
                    "wordpress": {"database": DB},
                    "kafka": {"bootstrap_servers": [broker.bootstrap], "topic": TOPIC},
                    "checkpoint": {"path": str(base / "checkpoint.json")},
                }
            )
        )
        env = {**os.environ, "WPCDC_MYSQL_PASSWORD": MYSQL_PASSWORD}
        log = open(base / "wpcdc.log", "wb")
        streamer = subprocess.Popen(
            [sys.executable, "-m", "cdc.cli", "run", "--config", str(config)], stdout=log, stderr=log, env=env
        )
        print(f"MariaDB on 127.0.0.1:{db.port}, broker on {broker.bootstrap}, wpcdc run --config {config}")
        time.sleep(1.5)
        print("making edits: a draft with meta and a category, publish, retitle, a plugin's direct SQL ...\n")
        edits(db)
        consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False)
        parts = [TopicPartition(TOPIC, p) for p in sorted(consumer.partitions_for_topic(TOPIC) or [])]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        print("time      event              blog:post  change")
        seen = 0
        quiet_since = time.monotonic()
        while True:
            batch = consumer.poll(timeout_ms=300)
            got = sorted(
                (orjson.loads(m.value) for msgs in batch.values() for m in msgs),
                key=lambda e: (e["source"]["file"], e["source"]["pos"], e["event_id"]),
            )
            for e in got:
                print(line(e), flush=True)
            seen += len(got)
            if got:
                quiet_since = time.monotonic()
            if streamer.poll() is not None:
                print(f"\nwpcdc exited with {streamer.returncode}; see {base / 'wpcdc.log'}")
                break
            if args.once and seen and time.monotonic() - quiet_since > 2:
                break
    except KeyboardInterrupt:
        pass
    finally:
        if consumer is not None:
            consumer.close()
        if streamer is not None and streamer.poll() is None:
            streamer.send_signal(signal.SIGTERM)
            streamer.wait(30)
        broker.stop()
        db.stop()
        print(f"\nstopped. data, config, checkpoint and logs are in {base}")


if __name__ == "__main__":
    main()
