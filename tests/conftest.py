"""Fixtures shared by every suite that needs real servers: one MariaDB (binlog ROW/FULL/FULL, TLS)
and one Tansu broker per test session, on free ports, stopped by PID.

The servers run in sessions of their own (cdc.dev.stack), so a Ctrl-C reaches pytest, not them,
and pytest's teardown stops them in order, each step bounded. A SIGTERM (`kill`, a CI timeout)
is turned into the same interruption; without that pytest would die with the servers left running."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from cdc.dev.stack import MariaDB, Tansu, make_tls_files
from tests.integration.conftest import Stack


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
