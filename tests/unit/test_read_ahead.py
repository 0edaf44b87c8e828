"""The source's read-ahead: the same items in the same order, one prefetch for a run of transactions."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from cdc.core.changes import Idle, RowChange, SourceItem, TransactionEnd
from cdc.core.position import BinlogPosition
from cdc.core.tables import TableKind
from cdc.errors import SourceError
from cdc.source import binlog
from cdc.source.binlog import read_ahead
from tests.rows import change, meta_row


def end(pos: int) -> TransactionEnd:
    return TransactionEnd(BinlogPosition("b.000001", pos), None, 0)


def run(items: list[Any], ready: list[bool], fail: Exception | None = None) -> list[Any]:
    """What the consumer sees, with "prefetch [n rows]" where prefetch was called."""
    log: list[Any] = []
    answers = iter(ready)

    def source() -> Iterator[SourceItem]:
        yield from items
        if fail is not None:
            raise fail

    def prefetch(rows: list[RowChange]) -> None:
        log.append(("prefetch", [r.after["meta_id"] for r in rows if r.after]))

    try:
        for item in read_ahead(source(), lambda: next(answers), prefetch):
            log.append(item)
    except SourceError as exc:
        log.append(exc)
    return log


def test_transactions_already_received_share_one_prefetch_and_keep_their_order() -> None:
    a, b, c = (change(TableKind.POSTMETA, "insert", after=meta_row(i, 5)) for i in (1, 2, 3))
    idle = Idle(0)
    # After a's transaction the next packet is received (hold on), after b's it is not (release).
    log = run([a, end(10), b, end(20), idle, c, end(30)], ready=[True, False, False])
    assert log == [("prefetch", [1, 2]), a, end(10), b, end(20), idle, ("prefetch", [3]), c, end(30)]


def test_a_transaction_without_rows_or_anything_else_is_passed_on_at_once() -> None:
    idle = Idle(0)
    assert run([end(10), idle, end(20)], ready=[]) == [end(10), idle, end(20)]  # ready() is not even asked


def test_an_error_comes_after_the_held_items_which_are_not_prefetched() -> None:
    a = change(TableKind.POSTMETA, "insert", after=meta_row(1, 5))
    error = SourceError("the binlog connection was lost")
    assert run([a, end(10)], ready=[True], fail=error) == [a, end(10), error]


def test_at_most_read_ahead_rows_are_held(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(binlog, "READ_AHEAD_ROWS", 2)
    rows = [change(TableKind.POSTMETA, "insert", after=meta_row(i, 5)) for i in (1, 2, 3)]
    log = run([*rows, end(10)], ready=[False])
    assert log == [("prefetch", [1, 2]), rows[0], rows[1], ("prefetch", [3]), rows[2], end(10)]
