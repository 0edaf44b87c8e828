"""Fixtures shared by every suite that needs real servers: one Tansu broker per test session and, as
the `stack` fixture's two parameters, one MariaDB and one Oracle MySQL (binlog ROW/FULL/FULL, TLS),
each on a free port and stopped by PID. Every test that uses `stack` (the integration, kafka, fault
and e2e suites) runs once per server with the same assertions: pytest groups the tests by parameter,
so the MariaDB leg runs and its server stops before the MySQL leg starts its own. For the Kafka-facing
suite (tests/kafka), one Apache Kafka broker, started only when a test asks for it.

The servers run in sessions of their own (cdc.dev.stack), so a Ctrl-C reaches pytest, not them,
and pytest's teardown stops them in order, each step bounded. A SIGTERM (`kill`, a CI timeout)
is turned into the same interruption; without that pytest would die with the servers left running."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cdc.dev.kafka import SCRAM_USERS, Kafka
from cdc.dev.stack import Tansu, make_tls_files
from tests.integration.conftest import Stack, new_server

SERVERS = ("mariadb", "mysql")
_SEEN: dict[str, str] = {}  # kind -> "version, leg seconds", for the terminal summary
_LEG_STARTED: dict[str, float] = {}

# Lines for the run's summary (tests/kafka/conftest.py prints them).
BROKER_FIGURES: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)


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
        if kind in _LEG_STARTED:
            _SEEN[kind] += f", leg {time.monotonic() - _LEG_STARTED[kind]:.0f}s"


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
    if _SEEN:
        terminalreporter.section("servers")
        for kind, seen in _SEEN.items():
            terminalreporter.write_line(f"{kind}: {seen}")
