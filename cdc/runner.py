"""Builds the parts from the configuration and runs them: `run` (live, supervised) and `replay`."""

from __future__ import annotations

import dataclasses
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cdc import __version__
from cdc.checkpoint.facts import FactJournal
from cdc.checkpoint.kafka import KafkaCheckpointStore, TransactionalCheckpointStore
from cdc.checkpoint.store import Checkpoint, CheckpointStore, FileCheckpointStore
from cdc.config import Config
from cdc.core.position import BinlogPosition
from cdc.errors import (
    CheckpointError,
    LookupUnavailable,
    PositionGoneError,
    PreflightError,
    ProducerFenced,
    SinkError,
)
from cdc.mapping.mapper import Mapper
from cdc.mapping.state import WordPressState
from cdc.ops.http_server import ObservabilityServer
from cdc.ops.metrics import Metrics
from cdc.ops.progress import RangeProgress, SnapshotProgress
from cdc.ops.stats import RunStats
from cdc.pipeline import Pipeline, supervise
from cdc.sink.kafka import HealthListener, HealthLog, KafkaProducerSink, Sink, StdoutSink
from cdc.sink.process import ProcessSink
from cdc.sink.topics import fit_to_topics
from cdc.snapshot.reader import DatabaseChunkSource
from cdc.snapshot.requests import CheckpointLock, RequestInbox
from cdc.snapshot.snapshotter import SnapshotRequest, SnapshotState, Snapshotter
from cdc.source.lookup import DatabaseLookup
from cdc.source.preflight import check_server, failures
from cdc.source.server import Server

log = logging.getLogger(__name__)


def make_sink(config: Config, kind: str, report: HealthListener | None = None) -> Sink:
    """`report`: the broker health watcher's reports (one HealthLog across restarts of the sink, so
    the line saying the broker is back comes whichever producer sees it)."""
    if kind == "stdout":
        return StdoutSink()
    kafka = fit_to_topics(config.kafka)
    if kafka.delivery == "exactly_once":
        kafka = kafka.model_copy(update={"transactional_id": config.transactional_id()})
    if kafka.producer_process:
        return ProcessSink(kafka, report=report)
    return KafkaProducerSink(kafka, report=report)


def make_store(config: Config, *, owner: bool = False, kind: str | None = None) -> CheckpointStore:
    """The configured checkpoint store (or `kind`'s). `owner`: the process that writes it (`run`)."""
    kind = kind or config.checkpoint.store
    if kind == "kafka":
        return KafkaCheckpointStore(config.kafka, config.checkpoint.kafka_topic, config.checkpoint_key(), owner=owner)
    return FileCheckpointStore(config.checkpoint.path)


def _preflight(config: Config, server: Server) -> None:
    bad = failures(check_server(config, server))
    if bad:
        first = bad[0]
        others = "; ".join(f"{f.what}: {f.detail}" for f in bad[1:])
        raise PreflightError(
            f"{first.what}: {first.detail}" + (f" (also: {others})" if others else ""),
            first.fix + " — `wpcdc check` lists every finding",
        )


def _starting_checkpoint(config: Config, server: Server, store: CheckpointStore, source_id: int) -> Checkpoint:
    cp = store.load()
    if cp is not None and cp.server_id is not None and cp.server_id != source_id:
        raise CheckpointError(
            f"the checkpoint in {store.where} was written for server_id {cp.server_id}, but "
            f"{config.mysql.host}:{config.mysql.port} has server_id {source_id}; binlog positions do not carry over",
            "point wpcdc at the server the checkpoint belongs to, or `wpcdc checkpoint reset` and start afresh",
        )
    mode = config.snapshot.mode
    if cp is None:
        start = server.current_position() if config.source.start_at == "end" else server.oldest_position()
        snapshot = None
        if mode in ("initial", "when_needed"):
            snapshot = SnapshotState(SnapshotRequest.new()).to_json()
            log.info("no checkpoint yet and snapshot.mode=%s: snapshotting every post while streaming", mode)
        cp = store.save(Checkpoint(start, source_id, snapshot=snapshot))
        log.info("no checkpoint yet: starting at the %s of the binlog, %s", config.source.start_at, start)
    try:
        cp = _resume(server, store, cp)
    except PositionGoneError as exc:
        if mode != "when_needed":
            raise
        start = server.current_position()
        request = SnapshotRequest.new()
        log.warning(
            "%s; snapshot.mode=when_needed: streaming restarts at the binlog end %s and snapshot %s publishes "
            "the current state of every post (the changes in the gap are not published one by one)",
            exc.problem, start, request.id,
            extra={"event": "snapshot_when_needed", "position": str(start), "snapshot_id": request.id},
        )  # fmt: skip
        cp = store.save(Checkpoint(start, source_id, snapshot=SnapshotState(request).to_json()))
    return cp


