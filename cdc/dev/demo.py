"""`make demo`: a throwaway MariaDB (binlog on) and Tansu broker, a real WordPress installed into it
when PHP is here (otherwise the WordPress tables), `wpcdc run` against them, a few scripted edits
(one a plugin's direct SQL), and the events as a consumer reads them, one line each.
Runs until Ctrl-C (or with --once, until the scripted edits are shown), then stops what it started."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml
from kafka import KafkaConsumer, TopicPartition

from cdc.dev.stack import (
    MYSQL_PASSWORD,
    MYSQL_USER,
    MariaDB,
    Tansu,
    create_topics,
    create_wordpress_tables,
    stop_process,
)
from cdc.dev.wordpress import WordPress, wordpress_missing

DB = "wordpress"
TOPIC = "wordpress.posts"
# How long wpcdc may take to flush and checkpoint after SIGTERM before it is killed (a kill loses
# nothing: it resumes from its last checkpoint).
STREAMER_STOP_SECONDS = 8.0


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
            if col.startswith("post_modified"):
                continue  # moves with every save; not what a person wants to read
            parts.append(f"{col}: {_short(ch['old'])} -> {_short(ch['new'])}")
        return "; ".join(parts) or "post_modified only"
    if "from" in d:
        return f"{d['from'] or '(new)'} -> {d['to']}"
    if t == "post_meta_deleted":
        return f"{d['meta_key']} deleted (was {str(d['previous_value'])[:40]!r})"
    if "meta_key" in d:
        shown = d.get("value_decoded", d.get("value"))
        return f"{d['meta_key']} = {orjson.dumps(shown).decode()[:60]}"
    if "taxonomy" in d:
        return f"{d['taxonomy']}: {d['slug']} ({d['name']})"
    return ""


def _short(value: Any) -> str:
    """A changed value for a person: quoted text cut to 30 characters, JSON's null for a NULL."""
    return "null" if value is None else repr(str(value)[:30])


def line(e: dict[str, Any]) -> str:
    return f"{e['occurred_at'][11:19]}  {e['event_type']:<18} {e['blog_id']}:{e['post_id']:<5} {gist(e)}"


# (what a person does, PHP run inside WordPress); `$args['id']` is the post the first step created.
WORDPRESS_EDITS = [
    (
        "a new draft with a category, tags and an array meta value (wp_insert_post)",
        """$cat = wp_insert_category(['cat_name' => 'News']);
        $id = wp_insert_post(['post_title' => 'Hello wpcdc', 'post_content' => '<p>First draft</p>',
            'post_status' => 'draft', 'post_category' => [$cat], 'tags_input' => ['cdc', 'binlog']]);
        add_post_meta($id, 'layout', ['width' => 'wide', 'sidebar' => false]);
        return $id;""",
    ),
    ("publish it (wp_update_post)", "return wp_update_post(['ID' => $args['id'], 'post_status' => 'publish']);"),
    ("retitle it", "return wp_update_post(['ID' => $args['id'], 'post_title' => 'Hello, wpcdc 😀']);"),
    (
        "a plugin's direct SQL, no hooks ($wpdb->update, $wpdb->insert)",
        """global $wpdb;
        $wpdb->update($wpdb->posts, ['post_status' => 'private'], ['ID' => $args['id']]);
        $wpdb->insert($wpdb->postmeta, ['post_id' => $args['id'], 'meta_key' => '_price', 'meta_value' => '9.99']);
        return 1;""",
    ),
    ("move it to the trash (wp_trash_post)", "return wp_trash_post($args['id']) ? 1 : 0;"),
]


def wordpress_edits(wp: WordPress) -> None:
    post_id = 0
    for what, php in WORDPRESS_EDITS:
        print(f"  - {what}", flush=True)
        result = wp.php(php, id=post_id)
        post_id = post_id or int(result)


def sql_edits(db: MariaDB) -> None:
    """The same story as WORDPRESS_EDITS, as the SQL WordPress would write (when PHP is not installed)."""
    conn = db.root(DB)
    cur = conn.cursor()

    def sql(q: str, *a: Any) -> int:
        cur.execute(q, a)
        return int(cur.lastrowid or 0)

    print("  - a new draft with a category and an array meta value (INSERTs as wp_insert_post makes them)")
    sql("INSERT INTO wp_terms (name, slug) VALUES ('News', 'news')")
    sql("INSERT INTO wp_term_taxonomy (term_id, taxonomy, description) VALUES (1, 'category', '')")
    pid = sql(
        "INSERT INTO wp_posts (post_title, post_content, post_excerpt, to_ping, pinged, post_content_filtered,"
        " post_status, post_date, post_modified, post_modified_gmt) VALUES ('Hello wpcdc', '<p>First draft</p>',"
        " '', '', '', '', 'draft', NOW(), NOW(), UTC_TIMESTAMP())"
    )
    sql("UPDATE wp_posts SET guid = %s WHERE ID = %s", f"http://demo.test/?p={pid}", pid)
    sql("INSERT INTO wp_term_relationships (object_id, term_taxonomy_id) VALUES (%s, 1)", pid)
    sql("INSERT INTO wp_postmeta (post_id, meta_key, meta_value) VALUES (%s, '_edit_lock', '1700000000:1')", pid)
    sql(
        "INSERT INTO wp_postmeta (post_id, meta_key, meta_value) VALUES (%s, 'layout', %s)",
        pid,
        'a:2:{s:5:"width";s:4:"wide";s:7:"sidebar";b:0;}',
    )
    print("  - publish it")
    sql(
        "UPDATE wp_posts SET post_status = 'publish', post_name = 'hello-wpcdc', post_date_gmt = UTC_TIMESTAMP()"
        " WHERE ID = %s",
        pid,
    )
    print("  - retitle it")
    sql("UPDATE wp_posts SET post_title = 'Hello, wpcdc 😀' WHERE ID = %s", pid)
    print("  - a plugin's direct SQL, no hooks")
    sql("UPDATE wp_posts SET post_status = 'private' WHERE ID = %s", pid)
    sql("INSERT INTO wp_postmeta (post_id, meta_key, meta_value) VALUES (%s, '_price', '9.99')", pid)
    conn.close()


