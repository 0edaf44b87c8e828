"""`wpcdc check`'s server checks for the versions the suite has no live server of (MySQL 8.0, 8.4):
their variables as those versions report them (names from the MySQL reference manuals), against the
same check code the integration tests run on live MariaDB 10.11 and MySQL 9.x."""

from __future__ import annotations

from typing import Any

import pytest

from cdc.config import parse_config
from cdc.source.preflight import Finding, check_server, failures
from cdc.source.server import binlog_status_statement

_BASE = {
    "log_bin": "ON",
    "binlog_format": "ROW",
    "binlog_row_image": "FULL",
    "binlog_row_metadata": "FULL",
    "server_id": "1",
    "read_only": "OFF",
}
# What each server version has of the variables check_server asks for.
PROFILES: dict[str, dict[str, str]] = {
    "8.0.25": {**_BASE, "log_slave_updates": "ON", "gtid_mode": "OFF", "binlog_row_value_options": "",
               "binlog_transaction_compression": "OFF", "binlog_expire_logs_seconds": "2592000",
               "expire_logs_days": "0"},
    "8.0.40": {**_BASE, "log_slave_updates": "ON", "log_replica_updates": "ON", "gtid_mode": "ON",
               "binlog_row_value_options": "", "binlog_transaction_compression": "OFF",
               "binlog_expire_logs_seconds": "2592000", "expire_logs_days": "0",
               "binlog_expire_logs_auto_purge": "ON"},
    "8.4.3": {**_BASE, "log_replica_updates": "ON", "gtid_mode": "ON", "binlog_row_value_options": "",
              "binlog_transaction_compression": "OFF", "binlog_expire_logs_seconds": "2592000",
              "binlog_expire_logs_auto_purge": "ON"},
    "9.7.4": {**_BASE, "log_replica_updates": "ON", "log_slave_updates": "ON", "gtid_mode": "ON",
              "binlog_row_value_options": "", "binlog_transaction_compression": "OFF",
              "binlog_expire_logs_seconds": "2592000", "binlog_expire_logs_auto_purge": "ON"},
    "10.11.19-MariaDB-log": {**_BASE, "log_slave_updates": "OFF", "log_bin_compress": "OFF",
                             "binlog_expire_logs_seconds": "0", "expire_logs_days": "0.000000"},
}  # fmt: skip


class FakeServer:
    """Answers what check_server asks, from a profile (pure logic: the live servers are covered by
    tests/integration/test_preflight.py)."""

    def __init__(self, version: str, **overrides: str) -> None:
        self._version = version
        self.values = {**PROFILES[version], **overrides}

    def version(self) -> str:
        return self._version

    def variables(self, *names: str) -> dict[str, str]:
        return {n: self.values[n] for n in names if n in self.values}

    def grants(self) -> list[str]:
        return ["GRANT SELECT, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO `wpcdc`@`%`"]

    def tables(self, database: str) -> list[str]:
        return ["wp_posts", "wp_postmeta", "wp_term_relationships", "wp_term_taxonomy", "wp_terms"]


def findings(server: Any) -> dict[str, Finding]:
    config = parse_config({"mysql": {"server_id": 9000}, "wordpress": {"database": "wordpress"}})
    return {f.what: f for f in check_server(config, server)}


@pytest.mark.parametrize(
    ("version", "statement"),
    [
        ("5.7.44-log", "SHOW MASTER STATUS"),
        ("8.0.40", "SHOW MASTER STATUS"),
        ("8.2.0", "SHOW BINARY LOG STATUS"),
        ("8.4.3", "SHOW BINARY LOG STATUS"),
        ("9.7.4-2", "SHOW BINARY LOG STATUS"),
        ("10.11.19-MariaDB-0+deb12u1-log", "SHOW MASTER STATUS"),
        ("11.4.2-MariaDB", "SHOW MASTER STATUS"),
    ],
)
def test_binlog_status_statement_by_version(version: str, statement: str) -> None:
    assert binlog_status_statement(version) == statement


@pytest.mark.parametrize("version", list(PROFILES))
def test_a_well_configured_server_of_each_version_passes(version: str) -> None:
    found = findings(FakeServer(version))
    assert not failures(list(found.values())), found
    assert found["binlog_expire_logs_seconds"].ok
    if "MariaDB" not in version:
        assert found["gtid_mode"].ok == (found["gtid_mode"].detail == "gtid_mode=ON")


@pytest.mark.parametrize("version", ["8.0.25", "8.0.40", "8.4.3", "9.7.4"])
def test_partial_json_is_refused_with_the_mysql_fix(version: str) -> None:
    bad = findings(FakeServer(version, binlog_row_value_options="PARTIAL_JSON"))["binlog_row_value_options"]
    assert not bad.ok and not bad.warning
    assert bad.detail == "binlog_row_value_options=PARTIAL_JSON"
    assert "SET PERSIST binlog_row_value_options=''" in bad.fix


