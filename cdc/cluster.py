"""A group of wpcdc processes running several sources (`cluster.group_id` + `cluster.sources`).

Kafka is the coordination engine; there is no consensus of our own. Every process joins the Kafka
consumer group `cluster.group_id` on a control topic with one partition per source, and Kafka's group
coordinator assigns the partitions: partition p assigned to this process means "run sources[p]
here". Nobody writes records to the control topic; it exists so the assignment has partitions to hand
out. A process that holds no partition is a hot standby: it is a member, and gets a source when
another member leaves or stops heartbeating for cluster.session_timeout_ms.

Each source runs as a child process, `wpcdc run --source NAME` on the same config file, rather than as
a task in this process: the child is exactly the single-source `run` (supervision, checkpoints,
producer child, metrics), a crash or a memory blow-up in one source's decoding cannot take the other
sources or the group membership down, and stopping a source is a SIGTERM with a bounded wait (a
stuck thread cannot be stopped; a process can be killed).

Ownership moves are safe in both directions:
- revocation (another process joins, or this one stops): on_partitions_revoked stops the child
  (SIGTERM: finish the transaction, flush, checkpoint; SIGKILL after cluster.stop_timeout_seconds)
  before it returns, and the new owner only gets the partition in the next round of the rebalance;
- a member that was paused or cut off does not know it lost its sources. Its children stop
  themselves when the member stops renewing their lease (a byte a second on their stdin, see
  watch_lease), and with kafka.delivery exactly_once the new owner's producer, which has the same
  per-source transactional id, fences the old one: its next commit fails and it exits 8 (fenced)
  without anything it sent after losing the source becoming visible to read_committed consumers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient, NewPartitions, NewTopic
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.errors import InvalidPartitionsError, KafkaError, TopicAlreadyExistsError
from kafka.structs import MemberState

from cdc.config import ENV_MYSQL_PASSWORD, Config
from cdc.errors import EXIT_FENCED, KafkaSetupError, SinkError
from cdc.ops.group import GroupMetrics
from cdc.ops.http_server import ObservabilityServer

log = logging.getLogger(__name__)

LEASE_RENEW_SECONDS = 1.0


def watch_lease(stop: threading.Event, seconds: float, stream: int | None = None) -> threading.Thread:
    """In a source's child: stop the source when the member that started it is gone (EOF on stdin:
    it died, even by kill -9) or has not renewed the lease for `seconds` (paused, hung): the group
    may have given the source to another member meanwhile."""
    fd = sys.stdin.fileno() if stream is None else stream

    def watch() -> None:
        renewed = time.monotonic()
        while not stop.is_set():
            ready, _, _ = select.select([fd], [], [], 0.25)
            now = time.monotonic()  # CLOCK_MONOTONIC goes on while the process is stopped
            if ready:
                if not os.read(fd, 256):
                    log.warning(
                        "the group member that started this source is gone: stopping the source",
                        extra={"event": "lease_lost", "reason": "member gone"},
                    )
                    stop.set()
                    return
                renewed = now
            elif now - renewed > seconds:
                log.warning(
                    "no lease renewal from the group member for %.1fs (limit %.1fs: it was paused or hung, and the "
                    "group may have given this source to another member): stopping the source",
                    now - renewed, seconds, extra={"event": "lease_lost", "reason": "lease expired"},
                )  # fmt: skip
                stop.set()
                return

    thread = threading.Thread(target=watch, name="wpcdc-lease", daemon=True)
    thread.start()
    return thread


class SourceProcess:
    """One source's `wpcdc run --source NAME` child, with its lease pipe."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        self._argv = argv
        self._env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self) -> None:
        # stdout/stderr are this process's: one log for the member and its sources (lines carry [name]).
        self.proc = subprocess.Popen(self._argv, stdin=subprocess.PIPE, env=self._env)
        self.started_at = time.monotonic()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def renew(self) -> None:
        if self.proc is not None and self.proc.stdin is not None and self.proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):  # it exited meanwhile
                self.proc.stdin.write(b".")
                self.proc.stdin.flush()

    def terminate(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)

    def close(self) -> None:
        if self.proc is not None and self.proc.stdin is not None:
            with contextlib.suppress(OSError, ValueError):
                self.proc.stdin.close()


