"""A wpcdc consumer that keeps a per-post state table in SQLite.

    python examples/consumer_state.py --bootstrap 127.0.0.1:9092 --topic wordpress.posts --db posts.sqlite

Shows the two rules a consumer needs:
- De-duplicate: after a crash wpcdc may re-send events (same event_id). Events of one post arrive in
  binlog order on one partition, so remembering the binlog coordinate of the last event applied to
  each post is enough: anything not after it is a duplicate. Coordinates are one server's: after wpcdc
  moved to another server (GTID positions, event ids from GTIDs) they do not compare, so the post's
  recent event ids decide there.
- Evolve: read `schema_version`; within a version fields are only added, so ignore what you do not
  know; refuse (or route elsewhere) a version you were not written for.
- Snapshot: a `post_snapshot` replaces everything known about the post (row, meta, terms). Its
  coordinate is the binlog position where wpcdc published it, so the same ordering rule applies.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
from typing import Any

from kafka import KafkaConsumer, TopicPartition

SUPPORTED_SCHEMA_VERSION = 2
_SUFFIX_RANK = {"": 0, "lifecycle": 1, "removed": 1, "added": 2}
_RECENT_IDS = 64  # per post: more than one transaction re-sent after a crash ever holds for one post


def coordinate(event: dict[str, Any]) -> tuple[int, str, int, int, int]:
    """Orders the events of one post read from one server: server, binlog file, position, row, then the
    suffix of the event id (its last part when not a number, whatever the id's format)."""
    src = event["source"]
    base, _, ext = src["file"].rpartition(".")
    last = event["event_id"].rsplit(":", 1)[-1]
    suffix = "" if last.isdigit() else last
    return (
        src["server_id"],
        f"{base}.{int(ext):012d}" if ext.isdigit() else src["file"],
        src["pos"],
        src["row"],
        _SUFFIX_RANK.get(suffix, 3),
    )


SCHEMA = """
CREATE TABLE IF NOT EXISTS posts (
  blog_id INTEGER, post_id INTEGER, post_type TEXT, status TEXT, title TEXT, deleted INTEGER DEFAULT 0,
  meta TEXT DEFAULT '{}', terms TEXT DEFAULT '{}', last_coordinate TEXT, recent_ids TEXT DEFAULT '[]',
  PRIMARY KEY (blog_id, post_id)
);
"""


class PostState:
    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path)
        self.db.executescript(SCHEMA)

    def apply(self, event: dict[str, Any]) -> bool:
        """Apply one event; False when it is a duplicate (or for a newer schema we do not know)."""
        if event["schema_version"] > SUPPORTED_SCHEMA_VERSION:
            raise ValueError(f"schema_version {event['schema_version']} is newer than this consumer knows")
        if event["event_type"].startswith("table_"):
            # A whole table was truncated, dropped or renamed (one copy per partition). This example
            # does not guess the new state: `wpcdc snapshot` re-publishes every post's current state.
            print(f"{event['event_type']} {event['data']['table']}: run `wpcdc snapshot` to re-sync")
            return False
        key = (event["blog_id"], event["post_id"])
        row = self.db.execute(
            "SELECT last_coordinate, meta, terms, recent_ids FROM posts WHERE blog_id = ? AND post_id = ?", key
        ).fetchone()
        coord = coordinate(event)
        if row and event["event_id"] in json.loads(row[3]):
            return False  # already applied (read from this server or another one)
        if row and row[0] and (last := tuple(json.loads(row[0])))[0] == coord[0] and last >= coord:
            return False  # already applied (same server: its coordinates compare)
        if not row:
            self.db.execute("INSERT INTO posts (blog_id, post_id) VALUES (?, ?)", key)
            row = (None, "{}", "{}", "[]")
        meta, terms = json.loads(row[1]), json.loads(row[2])
        data, kind = event["data"], event["event_type"]
        if kind in ("post_created", "post_updated"):
            p = data["post"]
            self.db.execute(
                "UPDATE posts SET post_type = ?, status = ?, title = ?, deleted = 0 WHERE blog_id = ? AND post_id = ?",
                (p["post_type"], p["post_status"], p["post_title"], *key),
            )
        elif kind == "post_snapshot":
            p = data["post"]
            self.db.execute(
                "UPDATE posts SET post_type = ?, status = ?, title = ?, deleted = 0 WHERE blog_id = ? AND post_id = ?",
                (p["post_type"], p["post_status"], p["post_title"], *key),
            )
            meta = {str(m["meta_id"]): {"key": m["meta_key"], "value": m.get("value_decoded", m["value"])}
                    for m in data["meta"]}  # fmt: skip
            terms = {str(t["term_taxonomy_id"]): {"taxonomy": t["taxonomy"], "slug": t["slug"]} for t in data["terms"]}
        elif kind == "post_deleted":
            self.db.execute("UPDATE posts SET deleted = 1 WHERE blog_id = ? AND post_id = ?", key)
        elif kind in ("post_meta_added", "post_meta_updated"):
            meta[str(data["meta_id"])] = {"key": data["meta_key"], "value": data.get("value_decoded", data["value"])}
        elif kind == "post_meta_deleted":
            meta.pop(str(data["meta_id"]), None)
        elif kind in ("post_term_added", "post_term_updated"):
            terms[str(data["term_taxonomy_id"])] = {"taxonomy": data["taxonomy"], "slug": data["slug"]}
        elif kind == "post_term_removed":
            terms.pop(str(data["term_taxonomy_id"]), None)
        # Lifecycle events (post_published, …) carry no state beyond the post_updated before them.
        self.db.execute(
            "UPDATE posts SET meta = ?, terms = ?, last_coordinate = ?, recent_ids = ? "
            "WHERE blog_id = ? AND post_id = ?",
            (
                json.dumps(meta), json.dumps(terms), json.dumps(coord),
                json.dumps([*json.loads(row[3]), event["event_id"]][-_RECENT_IDS:]), *key,
            ),
        )  # fmt: skip
        return True

    def commit(self) -> None:
        self.db.commit()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--topic", default="wordpress.posts")
    ap.add_argument("--db", default="posts.sqlite")
    ap.add_argument("--idle-exit", type=float, default=0, help="exit after this many idle seconds (0: never)")
    args = ap.parse_args()

    state = PostState(args.db)
    consumer = KafkaConsumer(bootstrap_servers=args.bootstrap, enable_auto_commit=False)
    parts = [TopicPartition(args.topic, p) for p in sorted(consumer.partitions_for_topic(args.topic) or [])]
    consumer.assign(parts)  # a consumer group works too; assign() keeps the example self-contained
    consumer.seek_to_beginning(*parts)
    applied = duplicates = idle = 0
    while args.idle_exit == 0 or idle < args.idle_exit:
        batch = consumer.poll(timeout_ms=500)
        if not batch:
            idle += 0.5
            continue
        idle = 0
        for records in batch.values():
            for record in records:
                if state.apply(json.loads(record.value)):
                    applied += 1
                else:
                    duplicates += 1
        state.commit()
    print(f"applied {applied} events, skipped {duplicates} duplicates")


if __name__ == "__main__":
    main()
