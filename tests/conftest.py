"""Fixtures shared by every suite that needs real servers: one Tansu broker per test session and, as
the `stack` fixture's two parameters, one MariaDB and one Oracle MySQL (binlog ROW/FULL/FULL, TLS),
each on a free port and stopped by PID. Every test that uses `stack` (the integration, kafka, fault
and e2e suites) runs once per server with the same assertions: pytest groups the tests by parameter,
so the MariaDB leg runs and its server stops before the MySQL leg starts its own. For the Kafka-facing
suite (tests/kafka), one Apache Kafka broker, started only when a test asks for it.

The servers run in sessions of their own (cdc.dev.stack), so a Ctrl-C reaches pytest, not them,
and pytest's teardown stops them in order, each step bounded. A SIGTERM (`kill`, a CI timeout)
is turned into the same interruption; without that pytest would die with the servers left running.

`make test` runs the session on two pytest-xdist workers with `--dist loadgroup`: every test of one
server leg is one work unit (see _LegScheduling), so one worker runs the whole MariaDB leg and the
other the whole MySQL leg, side by side, each in the order and with the one server of a serial run
(tests that share a leg's server also share its state, so a leg is never split); tests without a
server fill in wherever a worker is free. Under xdist the controller forwards an interruption to the
workers, which stop their servers as above, and the workers ship their summary lines to it."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from cdc.dev.kafka import SCRAM_USERS, Kafka
from cdc.dev.stack import Tansu, make_tls_files
from tests.integration.conftest import Stack, new_server

SERVERS = ("mariadb", "mysql")
_SEEN: dict[str, str] = {}  # kind -> server version, for the terminal summary
_LEG_STARTED: dict[str, float] = {}
# kind -> when its last test finished: under xdist a leg's server lives until its worker ends, which
# may run tests without a server after the leg.
_LEG_ENDED: dict[str, float] = {}
_SHIPPED_SERVERS: dict[str, str] = {}  # the xdist controller's copy of each worker's _servers()

# Lines for the run's summary (tests/kafka/conftest.py prints them).
BROKER_FIGURES: list[str] = []

# Summary lines that tests add to while they run, by section name. Under xdist the tests run in the
# workers, but only the controller prints the summary: each worker ships these lists to it.
_SHIPPED: dict[str, list[str]] = {"brokers": BROKER_FIGURES}
_UNCLAIMED: dict[str, list[str]] = {}  # shipped by a worker under a name this process never registered
_Lines = TypeVar("_Lines", bound=list[str])


def summary_lines(section: str, lines: _Lines) -> _Lines:
    """Register a module-level list of summary lines (returned as is) so that xdist workers ship it to
    the controller, whose copy of the list then holds every worker's lines before the summary prints."""
    _SHIPPED[section] = lines
    return lines


def _worker_children() -> list[int]:
    """The xdist controller's worker processes: its direct children (it runs no test itself)."""
    pids: list[int] = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            pids += [int(pid) for pid in (task / "children").read_text().split()]
        except OSError:
            continue
    return pids


def pytest_configure(config: pytest.Config) -> None:
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        # The xdist controller: its workers own the servers. Raising here would make xdist kill the
        # workers after a few seconds, their servers still running; instead each worker is told to
        # interrupt itself (SIGTERM: it may be outside the terminal's process group), tears down as a
        # serial run would, and reports "interrupted", which ends the session with exit code 2.
        # A second Ctrl-C or SIGTERM interrupts the controller at once.
        forwarded: list[int] = []

        def forward(signum: int, frame: object) -> None:
            if forwarded:
                raise KeyboardInterrupt
            forwarded.extend(_worker_children())
            if not forwarded:
                raise KeyboardInterrupt
            for pid in forwarded:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
        config.pluginmanager.register(_Controller(), "wpcdc-xdist-controller")
        return

    worker = hasattr(config, "workerinput")
    seen: list[float] = []

    def interrupted(signum: int, frame: object) -> None:
        # A worker hit by Ctrl-C gets SIGINT from the terminal and SIGTERM from the controller at once:
        # the second must not break off the teardown that stops the servers. Later ones do interrupt
        # (a first one swallowed by the code it hit must not leave the worker deaf).
        if worker and seen and time.monotonic() - seen[-1] < 3:
            return
        seen.append(time.monotonic())
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    if worker:
        signal.signal(signal.SIGINT, interrupted)


def pytest_itemcollected(item: pytest.Item) -> None:
    """The leg's xdist_group mark, for anyone reading marks; the grouping itself is _LegScheduling's."""
    kind = _leg_of(item)
    if kind:
        item.add_marker(pytest.mark.xdist_group(kind))


