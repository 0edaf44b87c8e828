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
    SourceError,
)
from cdc.mapping.mapper import Mapper
from cdc.mapping.state import WordPressState
from cdc.ops.http_server import ObservabilityServer
from cdc.ops.metrics import Metrics
from cdc.ops.progress import RangeProgress, SnapshotProgress
from cdc.ops.stats import RunStats
from cdc.pipeline import Pipeline, supervise
from cdc.sink.kafka import HealthListener, HealthLog, Sink, StdoutSink
from cdc.sink.process import ProcessSink
from cdc.snapshot.reader import DatabaseChunkSource
from cdc.snapshot.requests import CheckpointLock, RequestInbox
from cdc.snapshot.snapshotter import SnapshotRequest, SnapshotState, Snapshotter
from cdc.source.failover import Choice, ServerChooser
from cdc.source.lookup import DatabaseLookup
from cdc.source.preflight import check_server, failures
from cdc.source.server import GtidSet, Server

log = logging.getLogger(__name__)


def make_sink(config: Config, kind: str, report: HealthListener | None = None) -> Sink:
    """`report`: the broker health watcher's reports (one HealthLog across restarts of the sink, so
    the line saying the broker is back comes whichever producer sees it)."""
    if kind == "stdout":
        return StdoutSink()
    kafka = config.kafka
    if kafka.delivery == "exactly_once":
        kafka = kafka.model_copy(update={"transactional_id": config.transactional_id()})
    if kafka.producer_process:
        return ProcessSink(kafka, report=report)  # fitted to the topics by the child, which asks the broker
    # kafka-python only where it runs in this process (it costs ~0.2 CPU s to import).
    from cdc.sink.in_process import KafkaProducerSink
    from cdc.sink.topics import fit_to_topics

    return KafkaProducerSink(fit_to_topics(kafka), report=report)


def make_store(config: Config, *, owner: bool = False, kind: str | None = None) -> CheckpointStore:
    """The configured checkpoint store (or `kind`'s). `owner`: the process that writes it (`run`)."""
    kind = kind or config.checkpoint.store
    if kind == "kafka":
        from cdc.checkpoint.kafka import KafkaCheckpointStore  # imports kafka-python: only when configured

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


def _starting_checkpoint(
    config: Config,
    server: Server,
    store: CheckpointStore,
    source_id: int,
    gtid: bool = False,
    gone: PositionGoneError | None = None,
) -> Checkpoint:
    """The checkpoint `run` starts from (written first when there is none). `gtid` (GTID positions,
    Server.uses_gtid): it carries the GTID state, which any server of the topology can continue.
    `gone`: the server chosen from mysql.hosts purged what the checkpoint needs (when_needed only)."""
    cp = store.load()
    by_gtid = gtid and cp is not None and cp.gtid_set is not None
    if cp is not None and cp.server_id is not None and cp.server_id != source_id and not by_gtid:
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
        cp = store.save(Checkpoint(start, source_id, snapshot=snapshot, gtid_set=_gtid_start(server, start, gtid)))
        log.info("no checkpoint yet: starting at the %s of the binlog, %s", config.source.start_at, start)
    elif not gtid and cp.gtid_set is not None:
        cp = store.save(dataclasses.replace(cp, gtid_set=None))  # file positions now: the state would go stale
    try:
        if gone is not None:
            raise gone
        if gtid and cp.gtid_set is None:
            cp = _add_gtid_state(server, store, cp)
        cp = _resume(server, store, cp, gtid)
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
        snapshot = SnapshotState(request).to_json()
        cp = store.save(Checkpoint(start, source_id, snapshot=snapshot, gtid_set=_gtid_start(server, start, gtid)))
    return cp


def _gtid_state(cp: Checkpoint | None) -> GtidSet | None:
    return GtidSet.parse(cp.gtid_set) if cp is not None and cp.gtid_set is not None else None


def _choose(config: Config, chooser: ServerChooser, store: CheckpointStore) -> tuple[Choice, PositionGoneError | None]:
    """The server of mysql.hosts to start on; with snapshot.mode when_needed, a purged one rather
    than none (with the PositionGoneError that _starting_checkpoint turns into a snapshot)."""
    cp = store.load()
    state, server_id = _gtid_state(cp), cp.server_id if cp is not None else None
    try:
        return chooser.choose(state, server_id), None
    except PositionGoneError as exc:
        if config.snapshot.mode != "when_needed":
            raise
        return chooser.choose(state, server_id, accept_purged=True), exc


