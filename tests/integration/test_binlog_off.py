"""A new user's first try: a server with binary logging off and no Kafka running. `check` answers
within seconds, names log_bin with advice that yields sensible file names, and shows none of the
Kafka client's own log lines; `--from` and `checkpoint set` say binary logging is off."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from cdc.dev.stack import MYSQL_PASSWORD, MYSQL_USER, MariaDB, create_wordpress_tables, free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("binlog-off")
    db = MariaDB(base / "mariadb", extra_args=["--skip-log-bin"]).start()  # the last --log-bin option wins
    try:
        with db.root() as conn:
            create_wordpress_tables(conn, "wordpress")
        path = base / "config.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    "mysql": {"host": "127.0.0.1", "port": db.port, "user": MYSQL_USER},
                    "kafka": {"bootstrap_servers": [f"127.0.0.1:{free_port()}"]},  # nothing listens
                    "checkpoint": {"path": str(base / "checkpoint.json")},
                }
            )
        )
        yield path
    finally:
        db.stop()


def wpcdc(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cdc.cli", *args, "--config", str(config)], capture_output=True, text=True,
        timeout=120, env={**os.environ, "WPCDC_MYSQL_PASSWORD": MYSQL_PASSWORD},
    )  # fmt: skip


def test_check_names_log_bin_and_the_missing_broker_quickly_and_quietly(config: Path) -> None:
    began = time.monotonic()
    done = wpcdc(config, "check")
    took = time.monotonic() - began
    assert done.returncode == 3, done.stdout + done.stderr
    assert "FAIL     log_bin: log_bin=OFF (need ON)" in done.stdout
    assert "log_bin=mysql-bin" in done.stdout and "log_bin=ON in" not in done.stdout  # not ON.000001
    assert "FAIL     binlog files: none: binary logging is off" in done.stdout
    assert "FAIL     kafka: cannot connect to Kafka" in done.stdout
    # The broker probe is bounded (kafka-python's own bootstrap wait is 30 s) and its log stays out.
    assert took < 20, f"check took {took:.1f}s"
    assert "kafka." not in done.stderr and "ECONNREFUSED" not in done.stderr, done.stderr
    assert [s.strip() for s in done.stderr.splitlines()] == [
        "error: 3 check(s) failed",
        "fix: see the FAIL lines above",
    ]


@pytest.mark.parametrize("command", [("replay", "--from", "binlog.000001:4"), ("checkpoint", "set", "binlog.000001:4")])
def test_a_position_on_a_server_without_binlog_says_binary_logging_is_off(config: Path, command: tuple[str]) -> None:
    done = wpcdc(config, *command)
    assert done.returncode == 3, done.stderr
    assert "binary logging is off on 127.0.0.1:" in done.stderr and "log_bin=mysql-bin" in done.stderr
    for wrong in ("purged", "no longer has", "(none)", "Traceback"):
        assert wrong not in done.stderr, done.stderr
