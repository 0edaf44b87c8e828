"""Builds the parts from the configuration and runs them: `run` (live, supervised) and `replay`."""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass

from cdc import __version__
from cdc.checkpoint import Checkpoint, FileCheckpointStore
from cdc.config import Config
from cdc.errors import CheckpointError, PreflightError, SinkError
from cdc.http_server import ObservabilityServer
from cdc.lookup import DatabaseLookup
from cdc.mapping import Mapper
from cdc.metrics import Metrics
from cdc.pipeline import Pipeline, RunStats, supervise
from cdc.position import BinlogPosition
from cdc.preflight import check_server, failures
from cdc.progress import RangeProgress
from cdc.server import Server
from cdc.sink import KafkaProducerSink, Sink, StdoutSink
from cdc.sink_process import ProcessSink
from cdc.state import LookupUnavailable, WordPressState

log = logging.getLogger(__name__)


def make_sink(config: Config, kind: str) -> Sink:
    if kind == "stdout":
        return StdoutSink()
    return ProcessSink(config.kafka) if config.kafka.producer_process else KafkaProducerSink(config.kafka)


def _preflight(config: Config, server: Server) -> None:
    bad = failures(check_server(config, server))
    if bad:
        first = bad[0]
        others = "; ".join(f"{f.what}: {f.detail}" for f in bad[1:])
        raise PreflightError(
            f"{first.what}: {first.detail}" + (f" (also: {others})" if others else ""),
            first.fix + " — `wpcdc check` lists every finding",
        )


def _starting_checkpoint(config: Config, server: Server, store: FileCheckpointStore, source_id: int) -> Checkpoint:
    cp = store.load()
    if cp is not None and cp.server_id is not None and cp.server_id != source_id:
        raise CheckpointError(
            f"the checkpoint {store.path} was written for server_id {cp.server_id}, but "
            f"{config.mysql.host}:{config.mysql.port} has server_id {source_id}; binlog positions do not carry over",
            "point wpcdc at the server the checkpoint belongs to, or `wpcdc checkpoint reset` and start afresh",
        )
    if cp is None:
        start = server.current_position() if config.source.start_at == "end" else server.oldest_position()
        cp = store.save(Checkpoint(start, source_id))
        log.info("no checkpoint yet: starting at the %s of the binlog, %s", config.source.start_at, start)
    server.require_position(cp.position)
    return cp


def run_live(config: Config, sink_kind: str, stop: threading.Event, metrics: Metrics | None = None) -> RunStats:
    metrics = metrics or Metrics()
    http = None
    if config.metrics.enabled:
        m = config.metrics
        http = ObservabilityServer(metrics, m.host, m.port, m.ready_max_lag_seconds).start()
    try:
        return _run_live(config, sink_kind, stop, metrics)
    finally:
        if http is not None:
            http.stop()


def _run_live(config: Config, sink_kind: str, stop: threading.Event, metrics: Metrics) -> RunStats:
    store = FileCheckpointStore(config.checkpoint.path)
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
    mapper = Mapper(WordPressState(lookup), source_id, config.filters, config.mapping)
    sink_box: list[Sink] = []

    def attempt() -> None:
        if not sink_box:
            sink_box.append(make_sink(config, sink_kind))
            metrics.sink_up = True
        pipeline.sink = sink_box[0]
        start = store.load() or cp
        pipeline.stream(start.position, blocking=True)

    def recover(exc: Exception) -> None:
        if isinstance(exc, SinkError):
            pipeline.abandon()
            if sink_box:
                sink_box.pop().close()
        else:
            pipeline.try_commit()
        if isinstance(exc, LookupUnavailable):
            lookup.close()
        current = store.load() or cp
        try:
            with Server(config) as server:
                server.require_position(current.position)
        except PreflightError as err:
            log.warning("source not reachable yet: %s", err.problem)

    pipeline = Pipeline(config, mapper, StdoutSink(), store, metrics, stop, source_id)
    try:
        supervise(attempt, recover, config, metrics, stop)
    finally:
        for sink in sink_box:
            sink.close()
        lookup.close()
    final = store.load() or cp
    log.info(
        "stopped; checkpoint at %s, %d events published this run",
        final.position, sum(pipeline.stats.events.values()),
        extra={"event": "shutdown", "position": str(final.position)},
    )  # fmt: skip
    return pipeline.stats


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
    with Server(config) as server:
        server.require_position(start, "--from position")
        source_id = server.server_id()
        files = server.binary_log_sizes()
        end = stop_at or server.current_position()
    bar = RangeProgress(files, start, end, sys.stderr, sys.stderr.isatty()) if show_progress else None
    lookup = DatabaseLookup(config)
    mapper = Mapper(WordPressState(lookup), source_id, config.filters, config.mapping)
    sink = make_sink(config, sink_kind)
    store = FileCheckpointStore(config.checkpoint.path) if update_checkpoint else None
    pipeline = Pipeline(config, mapper, sink, store, metrics, stop, source_id, progress=bar)
    began = time.monotonic()
    try:
        pipeline.stream(start, blocking=False, stop_at=stop_at)
    finally:
        if bar is not None:
            bar.finish()
        sink.close()
        lookup.close()
    return ReplayResult(pipeline.stats, time.monotonic() - began)
