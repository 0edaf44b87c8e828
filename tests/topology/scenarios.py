"""The failover scenarios, each written once for both rigs (a MariaDB primary with two replicas, a
MySQL primary with one). A test module names the servers of its rig and calls the scenario, so the
test ids stay per rig (the xdist scheduler in tests/conftest.py reads them)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cdc.dev.stack import Tansu, free_port
from cdc.dev.topology import Node, Topology, kill9, purge_binlogs, restart, wait_caught_up
from cdc.errors import EXIT_POSITION_GONE, EXIT_SOURCE
from tests.faults.test_outages import Writer
from tests.integration.conftest import Record, Site, Stack, Streamer
from tests.integration.test_operations import scrape
from tests.topology.conftest import FIGURES, topology_site
from tests.topology.failover_checks import check, load, wait_for


def connected(s: Streamer, n: int = 1) -> bool:
    return s.output().count("connected to the binlog") >= n


def address(node: Node) -> str:
    return f"127.0.0.1:{node.port}"


@dataclass
class Rig:
    """One topology of the session, the session's broker, the test's directory."""

    topology: Topology
    broker: Tansu
    directory: Path

    @property
    def kind(self) -> str:
        return self.topology.kind

    @property
    def primary(self) -> Node:
        assert self.topology.primary is not None
        return self.topology.primary

    def settle(self) -> None:
        """Every live replica has applied what its primary has (a killed one is checked once restarted)."""
        for node in self.topology.replica_nodes:
            if node.proc is not None and node.proc.poll() is None:
                wait_caught_up(node, self.primary)

    def stream(self, nodes: list[Node], **overrides: Any) -> tuple[Site, Streamer]:
        """wpcdc reading `nodes` (mysql.hosts, in that order), once it is connected."""
        self.settle()
        site = topology_site(self.topology, self.broker, self.directory, self.topology.hosts(nodes), **overrides)
        self.settle()
        s = site.streamer()
        wait_for(lambda: connected(s), 60, "first connection", s)
        return site, s

    def finish(
        self, name: str, site: Site, s: Streamer, writer: Writer, resume: float, moved: tuple[Node, Node] | None = None
    ) -> tuple[list[Record], str]:
        """Stops wpcdc once the topic has every row change the writer committed, checks that none was
        lost, split over two ids or put out of per-post order, and prints the figures."""
        self.settle()
        records = site.consume(expect=len(writer.ids) + writer.meta, idle=2.0, timeout=90)
        out = s.output()
        assert s.stop() == 0, out[-3000:]
        if moved is not None:
            assert f"moving from {address(moved[0])} to {address(moved[1])}" in out, out[-3000:]
        figures = check(name, self.kind, site, self.primary.root, records, resume)
        assert figures == {**figures, "lost": 0, "split_ids": 0, "disorder": 0}
        return records, out


@contextmanager
def writing(site: Site) -> Iterator[Writer]:
    writer = Writer(site).start()
    try:
        yield writer
    finally:
        writer.stop()


def until_writes(writer: Writer, n: int, what: str = "writes") -> None:
    wait_for(lambda: len(writer.ids) >= n, 60, what)


def kill9_of_the_replica_read(rig: Rig, read: Node, other: Node) -> None:
    """wpcdc reads `read` (mysql.hosts: `read`, `other`); kill -9 of it under writes: wpcdc moves
    to `other`, the metrics say so, nothing is lost."""
    port = free_port()
    site, s = rig.stream([read, other], metrics={"enabled": True, "port": port, "ready_max_lag_seconds": 30})
    assert f"reading the binlog of {address(read)}" in s.output()
    assert scrape(port).get(f'wpcdc_source_server_info{{server="{address(read)}"}}') == 1
    with writing(site) as writer:
        until_writes(writer, 30)
        kill9(read)
        resume = wait_for(lambda: connected(s, 2), 60, f"reconnection to {address(other)}", s)
        metrics = scrape(port)
        assert metrics.get(f'wpcdc_source_server_info{{server="{address(other)}"}}') == 1, metrics
        assert f'wpcdc_source_server_info{{server="{address(read)}"}}' not in metrics
        assert metrics.get("wpcdc_source_server_moves_total") == 1
        until_writes(writer, 150, "more writes")
    rig.finish("kill -9 of the replica read", site, s, writer, resume, moved=(read, other))
    restart(read)
    rig.settle()


def _origin(kind: str, gtid: str) -> str:
    """Who wrote a transaction: MariaDB's server id in domain-server-seq, MySQL's server_uuid[:tag]."""
    return gtid.split("-")[1] if kind == "mariadb" else gtid.rsplit(":", 1)[0]


def _writes_as(node: Node) -> str:
    if node.kind == "mariadb":
        return str(node.server_id)
    with node.root() as conn, conn.cursor() as cur:
        cur.execute("SELECT @@server_uuid")
        return str(cur.fetchone()[0])


def switch_of_primary(rig: Rig, read: Node, promoted: Node) -> None:
    """wpcdc reads `read`; `promoted` becomes the primary and the writer moves there; then `read`
    dies: wpcdc reads `promoted`, whose GTIDs name another writer, with one id scheme for both."""
    writers = {_writes_as(rig.primary), _writes_as(promoted)}
    site, s = rig.stream([read, promoted])
    with writing(site) as writer:
        until_writes(writer, 30)
        writer.pause()
        rig.topology.promote(promoted)
        site.stack = Stack(promoted, rig.broker, rig.directory)  # the writer reconnects to the new primary
        writer._conn = None
        writer.resume()
        until_writes(writer, 80, "writes on the new primary")
        wait_caught_up(read, promoted)
        kill9(read)
        resume = wait_for(lambda: connected(s, 2), 60, "reconnection to the new primary", s)
        until_writes(writer, 150, "more writes")
    restart(read)
    records, _ = rig.finish("switch of primary, then kill -9", site, s, writer, resume, moved=(read, promoted))
    origins = {_origin(rig.kind, r.value["source"]["gtid"]) for r in records}
    assert origins == writers, origins  # both primaries' transactions


def gtid_checkpoint(site: Site, s: Streamer) -> None:
    wait_for(lambda: '"gtid_set"' in site.checkpoint_path.read_text(), 30, "a GTID checkpoint", s)


def purged_gtids(rig: Rig, replica: Node, heal: bool) -> None:
    """The only server listed purged the binlog after the checkpoint: exit 4 with the fix; `heal`:
    then with snapshot.mode when_needed, streaming goes on from the end and a snapshot covers the gap."""
    site, s = rig.stream([replica])
    site.insert_post("read")
    gtid_checkpoint(site, s)
    time.sleep(1)
    assert s.stop() == 0
    gap = site.insert_post("in the purged gap")
    rig.settle()
    purge_binlogs(replica)
    started = time.monotonic()
    gone = site.streamer()
    code = gone.wait(60)
    out = gone.output()
    assert code == EXIT_POSITION_GONE, out[-3000:]
    assert "purged binlogs the checkpoint still needs" in out and "Traceback" not in out
    if not heal:
        FIGURES.append(
            f"{rig.kind:8} [purged GTIDs] exit {code} {time.monotonic() - started:.1f}s after start, the fix named"
        )
        return
    site.config["snapshot"] = {"mode": "when_needed"}
    site.write_config()
    healed = site.streamer()
    started = time.monotonic()
    records = site.consume(expect=2, idle=3.0, timeout=90)
    resume = time.monotonic() - started
    assert healed.stop() == 0, healed.output()[-3000:]
    assert any(r.value["event_type"] == "post_snapshot" and r.value["post_id"] == gap for r in records)
    FIGURES.append(
        f"{rig.kind:8} [purged GTIDs] exit {code} without when_needed; with it the gap's post arrived as a snapshot "
        f"{resume:.1f}s after start ({load()})"
    )


def another_topology(rig: Rig, replica: Node, foreign: Node) -> None:
    """After a checkpoint read from `replica`, mysql.hosts lists `foreign` (a server of another
    topology, running) first: wpcdc refuses with exit 7, naming the server and the fix."""
    site, s = rig.stream([replica])
    site.insert_post("before the mistake")
    gtid_checkpoint(site, s)
    assert s.stop() == 0
    site.config["mysql"]["hosts"] = [address(foreign), address(replica)]
    site.write_config()
    refused = site.streamer()
    code = refused.wait(60)
    out = refused.output()
    assert code == EXIT_SOURCE, out[-3000:]
    assert f"{address(foreign)} (listed in mysql.hosts) belongs to another replication topology" in out
    assert f"remove {address(foreign)} from mysql.hosts" in out and "Traceback" not in out
    FIGURES.append(f"{rig.kind:8} [another topology] refused with exit {code}: the server and the fix named")
