"""Failover on a real Oracle MySQL topology: a primary and a replica (gtid_mode=ON,
SOURCE_AUTO_POSITION=1), a writer on the primary, wpcdc reading the servers listed in mysql.hosts.
A lagging server is covered on MariaDB (three servers) and, for MySQL's GTID sets, by
tests/unit/test_failover_classify.py. The scenarios are tests/topology/scenarios.py's."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdc.dev.mysql import MySQL
from cdc.dev.stack import Tansu
from cdc.dev.topology import Topology
from tests.topology import scenarios
from tests.topology.scenarios import Rig

pytestmark = pytest.mark.integration


@pytest.fixture
def rig(mysql_topology: Topology, broker: Tansu, tmp_path: Path) -> Rig:
    return Rig(mysql_topology, broker, tmp_path)


def test_kill9_of_the_replica_read_moves_to_the_primary(rig: Rig) -> None:
    (replica,) = rig.topology.replica_nodes
    scenarios.kill9_of_the_replica_read(rig, read=replica, other=rig.primary)


def test_switch_of_primary_is_followed_slow(rig: Rig) -> None:
    """wpcdc reads the primary; the replica is promoted and the writer moves there; the old primary
    (now a replica of the new one) dies: wpcdc reads the new primary, whose GTIDs have another UUID."""
    (replica,) = rig.topology.replica_nodes
    scenarios.switch_of_primary(rig, read=rig.primary, promoted=replica)


def test_purged_gtids_exit_4_slow(rig: Rig) -> None:
    (replica,) = rig.topology.replica_nodes
    scenarios.purged_gtids(rig, replica, heal=False)


def test_server_of_another_topology_is_refused_slow(rig: Rig) -> None:
    """A standalone MySQL (its own server_uuid, no GTID of the topology's) listed before the replica."""
    (replica,) = rig.topology.replica_nodes
    foreign = MySQL(rig.directory / "foreign", server_id=991).start()
    try:
        scenarios.another_topology(rig, replica, foreign)
    finally:
        foreign.stop()
