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

from cdc.changes import Idle, RowChange, TransactionEnd, UndecodableRows
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


# Called at transaction boundaries (at most a few times a second): position reached, stats so far.
ProgressHook = Callable[[BinlogPosition, RunStats], None]


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
        progress: ProgressHook | None = None,
    ) -> None:
        self.config = config
        self.mapper = mapper
        self.sink = sink
        self.store = store
        self.metrics = metrics
        self.stop = stop
        self.source_server_id = source_server_id
        self.progress = progress
        self.stats = RunStats()
        self._pending: TransactionEnd | None = None  # last boundary read but not yet committed
        self._unacked = 0
        self._last_commit = time.monotonic()
        self._last_commit_log = time.monotonic()
        self._events_at_last_log = 0

    def stream(self, start: BinlogPosition, *, blocking: bool, stop_at: BinlogPosition | None = None) -> None:
        """Read from `start` until the stop flag (or `stop_at`, or the end of the binlog when not
        blocking); commit what was read. Raises SourceError/SinkError/LookupUnavailable on failure."""
        source = BinlogSource(self.config, start, blocking=blocking, stop_at=stop_at)
        interval = self.config.checkpoint.interval_seconds
        max_pending = self.config.checkpoint.max_pending_events
        mapper, sink, metrics, stats, progress = self.mapper, self.sink, self.metrics, self.stats, self.progress
        last_progress = 0.0
        try:
            for item in source.items():
                if not metrics.source_up:
                    metrics.source_up = True
                    log.info(
                        "connected to the binlog at %s", start, extra={"event": "connected", "position": str(start)}
                    )
                if type(item) is RowChange:
                    stats.rows += 1
                    metrics.rows.inc()
                    metrics.source_event(item.timestamp)
                    mapped = mapper.map(item)
                    if mapped.events:
                        for event in mapped.events:
                            sink.send(event)
                            stats.events[event["event_type"]] += 1
                            metrics.published(event["event_type"])
                        self._unacked += len(mapped.events)
                        metrics.inflight = self._unacked
                        if mapped.decode_errors:
                            metrics.decode_errors.inc(mapped.decode_errors)
                    elif mapped.filtered is not None:
                        stats.filtered[mapped.filtered] += 1
                        metrics.filtered(mapped.filtered)
                    elif mapped.dead_letter is not None:
                        self._dead_letter(item, mapped.dead_letter)
                    continue
                if type(item) is TransactionEnd:
                    self._pending = item
                    stats.transactions += 1
                    metrics.transactions.inc()
                    metrics.source_event(item.timestamp)
                    now = time.monotonic()
                    if self._unacked >= max_pending or now - self._last_commit >= interval:
                        self.commit()
                    if progress is not None and now - last_progress >= 0.2:
                        last_progress = now
                        progress(item.next_position, stats)
                elif type(item) is UndecodableRows:
                    metrics.decode_errors.inc()
                    self._dead_letter(item, mapper.undecodable(item))
                elif type(item) is Idle:
                    metrics.source_idle()
                    if self._pending is not None and time.monotonic() - self._last_commit >= interval:
                        self.commit()
                if self.stop.is_set():
                    break
        finally:
            metrics.source_up = False
            source.close()
        self.commit()

    def _dead_letter(self, item: RowChange | UndecodableRows, record: dict[str, object]) -> None:
        log.warning(
            "dead-lettered row(s) at %s:%s (%s): %s", item.file, item.pos, item.table, record["error"],
            extra={"event": "dead_letter", "event_id": record["event_id"]},
        )  # fmt: skip
        self.sink.send_dead_letter(record)
        self.stats.dead_letters += 1
        self.metrics.dead_letters.inc()
        self._unacked += 1

    def commit(self) -> None:
        """Wait for the sink to acknowledge everything sent, then checkpoint the last boundary."""
        pending = self._pending
        if pending is None:
            return
        self.sink.flush()
        self.metrics.sink_up = True
        self._unacked = 0
        self.metrics.inflight = 0
        self._last_commit = time.monotonic()
        self._pending = None
        position = pending.next_position
        self.stats.last_position = position
        if self.store is None:
            return
        self.store.save(Checkpoint(position, self.source_server_id, pending.gtid))
        self.metrics.checkpointed(position.file, position.pos)
        if self._last_commit - self._last_commit_log >= self.config.log.checkpoint_log_seconds:
            total = sum(self.stats.events.values())
            log.info(
                "checkpoint %s (%d events since the last line, %.1fs behind the source)",
                position, total - self._events_at_last_log, self.metrics.lag_seconds(),
                extra={"event": "checkpoint", "position": str(position), "gtid": pending.gtid},
            )  # fmt: skip
            self._last_commit_log = self._last_commit
            self._events_at_last_log = total

    def abandon(self) -> None:
        """The sink failed: what it had not acknowledged will be sent again from the checkpoint."""
        self._pending = None
        self._unacked = 0
        self.metrics.inflight = 0

    def try_commit(self) -> None:
        """After a source failure the sink may still be healthy: keep what was read."""
        try:
            self.commit()
        except SinkError as exc:
            log.warning("could not commit after the failure: %s", exc.problem)
            self.abandon()


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
            reason = {SinkError: "sink", LookupUnavailable: "lookup"}.get(type(exc), "source")
            message = exc.problem if isinstance(exc, SourceError | SinkError) else str(exc)
            if time.monotonic() - started > 60:
                backoff = config.source.reconnect_backoff_initial_seconds  # it had been healthy for a while
            metrics.reconnect(reason)
            if reason == "sink":
                metrics.sink_up = False
                metrics.publish_errors.inc()
                metrics.publish_retries.inc()
            log.warning(
                "%s; restarting from the last checkpoint in %.1fs", message, backoff,
                extra={"event": "reconnect", "reason": reason, "error": message, "backoff_seconds": backoff},
            )  # fmt: skip
            recover(exc)
            if stop.wait(backoff):
                return
            backoff = min(backoff * 2, config.source.reconnect_backoff_max_seconds)
