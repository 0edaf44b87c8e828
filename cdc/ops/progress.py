"""Progress of a `replay` over a binlog range or of a snapshot: a bar on a terminal, plain lines
otherwise."""

from __future__ import annotations

import time
from typing import TextIO

from cdc.core.position import BinlogPosition
from cdc.ops.stats import RunStats


class RangeProgress:
    def __init__(
        self,
        files: list[tuple[str, int]],
        start: BinlogPosition,
        end: BinlogPosition,
        out: TextIO,
        tty: bool,
        line_interval: float = 5.0,
    ) -> None:
        self._base: dict[str, int] = {}
        offset = 0
        for name, size in files:
            self._base[name] = offset
            offset += size
        self._start = self._offset(start)
        self._total = max(1, self._offset(end) - self._start)
        self._end = end
        self._out = out
        self._tty = tty
        self._interval = line_interval
        self._began = time.monotonic()
        self._last_line = self._began

    def _offset(self, p: BinlogPosition) -> int:
        return self._base.get(p.file, 0) + p.pos

    def __call__(self, position: BinlogPosition, stats: RunStats) -> None:
        now = time.monotonic()
        if not self._tty and now - self._last_line < self._interval:
            return
        self._last_line = now
        self._out.write(self.render(position, stats, now))
        self._out.flush()

    def render(self, position: BinlogPosition, stats: RunStats, now: float) -> str:
        done = min(1.0, max(0.0, (self._offset(position) - self._start) / self._total))
        elapsed = max(now - self._began, 1e-6)
        events = sum(stats.events.values())
        rate = events / elapsed
        eta = elapsed * (1 - done) / done if done > 0 else 0.0
        text = (
            f"{done * 100:5.1f}%  {position} of {self._end}  {events:,} events  {rate:,.0f} ev/s  "
            f"ETA {int(eta) // 60}:{int(eta) % 60:02d}"
        )
        if self._tty:
            filled = int(done * 30)
            return f"\r[{'#' * filled}{'.' * (30 - filled)}] {text}\x1b[K"
        return f"replay progress: {text}\n"

    def finish(self) -> None:
        if self._tty:
            self._out.write("\n")
            self._out.flush()


class SnapshotProgress:
    """posts done / total, rate and ETA of one snapshot."""

    def __init__(self, out: TextIO, tty: bool, line_interval: float = 5.0) -> None:
        self._out = out
        self._tty = tty
        self._interval = line_interval
        self._began = time.monotonic()
        self._first_done: int | None = None
        self._last_line = 0.0
        self._shown = False

    def __call__(self, snapshot_id: str, done: int, total: int | None, note: str = "", force: bool = False) -> None:
        now = time.monotonic()
        if not force and not self._tty and now - self._last_line < self._interval:
            return
        self._last_line = now
        self._shown = True
        self._out.write(self.render(snapshot_id, done, total, note, now))
        self._out.flush()

    def render(self, snapshot_id: str, done: int, total: int | None, note: str, now: float) -> str:
        if self._first_done is None:
            self._first_done = done
            self._began = now
        elapsed = max(now - self._began, 1e-6)
        rate = (done - self._first_done) / elapsed
        if total:
            frac = min(1.0, done / total)
            left = (total - done) / rate if rate > 0 else 0.0
            text = (
                f"{done:,}/{total:,} posts ({frac * 100:5.1f}%)  {rate:,.0f} posts/s  "
                f"ETA {int(left) // 60}:{int(left) % 60:02d}"
            )
        else:
            frac = 0.0
            text = f"{done:,} posts  {rate:,.0f} posts/s"
        if note:
            text = f"{text}  {note}" if done else note
        if self._tty:
            filled = int(frac * 30)
            return f"\r[{'#' * filled}{'.' * (30 - filled)}] snapshot {snapshot_id}: {text}\x1b[K"
        return f"snapshot {snapshot_id}: {text}\n"

    def finish(self) -> None:
        if self._tty and self._shown:
            self._out.write("\n")
            self._out.flush()
