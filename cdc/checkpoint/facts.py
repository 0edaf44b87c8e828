"""The fact journal: what the mapper's caches answered since the last checkpoint, so that the events a
restart sends again are byte-identical to the first copies.

A meta or term row carries only a post id; the post's type and status come from the mapper's cache,
filled by wp_posts rows seen earlier in the stream or by a database lookup. A restart re-reads from
the checkpoint with a cache that lacks the rows before it, and a lookup then answers with today's
state (`post_type: null` for a post deleted since). So the first read of each cache entry after a
checkpoint is appended here, value and origin, before an event built from it goes to the sink; a
restart from that checkpoint puts those values back (`WordPressState.restore`).

`<checkpoint>.facts`: a header line naming the checkpoint position, then one JSON array per fact.
Unbuffered appends (one write(2) each) survive kill -9; a journal whose header names another
position (a crash between writing the checkpoint and resetting the journal) is ignored, since then
nothing after the new checkpoint was mapped yet.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import orjson

from cdc.core.position import BinlogPosition
from cdc.errors import CheckpointError
from cdc.mapping.state import WordPressState

log = logging.getLogger(__name__)

Fact = tuple[str, tuple[int, int], tuple[object, ...] | None, bool]


class FactJournal:
    def __init__(self, checkpoint_path: Path | str) -> None:
        self.path = Path(f"{checkpoint_path}.facts")
        self._fd: int | None = None
        self._state: WordPressState | None = None
        self._error: OSError | None = None

    def attach(self, state: WordPressState) -> None:
        """Record `state`'s reads; `rewind` before each (re)start of the stream."""
        self._state = state
        state.recorder = self

    def rewind(self, position: BinlogPosition) -> None:
        """The stream restarts at `position` (the checkpoint): back to what the first pass knew there."""
        facts = self._load(position)
        assert self._state is not None
        self._state.restore(facts)
        if not facts:
            self.reset(position, clear=False)
        elif self._fd is None:
            self._fd = self._open()

    def record(self, cache: str, key: tuple[int, int], value: tuple[object, ...] | None, from_db: bool) -> None:
        if self._fd is None or self._error is not None:
            return
        # Never raises: the mapper would turn it into a dead letter. A failure stops the run at the
        # next checkpoint instead (CheckpointError).
        try:
            os.write(self._fd, orjson.dumps([cache, key, None if value is None else list(value), from_db]) + b"\n")
        except OSError as exc:
            self._error = exc
        except Exception as exc:
            self._error = OSError(f"cannot encode a fact: {exc}")

    def reset(self, position: BinlogPosition, clear: bool = True) -> None:
        """A checkpoint at `position` was written: the facts before it are no longer needed."""
        if self._error is not None:
            raise self._failed(self._error)
        try:
            if self._fd is None:
                self._fd = self._open()
            os.ftruncate(self._fd, 0)
            os.write(self._fd, orjson.dumps({"checkpoint": str(position)}) + b"\n")
        except OSError as exc:
            raise self._failed(exc) from None
        if clear and self._state is not None:
            self._state.checkpointed()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def _failed(self, exc: OSError) -> CheckpointError:
        return CheckpointError(
            f"cannot write the checkpoint's fact journal {self.path}: {exc.strerror or exc}",
            "free space or fix the permissions of the checkpoint directory (checkpoint.path)",
        )

    def _load(self, position: BinlogPosition) -> list[Fact]:
        try:
            lines = self.path.read_bytes().splitlines()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise self._failed(exc) from None
        if not lines:
            return []
        try:
            header: Any = orjson.loads(lines[0])
        except orjson.JSONDecodeError:
            header = None
        if not isinstance(header, dict) or header.get("checkpoint") != str(position):
            return []
        facts: list[Fact] = []
        for line in lines[1:]:
            try:
                cache, key, value, from_db = orjson.loads(line)
                facts.append(
                    (cache, (int(key[0]), int(key[1])), None if value is None else tuple(value), bool(from_db))
                )
            except (orjson.JSONDecodeError, ValueError, TypeError, IndexError):
                break  # a torn last line (the process died mid-write): nothing after it was sent
        return facts
