"""Bad configuration and odd data: one clear message naming the setting and the fix, never a
stack trace, and streaming that survives what plugins do to the schema."""

from __future__ import annotations

import pytest

from cdc.dev.stack import free_port
from tests.integration.conftest import Site

pytestmark = pytest.mark.integration


def no_trace(text: str) -> None:
    assert "Traceback" not in text, text


def test_unreachable_host_names_host_and_port(site: Site) -> None:
    port = free_port()
    site.config["mysql"].update({"port": port, "connect_timeout_seconds": 2})
    site.write_config()
    result = site.cli("check")
    assert result.returncode == 3
    assert f"cannot connect to MySQL at 127.0.0.1:{port}" in result.stderr and "mysql.host" in result.stderr
    no_trace(result.stderr)


def test_missing_replication_privilege_is_reported(site: Site) -> None:
    site.sql(
        "CREATE USER IF NOT EXISTS 'wpcdc_ro'@'%' IDENTIFIED BY 'ro-secret'",
        f"GRANT SELECT ON `{site.database}`.* TO 'wpcdc_ro'@'%'",
    )
    site.config["mysql"]["user"] = "wpcdc_ro"
    site.write_config()
    result = site.cli("check", env={"WPCDC_MYSQL_PASSWORD": "ro-secret"})
    assert result.returncode == 3
    assert "FAIL     privileges: missing REPLICATION SLAVE, REPLICATION CLIENT" in result.stdout
    assert "GRANT REPLICATION SLAVE, REPLICATION CLIENT" in result.stdout
    run = site.cli("run", env={"WPCDC_MYSQL_PASSWORD": "ro-secret"})
    assert run.returncode == 3 and "privileges" in run.stderr
    no_trace(run.stderr)


def test_excess_privileges_are_a_warning_not_a_failure(site: Site) -> None:
    site.sql(
        "CREATE USER IF NOT EXISTS 'wpcdc_all'@'%' IDENTIFIED BY 'all-secret'",
        "GRANT ALL PRIVILEGES ON *.* TO 'wpcdc_all'@'%'",
    )
    site.config["mysql"]["user"] = "wpcdc_all"
    site.write_config()
    result = site.cli("check", env={"WPCDC_MYSQL_PASSWORD": "all-secret"})
    assert result.returncode == 0, result.stdout
    # MariaDB shows ALL PRIVILEGES; MySQL lists the privileges one by one.
    held = "ALL PRIVILEGES" if site.stack.kind == "mariadb" else "INSERT, UPDATE, DELETE, DROP, ALTER, SUPER ON *.*"
    assert f"warning  privileges: {held}: more than wpcdc needs" in result.stdout


def test_server_id_clash_with_the_source(site: Site) -> None:
    site.config["mysql"]["server_id"] = site.stack.db.server_id
    site.write_config()
    result = site.cli("check")
    assert result.returncode == 3
    assert f"FAIL     mysql.server_id: reader server_id {site.stack.db.server_id}" in result.stdout
    assert "set mysql.server_id to a value no server or replica in the topology uses" in result.stdout


def test_wrong_database_and_prefix_are_named(site: Site) -> None:
    site.config["wordpress"]["table_prefix"] = "wpx_"
    site.write_config()
    result = site.cli("check")
    assert result.returncode == 3
    assert "missing wpx_posts" in result.stdout and "wordpress.table_prefix" in result.stdout


def test_bad_position_arguments(site: Site) -> None:
    result = site.cli("replay", "--from", "binlog.000001")
    assert result.returncode == 2 and "FILE:POS" in result.stderr
    newer = site.cli("replay", "--from", "binlog.999999:4")
    assert newer.returncode == 4 and "newer than any on 127.0.0.1:" in newer.stderr, newer.stderr
    assert "no longer has" not in newer.stderr  # it was never purged: another server's, or a reset binlog
    no_trace(newer.stderr)
    gone = site.cli("replay", "--from", "binlog.000000:4")
    assert gone.returncode == 4 and "no longer has" in gone.stderr, gone.stderr
    no_trace(gone.stderr)


def test_ddl_on_a_captured_table_while_streaming(site: Site) -> None:
    site.set_checkpoint()
    s = site.streamer()
    before = site.insert_post("before the ALTER")
    site.sql("ALTER TABLE wp_posts ADD COLUMN plugin_score INT NOT NULL DEFAULT 0")
    after = site.insert_post("after the ALTER", plugin_score=7)
    site.sql(f"UPDATE wp_posts SET plugin_score = 9 WHERE ID = {before}")
    site.sql("ALTER TABLE wp_posts DROP COLUMN plugin_score")
    last = site.insert_post("after the DROP")
    records = site.consume(expect=4)
    assert s.stop() == 0, s.output()
    by_id = {(r.value["post_id"], r.value["event_type"]): r.value for r in records}
    assert "plugin_score" not in by_id[(before, "post_created")]["data"]["post"]
    assert by_id[(after, "post_created")]["data"]["post"]["plugin_score"] == 7
    assert by_id[(before, "post_updated")]["data"]["changes"] == {"plugin_score": {"old": 0, "new": 9}}
    assert "plugin_score" not in by_id[(last, "post_created")]["data"]["post"]


@pytest.mark.parametrize("policy", ["truncate", "dead_letter", "fail"])
def test_oversized_post_against_the_broker(site: Site, policy: str) -> None:
    import json

    site.config["kafka"].update({"max_request_size": 65_536, "oversize_policy": policy})
    site.write_config()
    site.set_checkpoint()
    s = site.streamer()
    big = site.insert_post("huge", post_content="<p>" + "lorem ipsum " * 20_000 + "</p>")  # ~240 KB
    small = site.insert_post("small")
    if policy == "fail":
        code = s.wait(30)
        out = s.output()
        assert code == 6 and "oversize_policy is fail" in out and "fix:" in out and "Traceback" not in out
        assert site.consume(idle=1.0) == []  # nothing after it either: the order per post is kept
        cp = json.loads(site.checkpoint_path.read_text())
        assert f"{cp['file']}:{cp['pos']}" == site.start  # not checkpointed past it
        return
    records = site.consume(expect=2 if policy == "truncate" else 1)
    dead = site.consume(idle=1.0, topic=site.dead_letter_topic)
    assert s.stop() == 0, s.output()
    by_post = {r.value["post_id"]: r.value for r in records}
    assert small in by_post
    if policy == "truncate":
        post = by_post[big]["data"]["post"]
        assert post["content_truncated"] is True and post["content_bytes"] > 200_000 and dead == []
    else:
        assert big not in by_post
        assert len(dead) == 1 and dead[0].value["post_id"] == big and "max_request_size" in dead[0].value["error"]
