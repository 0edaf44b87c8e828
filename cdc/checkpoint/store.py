"""The checkpoint: the binlog position where the next run starts, always a transaction boundary.

Two stores implement `CheckpointStore` (checkpoint.store): a small JSON file written atomically
(temp file, fsync, rename, fsync of the directory), so a crash leaves either the old or the new
checkpoint, never a torn one; or a record in a compacted Kafka topic (cdc/checkpoint/kafka.py).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cdc.core.changes import PreparedRef
from cdc.core.position import BinlogPosition
from cdc.errors import CheckpointError, ConfigError
from cdc.source.server import GtidSet

# The checkpoint's own format: 2 added `gtid_set`. Readers ignore keys they do not know, so a format-1
# checkpoint loads here (no GTID state yet: `run` derives it from the binlog), and a format-2 one in an
# older wpcdc (which then resumes by its file and position).
FORMAT = 2


@dataclass(frozen=True, slots=True)
class Checkpoint:
    position: BinlogPosition
    server_id: int | None  # of the source server, so a checkpoint is never applied to another server
    gtid: str | None = None
    updated_at: str | None = None
    # Snapshot work in progress (cdc.snapshot.snapshotter.SnapshotState.to_json), saved with the position it matches.
    snapshot: dict[str, Any] | None = None
    # XA transactions prepared before `position` whose outcome (XA COMMIT/ROLLBACK) comes after it:
    # their rows are read again from the binlog on a restart and published if they commit.
    xa_prepared: tuple[PreparedRef, ...] = ()
    # With GTID positions (source.position), the GTID state of everything before `position`: MySQL's
    # executed GTID set with tags (`uuid:1-42,uuid:tag:1-3`), MariaDB's gtid_binlog_pos (`0-1-42,1-2-7`:
    # the last GTID per domain). `run` resumes from it on any server of the topology; `position` and
    # `server_id` then only say where it was read. None: file/position checkpoint.
    gtid_set: str | None = None

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"format": FORMAT, "file": self.position.file, "pos": self.position.pos}
        if self.gtid:
            out["gtid"] = self.gtid
        if self.gtid_set is not None:
            out["gtid_set"] = self.gtid_set
        out["server_id"] = self.server_id
        out["updated_at"] = self.updated_at
        if self.snapshot:
            out["snapshot"] = self.snapshot
        if self.xa_prepared:
            out["xa_prepared"] = [{"xid": x.xid, "start": str(x.start), "end": str(x.end)} for x in self.xa_prepared]
        return out

    def stamped(self) -> Checkpoint:
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return dataclasses.replace(self, updated_at=now)

    @staticmethod
    def from_json(data: Any) -> Checkpoint:
        """Raises ValueError, KeyError, TypeError or ConfigError when `data` is not a checkpoint."""
        return Checkpoint(
            BinlogPosition(str(data["file"]), int(data["pos"])),
            int(data["server_id"]) if data.get("server_id") is not None else None,
            data.get("gtid"),
            data.get("updated_at"),
            data.get("snapshot") if isinstance(data.get("snapshot"), dict) else None,
            tuple(
                PreparedRef(str(x["xid"]), BinlogPosition.parse(x["start"]), BinlogPosition.parse(x["end"]))
                for x in data.get("xa_prepared") or ()
            ),
            str(GtidSet.parse(str(data["gtid_set"]))) if data.get("gtid_set") is not None else None,
        )


class CheckpointStore(Protocol):
    # Where it is, for messages: a path, or a topic and key.
    where: str

    def load(self) -> Checkpoint | None: ...

    def save(self, checkpoint: Checkpoint) -> Checkpoint:
        """Stores it with updated_at set; returns what was stored."""
        ...

    def reset(self) -> bool:
        """Forgets the checkpoint; False when there was none."""
        ...

    def close(self) -> None: ...


class FileCheckpointStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)

    def close(self) -> None:
        pass

    def load(self) -> Checkpoint | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CheckpointError(
                f"cannot read the checkpoint {self.path}: {exc.strerror}",
                "make checkpoint.path readable by the wpcdc user",
            ) from None
        try:
            return Checkpoint.from_json(json.loads(text))
        except (ValueError, KeyError, TypeError, ConfigError):
            raise CheckpointError(
                f"the checkpoint {self.path} is not a valid wpcdc checkpoint",
                "restore it from a backup, or set one with `wpcdc checkpoint set FILE:POS`",
            ) from None

    def save(self, checkpoint: Checkpoint) -> Checkpoint:
        stamped = checkpoint.stamped()
        data = (json.dumps(stamped.to_json(), indent=2) + "\n").encode()
        directory = self.path.parent if str(self.path.parent) else Path(".")
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise CheckpointError(
                f"cannot write the checkpoint {self.path}: {exc.strerror}",
                "free disk space or make checkpoint.path's directory writable; wpcdc stops rather than "
                "publish what it could not checkpoint",
            ) from None
        return stamped

    def reset(self) -> bool:
        try:
            self.path.unlink()
            return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise CheckpointError(f"cannot remove the checkpoint {self.path}: {exc.strerror}", "") from None
