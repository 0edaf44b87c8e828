"""`wpcdc check` against the live servers (MariaDB 10.11 and MySQL 9.x): each setting the checks
read, flipped on the server, shows up as the named finding with the server's own variable names."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.integration.conftest import Site

pytestmark = pytest.mark.integration


@contextmanager
def global_setting(site: Site, name: str, value: str | int) -> Iterator[None]:
    old = site.query(f"SELECT @@GLOBAL.{name}")[0][0]
    site.sql(f"SET GLOBAL {name} = %s", args=(value,))
    try:
        yield
    finally:  # the server is shared by the whole session
        site.sql(f"SET GLOBAL {name} = %s", args=(old,))


def lines(output: str) -> dict[str, str]:
    out = {}
    for line in output.splitlines():
        status, _, rest = line.partition(" ")
        what, _, detail = rest.strip().partition(": ")
        out[what] = f"{status} {detail}"
    return out


def test_check_passes_and_reports_gtids_and_retention(site: Site) -> None:
    result = site.cli("check")
    assert result.returncode == 0, result.stdout + result.stderr
    found = lines(result.stdout)
    # The binlog end comes from the statement this server has (SHOW BINARY LOG STATUS on MySQL >= 8.2).
    assert found["checkpoint"] == "ok none yet; run starts at the end", result.stdout
    if site.stack.kind == "mysql":
        assert found["gtid_mode"] == "ok gtid_mode=ON"
        assert found["binlog_expire_logs_seconds"].startswith("ok binlog_expire_logs_seconds=2592000")
    else:
        assert found["gtid_mode"] == "ok MariaDB writes a GTID for every transaction"
        assert found["binlog_expire_logs_seconds"] == "ok binlogs are never expired (purged by hand only)"


def test_short_binlog_retention_is_a_warning(site: Site) -> None:
    with global_setting(site, "binlog_expire_logs_seconds", 3600):
        result = site.cli("check")
    assert result.returncode == 0, result.stdout
    assert "warning  binlog_expire_logs_seconds: binlog_expire_logs_seconds=3600 (binlogs kept 1 h)" in result.stdout
    assert "SET PERSIST binlog_expire_logs_seconds=604800" in result.stdout


def test_read_only_replica_names_the_replica_updates_variable(site: Site) -> None:
    with global_setting(site, "read_only", "ON"):
        result = site.cli("check")
    found = lines(result.stdout)
    if site.stack.kind == "mysql":  # log_replica_updates is ON by default since MySQL 8.0
        assert found["log_replica_updates"].startswith("ok the source is read-only"), result.stdout
        assert "log_slave_updates" not in found
    else:
        assert found["log_slave_updates"].startswith("warning the source is read-only"), result.stdout
        assert "put log_slave_updates=ON in the replica's my.cnf" in result.stdout


def test_partial_json_is_refused_where_the_server_has_it(site: Site) -> None:
    if site.stack.kind == "mariadb":
        # MariaDB always logs JSON (LONGTEXT) in full: it has no such variable, so no such finding.
        assert not site.query("SHOW GLOBAL VARIABLES LIKE 'binlog_row_value_options'")
        result = site.cli("check")
        assert result.returncode == 0 and "binlog_row_value_options" not in result.stdout
        return
    with global_setting(site, "binlog_row_value_options", "PARTIAL_JSON"):
        result = site.cli("check")
        run = site.cli("run", timeout=60)
    assert result.returncode == 3, result.stdout
    assert "FAIL     binlog_row_value_options: binlog_row_value_options=PARTIAL_JSON" in result.stdout
    assert "SET PERSIST binlog_row_value_options=''" in result.stdout
    assert run.returncode == 3 and "binlog_row_value_options" in run.stderr


def test_partial_json_updates_are_dead_lettered_only_for_captured_tables(site: Site) -> None:
    """Any session may SET binlog_row_value_options=PARTIAL_JSON (the global check cannot see it):
    a plugin's own JSON table goes on streaming, a captured table's partial JSON image is dead-lettered
    with the fix (never emitted as an update, never a stop the restart would hit again). Captured
    tables without JSON columns decode exactly: see test_mysql_decoding."""
    site.sql(
        "CREATE TABLE wp_plugin_docs (id INT PRIMARY KEY, doc JSON)",
        'INSERT INTO wp_plugin_docs VALUES (1, \'{"a": 1, "pad": "' + "x" * 200 + "\"}')",
        "ALTER TABLE wp_postmeta ADD COLUMN doc JSON NULL",
    )
    pid = site.insert_post("JSON")
    site.sql(f"INSERT INTO wp_postmeta (post_id, meta_key, meta_value, doc) VALUES ({pid}, 'k', 'v', '{{\"a\": 1}}')")
    partial = site.stack.kind == "mysql"  # MariaDB has no partial images: JSON is LONGTEXT, logged whole
    with site.stack.db.root(site.database) as conn, conn.cursor() as cur:
        if partial:
            cur.execute("SET SESSION binlog_row_value_options = 'PARTIAL_JSON'")
        cur.execute("UPDATE wp_plugin_docs SET doc = JSON_SET(doc, '$.a', 2) WHERE id = 1")
        site.insert_post("after the plugin's partial update")
        ok = site.cli("replay", "--from", site.start)
        cur.execute("UPDATE wp_postmeta SET doc = JSON_SET(doc, '$.a', 2) WHERE post_id = %s", (pid,))
    if partial:  # the server really wrote partial images (binlog_row_image=FULL does not prevent them)
        kinds = {str(r[2]) for r in site.query(f"SHOW BINLOG EVENTS IN '{site.start.split(':')[0]}'")}
        assert "Update_rows_partial" in kinds, kinds
    assert ok.returncode == 0, ok.stderr
    assert "after the plugin's partial update" in ok.stdout
    captured = site.cli("replay", "--from", site.start)
    if partial:
        assert captured.returncode == 0, captured.stderr
        assert '"dead_letters": 1' in captured.stderr and "Traceback" not in captured.stderr
        dead = [line for line in captured.stderr.splitlines() if line.startswith("dead-letter: ")]
        assert len(dead) == 1 and "binlog_row_value_options=''" in dead[0] and "JSON column(s) doc" in dead[0]
        assert '"post_meta_updated"' not in captured.stdout
    else:
        assert captured.returncode == 0, captured.stderr
        assert '"post_meta_updated"' in captured.stdout