@pytest.mark.parametrize(
    ("version", "name"),
    [("8.0.25", "log_slave_updates"), ("8.0.40", "log_replica_updates"), ("8.4.3", "log_replica_updates"),
     ("9.7.4", "log_replica_updates"), ("10.11.19-MariaDB-log", "log_slave_updates")],
)  # fmt: skip
def test_a_read_only_replica_without_replica_updates_is_named_as_the_server_names_it(version: str, name: str) -> None:
    off = {k: "OFF" for k in ("log_slave_updates", "log_replica_updates") if k in PROFILES[version]}
    found = findings(FakeServer(version, read_only="ON", **off))
    warn = found[name]
    assert not warn.ok and warn.warning
    assert f"{name}=OFF" in warn.detail and f"put {name}=ON in the replica's my.cnf" in warn.fix


@pytest.mark.parametrize("version", ["8.0.40", "8.4.3", "9.7.4"])
def test_gtid_mode_off_is_a_warning_with_the_steps(version: str) -> None:
    warn = findings(FakeServer(version, gtid_mode="OFF"))["gtid_mode"]
    assert not warn.ok and warn.warning and "no source.gtid" in warn.detail
    assert "OFF_PERMISSIVE, ON_PERMISSIVE, ON" in warn.fix


@pytest.mark.parametrize(
    ("version", "overrides", "ok", "detail"),
    [
        ("9.7.4", {"binlog_expire_logs_seconds": "3600"}, False, "binlog_expire_logs_seconds=3600 (binlogs kept 1 h)"),
        ("8.4.3", {"binlog_expire_logs_seconds": "604800"}, True, "binlogs kept 168 h"),
        ("8.0.40", {"binlog_expire_logs_seconds": "0", "expire_logs_days": "0.5"}, False, "expire_logs_days=0.5"),
        ("8.0.40", {"binlog_expire_logs_seconds": "60", "binlog_expire_logs_auto_purge": "OFF"}, True, "never"),
        ("10.11.19-MariaDB-log", {}, True, "never expired"),
        ("10.11.19-MariaDB-log", {"expire_logs_days": "3"}, True, "expire_logs_days=3 (binlogs kept 72 h)"),
    ],
)
def test_binlog_retention(version: str, overrides: dict[str, str], ok: bool, detail: str) -> None:
    found = findings(FakeServer(version, **overrides))["binlog_expire_logs_seconds"]
    assert found.ok == ok and detail in found.detail, found
    assert found.warning or found.ok  # short retention warns, it does not stop `run`
    if not ok:
        assert "SET PERSIST binlog_expire_logs_seconds=604800" in found.fix


def test_mysql_all_privileges_listed_one_by_one_are_a_warning() -> None:
    server = FakeServer("9.7.4")
    server.grants = lambda: [  # type: ignore[method-assign]
        "GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, RELOAD, SHUTDOWN, PROCESS, FILE, REFERENCES, INDEX, "
        "ALTER, SHOW DATABASES, SUPER, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO `wpcdc_all`@`%`",
        "GRANT APPLICATION_PASSWORD_ADMIN,AUDIT_ADMIN,BINLOG_ADMIN ON *.* TO `wpcdc_all`@`%`",
    ]
    found = findings(server)["privileges"]
    assert not found.ok and found.warning
    assert found.detail == "INSERT, UPDATE, DELETE, DROP, ALTER, SUPER ON *.*: more than wpcdc needs"


U = "3e11fa47-71ca-11e1-9e33-c80aa9429562"


@pytest.mark.parametrize(
    ("previous_gtids", "gtid_mode", "nothing_after"),
    [
        (f"{U}:1-57", "ON", True),
        (f"{U}:1-3:5-57", "ON", True),
        (f"{U}:1-58", "ON", False),  # a transaction after ours was in the purged file: a gap
        (f"{U}:1-57,\n9b1e2a3c-0000-11ef-8000-000000000001:1-4", "ON", False),  # another server: no order
        (f"{U}:1-57:tag1:1-2", "ON", False),  # a tagged GTID (MySQL >= 8.3): not provable here
        (f"{U}:1-57", "ON_PERMISSIVE", False),  # anonymous transactions could have come after
        ("", "ON", False),
    ],
)
def test_mysql_previous_gtids_prove_a_purged_file_held_nothing_after_the_checkpoint(
    previous_gtids: str, gtid_mode: str, nothing_after: bool
) -> None:
    from cdc.source.server import Server

    server = Server.__new__(Server)
    answers = {
        "SELECT @@GLOBAL.gtid_mode": [(gtid_mode,)],
        "SHOW BINLOG EVENTS IN 'binlog.000003' LIMIT 3": [
            ("binlog.000003", 4, "Format_desc", 1, 127, "Server ver: 9.7.4-2, Binlog ver: 4"),
            ("binlog.000003", 127, "Previous_gtids", 1, 198, previous_gtids),
        ],
    }
    server.query = lambda sql, args=None: answers[sql]  # type: ignore[method-assign]
    assert server._nothing_after(f"{U}:57", "binlog.000003") is nothing_after
