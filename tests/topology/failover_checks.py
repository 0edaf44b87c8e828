"""What every failover scenario checks and prints: the primary's tables are the oracle (every row
the writer committed is an insert), the topic must hold an event for each of them."""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Callable

from tests.integration.conftest import Record, Site, Streamer
from tests.topology.conftest import FIGURES


def load() -> str:
    """The figures' label: the machine's 1-minute load average when the figure was taken."""
    return f"load {os.getloadavg()[0]:.1f}"


def committed(site: Site, primary_root: Callable[..., object]) -> tuple[set[int], dict[int, int]]:
    """Post ids and per-post meta row counts on the primary (read after replication settled)."""
    conn = primary_root(site.database)
    try:
        with conn.cursor() as cur:  # type: ignore[attr-defined]
            cur.execute("SELECT ID FROM wp_posts")
            posts = {int(r[0]) for r in cur.fetchall()}
            cur.execute("SELECT post_id, COUNT(*) FROM wp_postmeta GROUP BY post_id")
            meta = {int(r[0]): int(r[1]) for r in cur.fetchall()}
    finally:
        conn.close()  # type: ignore[attr-defined]
    return posts, meta


def check(
    name: str, kind: str, site: Site, primary_root: Callable[..., object], records: list[Record], resume_s: float
) -> dict[str, int]:
    posts, meta = committed(site, primary_root)
    created: dict[int, set[str]] = defaultdict(set)
    added: dict[int, set[str]] = defaultdict(set)
    first: dict[int, list[str]] = defaultdict(list)  # per post, event types in topic (partition) order
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        v = r.value
        if v["event_type"] == "post_created":
            created[v["post_id"]].add(v["event_id"])
        elif v["event_type"] == "post_meta_added":
            added[v["post_id"]].add(v["event_id"])
        if v["event_type"] not in first[v["post_id"]]:
            first[v["post_id"]].append(v["event_type"])
    lost = len(posts - set(created)) + sum(n - len(added.get(p, ())) for p, n in meta.items())
    ids = [r.value["event_id"] for r in records]
    duplicated = len(ids) - len(set(ids))
    # The same row change under two ids: a consumer could not de-duplicate it.
    split_ids = sum(1 for s in (*created.values(), *added.values()) if len(s) > 1)
    disorder = sum(1 for p in meta if first.get(p, [])[:1] != ["post_created"])
    FIGURES.append(
        f"{kind:8} [{name}] row changes {len(posts) + sum(meta.values())}, events {len(records)}, lost {lost}, "
        f"duplicated {duplicated} (same change under two ids: {split_ids}), per-post order broken {disorder}, "
        f"resumed {resume_s:.1f}s after the fault ({load()})"
    )
    return {"lost": lost, "split_ids": split_ids, "disorder": disorder, "events": len(records)}


def wait_for(check: Callable[[], object], timeout: float, what: str, streamer: Streamer | None = None) -> float:
    """Seconds until `check()` is true; fails with the streamer's log tail after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(0.1)
    tail = streamer.output()[-4000:] if streamer is not None else ""
    raise AssertionError(f"{what} not within {timeout}s\n{tail}")
