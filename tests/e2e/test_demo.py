"""`make demo` as a user runs it: real WordPress, events shown, still streaming, and a Ctrl-C in the
middle of a burst of writes stops wpcdc, the broker and MariaDB and says where the data is."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pymysql
import pytest

from tests.processes import descendants, running

pytestmark = pytest.mark.e2e


def _lines(proc: subprocess.Popen[str], out: queue.Queue[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        out.put(line.rstrip("\n"))


def _read_until(lines: queue.Queue[str], seen: list[str], pattern: str, timeout: float = 120) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        seen.append(line)
        m = re.search(pattern, line)
        if m:
            return m
    raise AssertionError(f"no line matching {pattern!r} in:\n" + "\n".join(seen))


def _alive(pid_file: Path) -> bool:
    try:
        os.kill(int(pid_file.read_text().strip()), 0)
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return False
    return True


def _checkpoint(path: Path) -> tuple[str, int]:
    data = json.loads(path.read_text())
    return str(data["file"]), int(data["pos"])


def _binlog_end(port: int) -> tuple[str, int]:
    with pymysql.connect(host="127.0.0.1", port=port, user="root") as c, c.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        file, pos = cur.fetchone()[:2]
    return str(file), int(pos)


def _burst(port: int, rows: int = 2000) -> None:
    """Writes WordPress would make, many rows per transaction: events for wpcdc to publish."""
    with pymysql.connect(host="127.0.0.1", port=port, user="root", database="wordpress", autocommit=True) as c:
        with c.cursor() as cur:
            for start in range(0, rows, 200):
                values = ", ".join(f"(1, 'load_{start + i}', '{'x' * 200}')" for i in range(200))
                cur.execute(f"INSERT INTO wp_postmeta (post_id, meta_key, meta_value) VALUES {values}")


def test_demo_streams_wordpress_edits_until_ctrl_c(tmp_path: Path) -> None:
    # Its own session, as in a terminal: a Ctrl-C there is a SIGINT to the whole foreground group.
    proc = subprocess.Popen(
        [sys.executable, "-m", "cdc.dev.demo", "--dir", str(tmp_path / "demo")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(proc, lines), daemon=True).start()
    seen: list[str] = []
    try:
        _read_until(lines, seen, r"installing WordPress")
        port = int(_read_until(lines, seen, r"MariaDB on 127\.0\.0\.1:(\d+)").group(1))
        hint = _read_until(lines, seen, r"still streaming")
        assert hint
        events = [s.split()[1:3] for s in seen if re.match(r"\d\d:\d\d:\d\d  post_", s)]
        types = [t for t, _ in events]
        assert types == [
            "post_created", "post_term_added", "post_term_added", "post_term_added", "post_meta_added",
            "post_updated", "post_published", "post_updated", "post_updated", "post_unpublished",
            "post_meta_added", "post_updated", "post_trashed",
        ], "\n".join(seen)  # fmt: skip
        assert len({key for _, key in events}) == 1, "one post, one key"
        assert any("_price" in s for s in seen), "the plugin's direct SQL write is shown"

        # It keeps streaming: an edit made by hand shows up.
        with pymysql.connect(host="127.0.0.1", port=port, user="root", database="wordpress", autocommit=True) as c:
            c.cursor().execute("UPDATE wp_posts SET post_title = 'Edited by hand' WHERE ID = 1")
        _read_until(lines, seen, r"post_updated\s+1:1\s+post_title: 'Hello world!' -> 'Edited by hand'", timeout=30)

        # Ctrl-C while wpcdc has events the broker has not acknowledged yet (the checkpoint only moves
        # past acknowledged events): a burst of writes, then SIGINT to the demo's process group.
        started = descendants(proc.pid)
        assert any("mariadbd" in c for c in started.values()) and any("cdc.cli run" in c for c in started.values())
        assert any("broker" in c for c in started.values()), started
        checkpoint = tmp_path / "demo" / "checkpoint.json"
        for _ in range(20):
            _burst(port)
            end = _binlog_end(port)
            if _checkpoint(checkpoint) < end:
                break
        else:
            raise AssertionError("wpcdc acknowledged every burst at once: nothing was in flight")
        os.killpg(proc.pid, signal.SIGINT)
        stopped = _read_until(lines, seen, r"stopped\. data, config, checkpoint and logs .* are in (\S+)", timeout=60)
        assert Path(stopped.group(1)) == tmp_path / "demo"
        assert proc.wait(30) == 0, "\n".join(seen)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    output = "\n".join(seen)
    assert "Traceback" not in output and "TimeoutExpired" not in output, output
    left = {pid: cmd for pid, cmd in started.items() if running(pid)}
    assert not left, f"still running after Ctrl-C: {left}"
    assert not _alive(tmp_path / "demo" / "mariadb" / "mysqld.pid"), "MariaDB was stopped"
    # wpcdc was stopped by the demo (SIGTERM, with the broker still up), not cut off by the Ctrl-C:
    # it flushed and wrote its final checkpoint.
    log = (tmp_path / "demo" / "wpcdc.log").read_text()
    final = re.findall(r"stopped; checkpoint at (\S+):(\d+)", log)
    assert final, log[-3000:]
    assert (final[-1][0], int(final[-1][1])) == _checkpoint(checkpoint)
    assert "mariadbd: Shutdown complete" in (tmp_path / "demo" / "mariadb" / "mariadb.err").read_text()
