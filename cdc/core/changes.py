"""What the source hands to the pipeline: row changes and transaction boundaries, in binlog order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cdc.core.position import BinlogPosition
from cdc.core.tables import WordPressTable


@dataclass(slots=True)
class RowChange:
    op: str  # "insert" | "update" | "delete"
    table: str
    wp: WordPressTable
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    file: str
    pos: int  # start of the rows event (of its transaction payload, if compressed); with `row` it identifies the change
    row: int
    timestamp: int
    gtid: str | None
    # Inside a compressed transaction (MySQL TRANSACTION_PAYLOAD): the rows event's 0-based ordinal
    # among the payload's inner events; `pos` is then the payload's position. None otherwise.
    event: int | None = None


@dataclass(slots=True)
class TransactionEnd:
    """Everything before `next_position` is a complete transaction; resuming there is safe."""

    next_position: BinlogPosition
    gtid: str | None
    timestamp: int


@dataclass(slots=True)
class Idle:
    """The server has nothing new (a heartbeat); the consumer may act on timers and stop flags.
    `position` is where the server's dump thread stands: everything before it has been read."""

    timestamp: int
    position: BinlogPosition | None = None


@dataclass(slots=True)
class UndecodableRows:
    """A rows event of a captured table whose row images the decoder could not read. It goes to the
    dead-letter path with its raw bytes instead of stopping the stream at the same place forever."""

    op: str
    table: str
    wp: WordPressTable
    file: str
    pos: int
    timestamp: int
    gtid: str | None
    error: str
    raw_event: bytes
    event: int | None = None  # as RowChange.event


SourceItem = RowChange | TransactionEnd | Idle | UndecodableRows
