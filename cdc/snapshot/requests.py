"""How `wpcdc snapshot` reaches a running `wpcdc run`: request files in a directory next to the
checkpoint, and an exclusive lock that tells whether a streamer owns that checkpoint.

A request file is deleted only after a checkpoint that records the request has been written, so a
crash between reading and checkpointing cannot lose it (it is read again, and its id makes it run once).
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import IO

from cdc.errors import CheckpointError
from cdc.snapshot.snapshotter import SnapshotRequest


def requests_dir(checkpoint_path: Path) -> Path:
    return checkpoint_path.with_name(checkpoint_path.name + ".snapshot-requests")


class RequestInbox:
    def __init__(self, checkpoint_path: Path) -> None:
        self.dir = requests_dir(checkpoint_path)

    def submit(self, request: SnapshotRequest) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        target = self.dir / f"{request.id}.json"
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".", suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(request.to_json(), fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        return target

    def pending(self) -> list[SnapshotRequest]:
        try:
            names = sorted(p for p in self.dir.iterdir() if p.suffix == ".json" and not p.name.startswith("."))
        except FileNotFoundError:
            return []
        out = []
        for path in names:
            try:
                out.append(SnapshotRequest.from_json(json.loads(path.read_text())))
            except (OSError, ValueError, KeyError, TypeError):
                continue  # half-written by hand or foreign: ignored, left for a person to look at
        return out

    def done(self, request_id: str) -> None:
        try:
            (self.dir / f"{request_id}.json").unlink()
        except FileNotFoundError:
            pass


class CheckpointLock:
    """An exclusive flock on `<checkpoint>.lock`, held by whoever streams into that checkpoint."""

    def __init__(self, checkpoint_path: Path) -> None:
        self.path = checkpoint_path.with_name(checkpoint_path.name + ".lock")
        self._fh: IO[str] | None = None

    def try_acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            return False
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._fh = fh
        return True

    def acquire(self) -> None:
        if not self.try_acquire():
            raise CheckpointError(
                f"another wpcdc process (pid {self.holder() or '?'}) is streaming into this checkpoint "
                f"({self.path.with_suffix('')})",
                "stop it first, or give this process its own checkpoint.path; to snapshot while it runs, "
                "use `wpcdc snapshot` (it hands the request to the running process)",
            )

    def holder(self) -> int | None:
        try:
            return int(self.path.read_text().strip() or 0) or None
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None
