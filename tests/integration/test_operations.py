"""Metrics, health endpoints and logs of a running streamer, scraped over HTTP."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from cdc.dev.stack import MYSQL_PASSWORD, Tansu, create_topics, free_port
from tests.integration.conftest import Site

pytestmark = pytest.mark.integration


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def get(port: int, path: str) -> tuple[int, dict[str, str]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
    except (urllib.error.URLError, ConnectionError):
        return 0, {}  # not listening yet


def wait_until(check, timeout: float = 20.0, every: float = 0.2):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    return last


def enable_metrics(site: Site) -> int:
    port = free_port()
    site.config["metrics"] = {"enabled": True, "port": port, "ready_max_lag_seconds": 30}
    site.write_config()
    return port


def test_metrics_move_with_the_stream_and_health_endpoints_answer(site: Site) -> None:
    port = enable_metrics(site)
    site.set_checkpoint()
    s = site.streamer()
    try:
        assert wait_until(lambda: get(port, "/readyz")[0] == 200), s.output()
        assert get(port, "/healthz") == (200, {"status": "ok"})
        before = scrape(port)
        pid = site.insert_post("metrics", status="publish")
        site.sql(f"UPDATE wp_posts SET guid = 'http://x/?p={pid}' WHERE ID = {pid}")
        site.sql(f"INSERT INTO wp_postmeta (post_id, meta_key, meta_value) VALUES ({pid}, '_edit_lock', '1')")
        site.sql(f"INSERT INTO wp_postmeta (post_id, meta_key, meta_value) VALUES ({pid}, 'bad', 'a:1:{{i:0;}}')")
        site.consume(expect=3)
        after = wait_until(
            lambda: (m := scrape(port)).get('wpcdc_events_published_total{event_type="post_meta_added"}') and m
        )
        assert after, "metrics did not move"
        assert after['wpcdc_events_published_total{event_type="post_created"}'] == 1
        assert after['wpcdc_events_published_total{event_type="post_published"}'] == 1
        assert after['wpcdc_rows_filtered_total{reason="guid_backfill"}'] == 1
        assert after['wpcdc_rows_filtered_total{reason="excluded_meta_key"}'] == 1
        assert after["wpcdc_decode_errors_total"] == 1
        assert after["wpcdc_transactions_total"] >= before.get("wpcdc_transactions_total", 0) + 4
        assert after["wpcdc_rows_total"] == 4
        assert after["wpcdc_source_connected"] == 1 and after["wpcdc_sink_connected"] == 1
        end = site.position()
        file, pos = end.split(":")
        settled = wait_until(lambda: (m := scrape(port))["wpcdc_checkpoint_position"] == int(pos) and m)
        assert settled, "checkpoint gauge did not reach the binlog end"
        assert settled[f'wpcdc_checkpoint_info{{file="{file}"}}'] == 1
        assert settled["wpcdc_checkpoint_file_number"] == int(file.rsplit(".", 1)[1])
        assert 0 <= settled["wpcdc_checkpoint_age_seconds"] < 10
        assert settled["wpcdc_inflight_events"] == 0
        # Idle source: heartbeats keep the lag at 0 instead of growing.
        time.sleep(2.5)
        idle = scrape(port)
        assert idle["wpcdc_seconds_behind_source"] == 0
        assert idle["wpcdc_seconds_since_last_event"] >= 2
    finally:
        assert s.stop() == 0, s.output()


def test_readyz_turns_503_when_the_broker_goes_away(site: Site, tmp_path: Path) -> None:
    broker = Tansu(tmp_path / "own-broker").start()
    try:
        create_topics(broker.bootstrap, [site.topic, site.dead_letter_topic])
        site.config["kafka"].update({"bootstrap_servers": [broker.bootstrap], "flush_timeout_seconds": 2,
                                     "max_block_ms": 2000, "request_timeout_ms": 2000})  # fmt: skip
        port = enable_metrics(site)
        site.set_checkpoint()
        s = site.streamer()
        try:
            assert wait_until(lambda: get(port, "/readyz")[0] == 200), s.output()
            broker.stop()
            site.insert_post("while the broker is down")
            status = wait_until(lambda: (r := get(port, "/readyz"))[0] == 503 and r, timeout=30)
            assert status and "broker not" in status[1]["reason"], status
            # The health watch sees it first; the restart follows when the flush times out.
            m = wait_until(lambda: (m := scrape(port)).get('wpcdc_reconnects_total{reason="sink"}', 0) >= 1 and m)
            assert m, scrape(port)
            assert m["wpcdc_sink_connected"] == 0 and m["wpcdc_publish_errors_total"] >= 1
            assert get(port, "/healthz")[0] == 200  # the process is alive and retrying
        finally:
            assert s.stop() == 0, s.output()
        assert "restarting from the last checkpoint" in s.output()
    finally:
        broker.stop()


def test_json_logs_have_lifecycle_events_and_no_secrets(site: Site) -> None:
    site.config["log"] = {"format": "json", "checkpoint_log_seconds": 0.1}
    site.write_config()
    site.set_checkpoint()
    s = site.streamer()
    site.insert_post("logged")
    site.consume(expect=1)
    time.sleep(0.5)
    assert s.stop() == 0
    lines = [json.loads(line) for line in s.output().splitlines() if line.strip()]
    events = [x.get("event") for x in lines]
    for expected in ("start", "connected", "checkpoint", "shutdown"):
        assert expected in events, (expected, events)
    assert all({"ts", "level", "logger", "msg"} <= set(x) for x in lines)
    assert MYSQL_PASSWORD not in s.output()


def test_consumer_example_builds_post_state_and_skips_duplicates(site: Site, tmp_path: Path) -> None:

    site.set_checkpoint()
    s = site.streamer()
    a = site.insert_post("alpha", status="publish")
    b = site.insert_post("beta")
    site.sql(f"INSERT INTO wp_postmeta (post_id, meta_key, meta_value) VALUES ({a}, 'tags', 'a:1:{{i:0;s:1:\"x\";}}')")
    site.consume(expect=4)
    s.stop(signal.SIGKILL)  # then replay the whole range: every event arrives twice
    site.sql(f"UPDATE wp_posts SET post_title = 'beta 2', post_status = 'publish' WHERE ID = {b}")
    assert site.cli("replay", "--from", site.start, "--sink", "kafka").returncode == 0
    site.consume(expect=10)
    db = tmp_path / "state.sqlite"
    example = Path(__file__).resolve().parents[2] / "examples" / "consumer_state.py"
    out = subprocess.run(
        [sys.executable, str(example), "--bootstrap", site.stack.broker.bootstrap, "--topic", site.topic,
         "--db", str(db), "--idle-exit", "2"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "applied 6 events, skipped 4 duplicates" in out.stdout
    rows = sqlite3.connect(db).execute("SELECT post_id, status, title, meta FROM posts ORDER BY post_id").fetchall()
    assert rows[0][:3] == (a, "publish", "alpha")
    assert list(json.loads(rows[0][3]).values()) == [{"key": "tags", "value": ["x"]}]
    assert rows[1][:3] == (b, "publish", "beta 2")


def test_one_streamer_per_checkpoint(site: Site) -> None:
    site.set_checkpoint()
    first = site.streamer()
    try:
        deadline = time.monotonic() + 30
        while "connected to the binlog" not in first.output():
            assert time.monotonic() < deadline, first.output()
            time.sleep(0.1)
        second = site.cli("run", timeout=30)
        moved = site.cli("checkpoint", "set", site.start)
    finally:
        assert first.stop() == 0, first.output()
    for result in (second, moved):
        assert result.returncode == 5, result.stderr
        assert f"another wpcdc process (pid {first.proc.pid})" in result.stderr and "fix:" in result.stderr
    assert site.cli("checkpoint", "set", site.start).returncode == 0, "free again once it stopped"