def _add_gtid_state(server: Server, store: CheckpointStore, cp: Checkpoint) -> Checkpoint:
    """A file/position checkpoint (an older wpcdc, `checkpoint set`, source.position was file) gets
    the GTID state of the binlog at its position: not the server's gtid_executed, which is the state at
    the binlog's end. Raises PositionGoneError when the position's file is gone with something after it."""
    position = server.resume_position(cp.position, cp.gtid)
    state = server.gtid_state_at(position)
    log.info(
        "the checkpoint %s has no GTID state yet: the binlog's there is %s; resuming by GTID from now on",
        cp.position, state or "(empty)", extra={"event": "checkpoint_gtid", "gtid_set": str(state)},
    )  # fmt: skip
    return store.save(dataclasses.replace(cp, position=position, gtid_set=str(state)))


def _gtid_start(server: Server, start: BinlogPosition, gtid: bool) -> str | None:
    """The GTID state for a new checkpoint at `start`, the binlog's end or its oldest file. At the end,
    the executed set: resuming by GTID from it reads exactly what the server writes after it (even a
    transaction already in the binlog but not yet in gtid_executed when asked)."""
    if not gtid:
        return None
    if start.pos == 4:
        return str(server.gtid_state_at(start))
    return str(server.gtid_executed())


def _resume(server: Server, store: CheckpointStore, cp: Checkpoint, gtid: bool = False) -> Checkpoint:
    """The checkpoint to start from; moved to the oldest file when its own file was purged after a
    quiet rotation (nothing was written after it: not a gap). Raises PositionGoneError on a gap. With
    GTID positions the server's GTID history decides instead of its files (Server.gtid_resume_problem);
    a server that lags is only warned about here: the stream waits for it (the server refuses, wpcdc
    retries)."""
    if gtid and cp.gtid_set is not None:
        problem = server.gtid_resume_problem(GtidSet.parse(cp.gtid_set))
        if isinstance(problem, PositionGoneError) or (problem is not None and problem.fatal):
            raise problem
        if problem is not None:
            log.warning("%s: %s", problem.problem, problem.fix, extra={"event": "source_lags"})
        elif cp.position.file not in server.binary_logs():
            log.info(
                "the checkpoint's binlog file %s is not on this server, but every transaction after the checkpoint's "
                "GTID state is: no gap, continuing by GTID",
                cp.position.file, extra={"event": "checkpoint_moved", "gtid_set": cp.gtid_set},
            )  # fmt: skip
        return cp
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
        return _run_with(_RunContext(config, sink_kind, stop, metrics, snapshot_request, snapshot_progress, store))
    finally:
        store.close()


@dataclass(frozen=True)
class _RunContext:
    """What one `run` of a source is given, handed from _run_with to _stream_source as one value.
    `config` and `store` are the starting ones: _stream_source may rebind its own (the server chosen
    from mysql.hosts, the transactional store)."""

    config: Config
    sink_kind: str
    stop: threading.Event
    metrics: Metrics
    snapshot_request: SnapshotRequest | None
    snapshot_progress: Callable[[Snapshotter], None] | None
    store: CheckpointStore


def _run_with(run: _RunContext) -> RunStats:
    sink_box: list[Sink] = []
    broker_log = HealthLog(run.metrics.broker_health)
    try:
        return _stream_source(run, sink_box, broker_log)
    except ProducerFenced as exc:
        config = run.config
        log.error(
            "fenced: %s", exc.problem,
            extra={"event": "fenced", "transactional_id": config.transactional_id(), "source": config.checkpoint_key()},
        )  # fmt: skip
        raise
    finally:
        for sink in sink_box:
            sink.close()


