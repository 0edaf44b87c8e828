"""Fixtures shared by every suite that needs real servers: one Tansu broker per test session and, as
the `stack` fixture's two parameters, one MariaDB and one Oracle MySQL (binlog ROW/FULL/FULL, TLS),
each on a free port and stopped by PID. Every test that uses `stack` (the integration, fault and e2e
suites) runs once per server with the same assertions: pytest groups the tests by parameter, so the
MariaDB leg runs and its server stops before the MySQL leg starts its own."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from cdc.dev.stack import Tansu, make_tls_files
from tests.integration.conftest import Stack, new_server

SERVERS = ("mariadb", "mysql")
_SEEN: dict[str, str] = {}  # kind -> "version (leg seconds)", for the terminal summary
_LEG_STARTED: dict[str, float] = {}


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tansu]:
    b = Tansu(tmp_path_factory.mktemp("tansu")).start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="session", params=SERVERS)
def stack(request: pytest.FixtureRequest, broker: Tansu, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    kind: str = request.param
    base = tmp_path_factory.mktemp(f"stack-{kind}")
    # A MySQL that cannot be fetched or started is an error in every MySQL test, never a skip.
    db = new_server(kind, base / kind, tls_dir=make_tls_files(base / "tls")).start()
    _LEG_STARTED[kind] = time.monotonic()
    _SEEN[kind] = db.version
    try:
        yield Stack(db, broker, base)
    finally:
        db.stop()
        _SEEN[kind] += f", leg {time.monotonic() - _LEG_STARTED[kind]:.0f}s"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Which servers this run really talked to (CI logs included)."""
    if _SEEN:
        terminalreporter.section("servers")
        for kind, seen in _SEEN.items():
            terminalreporter.write_line(f"{kind}: {seen}")
