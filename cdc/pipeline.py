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
from collections.abc import Callable, Sequence

from cdc.checkpoint.facts import FactJournal
from cdc.checkpoint.store import Checkpoint, CheckpointStore
from cdc.config import Config
from cdc.core.changes import (
    Idle,
    PreparedRef,
    RowChange,
    TableChange,
    TransactionEnd,
    UndecodableRows,
    XAOutcome,
    XAPrepared,
)
from cdc.core.position import BinlogPosition
from cdc.errors import LookupUnavailable, SinkError, SourceError
from cdc.mapping.mapper import Mapper
from cdc.ops.metrics import Metrics
from cdc.ops.stats import RunStats
from cdc.sink.kafka import Sink
from cdc.snapshot.requests import RequestInbox
from cdc.snapshot.snapshotter import Snapshotter
from cdc.source.binlog import BinlogSource
from cdc.source.server import GtidSet

log = logging.getLogger(__name__)

# Filter reason (wpcdc_rows_filtered_total{reason}): rows of an XA transaction rolled back after XA PREPARE.
XA_ROLLED_BACK = "xa_rolled_back"

# Called at transaction boundaries (at most a few times a second): position reached, stats so far.
ProgressHook = Callable[[BinlogPosition, RunStats], None]


class Pipeline:
    """Streams from a position to a sink, committing boundaries to an optional checkpoint store."""

    def __init__(
        self,
        config: Config,
        mapper: Mapper,
        sink: Sink,
        store: CheckpointStore | None,
        metrics: Metrics,
        stop: threading.Event,
        source_server_id: int,
        progress: ProgressHook | None = None,
        snapshot: Snapshotter | None = None,
        inbox: RequestInbox | None = None,
    ) -> None:
        self.config = config
        self.mapper = mapper
        self.sink = sink
        self.store = store
        self.metrics = metrics
        self.stop = stop
        self.source_server_id = source_server_id
        self.progress = progress
        self.snapshot = snapshot
        self.inbox = inbox
        self._accepted: list[str] = []  # request ids to delete from the inbox after the next checkpoint
        self._last_inbox_poll = 0.0
        self.stats = RunStats()
        self._pending: TransactionEnd | None = None  # last boundary read but not yet committed
        self._unacked = 0
        self._last_commit = time.monotonic()
        self._last_commit_log = time.monotonic()
        self._events_at_last_log = 0
        self._gtid: str | None = None
        self._gtids: GtidSet | None = None  # GTID state after the last boundary read (GTID positions only)
        # Prepared XA transactions whose outcome has not been read yet, with their held rows; and the
        # same as of the last checkpoint (what a restart from that checkpoint starts with).
        self._prepared: dict[str, XAPrepared] = {}
        self._prepared_saved: dict[str, XAPrepared] = {}
        self._last_saved: BinlogPosition | None = None
        self.stop_when_snapshot_done = False  # `wpcdc snapshot` without a running `run`
        self.facts: FactJournal | None = None  # what the mapper's caches answered since the checkpoint
        self.snapshot_progress: Callable[[Snapshotter], None] | None = None

    def stream(
        self,
        start: BinlogPosition,
        *,
        blocking: bool,
        stop_at: BinlogPosition | None = None,
        prepared: Sequence[PreparedRef] = (),
        gtid_start: GtidSet | None = None,
        mariadb: bool = False,
    ) -> None:
        """Read from `start` until the stop flag (or `stop_at`, or the end of the binlog when not
        blocking); commit what was read. `prepared`: the checkpoint's XA transactions still waiting
        for their outcome. `gtid_start`: resume by GTID from that state instead (the server finds the
        place; `mariadb` says which protocol), and keep the state in every checkpoint. Raises
        SourceError/SinkError/LookupUnavailable on failure."""
        self._prepared = self._load_prepared(prepared)
        self._last_saved = start
        self._gtids = gtid_start
        source = BinlogSource(
            self.config, start, blocking=blocking, stop_at=stop_at, prefetch=self.mapper.prefetch,
            prefetch_changes=self.mapper.prefetch_changes, gtid_start=gtid_start, is_mariadb=mariadb,
        )  # fmt: skip
        interval = self.config.checkpoint.interval_seconds
        max_pending = self.config.checkpoint.max_pending_events
        metrics, stats, progress = self.metrics, self.stats, self.progress
        snapshot = self.snapshot  # after a failure the runner restores it from the checkpoint (no chunk in flight)
        last_progress = 0.0
        try:
            for item in source.items():
                if not metrics.source_up:
                    metrics.source_up = True
                    metrics.source_connected_at = time.monotonic()
                    metrics.last_idle_at = time.time()  # heard from it just now
                    log.info(
                        "connected to the binlog at %s", start, extra={"event": "connected", "position": str(start)}
                    )
                if type(item) is RowChange:
                    self._row(item)
                    continue
                if type(item) is XAPrepared or type(item) is XAOutcome:
                    item = self._xa(item)
                if type(item) is TransactionEnd:
                    self._pending = item
                    self._gtid = item.gtid
                    if self._gtids is not None:
                        self._gtids = self._gtids.add(item.gtid)
                    stats.transactions += 1
                    metrics.source_event(item.timestamp)
                    now = time.monotonic()
                    if snapshot is not None:
                        self._poll_inbox(now)
                        if snapshot.active:
                            self._snapshot_at(item)
                    if self._unacked >= max_pending or now - self._last_commit >= interval:
                        self.commit()
                    if progress is not None and now - last_progress >= 0.2:
                        last_progress = now
                        progress(item.next_position, stats)
                elif type(item) is UndecodableRows:
                    self._undecodable(item)
                elif type(item) is TableChange:
                    self._table_change(item)
                elif type(item) is Idle:
                    metrics.source_idle()
                    self._flush_counters()
                    if snapshot is not None:
                        self._poll_inbox(time.monotonic())
                    active = snapshot is not None and snapshot.active
                    if item.position is not None and (active or item.position != self._last_saved):
                        # Nothing else is coming: the heartbeat position is a boundary the stream reached,
                        # maybe in a newer file after a quiet rotation. The checkpoint follows it there, so
                        # purging the old file later is not mistaken for a gap.
                        self._pending = TransactionEnd(item.position, self._gtid, item.timestamp)
                        if active:
                            self._snapshot_at(self._pending)
                    if self._pending is not None and time.monotonic() - self._last_commit >= interval:
                        self.commit()
                if self.stop.is_set() or (self.stop_when_snapshot_done and snapshot and not snapshot.active):
                    break
        finally:
            metrics.source_up = False
            source.close()
        self.commit()

    def _row(self, item: RowChange) -> None:
        self.stats.rows += 1
        self.metrics.source_event(item.timestamp)
        snapshot = self.snapshot
        if snapshot is not None and snapshot.chunk is not None:
            snapshot.observe(item)
        mapped = self.mapper.map(item)  # maps and encodes inside one per-row guard
        if mapped.events:
            send, counts = self.sink.send, self.stats.events
            for event, value in zip(mapped.events, mapped.encoded, strict=True):
                send(event, value)
                counts[event["event_type"]] += 1
            self._unacked += len(mapped.events)
            self.metrics.inflight = self._unacked
            if mapped.decode_errors:
                self.metrics.decode_errors.inc(mapped.decode_errors)
        elif mapped.filtered is not None:
            self.stats.filtered[mapped.filtered] += 1
        elif mapped.dead_letter is not None:
            self._dead_letter(item, mapped.dead_letter)

    def _undecodable(self, item: UndecodableRows) -> None:
        self.metrics.decode_errors.inc()
        self._dead_letter(item, self.mapper.undecodable(item))

    def _table_change(self, item: TableChange) -> None:
        event = self.mapper.table_event(item)
        self.sink.send(event)
        self.stats.events[event["event_type"]] += 1
        self._unacked += 1
        # A truncated table can go on being captured; a dropped or renamed one cannot: someone must act.
        level = logging.WARNING if item.kind == "truncated" else logging.ERROR
        log.log(
            level,
            "%s %s at %s:%d (%s): consumers' state of it is stale; `wpcdc snapshot` re-publishes the current state",
            event["event_type"], item.table, item.file, item.pos, item.statement[:200],
            extra={"event": event["event_type"], "event_id": event["event_id"], "table": item.table},
        )  # fmt: skip

    def _xa(self, item: XAPrepared | XAOutcome) -> TransactionEnd:
        """Rows of an XA transaction are written at XA PREPARE but happen only at XA COMMIT: hold
        them until the outcome, publish them then (in commit order), drop them on XA ROLLBACK."""
        if type(item) is XAPrepared:
            if item.one_phase:
                self._publish_held(item.items)
            elif item.items:
                # Only with rows of captured tables: an XA transaction of other tables left prepared
                # for days must not tie restarts to a binlog file that may be purged meanwhile.
                self._prepared[item.ref.xid] = item
            return item.end
        assert type(item) is XAOutcome
        held = self._prepared.pop(item.xid, None)
        end = item.end.next_position
        if held is None:
            log.info(
                "XA %s %s at %s: no rows held for it (it changed no captured table, or it was prepared "
                "before this stream's start: replay from before its XA PREPARE to publish its rows)",
                "COMMIT" if item.committed else "ROLLBACK", item.xid, end,
                extra={"event": "xa_unknown", "xid": item.xid, "position": str(end)},
            )  # fmt: skip
        elif item.committed:
            self._publish_held(held.items)
        else:
            self.stats.filtered[XA_ROLLED_BACK] += len(held.items)
            log.info(
                "XA ROLLBACK %s at %s: %d row(s) prepared at %s not published", item.xid, end, len(held.items),
                held.ref.start, extra={"event": "xa_rolled_back", "xid": item.xid, "position": str(end)},
            )  # fmt: skip
        return item.end

    def _publish_held(self, items: list[RowChange | UndecodableRows]) -> None:
        for held in items:
            if type(held) is RowChange:
                self._row(held)
            else:
                assert type(held) is UndecodableRows
                self._undecodable(held)

    def _load_prepared(self, refs: Sequence[PreparedRef]) -> dict[str, XAPrepared]:
        """The held rows of the checkpoint's prepared XA transactions: from memory when this process
        read them, else read again from the binlog (a restart)."""
        out: dict[str, XAPrepared] = {}
        for ref in refs:
            held = self._prepared_saved.get(ref.xid)
            out[ref.xid] = held if held is not None and held.ref == ref else self._read_prepared(ref)
        self._prepared_saved = dict(out)
        return out

    def _read_prepared(self, ref: PreparedRef) -> XAPrepared:
        source = BinlogSource(self.config, ref.start, blocking=False, stop_at=ref.end)
        try:
            for item in source.items():
                if type(item) is XAPrepared and item.ref.xid == ref.xid:
                    log.info(
                        "XA %s prepared at %s is still undecided: its %d row(s) are held until its outcome",
                        ref.xid, ref.start, len(item.items), extra={"event": "xa_held", "xid": ref.xid},
                    )  # fmt: skip
                    return item
        finally:
            source.close()
        raise SourceError(
            f"the checkpoint names XA transaction {ref.xid} prepared at {ref.start}..{ref.end}, but the binlog "
            "has no XA PREPARE for it there",
            "restore the checkpoint written for this server, or `wpcdc checkpoint set` (its rows are then not "
            "published if it commits)",
            fatal=True,
        )

    def _poll_inbox(self, now: float) -> None:
        """Take snapshot requests written by `wpcdc snapshot` (see cdc.snapshot.requests)."""
        if self.inbox is None or now - self._last_inbox_poll < self.config.snapshot.request_poll_seconds:
            return
        self._last_inbox_poll = now
        snapshot = self.snapshot
        assert snapshot is not None
        for request in self.inbox.pending():
            if snapshot.knows(request.id):
                continue
            snapshot.request(request)
            self._accepted.append(request.id)
            log.info(
                "snapshot %s requested (%s)", request.id, request.describe(),
                extra={"event": "snapshot_requested", "snapshot_id": request.id},
            )  # fmt: skip

    def _snapshot_at(self, end: TransactionEnd) -> None:
        """Publish the snapshot chunk that is due at this boundary, in stream order."""
        snapshot = self.snapshot
        assert snapshot is not None
        for ready in snapshot.at(end.next_position):
            sent = 0
            for row, post in enumerate(ready.posts):
                mapped = self.mapper.snapshot(ready.snapshot_id, ready.chunk, post, row)
                for event, value in zip(mapped.events, mapped.encoded, strict=True):
                    self.sink.send(event, value)
                    self.stats.events[event["event_type"]] += 1
                    sent += 1
                if mapped.decode_errors:
                    self.metrics.decode_errors.inc(mapped.decode_errors)
                if mapped.filtered is not None:
                    self.stats.filtered[mapped.filtered] += 1
                elif mapped.dead_letter is not None:
                    self._dead_letter_record(f"snapshot of post {post.row.get('ID')}", mapped.dead_letter)
            self._unacked += sent
            self.metrics.snapshot_progress(snapshot)
            if self.snapshot_progress is not None:
                self.snapshot_progress(snapshot)
        for finished in snapshot.completed:
            log.info(
                "snapshot %s complete (%d posts read again because they changed during their chunk)",
                finished, snapshot.retried, extra={"event": "snapshot_complete", "snapshot_id": finished},
            )  # fmt: skip
        snapshot.completed.clear()

    def _dead_letter(self, item: RowChange | UndecodableRows, record: dict[str, object]) -> None:
        self._dead_letter_record(f"row(s) at {item.file}:{item.pos} ({item.table})", record)

    def _dead_letter_record(self, what: str, record: dict[str, object]) -> None:
        log.warning(
            "dead-lettered %s: %s", what, record["error"],
            extra={"event": "dead_letter", "event_id": record["event_id"]},
        )  # fmt: skip
        self.sink.send_dead_letter(record)
        self.stats.dead_letters += 1
        self.metrics.dead_letters.inc()
        self._unacked += 1

    def _flush_counters(self) -> None:
        """Counts go to Prometheus in batches (at checkpoints and heartbeats), not per row: a
        prometheus_client increment takes a lock, and the hot loop runs thousands of rows a second."""
        self.metrics.add_counts(self.stats)

    def commit(self) -> None:
        """Wait for the sink to acknowledge everything sent, then checkpoint the last boundary."""
        self._flush_counters()
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
        self._last_saved = position
        self._prepared_saved = dict(self._prepared)
        if self.store is None:
            return
        snapshot = self.snapshot.to_json() if self.snapshot is not None else None
        prepared = tuple(x.ref for x in self._prepared.values())
        gtid_set = str(self._gtids) if self._gtids is not None else None
        self.store.save(
            Checkpoint(
                position,
                self.source_server_id,
                pending.gtid,
                snapshot=snapshot,
                xa_prepared=prepared,
                gtid_set=gtid_set,
            )
        )
        if self.facts is not None:  # before anything after the checkpoint is mapped
            self.facts.reset(position)
        if self.inbox is not None:
            for request_id in self._accepted:  # recorded in the checkpoint now: safe to forget the file
                self.inbox.done(request_id)
            self._accepted.clear()
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

    def forget_accepted(self) -> None:
        """Requests taken since the last checkpoint are taken again from the inbox after a restart."""
        self._accepted.clear()

    def abandon(self) -> None:
        """The sink failed: what it had not acknowledged will be sent again from the checkpoint."""
        self._pending = None
        self._unacked = 0
        self.metrics.inflight = 0

    def try_commit(self) -> bool:
        """After a source failure the sink may still be healthy: keep what was read. False: it was not."""
        try:
            self.commit()
        except SinkError as exc:
            log.warning("could not commit after the failure: %s", exc.problem)
            self.abandon()
            return False
        return True


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
    reset_after = config.source.reconnect_backoff_reset_seconds
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
            up_at = metrics.source_connected_at
            if up_at is not None and up_at >= started and time.monotonic() - up_at >= reset_after:
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