def _stream_source(run: _RunContext, sink_box: list[Sink], broker_log: HealthLog) -> RunStats:
    config, sink_kind, stop, metrics, store = run.config, run.sink_kind, run.stop, run.metrics, run.store
    snapshot_request, snapshot_progress = run.snapshot_request, run.snapshot_progress
    # exactly_once: the producer registers its transactional id (fencing a former owner and aborting
    # its open transaction) before the checkpoint is read, and every checkpoint after that is written
    # in the producer's transaction.
    eos = False
    if config.kafka.delivery == "exactly_once" and sink_kind == "kafka":
        from cdc.checkpoint.kafka import KafkaCheckpointStore, TransactionalCheckpointStore  # kafka-python: only here

        eos = isinstance(store, KafkaCheckpointStore)
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
    # mysql.hosts: the first server that can serve the checkpoint; `config` then reads that one.
    chooser = ServerChooser(config) if config.mysql.hosts else None
    gone = None
    if chooser is not None:
        choice, gone = _choose(config, chooser, store)
        config = choice.config
        log.info(
            "reading the binlog of %s (mysql.hosts entry %d of %d: %s)",
            choice.name, chooser.current + 1, len(chooser.servers), choice.verdict.detail,
            extra={"event": "source_chosen", "server": choice.name},
        )  # fmt: skip
    metrics.source_server(chooser.servers[chooser.current] if chooser else f"{config.mysql.host}:{config.mysql.port}")
    with Server(config) as server:
        version = server.version()
        _preflight(config, server)
        source_id = server.server_id()
        gtid = server.uses_gtid(config.source.position)
        mariadb = server.is_mariadb()
        cp = _starting_checkpoint(config, server, store, source_id, gtid, gone)
    log.info(
        "wpcdc %s starting: %s:%s (%s, server_id %s), from %s, to %s",
        __version__, config.mysql.host, config.mysql.port, version, source_id, cp.position,
        sink_kind if sink_kind == "stdout" else f"kafka topic {config.kafka.topic}",
        extra={"event": "start", "position": str(cp.position), "source_server_id": source_id},
    )  # fmt: skip

    lookup = DatabaseLookup(config)
    chunks = DatabaseChunkSource(config)
    mapper = Mapper(WordPressState(lookup), source_id, config.filters, config.mapping, gtid_ids=gtid)
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

    # Set after a source failure with mysql.hosts: the next attempt classifies the servers again and
    # may move to another one.
    rechoose = [False]

    def move() -> None:
        nonlocal config
        assert chooser is not None
        rechoose[0] = False
        current = store.load() or cp
        before = chooser.current
        choice = chooser.choose(_gtid_state(current), current.server_id)
        if chooser.current == before:
            return
        with Server(choice.config) as server:  # the settings `run` checked at start, on this server too
            _preflight(choice.config, server)
        log.warning(
            "moving from %s to %s (%s): resuming from the checkpoint's GTID state",
            chooser.servers[before], choice.name, choice.verdict.detail,
            extra={"event": "source_moved", "server": choice.name, "from": chooser.servers[before]},
        )  # fmt: skip
        config = pipeline.config = choice.config
        lookup.retarget(choice.config)
        chunks.retarget(choice.config)
        mapper.server_id = pipeline.source_server_id = choice.server_id
        metrics.source_server(choice.name)

    def attempt() -> None:
        if chooser is not None and rechoose[0]:
            move()
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
                    start = _resume(server, store, start, gtid)
            except PreflightError as err:
                log.warning("source not reachable yet: %s", err.problem)  # the stream's own connect retries
            snapshotter.restore(start.snapshot)
        start = store.load() or cp
        facts.rewind(start.position)  # the caches as the first pass knew them there: identical re-sent events
        state = GtidSet.parse(start.gtid_set) if gtid and start.gtid_set is not None else None
        pipeline.stream(start.position, blocking=True, prepared=start.xa_prepared, gtid_start=state, mariadb=mariadb)

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
        if chooser is not None and not isinstance(exc, SinkError):
            rechoose[0] = True  # the next attempt checks the servers (the one read last first)
        if eos and not sink_box:
            return  # attempt() reads the checkpoint once a new producer has decided the open transaction
        current = store.load() or cp
        # Snapshot chunks published after the last checkpoint may not have reached the broker: the
        # snapshot resumes from the checkpoint, like the stream.
        snapshotter.restore(current.snapshot)
        if rechoose[0]:
            return  # and resumes by GTID on whichever it picks
        try:
            with Server(config) as server:
                _resume(server, store, current, gtid)
        except PreflightError as err:
            log.warning("source not reachable yet: %s", err.problem)
        except SourceError as err:
            if err.fatal:
                raise
            log.warning("%s", err.problem)

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
        gtid = server.uses_gtid(config.source.position)  # the ids `run` gives the same changes
    bar = RangeProgress(files, start, end, sys.stderr, sys.stderr.isatty()) if show_progress else None
    lookup = DatabaseLookup(config)
    mapper = Mapper(WordPressState(lookup), source_id, config.filters, config.mapping, gtid_ids=gtid)
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
