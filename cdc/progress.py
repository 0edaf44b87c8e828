"""Progress of a `replay` over a binlog range: a bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import time
from typing import TextIO

from cdc.pipeline import RunStats
from cdc.position import BinlogPosition


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
