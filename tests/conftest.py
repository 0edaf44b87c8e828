"""Fixtures shared by every suite that needs real servers: one MariaDB (binlog ROW/FULL/FULL, TLS)
and one Tansu broker per test session, on free ports, stopped by PID; and, for the Kafka-facing
suite (tests/kafka), one Apache Kafka broker, started only when a test asks for it.

The servers run in sessions of their own (cdc.dev.stack), so a Ctrl-C reaches pytest, not them,
and pytest's teardown stops them in order, each step bounded. A SIGTERM (`kill`, a CI timeout)
is turned into the same interruption; without that pytest would die with the servers left running."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from cdc.dev.kafka import SCRAM_USERS, Kafka
from cdc.dev.stack import MariaDB, Tansu, make_tls_files
from tests.integration.conftest import Stack

# Lines for the run's summary (tests/kafka/conftest.py prints them).
BROKER_FIGURES: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("stack")
    db = MariaDB(base / "mariadb", tls_dir=make_tls_files(base / "tls"))
    broker = Tansu(base / "tansu")
    try:
        db.start()
        broker.start()
        yield Stack(db, broker, base)
    finally:
        try:
            broker.stop()
        finally:
            db.stop()


@pytest.fixture(scope="session")
def apache_kafka(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kafka]:
    """Apache Kafka (KRaft, one node, auto-creation off) with a PLAINTEXT listener (`bootstrap`) and a
    SASL_SSL one taking SCRAM-SHA-512 (`sasl_bootstrap`, certificate from the stack's test CA). Never
    skipped: a missing Java or Maven fails the tests that need it, with the fix."""
    assert stack.db.tls_dir is not None
    broker = Kafka(tmp_path_factory.mktemp("apache-kafka"), tls_dir=stack.db.tls_dir, scram_users=SCRAM_USERS)
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
    """The session's MariaDB with Apache Kafka as the broker: `Site(apache_stack, dir)` works as with Tansu."""
    return Stack(stack.db, apache_kafka, stack.base)
