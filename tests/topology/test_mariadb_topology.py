"""Failover on a real MariaDB topology: a primary and two replicas (log_slave_updates, GTID
replication), a writer on the primary, wpcdc reading the servers listed in mysql.hosts. Each test
prints its figures (the summary's "failover scenarios" section)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from cdc.dev.stack import MariaDB, Tansu
from cdc.dev.topology import Topology, kill9, purge_binlogs, restart, start_sql_thread, stop_sql_thread, wait_caught_up
from cdc.errors import EXIT_POSITION_GONE, EXIT_SOURCE
from tests.faults.test_outages import Writer
from tests.integration.conftest import Stack
from tests.integration.test_operations import enable_metrics, scrape
from tests.topology.conftest import topology_site
from tests.topology.failover_checks import check, wait_for

pytestmark = pytest.mark.integration

# Checkpoints 3 s apart: a wpcdc killed with its source re-reads the transactions after the last
# one from the other server, so the run has duplicates, and they must carry the ids the first read gave.
SPARSE = {"interval_seconds": 3, "max_pending_events": 100_000}

KIND = "mariadb"


def _settle(topology: Topology) -> None:
    for node in topology.replica_nodes:
        if node.proc is not None and node.proc.poll() is None:  # a killed one is checked once restarted
            wait_caught_up(node, topology.primary)  # type: ignore[arg-type]


def _connected(s: object, n: int = 1) -> bool:
    return s.output().count("connected to the binlog") >= n  # type: ignore[attr-defined]


def test_kill9_of_the_replica_read_moves_to_the_other_slow(
    mariadb_topology: Topology, broker: Tansu, tmp_path: Path
) -> None:
    t = mariadb_topology
    r1, r2 = t.replica_nodes
    _settle(t)
    site = topology_site(t, broker, tmp_path, t.hosts([r1, r2]))
    port = enable_metrics(site)
    _settle(t)
    s = site.streamer()
    wait_for(lambda: _connected(s), 60, "first connection", s)
    assert f"reading the binlog of 127.0.0.1:{r1.port}" in s.output()
    assert scrape(port).get(f'wpcdc_source_server_info{{server="127.0.0.1:{r1.port}"}}') == 1
    writer = Writer(site).start()
    try:
        wait_for(lambda: len(writer.ids) >= 30, 30, "writes")
        kill9(r1)
        killed_at = time.monotonic()
        resume = wait_for(lambda: _connected(s, 2), 60, "reconnection to the other replica", s)
        metrics = scrape(port)
        assert metrics.get(f'wpcdc_source_server_info{{server="127.0.0.1:{r2.port}"}}') == 1, metrics
        assert f'wpcdc_source_server_info{{server="127.0.0.1:{r1.port}"}}' not in metrics
        assert metrics.get("wpcdc_source_server_moves_total") == 1
        wait_for(lambda: len(writer.ids) >= 150, 60, "more writes")
    finally:
        writer.stop()
    _settle(t)
    records = site.consume(expect=len(writer.ids) + writer.meta, idle=2.0, timeout=90)
    out = s.output()
    assert s.stop() == 0, out[-3000:]
    assert f"moving from 127.0.0.1:{r1.port} to 127.0.0.1:{r2.port}" in out, out[-3000:]
    figures = check("kill -9 of the replica read", KIND, site, t.primary.root, records, resume)  # type: ignore[union-attr]
    assert figures == {**figures, "lost": 0, "split_ids": 0, "disorder": 0}
    assert time.monotonic() - killed_at < 600
    restart(r1)
    wait_caught_up(r1, t.primary)  # type: ignore[arg-type]


def test_kill9_of_wpcdc_and_its_replica_rereads_from_the_other_with_the_same_ids_slow(
    mariadb_topology: Topology, broker: Tansu, tmp_path: Path
) -> None:
    """wpcdc and the replica it reads die together (one host lost); restarted, wpcdc starts from its
    last checkpoint on the other replica: what it publishes again has the ids it had."""
    t = mariadb_topology
    r1, r2 = t.replica_nodes
    _settle(t)
    site = topology_site(t, broker, tmp_path, t.hosts([r1, r2]), checkpoint=SPARSE)
    _settle(t)
    s = site.streamer()
    wait_for(lambda: _connected(s), 60, "first connection", s)
    writer = Writer(site).start()
    try:
        wait_for(lambda: len(writer.ids) >= 60, 30, "writes")
        s.stop(signal.SIGKILL)
        kill9(r1)
        killed_at = time.monotonic()
        again = site.streamer()
        wait_for(lambda: _connected(again), 60, "the restarted wpcdc connected", again)
        resume = time.monotonic() - killed_at
        wait_for(lambda: len(writer.ids) >= 150, 60, "more writes")
    finally:
        writer.stop()
    _settle(t)
    records = site.consume(expect=len(writer.ids) + writer.meta, idle=2.0, timeout=90)
    out = again.output()
    assert again.stop() == 0, out[-3000:]
    assert f"reading the binlog of 127.0.0.1:{r2.port}" in out, out[-3000:]
    figures = check("kill -9 of wpcdc and its replica, restarted", KIND, site, t.primary.root, records, resume)  # type: ignore[union-attr]
    assert figures == {**figures, "lost": 0, "split_ids": 0, "disorder": 0}
    restart(r1)
    wait_caught_up(r1, t.primary)  # type: ignore[arg-type]


def test_switch_of_primary_is_followed_slow(mariadb_topology: Topology, broker: Tansu, tmp_path: Path) -> None:
    """The writer moves to a promoted replica; then the replica wpcdc reads dies too: wpcdc goes on
    reading the new primary, whose GTIDs carry another server id."""
    t = mariadb_topology
    r1, r2 = t.replica_nodes
    old_primary = t.primary
    _settle(t)
    site = topology_site(t, broker, tmp_path, t.hosts([r1, r2]))
    _settle(t)
    s = site.streamer()
    wait_for(lambda: _connected(s), 60, "first connection", s)
    writer = Writer(site).start()
    try:
        wait_for(lambda: len(writer.ids) >= 30, 30, "writes")
        writer.pause()
        t.promote(r2)
        site.stack = Stack(r2, broker, tmp_path)  # the writer reconnects to the new primary
        writer._conn = None
        writer.resume()
        wait_for(lambda: len(writer.ids) >= 80, 60, "writes on the new primary")
        kill9(r1)
        resume = wait_for(lambda: _connected(s, 2), 60, "reconnection to the new primary", s)
        wait_for(lambda: len(writer.ids) >= 150, 60, "more writes")
    finally:
        writer.stop()
    restart(r1)
    _settle(t)
    records = site.consume(expect=len(writer.ids) + writer.meta, idle=2.0, timeout=90)
    out = s.output()
    assert s.stop() == 0, out[-3000:]
    assert f"moving from 127.0.0.1:{r1.port} to 127.0.0.1:{r2.port}" in out, out[-3000:]
    gtids = {r.value["source"]["gtid"].split("-")[1] for r in records}
    assert gtids >= {str(old_primary.server_id), str(r2.server_id)}, gtids  # type: ignore[union-attr]
    figures = check("switch of primary, then kill -9", KIND, site, t.primary.root, records, resume)  # type: ignore[union-attr]
    assert figures == {**figures, "lost": 0, "split_ids": 0, "disorder": 0}


def test_lagging_replica_is_skipped(mariadb_topology: Topology, broker: Tansu, tmp_path: Path) -> None:
    """mysql.hosts lists the replica read, a replica whose SQL thread is stopped (it lags behind what
    wpcdc has read), then the primary: when the first dies, the lagging one is skipped."""
    t = mariadb_topology
    first, lagging = t.replica_nodes
    _settle(t)
    site = topology_site(t, broker, tmp_path, t.hosts([first, lagging, t.primary]))
    _settle(t)
    s = site.streamer()
    wait_for(lambda: _connected(s), 60, "first connection", s)
    stop_sql_thread(lagging)
    writer = Writer(site).start()
    try:
        wait_for(lambda: len(writer.ids) >= 40, 30, "writes")
        wait_for(lambda: '"gtid_set"' in site.checkpoint_path.read_text(), 30, "a GTID checkpoint", s)
        time.sleep(1)  # the checkpoint moves past what the lagging replica applied
        kill9(first)
        resume = wait_for(lambda: _connected(s, 2), 60, "reconnection", s)
        wait_for(lambda: len(writer.ids) >= 120, 60, "more writes")
    finally:
        writer.stop()
    out = s.output()
    assert f"skipping 127.0.0.1:{lagging.port}: lagging" in out, out[-3000:]
    assert f"moving from 127.0.0.1:{first.port} to 127.0.0.1:{t.primary.port}" in out, out[-3000:]  # type: ignore[union-attr]
    start_sql_thread(lagging)
    restart(first)
    _settle(t)
    records = site.consume(expect=len(writer.ids) + writer.meta, idle=2.0, timeout=90)
    assert s.stop() == 0, s.output()[-3000:]
    figures = check("lagging replica skipped", KIND, site, t.primary.root, records, resume)  # type: ignore[union-attr]
    assert figures == {**figures, "lost": 0, "split_ids": 0, "disorder": 0}


def test_lagging_replica_is_waited_for_slow(mariadb_topology: Topology, broker: Tansu, tmp_path: Path) -> None:
    """Only two replicas listed: the one read dies while the other lags. wpcdc reads neither (it
    retries with backoff) until the lagging one has caught up, then moves there."""
    t = mariadb_topology
    first, lagging = t.replica_nodes
    _settle(t)
    site = topology_site(t, broker, tmp_path, t.hosts([first, lagging]))
    _settle(t)
    s = site.streamer()
    wait_for(lambda: _connected(s), 60, "first connection", s)
    stop_sql_thread(lagging)
    writer = Writer(site).start()
    try:
        wait_for(lambda: len(writer.ids) >= 40, 30, "writes")
        wait_for(lambda: '"gtid_set"' in site.checkpoint_path.read_text(), 30, "a GTID checkpoint", s)
        time.sleep(1)
        kill9(first)
        wait_for(lambda: f"skipping 127.0.0.1:{lagging.port}: lagging" in s.output(), 60, "the lagging verdict", s)
        time.sleep(2)  # still lagging: wpcdc must keep waiting, not read it
        assert not _connected(s, 2), s.output()[-3000:]
        start_sql_thread(lagging)
        resume = wait_for(lambda: _connected(s, 2), 60, "reconnection once it caught up", s)
        wait_for(lambda: len(writer.ids) >= 120, 60, "more writes")
    finally:
        writer.stop()
    out = s.output()
    assert f"moving from 127.0.0.1:{first.port} to 127.0.0.1:{lagging.port}" in out, out[-3000:]
    restart(first)
    _settle(t)
    records = site.consume(expect=len(writer.ids) + writer.meta, idle=2.0, timeout=90)
    assert s.stop() == 0, s.output()[-3000:]
    figures = check(
        "lagging replica waited for (resumed: from its SQL thread restart)", KIND, site, t.primary.root, records, resume
    )  # type: ignore[union-attr]
    assert figures == {**figures, "lost": 0, "split_ids": 0, "disorder": 0}


def test_server_of_another_topology_is_refused(mariadb_topology: Topology, broker: Tansu, tmp_path: Path) -> None:
    t = mariadb_topology
    replica = t.replica_nodes[0]
    foreign = MariaDB(tmp_path / "foreign", server_id=901, extra_args=["--gtid-domain-id=9"]).start()
    try:
        with foreign.root() as conn, conn.cursor() as cur:
            cur.execute("CREATE DATABASE other_site")  # a GTID of its own: 9-901-…
        _settle(t)
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
        assert f"remove 127.0.0.1:{foreign.port} from mysql.hosts" in out
        assert "Traceback" not in out
        FIGURES_LINE = f"{KIND:8} [another topology] refused with exit {code}: the server and the fix named"
        from tests.topology.conftest import FIGURES

        FIGURES.append(FIGURES_LINE)
    finally:
        foreign.stop()


def test_purged_gtids_take_the_purged_path_slow(mariadb_topology: Topology, broker: Tansu, tmp_path: Path) -> None:
    """The only server listed purged the binlog after the checkpoint: exit 4 with the fix; with
    snapshot.mode when_needed, streaming goes on from the end and a snapshot covers the gap."""
    t = mariadb_topology
    replica = t.replica_nodes[-1]
    _settle(t)
    site = topology_site(t, broker, tmp_path, t.hosts([replica]))
    _settle(t)
    s = site.streamer()
    wait_for(lambda: _connected(s), 60, "first connection", s)
    site.insert_post("read")
    wait_for(lambda: '"gtid_set"' in site.checkpoint_path.read_text(), 30, "a GTID checkpoint", s)
    time.sleep(1)
    assert s.stop() == 0
    gap = site.insert_post("in the purged gap")
    _settle(t)
    purge_binlogs(replica)
    gone = site.streamer()
    code = gone.wait(60)
    assert code == EXIT_POSITION_GONE, gone.output()[-3000:]
    assert "purged binlogs the checkpoint still needs" in gone.output()
    site.config["snapshot"] = {"mode": "when_needed"}
    site.write_config()
    healed = site.streamer()
    started = time.monotonic()
    records = site.consume(expect=2, idle=3.0, timeout=90)
    resume = time.monotonic() - started
    assert healed.stop() == 0, healed.output()[-3000:]
    assert any(r.value["event_type"] == "post_snapshot" and r.value["post_id"] == gap for r in records)
    from tests.topology.conftest import FIGURES

    FIGURES.append(
        f"{KIND:8} [purged GTIDs] exit {code} without when_needed; with it the gap's post arrived as a snapshot "
        f"{resume:.1f}s after start (under load)"
    )
