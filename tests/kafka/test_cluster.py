"""A group of wpcdc processes (cluster.group_id) on Apache Kafka: three WordPress databases under write
load, two or three members. Kafka's group assignment decides who runs which source; a killed member's
sources are taken over, a paused one is cut off, and every row change's events reach the topics.

MariaDB leg only: the group machinery does not depend on the server. Figures are printed (-s) and
measured under load on shared cores."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from kafka.admin import KafkaAdminClient, NewTopic

from cdc.checkpoint.kafka import KafkaCheckpointStore
from cdc.checkpoint.store import Checkpoint
from cdc.config import parse_config
from cdc.core.position import BinlogPosition
from cdc.dev.stack import MYSQL_PASSWORD
from tests.conftest import BROKER_FIGURES as FIGURES
from tests.faults.test_outages import Writer
from tests.integration.conftest import Site, Stack
from tests.integration.test_operations import get, scrape, wait_until
from tests.kafka.conftest import read_topic
from tests.processes import descendants, running, wait_or_kill

pytestmark = pytest.mark.kafka
# The session's MariaDB only (the `stack` fixture's parameter, picked indirectly).
mariadb_leg = pytest.mark.parametrize("stack", ["mariadb"], indirect=True)

SESSION_MS = 6000  # the broker's group.min.session.timeout.ms: the fastest takeover it allows
SOURCES = 3


def free_port_block(width: int) -> int:
    """A port p with p .. p+width-1 all free (a member and its sources' metrics ports)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + width > 65535:
            continue
        socks = []
        try:
            for p in range(base, base + width):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no free block of ports")


class MemberProcess:
    def __init__(self, group: Group, label: str) -> None:
        self.label = label
        self.port = free_port_block(SOURCES + 1)
        # Each member has its own disk, as on its own machine: the local lock beside checkpoint.path
        # guards a directory, and the group (not a shared directory) decides who runs a source.
        local = group.dir / f"member-{label}"
        local.mkdir()
        config = {
            **group.config,
            "checkpoint": {**group.config["checkpoint"], "path": str(local / "checkpoint.json")},
            # Generous: on shared cores a source that takes over catches up for a while; ready means streaming.
            "metrics": {"enabled": True, "port": self.port, "ready_max_lag_seconds": 300},
        }
        self.config_path = group.dir / f"member-{label}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log = group.dir / f"member-{label}.log"
        self._fh = open(self.log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cdc.cli", "run", "--config", str(self.config_path)],
            stdout=self._fh, stderr=subprocess.STDOUT, env={**os.environ, "WPCDC_MYSQL_PASSWORD": MYSQL_PASSWORD},
        )  # fmt: skip

    def metrics(self) -> dict[str, float]:
        try:
            return scrape(self.port)
        except OSError:
            return {}

    def running(self) -> set[str]:
        m = self.metrics()
        return {f"s{i}" for i in range(SOURCES) if m.get(f'wpcdc_cluster_source_running{{source="s{i}"}}') == 1}

    def value(self, name: str) -> float:
        return self.metrics().get(name, 0.0)

    def children(self) -> dict[int, str]:
        return {pid: cmd for pid, cmd in descendants(self.proc.pid).items() if "--source" in cmd}

    def signal_tree(self, sig: int) -> None:
        """The member and every process below it (sources, their producers): a paused machine."""
        for pid in [self.proc.pid, *descendants(self.proc.pid)]:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return wait_or_kill(self.proc, timeout, self._fh, lambda: self.signal_tree(signal.SIGKILL))

    def output(self) -> str:
        return self.log.read_text(errors="replace")


class Group:
    """Three WordPress databases on the session's MariaDB, each a source with its own topics, run by
    a group of wpcdc processes on Apache Kafka."""

    def __init__(self, stack: Stack, base: Path, delivery: str) -> None:
        self.dir = base
        self.sites = []
        for i in range(SOURCES):
            d = base / f"site{i}"
            d.mkdir()
            self.sites.append(Site(stack, d))
        self.bootstrap = stack.broker.bootstrap
        first = self.sites[0]
        self.checkpoint_topic = f"{first.topic}.checkpoints"
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="wpcdc-tests")
        try:
            admin.create_topics([NewTopic(self.checkpoint_topic, 1, 1, topic_configs={"cleanup.policy": "compact"})])
        finally:
            admin.close()
        self.group_id = f"g-{first.database}"
        self.config: dict[str, Any] = {
            **first.config,
            "kafka": {**first.config["kafka"], "delivery": delivery},
            "checkpoint": {
                **first.config["checkpoint"], "store": "kafka", "kafka_topic": self.checkpoint_topic,
                "path": str(base / "checkpoint.json"),
            },
            "cluster": {
                "group_id": self.group_id, "session_timeout_ms": SESSION_MS, "heartbeat_interval_ms": 1000,
                "stop_timeout_seconds": 20,
                "sources": [
                    {
                        "name": f"s{i}", "wordpress": {"database": s.database}, "topic": s.topic,
                        "dead_letter_topic": s.dead_letter_topic, "mysql": {"server_id": 9500 + 2 * i + 1000 * (
                            os.getpid() % 50)},
                    }
                    for i, s in enumerate(self.sites)
                ],
            },
        }  # fmt: skip
        parsed = parse_config(self.config)
        self.parsed = {f"s{i}": parsed.for_source(f"s{i}") for i in range(SOURCES)}
        server_id = int(first.query("SELECT @@server_id")[0][0])
        for i, site in enumerate(self.sites):  # each source starts where its site was created
            self._store(f"s{i}").save(Checkpoint(BinlogPosition.parse(site.start), server_id))
        self.members: list[MemberProcess] = []
        self.writers = [Writer(s, every=0.03).start() for s in self.sites]

    def _store(self, name: str) -> KafkaCheckpointStore:
        c = self.parsed[name]
        return KafkaCheckpointStore(c.kafka, c.checkpoint.kafka_topic, c.checkpoint_key())

    def checkpoint(self, name: str) -> Checkpoint | None:
        store = self._store(name)
        try:
            return store.load()
        finally:
            store.close()

    def member(self, label: str) -> MemberProcess:
        m = MemberProcess(self, label)
        self.members.append(m)
        return m

    def two_members_ready(self) -> tuple[MemberProcess, MemberProcess, set[str], dict[int, str]]:
        """Members a and b, once the group runs every source once and both are ready: the one running
        more sources (the one a test takes down), the other, the sources only the first runs and the
        first's source processes."""
        a, b = self.member("a"), self.member("b")
        assert wait_until(lambda: self.balanced([a, b]), timeout=90, every=0.5), _logs(self)
        ready = wait_until(lambda: get(a.port, "/readyz")[0] == 200 and get(b.port, "/readyz")[0] == 200, 60)
        assert ready, _logs(self)
        owners = self.owners()
        first = max((a, b), key=lambda m: sum(m.label in o for o in owners.values()))
        moved = {name for name, o in owners.items() if o == [first.label]}
        return first, b if first is a else a, moved, first.children()

    def owners(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {f"s{i}": [] for i in range(SOURCES)}
        for m in self.members:
            if m.proc.poll() is None:
                for name in m.running():
                    out[name].append(m.label)
        return out

    def all_running_once(self, among: list[MemberProcess] | None = None) -> bool:
        labels = {m.label for m in (among or self.members)}
        owners = self.owners()
        return all(len(o) == 1 and o[0] in labels for o in owners.values())

    def balanced(self, among: list[MemberProcess]) -> bool:
        """Every source runs once among these members and each runs at least one: the group has
        rebalanced since the last of them joined (before that, the first member can run them all)."""
        owners = self.owners()
        return self.all_running_once(among) and all(any(m.label in o for o in owners.values()) for m in among)

    def stop_writers(self) -> None:
        for w in self.writers:
            w.stop()

    def wait_checkpoints_past_end(self, timeout: float = 180) -> None:
        """Every source's checkpoint passes the binlog end: all it read is acknowledged."""
        end = self.sites[0].position()
        file, pos = end.rsplit(":", 1)
        deadline = time.monotonic() + timeout
        for i in range(SOURCES):
            while (cp := self.checkpoint(f"s{i}")) is None or (cp.position.file, cp.position.pos) < (file, int(pos)):
                logs = "\n".join(m.output()[-3000:] for m in self.members)
                assert time.monotonic() < deadline, f"s{i} checkpoint {cp} never passed {end}\n{logs}"
                time.sleep(0.3)

    def events(self, site: Site) -> Counter[str]:
        """Event ids as a read_committed consumer sees them (a consumer of exactly_once output)."""
        return Counter(str(v["event_id"]) for v in read_topic(site, idle=0))

    def verify(self) -> dict[str, int]:
        """Every row change's events are there (0 lost); returns the counts."""
        figures = {"expected": 0, "distinct": 0, "duplicates": 0}
        for site, writer in zip(self.sites, self.writers, strict=True):
            ids = self.events(site)
            expected = len(writer.ids) + writer.meta
            assert len(ids) == expected, f"{site.database}: lost {expected - len(ids)} of {expected}"
            figures["expected"] += expected
            figures["distinct"] += len(ids)
            figures["duplicates"] += sum(ids.values()) - len(ids)
        return figures

    def close(self) -> None:
        self.stop_writers()
        for m in self.members:
            if m.proc.poll() is None:
                try:
                    m.stop(30)
                except subprocess.TimeoutExpired:
                    pass
        for s in self.sites:
            s.close()


@pytest.fixture
def make_group(apache_stack: Stack, tmp_path: Path) -> Any:
    groups: list[Group] = []

    def factory(delivery: str = "at_least_once") -> Group:
        g = Group(apache_stack, tmp_path, delivery)
        groups.append(g)
        return g

    yield factory
    for g in groups:
        g.close()


def _logs(group: Group) -> str:
    return "\n".join(f"--- {m.label}\n{m.output()[-4000:]}" for m in group.members)


@mariadb_leg
def test_kill_9_of_a_member_moves_its_sources_to_the_others_with_nothing_lost_slow(make_group: Any) -> None:
    group = make_group()
    victim, survivor, moved, children = group.two_members_ready()
    assert len(children) == len(moved), children
    time.sleep(1.0)  # under write load for a moment
    killed_at = time.monotonic()
    victim.proc.kill()
    victim.proc.wait(10)
    # Its sources' processes notice at once (their lease pipe closes) and stop; nothing outlives it.
    assert wait_until(lambda: not any(running(pid) for pid in children), timeout=30), children
    assert wait_until(lambda: moved <= survivor.running(), timeout=90, every=0.2), _logs(group)
    takeover = time.monotonic() - killed_at
    # ...and streaming again: the survivor's /readyz asks each of its sources' /readyz.
    assert wait_until(lambda: get(survivor.port, "/readyz")[0] == 200, timeout=90, every=0.2), _logs(group)
    streaming = time.monotonic() - killed_at
    # A third member joins as the group is working: the group rebalances, every source runs once.
    c = group.member("c")
    assert wait_until(lambda: group.balanced([survivor, c]), timeout=90, every=0.5), _logs(group)
    changes = sum(v for k, v in survivor.metrics().items() if k.startswith("wpcdc_cluster_ownership_changes_total{"))
    time.sleep(1.0)
    group.stop_writers()
    group.wait_checkpoints_past_end()
    figures = group.verify()
    FIGURES.append(
        f"group kill -9: {len(moved)} source(s) of the killed member started by the survivor "
        f"{takeover:.1f}s after the kill, streaming after {streaming:.1f}s (session timeout {SESSION_MS / 1000:g}s); "
        f"{figures['expected']} events expected, 0 lost, "
        f"{figures['duplicates']} duplicates (at_least_once); survivor saw {changes:g} ownership changes"
    )
    assert changes >= len(moved) + 1
    # The checkpoint commands address one source of the group's config.
    shown = subprocess.run(
        [sys.executable, "-m", "cdc.cli", "checkpoint", "show", "--source", "s0", "--config", str(c.config_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    stored = group.checkpoint("s0")
    assert shown.returncode == 0 and stored is not None, shown.stderr
    assert (orjson.loads(shown.stdout)["file"], orjson.loads(shown.stdout)["pos"]) == (
        stored.position.file, stored.position.pos,
    )  # fmt: skip
    for m in (survivor, c):
        assert m.stop() == 0, m.output()[-3000:]


@mariadb_leg
def test_a_paused_member_is_fenced_and_nothing_it_sent_after_losing_its_sources_is_visible_slow(
    make_group: Any,
) -> None:
    """exactly_once: the new owner's producer (same per-source transactional id) fences the frozen one,
    so when it wakes, its open transaction cannot commit: a read_committed consumer sees each row
    change's events exactly once, though both owners published the same binlog range."""
    group = make_group("exactly_once")
    victim, other, moved, children = group.two_members_ready()
    time.sleep(1.0)
    paused_at = time.monotonic()
    victim.signal_tree(signal.SIGSTOP)  # the whole machine freezes: member, sources, producers
    try:
        before = {name: group.checkpoint(name) for name in moved}
        assert wait_until(lambda: moved <= other.running(), timeout=90, every=0.2), _logs(group)
        takeover = time.monotonic() - paused_at
        # The new owner commits transactions (checkpoint records) while the old one is still frozen
        # with its own transaction open on the same binlog range.
        assert wait_until(
            lambda: all(group.checkpoint(name) != before[name] for name in moved), timeout=180, every=0.5
        ), _logs(group)
        committed = time.monotonic() - paused_at
    finally:
        victim.signal_tree(signal.SIGCONT)
    paused = time.monotonic() - paused_at
    # The old owner's sources stop without being told by anyone but Kafka and their own lease.
    assert wait_until(lambda: not any(running(pid) for pid in children), timeout=60), _logs(group)
    out = victim.output()
    stopped_by = (
        ", ".join(
            why for why, line in (("fenced", "] cdc.runner: fenced:"), ("lease", "no lease renewal")) if line in out
        )
        or "the group (partitions lost)"
    )
    # It learned from Kafka that it was evicted, rejoined, and the group runs every source once again.
    assert wait_until(
        lambda: (
            victim.value(f'wpcdc_cluster_ownership_changes_total{{change="lost",source="{next(iter(moved))}"}}') >= 1
        ),
        60,
    ), _logs(group)
    assert wait_until(lambda: group.all_running_once([victim, other]), timeout=90, every=0.5), _logs(group)
    assert wait_until(lambda: get(victim.port, "/readyz")[0] == 200, timeout=90, every=0.5), _logs(group)
    time.sleep(1.0)
    group.stop_writers()
    group.wait_checkpoints_past_end()
    figures = group.verify()
    assert figures["duplicates"] == 0, figures  # a commit of the fenced owner would show as duplicates
    FIGURES.append(
        f"group SIGSTOP (exactly_once): {len(moved)} source(s) of the paused member started by the other "
        f"{takeover:.1f}s after the pause, its first commit {committed:.1f}s after (paused {paused:.1f}s, session "
        f"timeout {SESSION_MS / 1000:g}s); on SIGCONT the old sources stopped by: {stopped_by}; read_committed: "
        f"{figures['expected']} events expected, 0 lost, {figures['duplicates']} duplicates"
    )
    for m in (victim, other):
        assert m.stop() == 0, m.output()[-3000:]


def test_a_control_topic_with_more_partitions_than_sources_stops_run_with_the_fix_and_a_smaller_one_grows(
    apache_kafka: Any, tmp_path: Path
) -> None:
    from cdc.cluster import ensure_control_topic

    topic = f"control-{os.getpid()}-{time.monotonic_ns()}"
    admin = KafkaAdminClient(bootstrap_servers=apache_kafka.bootstrap, client_id="wpcdc-tests")
    try:
        admin.create_topics([NewTopic(topic, 2, 1)])
    finally:
        admin.close()
    config: dict[str, Any] = {
        "kafka": {"bootstrap_servers": [apache_kafka.bootstrap]},
        "checkpoint": {"store": "kafka", "path": str(tmp_path / "cp.json")},
        "cluster": {"group_id": topic, "control_topic": topic, "sources": [{"name": "a"}]},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "cdc.cli", "run", "--config", str(path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 6, result.stderr
    assert f"the control topic {topic!r} has 2 partitions but cluster.sources lists 1" in result.stderr
    assert "fix:" in result.stderr and "Traceback" not in result.stderr
    # Sources appended to the list: the topic grows, the existing partitions keep their sources.
    config["cluster"]["sources"] = [{"name": n, "wordpress": {"database": n}} for n in "abc"]
    assert ensure_control_topic(parse_config(config)) == topic
    admin = KafkaAdminClient(bootstrap_servers=apache_kafka.bootstrap, client_id="wpcdc-tests")
    try:
        assert len(admin.describe_topics([topic])[0]["partitions"]) == 3
    finally:
        admin.close()
