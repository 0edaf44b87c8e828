"""`make demo` as a user runs it: real WordPress, events shown, still streaming, Ctrl-C cleans up."""

from __future__ import annotations

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


def test_demo_streams_wordpress_edits_until_ctrl_c(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cdc.dev.demo", "--dir", str(tmp_path / "demo")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
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

        proc.send_signal(signal.SIGINT)
        stopped = _read_until(lines, seen, r"stopped\. data, config, checkpoint and logs .* are in (\S+)")
        assert Path(stopped.group(1)) == tmp_path / "demo"
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert not _alive(tmp_path / "demo" / "mariadb" / "mysqld.pid"), "MariaDB was stopped"
    assert (tmp_path / "demo" / "wpcdc.log").exists() and (tmp_path / "demo" / "checkpoint.json").exists()
