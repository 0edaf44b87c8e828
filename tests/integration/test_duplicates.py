"""What a re-sent event may differ in (README, Delivery guarantees): after kill -9 a re-sent copy is
byte-identical to the first, even when the row it describes needed a fact (the post's type) that
only the stream before the checkpoint had; a `replay` from a fresh process differs at most in the
fields it names in `source.lookups`."""

from __future__ import annotations

import json
import time
from functools import partial
from typing import Any

import orjson
import pytest

from tests.integration.conftest import Record, Site

pytestmark = pytest.mark.integration


def _checkpoint(site: Site) -> tuple[str, int]:
    cp = json.loads(site.checkpoint_path.read_text())
    return cp["file"], int(cp["pos"])


def _wait(check: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.05)
    return None


def _checkpoint_at_least(site: Site, position: tuple[str, int]) -> bool:
    return _checkpoint(site) >= position


def _meta_added(site: Site, post: int) -> list[Record]:
    return [
        r for r in site.consume(idle=0.3) if r.value["event_type"] == "post_meta_added" and r.value["post_id"] == post
    ]


def _copies(records: list[Record], event_id: str) -> list[bytes]:
    return [r.raw for r in sorted(records, key=lambda r: r.offset) if r.value["event_id"] == event_id]


def test_kill_9_resends_meta_of_a_since_deleted_post_identically_and_replay_flags_the_lookup(site: Site) -> None:
    # Checkpoints only every 3 s, so the kill below lands before the checkpoint passes the meta rows.
    site.config["checkpoint"]["interval_seconds"] = 3
    site.write_config()
    site.set_checkpoint()
    for attempt in range(3):
        s = site.streamer()
        post = site.insert_post(f"doomed {attempt}")  # the first pass learns post_type "post" from this row
        file, pos = site.position().split(":")
        assert _wait(partial(_checkpoint_at_least, site, (file, int(pos)))), s.output()
        cp = _checkpoint(site)
        site.sql("INSERT INTO wp_postmeta (post_id, meta_key, meta_value) VALUES (%s, 'colour', 'red')", args=(post,))
        site.sql("DELETE FROM wp_posts WHERE ID = %s", args=(post,))  # gone: a lookup now finds nothing
        meta = _wait(partial(_meta_added, site, post))
        assert meta, s.output()
        s.proc.kill()
        s.wait(10)
        if _checkpoint(site) == cp:
            break  # killed before the checkpoint moved past the meta row: the re-read will send it again
    else:
        pytest.fail("the checkpoint always moved past the meta row before the kill")
    first = meta[0]
    assert first.value["post_type"] == "post" and "lookups" not in first.value["source"]

    again = site.streamer()
    event_id = first.value["event_id"]
    records = _wait(lambda: (rs := site.consume(idle=0.5)) and len(_copies(rs, event_id)) >= 2 and rs)
    assert again.stop() == 0, again.output()
    assert records, again.output()
    copies = _copies(records, event_id)
    assert len(copies) == 2 and copies[0] == copies[1], copies  # byte-identical, post_type "post"

    # A replay in a fresh process has no journal: the post's type comes from a lookup (the post is
    # gone, so null) and the event says so.
    replay = site.cli("replay", "--from", f"{cp[0]}:{cp[1]}")
    assert replay.returncode == 0, replay.stderr
    replayed = next(json.loads(line) for line in replay.stdout.splitlines() if json.loads(line)["event_id"] == event_id)
    assert replayed["post_type"] is None and replayed["source"]["lookups"] == ["post_type"]
    original = orjson.loads(copies[0])
    # ... and differs from the first copy in nothing else.
    strip = [(e, {**e, "post_type": None, "source": {k: v for k, v in e["source"].items() if k != "lookups"}})
             for e in (original, replayed)]  # fmt: skip
    assert strip[0][1] == strip[1][1]
