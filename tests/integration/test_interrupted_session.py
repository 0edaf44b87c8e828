"""The throwaway servers behave on a shared machine: a pytest session interrupted as a person or CI
interrupts it (Ctrl-C in the terminal, `kill`) stops every server and streamer it started (none is
left running, found by PID), and servers started side by side do not break each other."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.integration.conftest import Stack
from tests.processes import descendants, running

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_interrupted_session_leaves_no_process_behind(tmp_path: Path, how: str) -> None:
    ready = tmp_path / "ready"
    # A short base of its own: under xdist tmp_path is deep enough that the inner MariaDB's socket path
    # passes the 107-byte AF_UNIX limit. Not xdist's variables either: the inner session is a plain one.
    inner = Path(tempfile.mkdtemp(prefix="wpcdc-ip-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--basetemp={inner / 'b'}",
         "tests/integration/interrupt_probe.py"],
        cwd=ROOT, env={**env, "WPCDC_PROBE_READY": str(ready)}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,  # its own terminal-like group
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "the probe session did not start"
            time.sleep(0.1)
        started = descendants(proc.pid)
        commands = " ".join(started.values())
        assert "mariadbd" in commands and "broker" in commands and "cdc.cli run" in commands, started
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)  # what the terminal does: the whole foreground group
        else:
            proc.send_signal(signal.SIGTERM)  # what `kill` or a CI timeout does: pytest alone
        out = proc.communicate(timeout=90)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    left = {pid: cmd for pid, cmd in started.items() if running(pid)}
    for pid in left:  # do not leave them to the next test either
        os.kill(pid, signal.SIGKILL)
    shutil.rmtree(inner, ignore_errors=True)
    assert not left, f"still running after the interrupted session: {left}\n{out}"
    assert proc.returncode == 2, out  # pytest's "interrupted", after its teardown ran


def test_each_server_has_a_tmpdir_of_its_own(stack: Stack) -> None:
    # A starting MariaDB deletes every #sql* file in its tmpdir: with a shared /tmp, one server's
    # start broke another's mariadb-install-db ("Unknown table 'mysql.tmp_user_nopasswd'").
    with stack.db.root() as conn, conn.cursor() as cur:
        cur.execute("SELECT @@tmpdir")
        tmpdir = Path(cur.fetchone()[0]).resolve()
    assert tmpdir.is_relative_to(stack.db.base), tmpdir
