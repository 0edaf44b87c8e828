"""A run's running totals: kept by the pipeline, read by metrics and progress displays."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from cdc.core.position import BinlogPosition


@dataclass
class RunStats:
    events: Counter[str] = field(default_factory=Counter)
    filtered: Counter[str] = field(default_factory=Counter)
    dead_letters: int = 0
    transactions: int = 0
    rows: int = 0
    last_position: BinlogPosition | None = None
