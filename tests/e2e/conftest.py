"""A real WordPress (Debian's package, PHP CLI) on each session server (MariaDB, then MySQL), one
`wpcdc run` streaming it to the session's broker for the whole e2e suite, and a way to say "do this
in WordPress, then give me exactly the events it produced".

`WordPressStream.do()` notes the binlog end before and after the PHP operation, waits until the
streamer's checkpoint has passed the end (the checkpoint moves only after the broker acknowledged
everything before it) and returns the events whose binlog position lies between the two: exactly
the operation's events, with no sleeps and no guessing how many will come.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
import yaml
from kafka import KafkaConsumer, TopicPartition

from cdc.dev.stack import MYSQL_PASSWORD
from cdc.dev.wordpress import WordPress, wordpress_missing
from tests.integration.conftest import Site, Stack, Streamer, assert_schema_valid

pytestmark = pytest.mark.e2e


def _pos(text: str) -> tuple[str, int]:
    file, _, pos = text.rpartition(":")
    return file, int(pos)


@dataclass
class Op:
    """What one WordPress operation returned (`result`) and the events it produced, in binlog order."""

    result: Any
    events: list[dict[str, Any]]
    keys: list[str]  # the Kafka message key of each event
    start: str
    end: str

    def types(self, post_id: int | None = None, blog_id: int = 1) -> list[str]:
        return [e["event_type"] for e in self.of(post_id, blog_id)]

    def of(self, post_id: int | None, blog_id: int = 1) -> list[dict[str, Any]]:
        if post_id is None:
            return self.events
        return [e for e in self.events if e["post_id"] == post_id and e["blog_id"] == blog_id]

    def one(self, event_type: str, post_id: int | None = None, blog_id: int = 1, **data: Any) -> dict[str, Any]:
        """The single event of this type (for this post, with these `data` fields)."""
        found = [
            e
            for e in self.of(post_id, blog_id)
            if e["event_type"] == event_type and all(e["data"].get(k) == v for k, v in data.items())
        ]
        assert len(found) == 1, f"expected one {event_type} {data or ''} for post {post_id}, got {self.summary()}"
        return found[0]

    def summary(self) -> list[str]:
        out = []
        for e in self.events:
            d = e["data"]
            gist = d.get("meta_key") or d.get("slug") or (f"{d.get('from')}->{d.get('to')}" if "to" in d else "")
            out.append(f"{e['event_type']} {e['blog_id']}:{e['post_id']} {gist}".rstrip())
        return out


@dataclass
class WordPressStream:
    wp: WordPress
    site: Site
    streamer: Streamer
    consumer: KafkaConsumer
    seen: list[dict[str, Any]] = field(default_factory=list)
    keys: dict[str, str] = field(default_factory=dict)
    scheduled: Op | None = None  # a post scheduled when the session started, for the cron test

    def do(self, php: str, /, timeout: float = 60, **args: Any) -> Op:
        """Run a PHP function body inside WordPress (see WordPress.php) and collect its events."""
        start = self.site.position()
        result = self.wp.php(php, **args)
        end = self.site.position()
        events = self._events_between(start, end, timeout)
        return Op(result, events, [self.keys[e["event_id"]] for e in events], start, end)

    def cli(self, *args: str, timeout: float = 120) -> Op:
        """Run `wpcdc <args> --config <the streamer's config>` and collect the events it caused."""
        start = self.site.position()
        done = self.site.cli(*args, timeout=timeout)
        assert done.returncode == 0, done.stderr
        end = self.site.position()
        # A snapshot event sits at its chunk's high watermark, which can equal either end of the range:
        # take the range inclusively and tell snapshots apart by the id the command printed.
        ids = set(re.findall(r"snapshot (\S+) ", done.stderr))
        events = [
            e
            for e in self._events_between(start, end, timeout, inclusive=True)
            if e["event_type"] != "post_snapshot" or e["data"]["snapshot_id"] in ids
        ]
        return Op(done.stderr, events, [self.keys[e["event_id"]] for e in events], start, end)

    def replay(self, op: Op, **filters: Any) -> list[dict[str, Any]]:
        """The same binlog range through `wpcdc replay --sink stdout`, with other filter settings."""
        config = json.loads(json.dumps(self.site.config, default=str))
        config["mysql"]["server_id"] += 500  # a second reader beside the live one
        config["filters"] = {**config.get("filters", {}), **filters}
        path = self.site.dir / "replay.yaml"
        path.write_text(yaml.safe_dump(config))
        done = subprocess.run(
            [sys.executable, "-m", "cdc.cli", "replay", "--config", str(path), "--from", op.start, "--to", op.end],
            capture_output=True, text=True, timeout=60, env={**os.environ, "WPCDC_MYSQL_PASSWORD": MYSQL_PASSWORD},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        events = [orjson.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        for e in events:
            assert_schema_valid(e)
        return _in_binlog_order(events)

    def _events_between(self, start: str, end: str, timeout: float, inclusive: bool = False) -> list[dict[str, Any]]:
        lo, hi = _pos(start), _pos(end)
        deadline = time.monotonic() + timeout
        while True:
            checkpoint = self._checkpoint()
            if checkpoint is not None and checkpoint >= hi:
                break
            if self.streamer.proc.poll() is not None:
                raise AssertionError(
                    f"wpcdc run exited with {self.streamer.proc.returncode}:\n{self.streamer.output()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"checkpoint {checkpoint} did not reach {end} in {timeout}s")
            time.sleep(0.05)
        # Everything up to `end` is acknowledged by the broker: read the topic up to its end offsets.
        parts = list(self.consumer.assignment())
        ends = self.consumer.end_offsets(parts)
        while any(self.consumer.position(tp) < ends[tp] for tp in parts):
            for msgs in self.consumer.poll(timeout_ms=200).values():
                for m in msgs:
                    value = orjson.loads(m.value)
                    assert_schema_valid(value)
                    self.keys[value["event_id"]] = m.key.decode()
                    self.seen.append(value)

        def inside(e: dict[str, Any]) -> bool:
            at = (e["source"]["file"], e["source"]["pos"])
            return lo <= at < hi or (inclusive and at == hi)

        return _in_binlog_order([e for e in self.seen if inside(e)])

    def _checkpoint(self) -> tuple[str, int] | None:
        try:
            data = json.loads(self.site.checkpoint_path.read_text())
        except (FileNotFoundError, ValueError):
            return None
        return str(data["file"]), int(data["pos"])


def _in_binlog_order(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(events, key=lambda e: (e["source"]["file"], e["source"]["pos"], e["source"]["row"], e["event_id"]))


@pytest.fixture(scope="session")
def wordpress(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> WordPress:
    missing = wordpress_missing()
    if missing:
        pytest.fail(f"the e2e suite needs a real WordPress: {missing}; `make test` installs it on Debian/Ubuntu")
    wp = WordPress(stack.db, tmp_path_factory.mktemp("wordpress"), database="wp_e2e", tls=True).install()
    assert wp.add_blog("/two/", "Blog two") == 2
    return wp


@pytest.fixture(scope="session")
def wp(stack: Stack, wordpress: WordPress, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WordPressStream]:
    site = Site(
        stack,
        tmp_path_factory.mktemp("e2e-streamer"),
        {
            "mysql": {"heartbeat_seconds": 0.2},
            "checkpoint": {"interval_seconds": 0.1},
            "snapshot": {"chunk_size": 10, "request_poll_seconds": 0.1},
        },
        database=wordpress.database,
    )
    site.set_checkpoint(site.position())
    streamer = site.streamer()
    consumer = KafkaConsumer(bootstrap_servers=stack.broker.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20)
    parts = [TopicPartition(site.topic, p) for p in sorted(consumer.partitions_for_topic(site.topic) or [])]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    try:
        stream = WordPressStream(wordpress, site, streamer, consumer)
        # WordPress only stores `future` for a date >= 60 s ahead; scheduling at the start of the session
        # lets the cron test find it due without a minute of sleep (the e2e suite runs last).
        stream.scheduled = stream.do(
            """$due = time() + 61;
            $id = wp_insert_post(['post_title' => 'Scheduled', 'post_status' => 'future',
                'post_date_gmt' => gmdate('Y-m-d H:i:s', $due),
                'post_date' => get_date_from_gmt(gmdate('Y-m-d H:i:s', $due))]);
            return ['id' => $id, 'due' => $due];"""
        )
        yield stream
    finally:
        consumer.close()
        code = streamer.stop()
        site.conn.close()
        assert code == 0, streamer.output()