def ensure_control_topic(config: Config) -> str:
    """Create the control topic with one partition per source, or check the one that exists."""
    cluster, kafka = config.cluster, config.kafka
    topic, wanted = cluster.topic(), len(cluster.sources)
    where = ",".join(kafka.bootstrap_servers)
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=kafka.bootstrap_servers, client_id=f"{kafka.client_id}-member",
            request_timeout_ms=kafka.request_timeout_ms, **kafka.producer_security(),
        )  # fmt: skip
    except KafkaError as exc:
        raise SinkError(
            f"cannot reach Kafka at {where} to join group {cluster.group_id}: {type(exc).__name__}"
        ) from None
    try:
        try:
            admin.create_topics([NewTopic(topic, wanted, cluster.control_topic_replication_factor)])
            log.info("created the control topic %s with %d partitions (one per source)", topic, wanted)
            return topic
        except TopicAlreadyExistsError:
            pass
        # Another member may be creating it (or growing it) right now: its metadata may lag for a moment.
        deadline = time.monotonic() + 15
        while True:
            found = _partition_count(admin, topic)
            if found == wanted:
                return topic
            if found > wanted:
                raise KafkaSetupError(
                    f"the control topic {topic!r} has {found} partitions but cluster.sources lists {wanted} "
                    "sources (partition p runs source p, so a removed source would shift every later one)",
                    "keep the list as it was (remove sources only by starting a new group: a new "
                    f"cluster.group_id and cluster.control_topic), or delete the topic {topic!r} while no member runs",
                )
            if found:
                # Sources appended to the list: the new partitions are theirs, the old ones keep their sources.
                try:
                    admin.create_partitions({topic: NewPartitions(wanted)})
                    log.info("the control topic %s grew from %d to %d partitions (new sources)", topic, found, wanted)
                except InvalidPartitionsError:
                    pass  # another member grew it first: described again below
            if time.monotonic() > deadline:
                raise KafkaSetupError(
                    f"the control topic {topic!r} has {found} partitions, not {wanted} (one per source), and wpcdc "
                    "could not change that",
                    f"give it {wanted} partitions (`kafka-topics.sh --alter --topic {topic} --partitions {wanted}`)",
                )
            time.sleep(0.5)
    except KafkaError as exc:
        raise KafkaSetupError(
            f"cannot create or check the control topic {topic!r} of group {cluster.group_id} at {where}: "
            f"{type(exc).__name__}: {exc}",
            f"create it yourself (`kafka-topics.sh --create --topic {topic} --partitions {wanted}`), or grant "
            "wpcdc's Kafka user Create and Describe on it",
        ) from None
    finally:
        admin.close()


def _partition_count(admin: KafkaAdminClient, topic: str) -> int:
    described = admin.describe_topics([topic])
    for entry in described:
        if entry.get("name") == topic and not entry.get("error_code"):
            return len(entry.get("partitions") or [])
    return 0


class _Listener(AsyncConsumerRebalanceListener):
    """Async, so the consumer's heartbeats go on while a revoked source is being stopped (a sync
    listener blocks the event loop that sends them, and a long stop would cost the membership)."""

    def __init__(self, member: Member) -> None:
        self.member = member

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.member.release(revoked, "revoked")

    async def on_partitions_lost(self, lost: Any) -> None:
        await self.member.release(lost, "lost")

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.member.acquire(assigned)


