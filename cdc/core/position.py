"""Binlog coordinates."""

from __future__ import annotations

import re
from dataclasses import dataclass

from cdc.errors import ConfigError

_POSITION = re.compile(r"^(?P<file>[^:\s]+):(?P<pos>\d+)$")


@dataclass(frozen=True, slots=True, order=False)
class BinlogPosition:
    file: str
    pos: int

    def __str__(self) -> str:
        return f"{self.file}:{self.pos}"

    def sort_key(self) -> tuple[str, int, int]:
        # Binlog files share a base name and a numeric extension that only grows (binlog.000042).
        base, _, ext = self.file.rpartition(".")
        return (base, int(ext) if ext.isdigit() else -1, self.pos)

    # The source compares its stop position with every transaction's end: in the same file (nearly
    # always) the positions alone decide, without building two keys.
    def __lt__(self, other: BinlogPosition) -> bool:
        if self.file == other.file:
            return self.pos < other.pos
        return self.sort_key() < other.sort_key()

    def __le__(self, other: BinlogPosition) -> bool:
        if self.file == other.file:
            return self.pos <= other.pos
        return self.sort_key() <= other.sort_key()

    @classmethod
    def parse(cls, text: str, what: str = "position") -> BinlogPosition:
        m = _POSITION.match(text.strip())
        if not m or int(m.group("pos")) < 4:
            raise ConfigError(
                f"{what} {text!r} is not a binlog position",
                "write it as FILE:POS, e.g. binlog.000042:1234 (positions start at 4; "
                "SHOW BINARY LOGS lists the files)",
            )
        return cls(m.group("file"), int(m.group("pos")))