@dataclass
class Started:
    """What the demo started beyond the servers, for the cleanup to stop."""

    streamer: subprocess.Popen[bytes] | None = None
    consumer: KafkaConsumer | None = None


def stream(args: argparse.Namespace, base: Path, db: MariaDB, broker: Tansu, run: Started) -> None:
    """WordPress (or its tables), wpcdc, the scripted edits, then the events until Ctrl-C."""
    missing = "--no-wordpress given" if args.no_wordpress else wordpress_missing()
    wp: WordPress | None = None
    if missing is None:
        print("installing WordPress (Debian's package, PHP CLI) into it ...", flush=True)
        wp = WordPress(db, base / "wordpress", database=DB, domain="demo.test", title="wpcdc demo").install()
    else:
        print(f"no real WordPress here ({missing}): using the WordPress tables and SQL edits", flush=True)
        with db.root() as conn:
            create_wordpress_tables(conn, DB)
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
    cli = [sys.executable, "-m", "cdc.cli"]
    # Start exactly here, so no edit can slip past a streamer that is still connecting.
    subprocess.run([*cli, "checkpoint", "set", db.binlog_end(), "--config", str(config)], env=env,
                   check=True, capture_output=True)  # fmt: skip
    # Its own session: Ctrl-C reaches the demo, which stops everything in order.
    with open(base / "wpcdc.log", "wb") as log:
        run.streamer = streamer = subprocess.Popen(
            [*cli, "run", "--config", str(config)], stdout=log, stderr=log, env=env, start_new_session=True
        )
    print(f"MariaDB on 127.0.0.1:{db.port}, broker on {broker.bootstrap}, wpcdc run --config {config}")
    print("making edits:")
    if wp is not None:
        wordpress_edits(wp)
    else:
        sql_edits(db)
    run.consumer = consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False)
    parts = [TopicPartition(TOPIC, p) for p in sorted(consumer.partitions_for_topic(TOPIC) or [])]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    print(f"\nevents on topic {TOPIC}, as a consumer reads them:\n")
    print("time      event              blog:post  change")
    seen = 0
    quiet_since = time.monotonic()
    hint_shown = False
    while True:
        batch = consumer.poll(timeout_ms=300)
        got = sorted(
            (orjson.loads(m.value) for msgs in batch.values() for m in msgs),
            key=lambda e: (e["source"]["file"], e["source"]["pos"], e["source"]["row"], e["event_id"]),
        )
        for e in got:
            print(line(e), flush=True)
        seen += len(got)
        if got:
            quiet_since = time.monotonic()
        if streamer.poll() is not None:
            print(f"\nwpcdc exited with {streamer.returncode}; see {base / 'wpcdc.log'}")
            break
        idle = seen and time.monotonic() - quiet_since > 2
        if args.once and idle:
            break
        if idle and not hint_shown:
            hint_shown = True
            print(
                f"\nstill streaming: change something and watch it arrive, e.g.\n"
                f"  mariadb -h 127.0.0.1 -P {db.port} -u root {DB} -e "
                f"\"UPDATE wp_posts SET post_title = 'Edited by hand' WHERE ID = 1\"\n"
                "Ctrl-C stops wpcdc, the broker and MariaDB.\n",
                flush=True,
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dir", type=Path, default=Path("var/demo"))
    ap.add_argument("--once", action="store_true", help="exit after the scripted edits are shown")
    ap.add_argument("--no-wordpress", action="store_true", help="use the WordPress tables even when PHP is here")
    args = ap.parse_args()

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # a closed terminal or `kill` cleans up like Ctrl-C

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)
    base = args.dir.resolve()
    shutil.rmtree(base, ignore_errors=True)
    print(f"starting a throwaway MariaDB and a Tansu broker under {base} ...", flush=True)
    # Built before they start, so that a Ctrl-C during a start still finds the process to stop.
    db = MariaDB(base / "mariadb")
    broker = Tansu(base / "tansu")
    run = Started()
    try:
        db.start()
        broker.start()
        stream(args, base, db, broker, run)
    except KeyboardInterrupt:
        pass
    finally:
        # Whatever is in flight, stop everything, each step bounded, and let no second Ctrl-C (or
        # SIGTERM) cut this short. wpcdc first, while the broker and MariaDB it talks to are up
        # (the servers have sessions of their own: the terminal's Ctrl-C did not reach them).
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        print("\nstopping wpcdc, the broker and MariaDB ...", flush=True)
        if run.consumer is not None:
            try:
                run.consumer.close()
            except Exception:  # the demo's own reader: nothing depends on a clean close
                pass
        if run.streamer is not None:
            stop_process(run.streamer, timeout=STREAMER_STOP_SECONDS)
        broker.stop()
        db.stop()
        print(
            f"stopped. data, config, checkpoint and logs (wpcdc.log, mariadb/mariadb.err, tansu/tansu.log)"
            f" are in {base}",
            flush=True,
        )


if __name__ == "__main__":
    main()
