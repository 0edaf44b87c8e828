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
from tests.integration.conftest import Site, status_statement

pytestmark = pytest.mark.integration


class Hostile:
    """Hostile writes, one per call, on connections of their own; remembers what must come out (an
    event, or a dead letter of that one row) and what must not (rows of rolled-back XA transactions)."""

    OPS = ("big_integer", "surrogate", "xa_rollback", "truncate", "rotate_and_purge", "xa_commit")

    def __init__(self, site: Site) -> None:
        self.site = site
        self.conn = site.stack.db.root(site.database)
        self.lax = site.stack.db.root(site.database)  # WordPress's non-strict SQL mode
        with self.lax.cursor() as cur:
            cur.execute("SET SESSION sql_mode = ''")
        self.posts: list[int] = []  # each: a post_created
        self.rows: list[tuple[int, str]] = []  # (post_id, meta_key or "term"): each an event or a dead letter
        self.never: set[int] = set()  # post ids written only by rolled-back XA transactions
        self.done: Counter[str] = Counter()
        self.n = 0
        self.quiet = False  # the writer is paused until the next run started (rotate_and_purge)

    def _post(self, cur: object, title: str) -> int:
        cur.execute(  # type: ignore[attr-defined]
            "INSERT INTO wp_posts (post_title, post_status, post_content, post_excerpt, to_ping, pinged,"
            " post_content_filtered) VALUES (%s, 'draft', '', '', '', '', '')",
            (title,),
        )
        return int(cur.lastrowid)  # type: ignore[attr-defined]

    def run(self, op: str, writer: Writer, checkpoint: Path) -> None:
        self.n += 1
        getattr(self, op)(writer, checkpoint)
        self.done[op] += 1

    def big_integer(self, writer: Writer, checkpoint: Path) -> None:
        with self.conn.cursor() as cur:
            pid = self._post(cur, f"h-big-{self.n}")
            cur.execute(
                "INSERT INTO wp_postmeta (post_id, meta_key, meta_value) VALUES (%s, 'big', %s)",
                (pid, "i:" + "9" * 100 + ";"),
            )
        self.posts.append(pid)
        self.rows.append((pid, "big"))

    def surrogate(self, writer: Writer, checkpoint: Path) -> None:
        with self.lax.cursor() as cur:  # stored as is: bytes ED A0 80, an encoded surrogate
            pid = self._post(cur, f"h-surrogate-{self.n}")
            cur.execute(
                "INSERT INTO wp_postmeta (post_id, meta_key, meta_value) VALUES (%s, 'surrogate', X'EDA080')", (pid,)
            )
        self.posts.append(pid)
        self.rows.append((pid, "surrogate"))

    def _xa(self, outcome: str) -> int:
        xid = f"'wpcdc-{outcome}-{self.n}'"
        with self.conn.cursor() as cur:
            cur.execute(f"XA START {xid}")
            pid = self._post(cur, f"h-xa-{outcome}-{self.n}")
            cur.execute("INSERT INTO wp_postmeta (post_id, meta_key, meta_value) VALUES (%s, 'xa', 'x')", (pid,))
            cur.execute(f"XA END {xid}")
            cur.execute(f"XA PREPARE {xid}")
            cur.execute(f"XA {outcome.upper()} {xid}")
        return pid

    def xa_rollback(self, writer: Writer, checkpoint: Path) -> None:
        self.never.add(self._xa("rollback"))

    def xa_commit(self, writer: Writer, checkpoint: Path) -> None:
        pid = self._xa("commit")
        self.posts.append(pid)
        self.rows.append((pid, "xa"))

    def truncate(self, writer: Writer, checkpoint: Path) -> None:
        with self.conn.cursor() as cur:
            pid = self._post(cur, f"h-terms-{self.n}")
            cur.execute(
                "INSERT INTO wp_term_relationships (object_id, term_taxonomy_id, term_order) VALUES (%s, 1, 0)", (pid,)
            )
            cur.execute("TRUNCATE TABLE wp_term_relationships")
        self.posts.append(pid)
        self.rows.append((pid, "term"))

    def rotate_and_purge(self, writer: Writer, checkpoint: Path) -> None:
        """A quiet rotation, then the old files purged: only safe once wpcdc has read everything, so
        wait until its checkpoint reached the binlog end (with the writer paused). The writer stays
        paused until the next run has started: a write would move the checkpoint into the new file."""
        writer.pause()
        self.quiet = True
        try:
            end = self.site.position()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and _checkpoint(checkpoint) != end:
                time.sleep(0.1)
            if _checkpoint(checkpoint) != end:
                self.done["purge skipped: wpcdc not caught up"] += 1
                writer.resume()
                self.quiet = False
                return
            with self.conn.cursor() as cur:
                cur.execute("FLUSH BINARY LOGS")
                cur.execute(status_statement(self.site.stack.kind))
                new = cur.fetchone()[0]
                time.sleep(1.5)  # heartbeats: wpcdc sees the rotation
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:  # MariaDB keeps a file until its binlog checkpoint passed
                    cur.execute(f"PURGE BINARY LOGS TO '{new}'")
                    cur.execute("SHOW BINARY LOGS")
                    if [r[0] for r in cur.fetchall()] == [new]:
                        break
                    time.sleep(0.2)
                else:
                    self.done["purge incomplete"] += 1
        except BaseException:
            writer.resume()
            self.quiet = False
            raise

    def close(self) -> None:
        self.conn.close()
        self.lax.close()


