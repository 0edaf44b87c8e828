"""Real replication topologies, one per server kind and per session (cdc.dev.topology): a MariaDB
primary with two replicas and a MySQL primary with one replica, GTID replication between them, the
session's Tansu broker. Tests kill, promote and lag the servers; each leaves every server running and
replicating (the primary may have changed: `topology.primary` says which)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cdc.dev.stack import Tansu
from cdc.dev.topology import Topology
from tests.conftest import summary_lines
from tests.integration.conftest import Site, Stack

# Shipped to the xdist controller, which prints the summary (a plain list stayed in the worker).
FIGURES: list[str] = summary_lines("failover scenarios", [])


@pytest.fixture(scope="session")
def mariadb_topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    topology = Topology(tmp_path_factory.mktemp("topology-mariadb"), "mariadb", replicas=2, first_server_id=301)
    try:
        yield topology.start()
    finally:
        topology.stop()


@pytest.fixture(scope="session")
def mysql_topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    topology = Topology(tmp_path_factory.mktemp("topology-mysql"), "mysql", replicas=1, first_server_id=401)
    try:
        yield topology.start()
    finally:
        topology.stop()


def topology_site(topology: Topology, broker: Tansu, directory: Path, hosts: list[str], **overrides: Any) -> Site:
    """A WordPress schema created on the primary (replicated everywhere), wpcdc configured to read
    `hosts` (mysql.hosts); without a checkpoint it starts at the end of the first server's binlog."""
    assert topology.primary is not None
    site = Site(Stack(topology.primary, broker, directory), directory, overrides)
    site.config["mysql"]["hosts"] = hosts
    site.config["source"]["position"] = "gtid"
    site.write_config()
    return site


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The failover scenarios' figures, in the summary of every run (CI logs included)."""
    if FIGURES:
        terminalreporter.section("failover scenarios")
        for line in FIGURES:
            terminalreporter.write_line(line)