def _resume(server: Server, store: FileCheckpointStore, cp: Checkpoint) -> Checkpoint:
    """The checkpoint to start from; moved to the oldest file when its own file was purged after a
    quiet rotation (nothing was written after it: not a gap). Raises PositionGoneError on a gap."""
    position = server.resume_position(cp.position, cp.gtid)
    if position == cp.position:
        return cp
    log.info(
        "the checkpoint's binlog file %s was purged, but nothing was written after the checkpoint's "
        "transaction %s before %s began: no gap, continuing at %s",
        cp.position.file, cp.gtid, position.file, position,
        extra={"event": "checkpoint_moved", "position": str(position), "gtid": cp.gtid},
    )  # fmt: skip
    return store.save(dataclasses.replace(cp, position=position))


def run_live(
    config: Config,
    sink_kind: str,
    stop: threading.Event,
    metrics: Metrics | None = None,
    snapshot_request: SnapshotRequest | None = None,
    snapshot_progress: Callable[[Snapshotter], None] | None = None,
) -> RunStats:
    """`run`; with `snapshot_request` (`wpcdc snapshot` when no `run` owns the checkpoint) it also
    snapshots and returns once that snapshot is complete and checkpointed."""
    metrics = metrics or Metrics()
    metrics.source_stall_seconds = config.mysql.stall_seconds()
    lock = CheckpointLock(config.checkpoint.path)
    lock.acquire()
    http = None
    if config.metrics.enabled:
        m = config.metrics
        http = ObservabilityServer(metrics, m.host, m.port, m.ready_max_lag_seconds).start()
    try:
        return _run_live(config, sink_kind, stop, metrics, snapshot_request, snapshot_progress)
    finally:
        if http is not None:
            http.stop()
        lock.release()


def _run_live(
    config: Config,
    sink_kind: str,
    stop: threading.Event,
    metrics: Metrics,
    snapshot_request: SnapshotRequest | None,
    snapshot_progress: Callable[[Snapshotter], None] | None,
) -> RunStats:
    store = make_store(config, owner=True)
    try:
        return _run_with(config, sink_kind, stop, metrics, snapshot_request, snapshot_progress, store)
    finally:
        store.close()


def _run_with(
    config: Config,
    sink_kind: str,
    stop: threading.Event,
    metrics: Metrics,
    snapshot_request: SnapshotRequest | None,
    snapshot_progress: Callable[[Snapshotter], None] | None,
    store: CheckpointStore,
) -> RunStats:
    sink_box: list[Sink] = []
    broker_log = HealthLog(metrics.broker_health)
    try:
        return _stream_source(
            config, sink_kind, stop, metrics, snapshot_request, snapshot_progress, store, sink_box, broker_log
        )
    except ProducerFenced as exc:
        log.error(
            "fenced: %s", exc.problem,
            extra={"event": "fenced", "transactional_id": config.transactional_id(), "source": config.checkpoint_key()},
        )  # fmt: skip
        raise
    finally:
        for sink in sink_box:
            sink.close()


