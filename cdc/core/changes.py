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
    # The row's 0-based ordinal among the captured rows of its transaction, across rows events: with
    # `gtid` it identifies the change on every server of a replication topology (rows events may be
    # split or compressed differently on each server; the transaction's rows are the same).
    txn_row: int = 0


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
    txn_row: int = 0  # as RowChange.txn_row (an undecodable rows event takes one ordinal)


@dataclass(frozen=True, slots=True)
class PreparedRef:
    """Where a prepared XA transaction is in the binlog: from `start` (its first event) to `end` (just
    after its XA_PREPARE event). The checkpoint keeps these, so a restart can read the rows again and
    still publish them if the transaction commits later."""

    xid: str
    start: BinlogPosition
    end: BinlogPosition


@dataclass(slots=True)
class XAPrepared:
    """An XA transaction reached XA PREPARE: its rows are in the binlog, its outcome is not yet. The
    outcome comes later as a transaction of its own (XA COMMIT / XA ROLLBACK, from any session, maybe
    after a server restart). `one_phase` (MySQL's XA COMMIT ... ONE PHASE) means it committed here."""

    ref: PreparedRef
    end: TransactionEnd
    items: list[RowChange | UndecodableRows]
    one_phase: bool = False


@dataclass(slots=True)
class XAOutcome:
    """XA COMMIT or XA ROLLBACK of a prepared transaction; itself a transaction (`end`)."""

    xid: str
    committed: bool
    end: TransactionEnd


@dataclass(slots=True)
class TableChange:
    """TRUNCATE, DROP or RENAME of a captured table: a DDL query, so no rows event tells of it."""

    kind: str  # "truncated" | "dropped" | "renamed"
    table: str
    wp: WordPressTable
    renamed_from: str | None  # renames only: the names as written (db.table when another database)
    renamed_to: str | None
    index: int  # the table's place in its statement (DROP TABLE a, b): with `pos` it identifies the change
    file: str
    pos: int  # start of the query event
    timestamp: int
    gtid: str | None
    statement: str


SourceItem = RowChange | TransactionEnd | Idle | UndecodableRows | XAPrepared | XAOutcome | TableChange
