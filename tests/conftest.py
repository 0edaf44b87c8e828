"""Fixtures shared by every suite that needs real servers: one MariaDB (binlog ROW/FULL/FULL, TLS)
and one Tansu broker per test session, on free ports, stopped by PID."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cdc.dev.stack import MariaDB, Tansu, make_tls_files
from tests.integration.conftest import Stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("stack")
    db = MariaDB(base / "mariadb", tls_dir=make_tls_files(base / "tls")).start()
    try:
        broker = Tansu(base / "tansu").start()
    except Exception:
        db.stop()
        raise
    try:
        yield Stack(db, broker, base)
    finally:
        broker.stop()
        db.stop()
