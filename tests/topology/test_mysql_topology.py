"""Failover on a real Oracle MySQL topology: a primary and a replica (gtid_mode=ON,
SOURCE_AUTO_POSITION=1), a writer on the primary, wpcdc reading the servers listed in mysql.hosts.
A lagging server is covered on MariaDB (three servers) and, for MySQL's GTID sets, by
tests/unit/test_failover_classify.py."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cdc.dev.mysql import MySQL
from cdc.dev.stack import Tansu
from cdc.dev.topology import Topology, kill9, purge_binlogs, restart, wait_caught_up
from cdc.errors import EXIT_POSITION_GONE, EXIT_SOURCE
from tests.faults.test_outages import Writer
from tests.integration.conftest import Stack, Streamer
from tests.topology.conftest import FIGURES, topology_site
from tests.topology.failover_checks import check, wait_for

pytestmark = pytest.mark.integration

KIND = "mysql"


def _settle(topology: Topology) -> None:
    for node in topology.replica_nodes:
        if node.proc is not None and node.proc.poll() is None:
            wait_caught_up(node, topology.primary)  # type: ignore[arg-type]


def _connected(s: Streamer, n: int = 1) -> bool:
    return s.output().count("connected to the binlog") >= n


def test_kill9_of_the_replica_read_moves_to_the_primary(
    mysql_topology: Topology, broker: Tansu, tmp_path: Path
) -> None:
    t = mysql_topology
    (replica,) = t.replica_nodes
    primary = t.primary
    assert primary is not None
    site = topology_site(t, broker, tmp_path, t.hosts([replica, primary]))
    _settle(t)
    s = site.streamer()
    wait_for(lambda: _connected(s), 60, "first connection", s)
    assert f"reading the binlog of 127.0.0.1:{replica.port}" in s.output()
    writer = Writer(site).start()
    try:
        wait_for(lambda: len(writer.ids) >= 30, 30, "writes")
        kill9(replica)
        resume = wait_for(lambda: _connected(s, 2), 60, "reconnection to the primary", s)
        wait_for(lambda: len(writer.ids) >= 150, 60, "more writes")
    finally:
        writer.stop()
    records = site.consume(expect=len(writer.ids) + writer.meta, idle=2.0, timeout=90)
    out = s.output()
    assert s.stop() == 0, out[-3000:]
    assert f"moving from 127.0.0.1:{replica.port} to 127.0.0.1:{primary.port}" in out, out[-3000:]
    figures = check("kill -9 of the replica read", KIND, site, primary.root, records, resume)
    assert figures == {**figures, "lost": 0, "split_ids": 0, "disorder": 0}
    restart(replica)
    _settle(t)


def test_switch_of_primary_is_followed_slow(mysql_topology: Topology, broker: Tansu, tmp_path: Path) -> None:
    """wpcdc reads the primary; the replica is promoted and the writer moves there; the old primary
    (now a replica of the new one) dies: wpcdc reads the new primary, whose GTIDs have another UUID."""
    t = mysql_topology
    old = t.primary
    (new,) = t.replica_nodes
    assert old is not None
    site = topology_site(t, broker, tmp_path, t.hosts([old, new]))
    _settle(t)
    s = site.streamer()
    wait_for(lambda: _connected(s), 60, "first connection", s)
    writer = Writer(site).start()
    try:
        wait_for(lambda: len(writer.ids) >= 30, 30, "writes")
        writer.pause()
        t.promote(new)
        site.stack = Stack(new, broker, tmp_path)  # the writer reconnects to the new primary
        writer._conn = None
        writer.resume()
        wait_for(lambda: len(writer.ids) >= 80, 60, "writes on the new primary")
        wait_caught_up(old, new)
        kill9(old)
        resume = wait_for(lambda: _connected(s, 2), 60, "reconnection to the new primary", s)
        wait_for(lambda: len(writer.ids) >= 150, 60, "more writes")
    finally:
        writer.stop()
    records = site.consume(expect=len(writer.ids) + writer.meta, idle=2.0, timeout=90)
    out = s.output()
    assert s.stop() == 0, out[-3000:]
    assert f"moving from 127.0.0.1:{old.port} to 127.0.0.1:{new.port}" in out, out[-3000:]
    uuids = {r.value["source"]["gtid"].rsplit(":", 1)[0] for r in records}
    assert len(uuids) == 2, uuids  # both primaries' transactions, one id scheme
    figures = check("switch of primary, then kill -9", KIND, site, new.root, records, resume)
    assert figures == {**figures, "lost": 0, "split_ids": 0, "disorder": 0}
    restart(old)
    _settle(t)


def test_purged_gtids_exit_4_slow(mysql_topology: Topology, broker: Tansu, tmp_path: Path) -> None:
    t = mysql_topology
    (replica,) = t.replica_nodes
    site = topology_site(t, broker, tmp_path, t.hosts([replica]))
    _settle(t)
    s = site.streamer()
    wait_for(lambda: _connected(s), 60, "first connection", s)
    site.insert_post("read")
    wait_for(lambda: '"gtid_set"' in site.checkpoint_path.read_text(), 30, "a GTID checkpoint", s)
    time.sleep(1)
    assert s.stop() == 0
    site.insert_post("in the purged gap")
    _settle(t)
    purge_binlogs(replica)
    started = time.monotonic()
    gone = site.streamer()
    code = gone.wait(60)
    out = gone.output()
    assert code == EXIT_POSITION_GONE, out[-3000:]
    assert "purged binlogs the checkpoint still needs" in out and "Traceback" not in out
    FIGURES.append(f"{KIND:8} [purged GTIDs] exit {code} {time.monotonic() - started:.1f}s after start, the fix named")


def test_server_of_another_topology_is_refused_slow(mysql_topology: Topology, broker: Tansu, tmp_path: Path) -> None:
    """A standalone MySQL (its own server_uuid, no GTID of the topology's) listed before the replica."""
    t = mysql_topology
    (replica,) = t.replica_nodes
    foreign = MySQL(tmp_path / "foreign", server_id=991).start()
    try:
        site = topology_site(t, broker, tmp_path, t.hosts([replica]))
        _settle(t)
        s = site.streamer()
        wait_for(lambda: _connected(s), 60, "first connection", s)
        site.insert_post("before the mistake")
        wait_for(lambda: '"gtid_set"' in site.checkpoint_path.read_text(), 30, "a GTID checkpoint", s)
        assert s.stop() == 0
        site.config["mysql"]["hosts"] = [f"127.0.0.1:{foreign.port}", f"127.0.0.1:{replica.port}"]
        site.write_config()
        refused = site.streamer()
        code = refused.wait(60)
        out = refused.output()
        assert code == EXIT_SOURCE, out[-3000:]
        assert f"127.0.0.1:{foreign.port} (listed in mysql.hosts) belongs to another replication topology" in out
        assert f"remove 127.0.0.1:{foreign.port} from mysql.hosts" in out and "Traceback" not in out
        FIGURES.append(f"{KIND:8} [another topology] refused with exit {code}: the server and the fix named")
    finally:
        foreign.stop()