def _leg_in_id(nodeid: str) -> str | None:
    """The server leg named in a test id's parameters ("...[mariadb]", "[mysql-truncate]", "[fail-mariadb]")."""
    params = nodeid.rpartition("[")[2].rstrip("]") if nodeid.endswith("]") else ""
    return next((kind for kind in params.split("-") if kind in SERVERS), None)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    yield
    kind = _leg_of(item)
    if kind in _LEG_STARTED:
        _LEG_ENDED[kind] = time.monotonic()


def _leg_of(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("stack") if callspec else None


def _servers() -> dict[str, str]:
    """kind -> "version, leg N s": a leg runs from its server being up to the end of its last test."""
    return {
        kind: f"{version}, leg {_LEG_ENDED[kind] - _LEG_STARTED[kind]:.0f}s" if kind in _LEG_ENDED else version
        for kind, version in _SEEN.items()
    }


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """In an xdist worker, after the session fixtures' teardown: ship the summary lines to the controller."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["wpcdc_servers"] = _servers()
        workeroutput["wpcdc_summary"] = {name: list(lines) for name, lines in _SHIPPED.items() if lines}


class _Controller:
    @pytest.hookimpl
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        """`--dist loadgroup` with one work unit per server leg. xdist groups by the "@group" suffix
        its worker appends to the node id, which pytest 9.2 no longer lets it change (Item.nodeid
        comes from Item._id), so the xdist_group marks alone grouped nothing: the scope is read
        from the leg's parameter in the id instead, and every other test is a unit of its own."""
        if config.getvalue("dist") != "loadgroup":
            return None
        from xdist.scheduler import LoadScopeScheduling

        class _LegScheduling(LoadScopeScheduling):
            def _split_scope(self, nodeid: str) -> str:
                return _leg_in_id(nodeid) or nodeid

        return _LegScheduling(config, log)

    @pytest.hookimpl
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        output = getattr(node, "workeroutput", None) or {}
        _SHIPPED_SERVERS.update(output.get("wpcdc_servers", {}))
        for name, lines in output.get("wpcdc_summary", {}).items():
            target = _SHIPPED[name] if name in _SHIPPED else _UNCLAIMED.setdefault(name, [])
            list.extend(target, lines)  # as shipped: not through a subclass's append


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One test CA for the whole session: both servers and Apache Kafka present certificates from it."""
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tansu]:
    b = Tansu(tmp_path_factory.mktemp("tansu"))
    try:
        b.start()
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="session", params=SERVERS)
def stack(
    request: pytest.FixtureRequest, broker: Tansu, tls_files: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    kind: str = request.param
    base = tmp_path_factory.mktemp(f"stack-{kind}")
    # A MySQL that cannot be fetched or started is an error in every MySQL test, never a skip.
    db = new_server(kind, base / kind, tls_dir=tls_files)
    try:
        db.start()
        _LEG_STARTED[kind] = time.monotonic()
        _SEEN[kind] = db.version
        yield Stack(db, broker, base)
    finally:
        db.stop()


@pytest.fixture(scope="session")
def apache_kafka(tls_files: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kafka]:
    """Apache Kafka (KRaft, one node, auto-creation off) with a PLAINTEXT listener (`bootstrap`) and a
    SASL_SSL one taking SCRAM-SHA-512 (`sasl_bootstrap`, certificate from the session's test CA). Never
    skipped: a missing Java or Maven fails the tests that need it, with the fix. One for both server legs."""
    broker = Kafka(tmp_path_factory.mktemp("apache-kafka"), tls_dir=tls_files, scram_users=SCRAM_USERS)
    try:
        broker.start()
        BROKER_FIGURES.append(
            f"Apache Kafka {broker.version}: ready {broker.started_in:.1f}s after launch, "
            f"RSS {broker.rss_bytes() / 2**20:.0f} MiB (heap cap {broker.heap})"
        )
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def apache_stack(stack: Stack, apache_kafka: Kafka) -> Stack:
    """The session's server with Apache Kafka as the broker: `Site(apache_stack, dir)` works as with Tansu."""
    return Stack(stack.db, apache_kafka, stack.base)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Which servers this run really talked to (CI logs included)."""
    servers = {**_servers(), **_SHIPPED_SERVERS}
    if servers:
        terminalreporter.section("servers")
        for kind in sorted(servers, key=SERVERS.index):
            terminalreporter.write_line(f"{kind}: {servers[kind]}")
    for name, lines in _UNCLAIMED.items():
        terminalreporter.section(name)
        for line in lines:
            terminalreporter.write_line(line)