def _stream_source(
    config: Config,
    sink_kind: str,
    stop: threading.Event,
    metrics: Metrics,
    snapshot_request: SnapshotRequest | None,
    snapshot_progress: Callable[[Snapshotter], None] | None,
    store: CheckpointStore,
    sink_box: list[Sink],
    broker_log: HealthLog,
) -> RunStats:
    # exactly_once: the producer registers its transactional id (fencing a former owner and aborting
    # its open transaction) before the checkpoint is read, and every checkpoint after that is written
    # in the producer's transaction.
    eos = config.kafka.delivery == "exactly_once" and sink_kind == "kafka" and isinstance(store, KafkaCheckpointStore)
    if eos:
        assert isinstance(store, KafkaCheckpointStore)

        def transactional_sink() -> Any:
            if not sink_box:
                sink_box.append(make_sink(config, sink_kind, broker_log))
                metrics.sink_up = True
                tx_store.forget()
            return sink_box[0]

        tx_store = TransactionalCheckpointStore(store, lambda record: transactional_sink().commit(record))
        transactional_sink()
        log.info(
            "exactly_once: registered transactional id %r", config.transactional_id(),
            extra={"event": "transactional_id", "transactional_id": config.transactional_id()},
        )  # fmt: skip
        store = tx_store
    with Server(config) as server:
        version = server.version()
        _preflight(config, server)
        source_id = server.server_id()
        cp = _starting_checkpoint(config, server, store, source_id)
    log.info(
        "wpcdc %s starting: %s:%s (%s, server_id %s), from %s, to %s",
        __version__, config.mysql.host, config.mysql.port, version, source_id, cp.position,
        sink_kind if sink_kind == "stdout" else f"kafka topic {config.kafka.topic}",
        extra={"event": "start", "position": str(cp.position), "source_server_id": source_id},
    )  # fmt: skip

    lookup = DatabaseLookup(config)
    chunks = DatabaseChunkSource(config)
    mapper = Mapper(WordPressState(lookup), source_id, config.filters, config.mapping)
    facts = FactJournal(config.checkpoint.path)
    facts.attach(mapper.state)
    snapshotter = Snapshotter(chunks, config.snapshot.chunk_size)
    snapshotter.restore(cp.snapshot)
    if snapshot_request is not None and not snapshotter.knows(snapshot_request.id):
        snapshotter.request(snapshot_request)
    if snapshotter.state is not None:
        log.info(
            "snapshot %s in progress (%s): %d posts published so far",
            snapshotter.state.request.id, snapshotter.state.request.describe(), snapshotter.state.done_posts,
            extra={"event": "snapshot_resumed", "snapshot_id": snapshotter.state.request.id},
        )  # fmt: skip

    def attempt() -> None:
        fresh = not sink_box
        if fresh:
            sink_box.append(make_sink(config, sink_kind, broker_log))
            metrics.sink_up = True
        pipeline.sink = sink_box[0]
        if eos and fresh:
            # A new producer: its init_transactions decided the transaction whose commit the old one
            # could not confirm, either way. Only the topic knows which: read the checkpoint again.
            tx_store.forget()
            start = store.load() or cp
            try:
                with Server(config) as server:
                    start = _resume(server, store, start)
            except PreflightError as err:
                log.warning("source not reachable yet: %s", err.problem)  # the stream's own connect retries
            snapshotter.restore(start.snapshot)
        start = store.load() or cp
        facts.rewind(start.position)  # the caches as the first pass knew them there: identical re-sent events
        pipeline.stream(start.position, blocking=True, prepared=start.xa_prepared)

    def recover(exc: Exception) -> None:
        if isinstance(exc, SinkError):
            pipeline.abandon()
            if sink_box:
                sink_box.pop().close()
        elif not pipeline.try_commit() and eos and sink_box:
            sink_box.pop().close()  # its transaction failed: a new producer aborts it
        if isinstance(exc, LookupUnavailable):
            lookup.close()
            chunks.close()
        pipeline.forget_accepted()
        if eos and not sink_box:
            return  # attempt() reads the checkpoint once a new producer has decided the open transaction
        current = store.load() or cp
        # Snapshot chunks published after the last checkpoint may not have reached the broker: the
        # snapshot resumes from the checkpoint, like the stream.
        snapshotter.restore(current.snapshot)
        try:
            with Server(config) as server:
                _resume(server, store, current)
        except PreflightError as err:
            log.warning("source not reachable yet: %s", err.problem)

    pipeline = Pipeline(
        config, mapper, StdoutSink(), store, metrics, stop, source_id,
        snapshot=snapshotter, inbox=RequestInbox(config.checkpoint.path),
    )  # fmt: skip
    pipeline.snapshot_progress = snapshot_progress or _log_snapshot_progress()
    pipeline.facts = facts
    if snapshot_request is not None:
        pipeline.stop_when_snapshot_done = True
    try:
        supervise(attempt, recover, config, metrics, stop)
    finally:
        lookup.close()
        chunks.close()
        facts.close()
    final = store.load() or cp
    log.info(
        "stopped; checkpoint at %s, %d events published this run",
        final.position, sum(pipeline.stats.events.values()),
        extra={"event": "shutdown", "position": str(final.position)},
    )  # fmt: skip
    return pipeline.stats


