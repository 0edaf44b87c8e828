"""Crashes and stops under write load: kill -9 twenty times, SIGTERM under heavy writes, and a
checkpoint location that fills up or turns read-only."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.faults.conftest import FIGURES
from tests.faults.test_outages import Writer, report
from tests.integration.conftest import Site

pytestmark = pytest.mark.integration


def test_kill_9_twenty_times_under_load(site: Site) -> None:
    rng = random.Random(20)
    site.set_checkpoint()
    writer = Writer(site, every=0.01).start()
    big_txns = 0
    for i in range(20):
        s = site.streamer()
        time.sleep(rng.uniform(0.8, 2.0))  # spawn + connect + some streaming, then anywhere in the cycle
        if i % 5 == 0:
            # kill during a large multi-row transaction (one UPDATE of every post so far)
            big = site.stack.db.root(site.database)  # its own connection: the writer has another
            t = threading.Thread(
                target=big.query, args=("UPDATE wp_posts SET menu_order = menu_order + 1 WHERE post_title LIKE 'w%'",)
            )
            t.start()
            time.sleep(rng.uniform(0.0, 0.05))
            s.proc.kill()
            t.join()
            big.close()
            big_txns += 1
        else:
            s.proc.kill()
        s.wait(10)
    writer.stop()
    updated = site.query("SELECT COUNT(*), SUM(menu_order) FROM wp_posts WHERE post_title LIKE 'w%%'")[0]
    final = site.streamer()
    expected = len(writer.ids) + writer.meta + int(updated[1] or 0)  # every UPDATE row is a row change
    records = site.consume(expect=expected, idle=3.0, timeout=120)
    assert final.stop() == 0, final.output()
    lost, _ = report("kill -9 x20", expected, records, 0.0)
    assert lost == 0
    ids = Counter(r.value["event_id"] for r in records)
    assert len(ids) == expected
    # Duplicates are whole re-sent transactions with identical ids: per post, first occurrences in order.
    for key in {r.key for r in records}:
        seen: list[tuple[str, int, int]] = []
        for r in sorted((r for r in records if r.key == key), key=lambda r: r.offset):
            c = (r.value["source"]["file"], r.value["source"]["pos"], r.value["source"]["row"])
            if c not in seen:
                seen.append(c)
        assert seen == sorted(seen), key


def test_sigterm_under_heavy_writes_exits_0_quickly_at_an_acked_boundary(site: Site) -> None:
    site.set_checkpoint()
    s = site.streamer()
    initial = site.checkpoint_path.read_text()
    writer = Writer(site, every=0.0).start()
    # Under load the streamer can take seconds to start: SIGTERM it only once it streams (its
    # checkpoint moved), else the signal lands before its handler exists.
    deadline = time.monotonic() + 60
    while site.checkpoint_path.read_text() == initial and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(2)
    began = time.monotonic()
    code = s.stop(signal.SIGTERM, timeout=30)
    took = time.monotonic() - began
    writer.stop()
    FIGURES.append(f"[sigterm] exit {code} after {took:.2f}s")
    assert code == 0, s.output()
    assert took < 10
    cp = json.loads(site.checkpoint_path.read_text())
    # Everything before the checkpoint is on the broker: a replay up to it yields only delivered ids.
    upto = site.cli("replay", "--from", site.start, "--to", f"{cp['file']}:{cp['pos']}")
    expected = {json.loads(line)["event_id"] for line in upto.stdout.splitlines()}
    delivered = {r.value["event_id"] for r in site.consume(idle=2.0)}
    assert expected and expected <= delivered


def test_checkpoint_disk_full_stops_with_a_clear_error(site: Site, tmp_path: Path) -> None:
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=True)
    try:
        site.config["checkpoint"]["path"] = str(mnt / "checkpoint.json")
        site.write_config()
        site.set_checkpoint()
        s = site.streamer()
        time.sleep(2)
        st = os.statvfs(mnt)  # fill what is left (the checkpoint and its lock file hold some): the next write fails
        (mnt / "filler").write_bytes(b"\0" * (st.f_bavail * st.f_frsize))
        try:
            (mnt / "filler2").write_bytes(b"\0" * 8192)
        except OSError:
            pass
        site.insert_post("cannot be checkpointed")
        code = s.wait(30)
        out = s.output()
        assert code == 5, out
        assert "cannot write the checkpoint" in out and "No space left on device" in out and "fix:" in out
        assert "Traceback" not in out
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_read_only_checkpoint_directory_stops_with_a_clear_error(site: Site, tmp_path: Path) -> None:
    cp_dir = tmp_path / "cp"
    cp_dir.mkdir()
    site.config["checkpoint"]["path"] = str(cp_dir / "checkpoint.json")
    site.write_config()
    site.set_checkpoint()
    s = site.streamer()
    time.sleep(2)
    subprocess.run(["chattr", "+i", str(cp_dir)], check=True)  # not even root may write there now
    try:
        site.insert_post("cannot be checkpointed")
        code = s.wait(30)
    finally:
        subprocess.run(["chattr", "-i", str(cp_dir)], check=False)
    out = s.output()
    assert code == 5, out
    assert "cannot write the checkpoint" in out and "Operation not permitted" in out
