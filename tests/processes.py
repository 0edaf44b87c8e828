"""Which processes a test started, found by parent PID in /proc, so that a test can assert that
none of them outlived a Ctrl-C (servers run in sessions of their own, so process groups do not tell)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import IO

_PROC = Path("/proc")


def _stat(pid: int | str) -> list[str]:
    # The command name (field 2) may contain spaces and parentheses: split after its last ")".
    return (_PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()


def descendants(pid: int) -> dict[int, str]:
    """Every process below `pid`, with its command line."""
    parents: dict[int, int] = {}
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(_stat(entry.name)[1])
            except (OSError, IndexError, ValueError):
                continue
    out: dict[int, str] = {}
    todo = [pid]
    while todo:
        parent = todo.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in out:
                try:
                    out[child] = (_PROC / str(child) / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
                except OSError:
                    out[child] = "?"
                todo.append(child)
    return out


def running(pid: int) -> bool:
    """True while the process exists and has not exited (a zombie only waits to be reaped)."""
    try:
        return _stat(pid)[0] != "Z"
    except (OSError, IndexError):
        return False


def wait_or_kill(
    proc: subprocess.Popen[bytes], timeout: float, log: IO[bytes], kill: Callable[[], None] | None = None
) -> int:
    """`proc`'s exit code within `timeout`; past it, `kill` (default proc.kill()) and TimeoutExpired:
    a failing test must not leave a wpcdc process running. Its log file is closed either way."""
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        (kill or proc.kill)()
        proc.wait(10)
        raise
    finally:
        log.close()
