"""The only module that knows the order: source -> mapping -> sink -> checkpoint.

Delivery rule: a checkpoint is written only after the sink has acknowledged every event of every
transaction before it, and it always names a transaction boundary. After any failure the stream
restarts from the last checkpoint, so a crash can duplicate the events of the transactions after it
(with the same event ids) but never lose one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from cdc.changes import Idle, RowChange, TransactionEnd
from cdc.checkpoint import Checkpoint, FileCheckpointStore
from cdc.config import Config
from cdc.errors import SinkError, SourceError
from cdc.mapping import Mapper
from cdc.metrics import Metrics
from cdc.position import BinlogPosition
from cdc.sink import Sink
from cdc.source import BinlogSource
from cdc.state import LookupUnavailable

log = logging.getLogger(__name__)


@dataclass
class RunStats:
    events: Counter[str] = field(default_factory=Counter)
    filtered: Counter[str] = field(default_factory=Counter)
    dead_letters: int = 0
    transactions: int = 0
    rows: int = 0
    last_position: BinlogPosition | None = None


class Pipeline:
    """Streams from a position to a sink, committing boundaries to an optional checkpoint store."""

    def __init__(
        self,
        config: Config,
        mapper: Mapper,
        sink: Sink,
        store: FileCheckpointStore | None,
        metrics: Metrics,
        stop: threading.Event,
        source_server_id: int,
    ) -> None:
        self.config = config
        self.mapper = mapper
        self.sink = sink
        self.store = store
        self.metrics = metrics
        self.stop = stop
        self.source_server_id = source_server_id
        self.stats = RunStats()
        self._pending: TransactionEnd | None = None  # last boundary read but not yet committed
        self._unacked = 0
        self._last_commit = time.monotonic()

    def stream(self, start: BinlogPosition, *, blocking: bool, stop_at: BinlogPosition | None = None) -> None:
        """Read from `start` until the stop flag (or `stop_at`, or the end of the binlog when not
        blocking); commit what was read. Raises SourceError/SinkError/LookupUnavailable on failure."""
        source = BinlogSource(self.config, start, blocking=blocking, stop_at=stop_at)
        interval = self.config.checkpoint.interval_seconds
        max_pending = self.config.checkpoint.max_pending_events
        mapper, sink, metrics, stats = self.mapper, self.sink, self.metrics, self.stats
        try:
            for item in source.items():
                if type(item) is RowChange:
                    stats.rows += 1
                    mapped = mapper.map(item)
                    if mapped.events:
                        for event in mapped.events:
                            sink.send(event)
                            stats.events[event["event_type"]] += 1
                            metrics.published(event["event_type"])
                        self._unacked += len(mapped.events)
                    elif mapped.filtered is not None:
                        stats.filtered[mapped.filtered] += 1
                        metrics.filtered(mapped.filtered)
                    elif mapped.dead_letter is not None:
                        record = mapped.dead_letter
                        log.warning(
                            "dead-lettered row %s:%s row %s of %s: %s",
                            item.file,
                            item.pos,
                            item.row,
                            item.table,
                            record["error"],
                        )
                        sink.send_dead_letter(record)
                        stats.dead_letters += 1
                        metrics.dead_letters.inc()
                        self._unacked += 1
                    continue
                if type(item) is TransactionEnd:
                    self._pending = item
                    stats.transactions += 1
                    metrics.transactions.inc()
                    if self._unacked >= max_pending or time.monotonic() - self._last_commit >= interval:
                        self.commit()
                elif type(item) is Idle and self._pending is not None:
                    if time.monotonic() - self._last_commit >= interval:
                        self.commit()
                if self.stop.is_set():
                    break
        finally:
            source.close()
        self.commit()

    def commit(self) -> None:
        """Wait for the sink to acknowledge everything sent, then checkpoint the last boundary."""
        pending = self._pending
        if pending is None:
            return
        self.sink.flush()
        self._unacked = 0
        self._last_commit = time.monotonic()
        self._pending = None
        self.stats.last_position = pending.next_position
        if self.store is not None:
            self.store.save(Checkpoint(pending.next_position, self.source_server_id, pending.gtid))
            self.metrics.checkpoint_pos.set(pending.next_position.pos)

    def abandon(self) -> None:
        """The sink failed: what it had not acknowledged will be sent again from the checkpoint."""
        self._pending = None
        self._unacked = 0

    def try_commit(self) -> None:
        """After a source failure the sink may still be healthy: keep what was read."""
        try:
            self.commit()
        except SinkError as exc:
            log.warning("could not commit after the failure: %s", exc.problem)
            self._pending = None


TRANSIENT = (SourceError, SinkError, LookupUnavailable)


def supervise(
    attempt: Callable[[], None],
    recover: Callable[[Exception], None],
    config: Config,
    metrics: Metrics,
    stop: threading.Event,
) -> None:
    """Run `attempt` until it returns; on a transient failure call `recover` and retry with capped
    exponential backoff. Fatal source errors and all other errors propagate."""
    backoff = config.source.reconnect_backoff_initial_seconds
    while True:
        started = time.monotonic()
        try:
            attempt()
            return
        except TRANSIENT as exc:
            if isinstance(exc, SourceError) and exc.fatal:
                raise
            reason = type(exc).__name__
            message = exc.problem if isinstance(exc, SourceError | SinkError) else str(exc)
            if time.monotonic() - started > 60:
                backoff = config.source.reconnect_backoff_initial_seconds  # it had been healthy for a while
            metrics.reconnect(reason)
            log.warning("%s; restarting from the last checkpoint in %.1fs", message, backoff)
            recover(exc)
            if stop.wait(backoff):
                return
            backoff = min(backoff * 2, config.source.reconnect_backoff_max_seconds)
