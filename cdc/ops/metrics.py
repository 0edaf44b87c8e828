"""Prometheus metrics and the stream's health, read by /metrics, /healthz and /readyz.

Hot-path updates are plain attribute writes or cached counter children; gauges that depend on
"now" (lag, ages) are computed when scraped.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge

if TYPE_CHECKING:
    from cdc.ops.stats import RunStats
    from cdc.sink.kafka import BrokerHealth
    from cdc.snapshot.snapshotter import Snapshotter


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        self._published = Counter(
            "wpcdc_events_published_total", "Events handed to the sink, by type", ["event_type"], registry=r
        )
        self._filtered = Counter(
            "wpcdc_rows_filtered_total", "Row changes dropped by a documented filter rule", ["reason"], registry=r
        )
        self.dead_letters = Counter("wpcdc_dead_letters_total", "Row changes sent to the dead-letter path", registry=r)
        self.transactions = Counter("wpcdc_transactions_total", "Binlog transactions processed", registry=r)
        self.rows = Counter("wpcdc_rows_total", "Row changes of captured tables read from the binlog", registry=r)
        self._reconnects = Counter(
            "wpcdc_reconnects_total", "Restarts of the reader or producer after a failure, by cause", ["reason"],
            registry=r,
        )  # fmt: skip
        self.publish_errors = Counter(
            "wpcdc_publish_errors_total",
            "Broker failures: sends not acknowledged, metadata probes that failed or went unanswered",
            registry=r,
        )
        self.publish_retries = Counter(
            "wpcdc_publish_retries_total", "Restarts from the checkpoint after a publish error", registry=r
        )
        self.decode_errors = Counter(
            "wpcdc_decode_errors_total",
            "Undecodable rows events, and meta values that looked PHP-serialized but did not decode",
            registry=r,
        )
        self.checkpoints = Counter("wpcdc_checkpoints_total", "Checkpoints written", registry=r)
        self._checkpoint_file = Gauge(
            "wpcdc_checkpoint_info", "The binlog file of the last checkpoint (value 1)", ["file"], registry=r
        )
        self.checkpoint_position = Gauge(
            "wpcdc_checkpoint_position", "Binlog position of the last checkpoint within its file", registry=r
        )
        self.checkpoint_file_number = Gauge(
            "wpcdc_checkpoint_file_number", "Numeric extension of the last checkpoint's binlog file", registry=r
        )
        self._source_server = Gauge(
            "wpcdc_source_server_info", "The server the binlog is read from (value 1; mysql.host:port or an entry "
            "of mysql.hosts)", ["server"], registry=r,
        )  # fmt: skip
        self.source_server_moves = Counter(
            "wpcdc_source_server_moves_total", "Moves to another server of mysql.hosts after a failure", registry=r
        )
        self._current_server: str | None = None

        # State read at scrape time.
        self.last_event_ts: float | None = None  # binlog time of the last event read
        self.last_event_at: float | None = None  # our clock when it was read
        self.caught_up = False  # the server said it had nothing more (heartbeat)
        self.last_checkpoint_at: float | None = None
        self.inflight = 0
        self.source_up = False
        self.sink_up = False
        self.last_idle_at: float | None = None  # our clock at the last server heartbeat
        # Live streams only (set by `run`): silence this long with the source connected = stalled.
        self.source_stall_seconds: float | None = None
        self.source_connected_at: float | None = None  # monotonic; kept after a disconnect (backoff reset)
        self.broker: BrokerHealth | None = None  # the producer's last report (every 0.25 s)
        self._broker_failures = 0

        Gauge(
            "wpcdc_seconds_behind_source", "Now minus the binlog time of the last event; 0 when caught up",
            registry=r,
        ).set_function(self.lag_seconds)  # fmt: skip
        Gauge(
            "wpcdc_seconds_since_last_event", "Seconds since the last binlog event was read", registry=r
        ).set_function(lambda: time.time() - self.last_event_at if self.last_event_at else -1)
        Gauge("wpcdc_checkpoint_age_seconds", "Seconds since the last checkpoint was written", registry=r).set_function(
            lambda: time.time() - self.last_checkpoint_at if self.last_checkpoint_at else -1
        )
        Gauge("wpcdc_inflight_events", "Events sent but not yet acknowledged", registry=r).set_function(
            lambda: self.inflight
        )
        Gauge("wpcdc_source_connected", "1 while the binlog stream is connected", registry=r).set_function(
            lambda: 1 if self.source_up else 0
        )
        Gauge(
            "wpcdc_sink_connected", "1 while the producer is healthy and the broker answers", registry=r
        ).set_function(lambda: 1 if self.sink_connected() else 0)
        Gauge(
            "wpcdc_oldest_unacked_seconds",
            "Age of the oldest message the broker has not acknowledged yet",
            registry=r,
        ).set_function(lambda: self.broker.oldest_unacked_seconds if self.broker is not None else 0.0)
        self.snapshot_running = Gauge("wpcdc_snapshot_running", "1 while a snapshot is in progress", registry=r)
        self.snapshot_posts_done = Gauge(
            "wpcdc_snapshot_posts_done", "Posts published by the running snapshot", registry=r
        )
        self.snapshot_posts_total = Gauge(
            "wpcdc_snapshot_posts_total", "Posts the running snapshot will publish (counted at its start)", registry=r
        )
        self.snapshot_posts_retried = Counter(
            "wpcdc_snapshot_posts_retried_total", "Posts read again because they changed during their chunk", registry=r
        )
        self._children: dict[tuple[str, str], Counter] = {}
        self._current_file: str | None = None
        self._retried_seen = 0
        self._counted: dict[tuple[str, str], int] = {}

    def _child(self, metric: Counter, name: str, label: str) -> Counter:
        key = (name, label)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(label)
        return child

    def snapshot_progress(self, snapshot: Snapshotter) -> None:
        state = snapshot.state
        self.snapshot_running.set(1 if state is not None else 0)
        self.snapshot_posts_done.set(state.done_posts if state is not None else 0)
        self.snapshot_posts_total.set(state.total_posts or 0 if state is not None else 0)
        if snapshot.retried > self._retried_seen:
            self.snapshot_posts_retried.inc(snapshot.retried - self._retried_seen)
            self._retried_seen = snapshot.retried

    def add_counts(self, stats: RunStats) -> None:
        """Bring the counters up to a run's running totals (only the increase since the last call)."""
        seen = self._counted
        for name, total, counter in (("rows", stats.rows, self.rows), ("txn", stats.transactions, self.transactions)):
            delta = total - seen.get(("", name), 0)
            if delta > 0:
                counter.inc(delta)
                seen[("", name)] = total
        for prefix, counts, family in (("p", stats.events, self._published), ("f", stats.filtered, self._filtered)):
            for label, total in counts.items():
                delta = total - seen.get((prefix, label), 0)
                if delta > 0:
                    self._child(family, prefix, label).inc(delta)
                    seen[(prefix, label)] = total

    def broker_health(self, health: BrokerHealth) -> None:
        """Called by the sink's health watcher; `failures` restarts at 0 with each new producer."""
        if health.failures < self._broker_failures:
            self._broker_failures = 0
        if health.failures > self._broker_failures:
            self.publish_errors.inc(health.failures - self._broker_failures)
            self._broker_failures = health.failures
        self.broker = health

    def sink_connected(self) -> bool:
        return self.sink_up and (self.broker is None or self.broker.up)

    def source_server(self, server: str) -> None:
        """The server now read; only its label child is left, so a dashboard shows one line."""
        if server == self._current_server:
            return
        if self._current_server is not None:
            self._source_server.remove(self._current_server)
            self.source_server_moves.inc()
        self._source_server.labels(server).set(1)
        self._current_server = server

    def reconnect(self, reason: str) -> None:
        self._child(self._reconnects, "r", reason).inc()

    def source_event(self, binlog_ts: int) -> None:
        if binlog_ts:
            self.last_event_ts = binlog_ts
        self.last_event_at = time.time()
        self.caught_up = False

    def source_idle(self) -> None:
        self.caught_up = True
        self.last_idle_at = time.time()

    def silent(self, limit: float) -> bool:
        return self.source_silence() > limit

    def source_silence(self) -> float:
        """Seconds since the source sent anything (an event or a heartbeat)."""
        heard = max(self.last_event_at or 0.0, self.last_idle_at or 0.0)
        return time.time() - heard if heard else 0.0

    def lag_seconds(self) -> float:
        if self.caught_up or self.last_event_ts is None:
            return 0.0
        return max(0.0, time.time() - self.last_event_ts)

    def checkpointed(self, file: str, pos: int) -> None:
        if file != self._current_file:
            if self._current_file is not None:
                self._checkpoint_file.remove(self._current_file)
            self._checkpoint_file.labels(file).set(1)
            self._current_file = file
            ext = file.rpartition(".")[2]
            self.checkpoint_file_number.set(int(ext) if ext.isdigit() else -1)
        self.checkpoint_position.set(pos)
        self.checkpoints.inc()
        self.last_checkpoint_at = time.time()

    def readiness(self, max_lag_seconds: float) -> tuple[bool, str]:
        problems = []
        if not self.source_up:
            problems.append("binlog stream not connected")
        elif self.caught_up and self.source_stall_seconds is not None and self.silent(self.source_stall_seconds):
            # Only when caught up: then the pipeline just waits on the source, so silence is the
            # source's (while catching up, a slow lookup or broker ack would look the same).
            problems.append(
                f"no event or heartbeat from the source for {self.source_silence():.1f}s "
                f"(limit {self.source_stall_seconds:g}s)"
            )
        if not self.sink_up:
            problems.append("broker not connected")
        elif self.broker is not None and not self.broker.up:
            problems.append(f"broker not reachable: {self.broker.problem}")
        lag = self.lag_seconds()
        if lag > max_lag_seconds:
            problems.append(f"{lag:.0f}s behind the source (limit {max_lag_seconds:.0f}s)")
        return (False, "; ".join(problems)) if problems else (True, "ok")

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.registry.get_sample_value(name, labels or {}) or 0.0