def _log_snapshot_progress(every: float = 10.0) -> Callable[[Snapshotter], None]:
    last = [0.0]

    def report(snapshotter: Snapshotter) -> None:
        state = snapshotter.state
        now = time.monotonic()
        if state is None or now - last[0] < every:
            return
        last[0] = now
        log.info(
            "snapshot %s: %d/%s posts, %.0f posts/s",
            state.request.id, state.done_posts, state.total_posts if state.total_posts is not None else "?",
            snapshotter.rate(),
            extra={"event": "snapshot_progress", "snapshot_id": state.request.id, "done": state.done_posts},
        )  # fmt: skip

    return report


def request_snapshot(config: Config, request: SnapshotRequest) -> bool:
    """Hand the request to the `run` that owns the checkpoint. False when none does."""
    lock = CheckpointLock(config.checkpoint.path)
    if lock.try_acquire():
        lock.release()
        return False
    RequestInbox(config.checkpoint.path).submit(request)
    return True


def follow_snapshot(config: Config, request: SnapshotRequest, bar: SnapshotProgress, stop: threading.Event) -> bool:
    """Show the progress of a request handed to a running `run` until it completes (True) or the
    stop flag is set (False). Reads only the checkpoint file and the request directory."""
    store = make_store(config)
    inbox = RequestInbox(config.checkpoint.path)
    lock = CheckpointLock(config.checkpoint.path)
    while not stop.wait(0.5):
        cp = store.load()
        state = SnapshotState.from_json(cp.snapshot) if cp is not None and cp.snapshot else None
        pending = any(r.id == request.id for r in inbox.pending())
        if state is not None and state.request.id == request.id:
            bar(request.id, state.done_posts, state.total_posts)
        elif state is not None and any(q.id == request.id for q in state.queued):
            bar(request.id, 0, None, f"queued behind snapshot {state.request.id}")
        elif pending:
            if lock.try_acquire():
                lock.release()
                raise CheckpointError(
                    f"the wpcdc process that owned {config.checkpoint.path} stopped before taking snapshot "
                    f"request {request.id}",
                    "start `wpcdc run` (it takes the request from "
                    f"{inbox.dir}) or run `wpcdc snapshot` again while none is running",
                )
            bar(request.id, 0, None, f"waiting for the running wpcdc (pid {lock.holder() or '?'}) to take it")
        else:
            bar(request.id, state.done_posts if state else 0, state.total_posts if state else None, "done", True)
            return True
    return False


@dataclass
class ReplayResult:
    stats: RunStats
    seconds: float


def replay(
    config: Config,
    start: BinlogPosition,
    stop_at: BinlogPosition | None,
    sink_kind: str,
    update_checkpoint: bool,
    stop: threading.Event,
    metrics: Metrics | None = None,
    show_progress: bool = True,
) -> ReplayResult:
    metrics = metrics or Metrics()
    # A replay reads beside a running `run` of the same config: with the same server_id, MySQL drops
    # the older of two binlog readers ("a replica with the same server_uuid/server_id has connected").
    # It therefore reads as mysql.server_id + 1 (README: give the next id to nothing else).
    # A replay re-publishes a range on purpose and writes no checkpoint into a transaction (it would
    # never commit one): it publishes at_least_once whatever kafka.delivery says.
    config = config.model_copy(
        update={
            "mysql": config.mysql.model_copy(update={"server_id": config.mysql.server_id + 1}),
            "kafka": config.kafka.model_copy(update={"delivery": "at_least_once"}),
        }
    )
    with Server(config) as server:
        server.require_position(start, "--from position")
        source_id = server.server_id()
        files = server.binary_log_sizes()
        end = stop_at or server.current_position()
    bar = RangeProgress(files, start, end, sys.stderr, sys.stderr.isatty()) if show_progress else None
    lookup = DatabaseLookup(config)
    mapper = Mapper(WordPressState(lookup), source_id, config.filters, config.mapping)
    sink = make_sink(config, sink_kind, HealthLog(metrics.broker_health))
    store = make_store(config, owner=True) if update_checkpoint else None
    pipeline = Pipeline(config, mapper, sink, store, metrics, stop, source_id, progress=bar)
    began = time.monotonic()
    try:
        pipeline.stream(start, blocking=False, stop_at=stop_at)
    finally:
        if bar is not None:
            bar.finish()
        sink.close()
        lookup.close()
        if store is not None:
            store.close()
    return ReplayResult(pipeline.stats, time.monotonic() - began)
