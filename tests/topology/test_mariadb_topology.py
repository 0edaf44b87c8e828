"""Failover on a real MariaDB topology: a primary and two replicas (log_slave_updates, GTID
replication), a writer on the primary, wpcdc reading the servers listed in mysql.hosts. Each test
prints its figures (the summary's "failover scenarios" section). The scenarios both rigs run are
tests/topology/scenarios.py's; the lagging and the wpcdc-with-its-replica ones need three servers."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from cdc.dev.stack import MariaDB, Tansu
from cdc.dev.topology import Topology, kill9, restart, start_sql_thread, stop_sql_thread
from tests.topology import scenarios
from tests.topology.failover_checks import wait_for
from tests.topology.scenarios import Rig, address, connected, gtid_checkpoint, until_writes, writing

pytestmark = pytest.mark.integration

# Checkpoints 3 s apart: a wpcdc killed with its source re-reads the transactions after the last
# one from the other server, so the run has duplicates, and they must carry the ids the first read gave.
SPARSE = {"interval_seconds": 3, "max_pending_events": 100_000}


@pytest.fixture
def rig(mariadb_topology: Topology, broker: Tansu, tmp_path: Path) -> Rig:
    return Rig(mariadb_topology, broker, tmp_path)


def test_kill9_of_the_replica_read_moves_to_the_other_slow(rig: Rig) -> None:
    r1, r2 = rig.topology.replica_nodes
    scenarios.kill9_of_the_replica_read(rig, read=r1, other=r2)


def test_kill9_of_wpcdc_and_its_replica_rereads_from_the_other_with_the_same_ids_slow(rig: Rig) -> None:
    """wpcdc and the replica it reads die together (one host lost); restarted, wpcdc starts from its
    last checkpoint on the other replica: what it publishes again has the ids it had."""
    r1, r2 = rig.topology.replica_nodes
    site, s = rig.stream([r1, r2], checkpoint=SPARSE)
    with writing(site) as writer:
        until_writes(writer, 60)
        s.stop(signal.SIGKILL)
        kill9(r1)
        killed_at = time.monotonic()
        again = site.streamer()
        wait_for(lambda: connected(again), 60, "the restarted wpcdc connected", again)
        resume = time.monotonic() - killed_at
        until_writes(writer, 150, "more writes")
    _, out = rig.finish("kill -9 of wpcdc and its replica, restarted", site, again, writer, resume)
    assert f"reading the binlog of {address(r2)}" in out, out[-3000:]
    restart(r1)
    rig.settle()


def test_switch_of_primary_is_followed_slow(rig: Rig) -> None:
    """The writer moves to a promoted replica; then the replica wpcdc reads dies too: wpcdc goes on
    reading the new primary, whose GTIDs carry another server id."""
    r1, r2 = rig.topology.replica_nodes
    scenarios.switch_of_primary(rig, read=r1, promoted=r2)


def test_lagging_replica_is_skipped(rig: Rig) -> None:
    """mysql.hosts lists the replica read, a replica whose SQL thread is stopped (it lags behind what
    wpcdc has read), then the primary: when the first dies, the lagging one is skipped."""
    first, lagging = rig.topology.replica_nodes
    site, s = rig.stream([first, lagging, rig.primary])
    stop_sql_thread(lagging)
    with writing(site) as writer:
        until_writes(writer, 40)
        gtid_checkpoint(site, s)
        time.sleep(1)  # the checkpoint moves past what the lagging replica applied
        kill9(first)
        resume = wait_for(lambda: connected(s, 2), 60, "reconnection", s)
        until_writes(writer, 120, "more writes")
    assert f"skipping {address(lagging)}: lagging" in s.output(), s.output()[-3000:]
    start_sql_thread(lagging)
    restart(first)
    rig.finish("lagging replica skipped", site, s, writer, resume, moved=(first, rig.primary))


def test_lagging_replica_is_waited_for_slow(rig: Rig) -> None:
    """Only two replicas listed: the one read dies while the other lags. wpcdc reads neither (it
    retries with backoff) until the lagging one has caught up, then moves there."""
    first, lagging = rig.topology.replica_nodes
    site, s = rig.stream([first, lagging])
    stop_sql_thread(lagging)
    with writing(site) as writer:
        until_writes(writer, 40)
        gtid_checkpoint(site, s)
        time.sleep(1)
        kill9(first)
        wait_for(lambda: f"skipping {address(lagging)}: lagging" in s.output(), 60, "the lagging verdict", s)
        time.sleep(2)  # still lagging: wpcdc must keep waiting, not read it
        assert not connected(s, 2), s.output()[-3000:]
        start_sql_thread(lagging)
        resume = wait_for(lambda: connected(s, 2), 60, "reconnection once it caught up", s)
        until_writes(writer, 120, "more writes")
    restart(first)
    rig.finish(
        "lagging replica waited for (resumed: from its SQL thread restart)", site, s, writer, resume,
        moved=(first, lagging),
    )  # fmt: skip


def test_server_of_another_topology_is_refused(rig: Rig) -> None:
    replica = rig.topology.replica_nodes[0]
    foreign = MariaDB(rig.directory / "foreign", server_id=901, extra_args=["--gtid-domain-id=9"]).start()
    try:
        with foreign.root() as conn, conn.cursor() as cur:
            cur.execute("CREATE DATABASE other_site")  # a GTID of its own: 9-901-…
        scenarios.another_topology(rig, replica, foreign)
    finally:
        foreign.stop()


def test_purged_gtids_take_the_purged_path_slow(rig: Rig) -> None:
    """The only server listed purged the binlog after the checkpoint: exit 4 with the fix; with
    snapshot.mode when_needed, streaming goes on from the end and a snapshot covers the gap."""
    scenarios.purged_gtids(rig, rig.topology.replica_nodes[-1], heal=True)