class Member:
    """This process's membership in the group and the sources it runs."""

    def __init__(self, config: Config, config_path: Path, sink_kind: str, stop: threading.Event) -> None:
        self.config = config
        self.cluster = config.cluster
        self.stop = stop
        self.names = config.source_names()
        self.metrics = GroupMetrics(self.names, config.cluster.group_id or "")
        self.metrics.readiness_probe = self._readiness
        self._lock = threading.Lock()
        self._owned: set[int] = set()
        self._children: dict[int, SourceProcess] = {}
        # Per source: no restart before this time (a backoff, a fence, a pause; the latest rule wins).
        self._next_start: dict[int, float] = {}
        self._backoff: dict[int, float] = {}
        self._consumer: KafkaConsumer | None = None
        self._sleep: Callable[[float], Any] | None = None
        lease = config.cluster.session_timeout_ms / 1000
        env = dict(os.environ)
        self._argv: dict[int, list[str]] = {}
        self._env: dict[int, dict[str, str]] = {}
        for index, name in enumerate(self.names):
            self._argv[index] = [
                sys.executable, "-m", "cdc.cli", "run", "--config", str(config_path), "--sink", sink_kind,
                "--source", name, "--lease-seconds", f"{lease:g}",
            ]  # fmt: skip
            child_env = dict(env)
            if config.source_has_own_password(name):
                child_env.pop(ENV_MYSQL_PASSWORD, None)
            self._env[index] = child_env

    # -- the rebalance listener's side (the consumer's IO thread) --

    def acquire(self, partitions: Any) -> None:
        with self._lock:
            for tp in sorted(partitions, key=lambda tp: tp.partition):
                p = tp.partition
                if p >= len(self.names) or p in self._owned:
                    continue
                self._owned.add(p)
                self._backoff.pop(p, None)
                self._next_start[p] = 0.0
                self.metrics.ownership_change(self.names[p], "acquired")
                log.info(
                    "group %s: source %s (partition %d) is now run by this process",
                    self.cluster.group_id, self.names[p], p,
                    extra={"event": "source_acquired", "source": self.names[p]},
                )  # fmt: skip
                self._start(p)

    async def release(self, partitions: Any, why: str) -> None:
        """Stop the sources of these partitions; returns once they stopped (or were killed)."""
        stopping: list[int] = []
        with self._lock:
            for tp in partitions:
                p = tp.partition
                if p not in self._owned:
                    continue
                self._owned.discard(p)
                self.metrics.ownership_change(self.names[p], why)
                child = self._children.get(p)
                if child is not None and child.alive():
                    child.terminate()
                    stopping.append(p)
                log.info(
                    "group %s: source %s (partition %d) %s: stopping it here",
                    self.cluster.group_id, self.names[p], p, why,
                    extra={"event": f"source_{why}", "source": self.names[p]},
                )  # fmt: skip
        deadline = time.monotonic() + self.cluster.stop_timeout_seconds
        while any(self._children[p].alive() for p in stopping) and time.monotonic() < deadline:
            if self._sleep is not None:
                await self._sleep(0.1)
            else:
                time.sleep(0.1)
        with self._lock:
            for p in stopping:
                child = self._children.pop(p)
                if child.alive():
                    log.warning(
                        "source %s did not stop within cluster.stop_timeout_seconds (%gs): killing it",
                        self.names[p], self.cluster.stop_timeout_seconds,
                        extra={"event": "source_killed", "source": self.names[p]},
                    )  # fmt: skip
                    child.kill()
                child.close()
                self.metrics.running(self.names[p], False)

    # -- the main thread's side --

    def _start(self, p: int) -> None:
        child = SourceProcess(self.names[p], self._argv[p], self._env[p])
        child.start()
        self._children[p] = child
        self.metrics.running(self.names[p], True)

    def note_pause(self, gap: float, now: float) -> bool:
        """Record that this process went `gap` seconds without a turn; True when that outlasted the session.

        A source whose lease lapsed in the pause stops by itself, with exit 0 when it had nothing left to
        commit, not 8 (fenced). Restarted one backoff later, while Kafka has not yet told this member it
        lost the partition, its producer would fence the member the group gave the source to. So nothing
        restarts here for two session timeouts, by when the group has answered either way (as for exit 8).
        """
        session = self.cluster.session_timeout_ms / 1000
        if gap <= session:
            return False
        with self._lock:
            for p in self._owned:
                self._not_before(p, now + 2 * session)
        return True

    def _not_before(self, p: int, when: float) -> None:
        # A later rule never shortens an earlier one: a source that exits with a 1 s backoff during a
        # pause's hold stays held.
        self._next_start[p] = max(self._next_start.get(p, 0.0), when)

    def _supervise(self, now: float | None = None) -> None:
        """Restart a source that exited while this process still owns it."""
        now = time.monotonic() if now is None else now
        with self._lock:
            for p in sorted(self._owned):
                child = self._children.get(p)
                if child is not None and child.alive():
                    continue
                if child is not None:
                    self._children.pop(p)
                    child.close()
                    self.metrics.running(self.names[p], False)
                    self._exited(p, child.exit_code(), child, now)
                if now >= self._next_start.get(p, 0.0):
                    self.metrics.restart(self.names[p])
                    self._start(p)

    def _exited(self, p: int, code: int | None, child: SourceProcess, now: float) -> None:
        name = self.names[p]
        if code == EXIT_FENCED:
            # Another member's producer with this source's transactional id took over: this process was
            # paused or cut off and the group moved the source. Kafka tells this member within a session
            # timeout that it lost the partition; restarting sooner would fence the rightful owner.
            wait = self.cluster.session_timeout_ms / 1000 * 2
            self.metrics.fenced(name)
            log.warning(
                "source %s was fenced: another member runs it now; not restarting it here for %.0fs "
                "(the group will have told this process by then whether it still owns it)",
                name, wait, extra={"event": "source_fenced", "source": name},
            )  # fmt: skip
        else:
            healthy = now - child.started_at > 60
            wait = 1.0 if healthy else min(self._backoff.get(p, 0.5) * 2, self.cluster.restart_backoff_max_seconds)
            self._backoff[p] = wait
            log.error(
                "source %s exited with code %s while this process owns it; restarting it in %.1fs",
                name, code, wait, extra={"event": "source_exited", "source": name, "exit_code": code},
            )  # fmt: skip
        self._not_before(p, now + wait)

    def _renew_leases(self) -> None:
        last = time.monotonic()
        while not self.stop.wait(LEASE_RENEW_SECONDS):
            now = time.monotonic()
            gap, last = now - last, now
            if self.note_pause(gap, now):
                # This process was paused (or starved) for longer than the session: the group has likely
                # moved its sources. Renewing now would keep them streaming until Kafka says so; skipping
                # one renewal lets their own lease check stop them at once.
                log.warning(
                    "this process was paused or starved for %.1fs (longer than cluster.session_timeout_ms): "
                    "not renewing its sources' leases", gap, extra={"event": "lease_skipped"},
                )  # fmt: skip
                continue
            with self._lock:
                children = list(self._children.values())
            for child in children:
                child.renew()

    def _readiness(self) -> tuple[bool, str]:
        consumer = self._consumer
        state = consumer.group_metadata().state if consumer is not None else None
        if state is not MemberState.STABLE:
            return (
                False,
                f"not a stable member of group {self.cluster.group_id} (state {getattr(state, 'name', state)})",
            )
        with self._lock:
            owned = sorted(self._owned)
            children = dict(self._children)
        if not owned:
            return True, f"standby: member of group {self.cluster.group_id}, no source assigned"
        problems = []
        for p in owned:
            name = self.names[p]
            child = children.get(p)
            if child is None or not child.alive():
                problems.append(f"source {name} not running (restarting)")
            elif self.config.metrics.enabled:
                problems += _child_problems(name, self.config.for_source(name))
        if problems:
            return False, "; ".join(problems)
        return True, "streaming " + ", ".join(self.names[p] for p in owned)

    def run(self) -> None:
        topic = ensure_control_topic(self.config)
        cluster, kafka = self.cluster, self.config.kafka
        try:
            consumer = KafkaConsumer(
                bootstrap_servers=kafka.bootstrap_servers,
                client_id=f"{kafka.client_id}-member",
                group_id=cluster.group_id,
                enable_auto_commit=False,
                session_timeout_ms=cluster.session_timeout_ms,
                heartbeat_interval_ms=cluster.heartbeat_interval_ms,
                # Also the rebalance timeout: how long the group waits for members to stop their revoked
                # sources before it goes on without them.
                max_poll_interval_ms=int(cluster.stop_timeout_seconds * 1000) + cluster.session_timeout_ms,
                # Incremental: a member joining or leaving moves only the sources that must move; the
                # others keep running (the eager protocol would stop every source at every rebalance).
                partition_assignment_strategy=[CooperativeStickyAssignor],
                request_timeout_ms=max(kafka.request_timeout_ms, cluster.session_timeout_ms + 5000),
                **kafka.producer_security(),
            )
        except KafkaError as exc:
            raise SinkError(f"cannot join group {cluster.group_id}: {type(exc).__name__}: {exc}") from None
        self._consumer = consumer
        net = getattr(getattr(consumer, "_coordinator", None), "_net", None)
        self._sleep = getattr(net, "sleep", None)
        consumer.subscribe([topic], listener=_Listener(self))
        renewer = threading.Thread(target=self._renew_leases, name="wpcdc-lease-renew", daemon=True)
        renewer.start()
        log.info(
            "joining group %s (control topic %s, %d sources: %s)",
            cluster.group_id, topic, len(self.names), ", ".join(self.names),
            extra={"event": "group_join", "group_id": cluster.group_id},
        )  # fmt: skip
        try:
            while not self.stop.is_set():
                try:
                    consumer.poll(timeout_ms=500)  # drives the membership; nobody writes records there
                except KafkaError as exc:
                    log.warning("group %s: %s; retrying", cluster.group_id, exc)
                    self.stop.wait(1.0)
                self.metrics.member = consumer.group_metadata().state is MemberState.STABLE
                self._supervise()
        finally:
            # Leaving the group revokes everything (stopping the sources, bounded) before the others
            # are told to take them.
            try:
                consumer.close()
            finally:
                self._consumer = None
                self.metrics.member = False
                with self._lock:
                    leftover = list(self._children.values())
                for child in leftover:
                    child.terminate()
                for child in leftover:
                    try:
                        child.proc.wait(self.cluster.stop_timeout_seconds) if child.proc else None
                    except subprocess.TimeoutExpired:
                        child.kill()
                    child.close()


def _child_problems(name: str, config: Config) -> list[str]:
    url = f"http://{_connectable(config.metrics.host)}:{config.metrics.port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=1.0):
            return []
    except urllib.error.HTTPError as exc:
        try:
            reason = str(json.loads(exc.read()).get("reason"))
        except ValueError:
            reason = f"HTTP {exc.code}"
        return [f"source {name}: {reason}"]
    except OSError as exc:
        return [f"source {name}: its /readyz on port {config.metrics.port} does not answer ({exc})"]


def _connectable(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def run_member(config: Config, config_path: Path, sink_kind: str, stop: threading.Event) -> GroupMetrics:
    member = Member(config, config_path, sink_kind, stop)
    http = None
    if config.metrics.enabled:
        m = config.metrics
        http = ObservabilityServer(member.metrics, m.host, m.port, m.ready_max_lag_seconds).start()
    try:
        member.run()
    finally:
        if http is not None:
            http.stop()
    log.info("left group %s", config.cluster.group_id, extra={"event": "group_leave"})
    return member.metrics