def _checkpoint(path: Path) -> str:
    try:
        cp = json.loads(path.read_text())
    except (OSError, ValueError):
        return ""
    return f"{cp['file']}:{cp['pos']}"


def test_kill_9_twenty_times_under_load(site: Site) -> None:
    """kill -9 twenty times while a writer runs, with hostile writes among them: a 100-digit
    serialized integer, an encoded surrogate stored in non-strict mode, XA transactions rolled back
    and committed, a TRUNCATE of a captured table, a quiet rotation whose old files are then purged.
    0 lost, nothing from a rolled-back transaction, duplicates byte-identical, wpcdc never exits."""
    rng = random.Random(20)
    site.set_checkpoint()
    writer = Writer(site, every=0.01).start()
    hostile = Hostile(site)
    exits: list[str] = []
    big_txns = 0
    for i in range(20):
        s = site.streamer()
        time.sleep(rng.uniform(0.8, 2.0))  # spawn + connect + some streaming, then anywhere in the cycle
        if hostile.quiet:  # the run after a quiet rotation and purge has started from its checkpoint
            time.sleep(3)
            writer.resume()
            hostile.quiet = False
        op = Hostile.OPS[i % len(Hostile.OPS)]
        hostile.run(op, writer, site.checkpoint_path)
        time.sleep(rng.uniform(0.0, 0.5))
        code = s.proc.poll()
        if code is not None:  # collected, so that one run shows every hostile write that stops wpcdc
            lines = [line for line in s.output().splitlines() if line.strip()]
            exits.append(f"cycle {i} after {op}: exit {code}: {lines[-1][:300] if lines else ''}")
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
    writer.resume()
    writer.stop()
    hostile.close()
    updated = site.query("SELECT COUNT(*), SUM(menu_order) FROM wp_posts WHERE post_title LIKE 'w%%'")[0]
    final = site.streamer()
    regular = len(writer.ids) + writer.meta + int(updated[1] or 0)  # every UPDATE row is a row change
    expected = regular + len(hostile.posts) + len(hostile.rows)
    records = site.consume(expect=expected, idle=3.0, timeout=120)
    dead = site.consume(topic=site.dead_letter_topic, idle=1.0, timeout=30)
    if final.proc.poll() is not None:
        lines = [line for line in final.output().splitlines() if line.strip()]
        exits.append(f"final run: exit {final.proc.poll()}: {lines[-1][:300] if lines else ''}")
    final_code = final.stop()

    writer_posts = set(writer.ids)
    ids = Counter(r.value["event_id"] for r in records if r.value["post_id"] in writer_posts)
    lost, _ = report("kill -9 x20", regular, [r for r in records if r.value["post_id"] in writer_posts], 0.0)
    copies: dict[str, set[bytes]] = {}
    for r in records + dead:
        copies.setdefault(r.value["event_id"], set()).add(r.raw)
    differing = sorted(k for k, v in copies.items() if len(v) > 1)
    created = {r.value["post_id"] for r in records if r.value["event_type"] == "post_created"}
    hostile_lost = [p for p in hostile.posts if p not in created]
    got_rows = {(r.value["post_id"], r.value.get("data", {}).get("meta_key") or "term") for r in records
                if r.value["event_type"].startswith(("post_meta_", "post_term_"))}  # fmt: skip
    dead_posts = {r.value.get("post_id") for r in dead}
    rows_lost = [row for row in hostile.rows if row not in got_rows and row[0] not in dead_posts]
    uncommitted = [r.value["event_id"] for r in records + dead if r.value.get("post_id") in hostile.never]
    truncates = [
        r for r in records + dead
        if "truncat" in r.value["event_type"] or "truncat" in str(r.value.get("error", "")).lower()
    ]  # fmt: skip
    resent = sum(n - 1 for n in Counter(r.value["event_id"] for r in records + dead).values())
    FIGURES.append(
        f"[kill -9 x20 hostile] ops {dict(hostile.done)}; hostile posts {len(hostile.posts)} "
        f"(lost {len(hostile_lost)}), hostile rows {len(hostile.rows)} (lost {len(rows_lost)}), dead letters "
        f"{len(dead)}, uncommitted published {len(uncommitted)}, truncate records {len(truncates)}, "
        f"re-sent copies {resent} ({len(differing)} ids whose copies differ), wpcdc exited in {len(exits)}/20 cycles"
    )
    FIGURES.extend(f"[kill -9 x20 hostile] {e}" for e in exits)
    assert not exits, exits
    assert final_code == 0, final.output()
    assert lost == 0 and len(ids) == regular
    assert not hostile_lost and not rows_lost, (hostile_lost, rows_lost)
    assert not uncommitted, uncommitted
    assert not differing, differing[:5]
    assert len(truncates) >= hostile.done["truncate"]
    assert hostile.done["rotate_and_purge"] >= 3 and not hostile.done["purge skipped: wpcdc not caught up"]
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

    def where() -> tuple[str, int]:
        cp = json.loads(site.checkpoint_path.read_text())
        return cp["file"], cp["pos"]

    initial = where()
    writer = Writer(site, every=0.0).start()
    # Under load the streamer can take seconds to start: SIGTERM it only once it streams (its
    # checkpoint's position moved: with GTID positions `run` first adds the GTID state, at the same
    # position), else the signal lands before its handler exists.
    deadline = time.monotonic() + 60
    while where() == initial and time.monotonic() < deadline:
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
