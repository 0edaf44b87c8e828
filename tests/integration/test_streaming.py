"""The whole path against a real MariaDB binlog and a real Kafka-protocol broker."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter, defaultdict
from typing import Any

import orjson
import pytest

from cdc.mapping.events import EVENT_MODELS, SCHEMA_VERSION
from tests.integration.conftest import Record, Site

pytestmark = pytest.mark.integration


def wait_for(site: Site, n: int, timeout: float = 30) -> list[Record]:
    records = site.consume(expect=n, timeout=timeout)
    assert len(records) >= n, f"expected {n} events, got {len(records)}"
    return records


def by_post(records: list[Record]) -> dict[str, list[Record]]:
    out: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        out[r.key].append(r)
    for recs in out.values():
        recs.sort(key=lambda r: r.offset)
    return out


def test_post_lifecycle_meta_and_terms_reach_kafka_as_domain_events(site: Site) -> None:
    site.set_checkpoint()
    streamer = site.streamer()
    try:
        # A WordPress-like sequence, one autocommit statement each.
        site.sql("INSERT INTO wp_terms (name, slug) VALUES ('Café news', 'cafe-news')")
        site.sql(
            "INSERT INTO wp_term_taxonomy (term_id, taxonomy, description) VALUES (LAST_INSERT_ID(), 'category', '')"
        )
        auto = site.insert_post("Auto Draft", status="auto-draft")
        pid = site.insert_post("Hello 😀 world", status="draft", post_password="hunter2")
        site.sql(f"UPDATE wp_posts SET guid = 'http://example.test/?p={pid}' WHERE ID = {pid}")
        site.sql(f"UPDATE wp_posts SET post_modified = NOW() WHERE ID = {pid}")
        site.sql(
            f"INSERT INTO wp_postmeta (post_id, meta_key, meta_value) VALUES ({pid}, '_edit_lock', '1:1')",
            f"""INSERT INTO wp_postmeta (post_id, meta_key, meta_value)
                VALUES ({pid}, 'layout', 'a:2:{{s:5:"width";s:4:"wide";s:4:"tags";a:1:{{i:0;s:4:"😀";}}}}')""",
            f"INSERT INTO wp_term_relationships (object_id, term_taxonomy_id) VALUES ({pid}, 1)",
            f"UPDATE wp_posts SET post_status = 'publish', post_date_gmt = '2026-11-22 10:00:00' WHERE ID = {pid}",
        )
        rev = site.insert_post("Hello", status="inherit", post_type="revision", post_parent=pid)
        site.sql(f"INSERT INTO wp_postmeta (post_id, meta_key, meta_value) VALUES ({rev}, 'footnotes', '')")
        # A plugin's multi-row transaction.
        site.sql(
            "START TRANSACTION",
            f"UPDATE wp_postmeta SET meta_value = 'narrow' WHERE post_id = {pid} AND meta_key = 'layout'",
            f"DELETE FROM wp_term_relationships WHERE object_id = {pid}",
            f"UPDATE wp_posts SET post_status = 'draft' WHERE ID = {pid}",
            "COMMIT",
        )
        site.sql("START TRANSACTION", f"DELETE FROM wp_postmeta WHERE post_id = {pid}", "ROLLBACK")
        site.sql(f"DELETE FROM wp_posts WHERE ID = {pid}")
        records = wait_for(site, 10)
    finally:
        assert streamer.stop() == 0, streamer.output()

    assert len(records) == 10, [r.value["event_type"] for r in records]
    posts = by_post(records)
    assert set(posts) == {f"1:{pid}"}, "auto-draft and revision (and their meta) must be filtered"
    assert not any(r.value["post_id"] in (auto, rev) for r in records)
    events = posts[f"1:{pid}"]
    assert len({r.partition for r in events}) == 1
    # The _edit_lock row, the guid back-fill and the modified-only update are filtered; the
    # rolled-back DELETE wrote nothing.
    assert [r.value["event_type"] for r in events] == [
        "post_created",
        "post_meta_added",
        "post_term_added",
        "post_updated",
        "post_published",
        "post_meta_updated",
        "post_term_removed",
        "post_updated",
        "post_unpublished",
        "post_deleted",
    ]
    for r in records:
        EVENT_MODELS[r.value["event_type"]].model_validate(r.value)
        assert r.headers["event_type"] == r.value["event_type"]
        assert r.headers["event_id"] == r.value["event_id"]
        assert r.headers["schema_version"] == str(SCHEMA_VERSION)
        assert "hunter2" not in str(r.value)
    created = events[0].value
    assert created["data"]["post"]["post_title"] == "Hello 😀 world"
    assert created["data"]["post"]["has_password"] is True
    assert created["data"]["post"]["post_date_gmt"] is None  # zero date of a draft
    meta = events[1].value["data"]
    assert meta["meta_key"] == "layout" and meta["value_decoded"] == {"width": "wide", "tags": ["😀"]}
    term = events[2].value["data"]
    assert (term["taxonomy"], term["slug"], term["name"], term["term_id"]) == ("category", "cafe-news", "Café news", 1)
    published = events[3].value["data"]["changes"]
    assert published["post_status"] == {"old": "draft", "new": "publish"}
    assert published["post_date_gmt"] == {"old": None, "new": "2026-11-22T10:00:00Z"}
    assert events[4].value["data"] == {"from": "draft", "to": "publish"}
    assert events[5].value["data"]["previous_value"].startswith("a:2:")
    assert events[8].value["data"] == {"from": "publish", "to": "draft"}
    # The three changes of the plugin transaction share its GTID.
    assert len({events[i].value["source"]["gtid"] for i in (5, 6, 7)}) == 1


def test_stop_and_resume_has_no_gap_and_no_duplicate(site: Site) -> None:
    site.set_checkpoint()
    first = site.streamer()
    ids = [site.insert_post(f"p{i}") for i in range(5)]
    wait_for(site, 5)
    assert first.stop() == 0, first.output()
    # Written while the streamer is down.
    for pid in ids:
        site.sql(f"UPDATE wp_posts SET post_title = CONCAT(post_title, '!') WHERE ID = {pid}")
    site.sql("FLUSH BINARY LOGS")  # rotation during downtime
    ids += [site.insert_post(f"q{i}") for i in range(3)]
    second = site.streamer()
    records = wait_for(site, 13)
    assert second.stop() == 0, second.output()
    count = Counter(r.value["event_id"] for r in records)
    assert max(count.values()) == 1, "a clean stop must not duplicate"
    assert len(records) == 13
    per_post = by_post(records)
    for pid in ids[:5]:
        assert [r.value["event_type"] for r in per_post[f"1:{pid}"]] == ["post_created", "post_updated"]
        assert per_post[f"1:{pid}"][1].value["data"]["post"]["post_title"].endswith("!")


def test_kill_9_loses_nothing_and_duplicates_only_whole_transactions(site: Site) -> None:
    site.set_checkpoint()
    expected = 0
    for round_ in range(3):
        s = site.streamer()
        for i in range(20):
            site.insert_post(f"r{round_}-{i}")
            expected += 1
        time.sleep(0.5)
        s.stop(signal.SIGKILL)
        # A big multi-row transaction while the streamer is down.
        site.sql(f"UPDATE wp_posts SET menu_order = menu_order + 1 WHERE post_title LIKE 'r{round_}-%'")
        expected += 20
    s = site.streamer()
    records = wait_for(site, expected)
    assert s.stop() == 0, s.output()
    ids = Counter(r.value["event_id"] for r in records)
    assert len(ids) == expected, "every row change must arrive"
    # Duplicates are re-sends with identical ids; per post, the first occurrences stay in binlog order.
    for recs in by_post(records).values():
        firsts: list[str] = []
        for r in recs:
            if r.value["event_id"] not in firsts:
                firsts.append(r.value["event_id"])
        positions = [tuple(int(x) if x.isdigit() else x for x in e.split(":")[1:4]) for e in firsts]
        assert positions == sorted(positions)


def test_replay_reproduces_the_same_event_ids(site: Site) -> None:
    site.set_checkpoint()
    s = site.streamer()
    pid = site.insert_post("replayed", status="publish")
    site.sql(f"INSERT INTO wp_postmeta (post_id, meta_key, meta_value) VALUES ({pid}, 'k', 'v')")
    live = wait_for(site, 3)
    assert s.stop() == 0
    before = site.checkpoint_path.read_text()
    result = site.cli("replay", "--from", site.start, "--sink", "stdout")
    assert result.returncode == 0, result.stderr
    replayed = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert [e["event_id"] for e in replayed] == [
        r.value["event_id"] for r in sorted(live, key=lambda r: r.value["event_id"])
    ] or sorted(e["event_id"] for e in replayed) == sorted(r.value["event_id"] for r in live)
    assert sorted(e["event_id"] for e in replayed) == sorted(r.value["event_id"] for r in live)
    assert replayed == [r.value for r in sorted(live, key=lambda r: (r.value["source"]["pos"], r.value["event_id"]))]
    assert "replay summary" in result.stderr and '"events": 3' in result.stderr
    assert site.checkpoint_path.read_text() == before, "replay must not move the live checkpoint"


def test_replay_with_to_stops_at_the_bound_and_refuses_mid_transaction_start(site: Site) -> None:
    a = site.insert_post("a")
    middle = site.position()
    site.insert_post("b")
    result = site.cli("replay", "--from", site.start, "--to", middle)
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stdout.splitlines() if f'"post_id":{a}' in line]
    assert len(result.stdout.splitlines()) == 1

    # A position inside a transaction: find a rows event's position with SHOW BINLOG EVENTS.
    file, _ = site.start.split(":")
    rows = site.query(f"SHOW BINLOG EVENTS IN '{file}'")
    inside = next(r for r in rows if r[2] == "Table_map" and r[1] > int(site.start.split(":")[1]))
    bad = site.cli("replay", "--from", f"{file}:{inside[1]}")
    assert bad.returncode == 7, bad.stderr
    assert "inside a transaction" in bad.stderr and "fix:" in bad.stderr and "Traceback" not in bad.stderr


def test_dump_thread_killed_reconnects_from_the_last_boundary(site: Site) -> None:
    site.set_checkpoint()
    s = site.streamer()
    first = [site.insert_post(f"k{i}") for i in range(10)]
    wait_for(site, 10)
    killed = 0
    for row in site.query("SHOW PROCESSLIST"):
        if row[4] and "Binlog Dump" in str(row[4]):
            site.sql(f"KILL {row[0]}")
            killed += 1
    assert killed >= 1
    more = [site.insert_post(f"m{i}") for i in range(10)]
    records = wait_for(site, 20)
    assert s.stop() == 0, s.output()
    ids = Counter(r.value["event_id"] for r in records)
    assert len(ids) == 20 and max(ids.values()) == 1, "no gap, and no replay from the start of the file"
    assert {r.value["post_id"] for r in records} == set(first + more)
    assert "restarting from the last checkpoint" in s.output()


def test_multisite_blog_tables_and_keys(site: Site) -> None:
    from cdc.dev.stack import create_wordpress_tables

    create_wordpress_tables(site.conn, site.database, prefix="wp_2_")
    site.set_checkpoint(site.position())
    s = site.streamer()
    one = site.insert_post("blog one")
    site.sql(
        "INSERT INTO wp_2_posts (ID, post_title, post_content, post_excerpt, to_ping, pinged, post_content_filtered)"
        f" VALUES ({one}, 'blog two', '', '', '', '', '')"
    )
    records = wait_for(site, 2)
    assert s.stop() == 0
    assert {(r.key, r.value["blog_id"], r.value["post_id"]) for r in records} == {
        (f"1:{one}", 1, one),
        (f"2:{one}", 2, one),
    }


def test_purged_checkpoint_fails_with_the_documented_error_unless_when_needed_snapshots(site: Site) -> None:
    kept = site.insert_post("Survives the purge", status="publish")
    site.sql(f"INSERT INTO wp_postmeta (post_id, meta_key, meta_value) VALUES ({kept}, 'colour', 'red')")
    site.set_checkpoint()
    site.sql("FLUSH BINARY LOGS")
    newest = site.position().split(":")[0]
    # MariaDB will not purge a file a dump thread still reads: end the ones earlier tests left behind
    # (a killed streamer's connection can linger), then purge until the file is really gone.
    for _ in range(50):
        for row in site.query("SHOW PROCESSLIST"):
            if row[4] and "Binlog Dump" in str(row[4]):
                try:
                    site.sql(f"KILL {row[0]}")
                except Exception:
                    pass  # already gone
        site.sql(f"PURGE BINARY LOGS TO '{newest}'")
        if [r[0] for r in site.query("SHOW BINARY LOGS")] == [newest]:
            break
        time.sleep(0.2)
    assert [r[0] for r in site.query("SHOW BINARY LOGS")] == [newest]
    s = site.streamer()
    code = s.wait(30)
    out = s.output()
    assert code == 4, out
    assert "no longer has" in out and f"oldest available: {newest}" in out and "fix:" in out
    assert "Traceback" not in out
    assert site.consume(idle=1.0) == []

    # snapshot.mode=when_needed (explicit opt-in): restart at the binlog end and snapshot every post.
    site.config["snapshot"] = {"mode": "when_needed"}
    site.write_config()
    s = site.streamer()
    try:
        records = site.consume(expect=1, timeout=30)
    finally:
        assert s.stop() == 0, s.output()
    assert "snapshot.mode=when_needed" in s.output()
    assert [(r.value["event_type"], r.value["post_id"]) for r in records] == [("post_snapshot", kept)]
    snap = records[0].value["data"]
    assert snap["post"]["post_title"] == "Survives the purge"
    assert [(m["meta_key"], m["value"]) for m in snap["meta"]] == [("colour", "red")]


def test_initial_snapshot_then_the_stream(make_site: Any) -> None:
    site = make_site(snapshot={"mode": "initial", "chunk_size": 2})
    site.sql("INSERT INTO wp_terms (name, slug) VALUES ('News', 'news')")
    site.sql("INSERT INTO wp_term_taxonomy (term_id, taxonomy, description) VALUES (LAST_INSERT_ID(), 'category', '')")
    ids = [site.insert_post(f"Old {i}", status="publish") for i in range(5)]
    site.insert_post("Editor placeholder", status="auto-draft")
    site.sql(f"INSERT INTO wp_term_relationships (object_id, term_taxonomy_id) VALUES ({ids[0]}, 1)")
    assert not site.checkpoint_path.exists()
    s = site.streamer()
    try:
        first = site.consume(expect=5, timeout=30)
        site.sql(f"UPDATE wp_posts SET post_title = 'New 0' WHERE ID = {ids[0]}")
        records = site.consume(expect=6, timeout=30)
    finally:
        assert s.stop() == 0, s.output()
    assert sorted(r.value["post_id"] for r in first) == ids, "every post once; the auto-draft is filtered"
    assert {r.value["event_type"] for r in first} == {"post_snapshot"}
    assert next(r for r in first if r.value["post_id"] == ids[0]).value["data"]["terms"][0]["slug"] == "news"
    update = [r for r in records if r.value["event_type"] == "post_updated"]
    assert len(update) == 1 and update[0].key == f"1:{ids[0]}"
    same_key = [r for r in records if r.key == f"1:{ids[0]}"]
    assert [r.value["event_type"] for r in sorted(same_key, key=lambda r: r.offset)] == [
        "post_snapshot",
        "post_updated",
    ]
    saved = json.loads(site.checkpoint_path.read_text())
    assert "snapshot" not in saved, "a finished snapshot leaves nothing behind in the checkpoint"


def test_check_reports_missing_row_metadata(site: Site) -> None:
    ok = site.cli("check")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    site.sql("SET GLOBAL binlog_row_metadata = 'MINIMAL'")
    try:
        bad = site.cli("check")
        run = site.streamer()
        run_code = run.wait(30)
    finally:
        site.sql("SET GLOBAL binlog_row_metadata = 'FULL'")
    assert bad.returncode == 3
    assert "FAIL     binlog_row_metadata: binlog_row_metadata=MINIMAL (need FULL)" in bad.stdout
    assert "SET GLOBAL binlog_row_metadata=FULL" in bad.stdout
    assert run_code == 3 and "binlog_row_metadata" in run.output()


def test_config_errors_are_one_clear_line(site: Site) -> None:
    site.config["kafka"]["topik"] = "oops"
    site.write_config()
    result = site.cli("run")
    assert result.returncode == 2
    assert "kafka.topik: unknown key" in result.stderr and "Traceback" not in result.stderr


def test_wrong_password_is_named(site: Site) -> None:
    result = site.cli("check", env={"WPCDC_MYSQL_PASSWORD": "wrong-password"})
    assert result.returncode == 3
    assert "access denied" in result.stderr and "wrong-password" not in result.stderr + result.stdout


def test_unmappable_row_goes_to_the_dead_letter_topic_and_streaming_continues(site: Site) -> None:
    # A plugin changed a column type: post_id is no longer an integer, so the mapper cannot key it.
    site.sql("ALTER TABLE wp_postmeta MODIFY post_id VARCHAR(20) NOT NULL DEFAULT '0'")
    site.set_checkpoint(site.position())
    s = site.streamer()
    pid = site.insert_post("before")
    site.sql(f"INSERT INTO wp_postmeta (post_id, meta_key, meta_value) VALUES ('{pid}', 'color', 'blue')")
    after = site.insert_post("after")
    records = wait_for(site, 2)
    dead = site.consume(expect=1, topic=site.dead_letter_topic)
    assert s.stop() == 0
    assert [r.value["post_id"] for r in records] == [pid, after] or {r.value["post_id"] for r in records} == {
        pid,
        after,
    }
    assert len(dead) == 1
    d = dead[0].value
    assert d["event_type"] == "dead_letter" and d["op"] == "insert"
    assert "post_id" in d["error"] and "expected an integer" in d["error"]
    assert d["after"]["meta_value"] == "blue" and d["source"]["table"] == "wp_postmeta"
    assert dead[0].key == "1:"
    assert "dead-lettered row" in s.output()


def test_checkpoint_advances_through_transactions_without_events(site: Site) -> None:
    site.set_checkpoint()
    s = site.streamer()
    time.sleep(1)
    for i in range(5):
        site.sql(f"INSERT INTO wp_options (option_name, option_value) VALUES ('opt{i}', 'x')")
    target = site.position()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        cp = json.loads(site.checkpoint_path.read_text())
        if f"{cp['file']}:{cp['pos']}" == target:
            break
        time.sleep(0.2)
    assert s.stop() == 0
    cp = json.loads(site.checkpoint_path.read_text())
    assert f"{cp['file']}:{cp['pos']}" == target, "wp_options churn must not pin an old checkpoint"
    assert site.consume(idle=1.0) == []


def test_replay_to_kafka_with_update_checkpoint(site: Site) -> None:
    pid = site.insert_post("to kafka", status="publish")
    end = site.position()
    result = site.cli("replay", "--from", site.start, "--sink", "kafka", "--update-checkpoint")
    assert result.returncode == 0, result.stderr
    records = wait_for(site, 2)
    assert [r.value["event_type"] for r in sorted(records, key=lambda r: r.value["event_id"])] == [
        "post_created",
        "post_published",
    ]
    assert all(r.value["post_id"] == pid for r in records)
    shown = site.cli("checkpoint", "show")
    assert shown.returncode == 0
    cp = json.loads(shown.stdout)
    assert f"{cp['file']}:{cp['pos']}" == end
    assert "password" not in shown.stdout.lower()
    assert site.cli("checkpoint", "reset").returncode == 0
    none = site.cli("checkpoint", "show")
    assert none.returncode == 0 and none.stdout.strip() == "null" and "no checkpoint" in none.stderr


def test_tls_to_mysql_with_a_user_that_requires_it(site: Site) -> None:
    tls = site.stack.db.tls_dir
    assert tls is not None
    site.sql(
        "CREATE USER IF NOT EXISTS 'wpcdc_tls'@'%' IDENTIFIED BY 'tls-secret' REQUIRE SSL",
        "GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO 'wpcdc_tls'@'%'",
    )
    site.config["mysql"]["user"] = "wpcdc_tls"
    site.write_config()
    env = {"WPCDC_MYSQL_PASSWORD": "tls-secret"}
    # (PyMySQL already negotiates TLS when the server offers it, but without verifying anything:
    # what mysql.tls adds is verification, which the last step shows.)
    site.config["mysql"].update({"tls": True, "tls_ca_file": str(tls / "ca.pem")})
    site.write_config()
    assert site.cli("check", env=env).returncode == 0
    pid = site.insert_post("over TLS")
    result = site.cli("replay", "--from", site.start, env=env)  # the binlog stream itself over TLS
    assert result.returncode == 0, result.stderr
    assert f'"post_id":{pid}' in result.stdout

    site.config["mysql"]["tls_ca_file"] = str(tls / "server.pem")  # not the CA: verification must fail
    site.write_config()
    wrong = site.cli("check", env=env)
    assert wrong.returncode == 3 and "certificate" in wrong.stderr.lower()
