from __future__ import annotations

import io
import json
import logging
import socket
import threading
import time
import urllib.request

import pytest

from cdc.config import parse_config
from cdc.core.position import BinlogPosition
from cdc.errors import SourceError
from cdc.ops.http_server import ObservabilityServer
from cdc.ops.logs import JsonFormatter
from cdc.ops.metrics import Metrics
from cdc.ops.progress import RangeProgress
from cdc.ops.stats import RunStats
from cdc.pipeline import supervise
from cdc.sink.kafka import BrokerHealth, HealthLog


def test_readiness_needs_both_connections_and_bounded_lag() -> None:
    m = Metrics()
    assert m.readiness(60) == (False, "binlog stream not connected; broker not connected")
    m.source_up = True
    assert m.readiness(60) == (False, "broker not connected")
    m.sink_up = True
    assert m.readiness(60) == (True, "ok")
    m.source_event(int(time.time()) - 120)
    ok, reason = m.readiness(60)
    assert not ok and "behind the source" in reason
    m.source_idle()  # a heartbeat: the server has nothing more, so we are not behind
    assert m.readiness(60) == (True, "ok")
    assert m.lag_seconds() == 0


def test_checkpoint_gauges_follow_the_file() -> None:
    m = Metrics()
    m.checkpointed("binlog.000007", 1234)
    m.checkpointed("binlog.000008", 4)
    assert m.value("wpcdc_checkpoint_info", {"file": "binlog.000008"}) == 1
    assert m.registry.get_sample_value("wpcdc_checkpoint_info", {"file": "binlog.000007"}) is None
    assert m.value("wpcdc_checkpoint_position") == 4 and m.value("wpcdc_checkpoint_file_number") == 8
    assert m.value("wpcdc_checkpoints_total") == 2


def test_json_formatter_keeps_structured_fields() -> None:
    rec = logging.LogRecord("cdc.pipeline", logging.INFO, __file__, 1, "checkpoint %s", ("b.000001:4",), None)
    rec.event = "checkpoint"
    out = json.loads(JsonFormatter().format(rec))
    assert out["msg"] == "checkpoint b.000001:4" and out["event"] == "checkpoint" and out["level"] == "INFO"
    assert out["ts"].endswith("Z")


def test_progress_across_files_tty_and_plain() -> None:
    files = [("binlog.000001", 1000), ("binlog.000002", 1000), ("binlog.000003", 500)]
    start, end = BinlogPosition("binlog.000001", 500), BinlogPosition("binlog.000003", 500)
    stats = RunStats()
    stats.events["post_created"] = 10
    tty = RangeProgress(files, start, end, io.StringIO(), tty=True)
    bar = tty.render(BinlogPosition("binlog.000002", 500), stats, time.monotonic() + 1)
    assert bar.startswith("\r[") and " 50.0%" in bar and "binlog.000002:500 of binlog.000003:500" in bar
    out = io.StringIO()
    plain = RangeProgress(files, start, end, out, tty=False, line_interval=0)
    plain(BinlogPosition("binlog.000003", 500), stats)
    assert out.getvalue().startswith("replay progress: 100.0%") and out.getvalue().endswith("\n")


def test_counters_catch_up_with_the_run_totals_without_double_counting() -> None:
    m = Metrics()
    stats = RunStats()
    stats.rows, stats.transactions = 10, 4
    stats.events["post_created"] = 3
    stats.filtered["guid_backfill"] = 2
    m.add_counts(stats)
    m.add_counts(stats)  # nothing new: nothing added
    stats.rows += 5
    stats.events["post_created"] += 1
    stats.events["post_snapshot"] = 7
    m.add_counts(stats)
    assert m.value("wpcdc_rows_total") == 15
    assert m.value("wpcdc_transactions_total") == 4
    assert m.value("wpcdc_events_published_total", {"event_type": "post_created"}) == 4
    assert m.value("wpcdc_events_published_total", {"event_type": "post_snapshot"}) == 7
    assert m.value("wpcdc_rows_filtered_total", {"reason": "guid_backfill"}) == 2


def _closed_by_server(sock: socket.socket) -> bool:
    """True when the server closes the connection (EOF or reset) within the client's safety
    timeout; False when it keeps it open that long."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_metrics_server_closes_idle_connections_and_caps_them() -> None:
    server = ObservabilityServer(Metrics(), "127.0.0.1", 0, 60, idle_timeout=0.5, max_connections=2).start()
    try:
        idle = [socket.create_connection(("127.0.0.1", server.port), timeout=30) for _ in range(2)]
        # Both slots are held by clients that send nothing: the next connection gets no thread.
        extra = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        assert _closed_by_server(extra)
        # The idle ones are closed by the server's per-connection timeout, not kept forever.
        assert all(_closed_by_server(s) for s in idle)
        for s in (*idle, extra):
            s.close()
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=30) as reply:
            assert reply.status == 200  # the slots were given back
    finally:
        server.stop()


def test_broker_reports_drive_readiness_the_gauge_and_the_error_counter() -> None:
    m = Metrics()
    m.source_up = m.sink_up = True
    m.broker_health(BrokerHealth(True, "", 0.1, 0))
    assert m.readiness(60) == (True, "ok") and m.value("wpcdc_sink_connected") == 1
    m.broker_health(BrokerHealth(False, "lost the connection to the broker", 2.5, 1))
    assert m.readiness(60) == (False, "broker not reachable: lost the connection to the broker")
    assert m.value("wpcdc_sink_connected") == 0 and m.value("wpcdc_oldest_unacked_seconds") == 2.5
    m.broker_health(BrokerHealth(False, "lost the connection to the broker", 3.0, 1))  # same failure
    assert m.value("wpcdc_publish_errors_total") == 1
    m.broker_health(BrokerHealth(True, "", 0.0, 0))  # a new producer counts from 0 again
    m.broker_health(BrokerHealth(False, "metadata request failed", 1.0, 1))
    assert m.value("wpcdc_publish_errors_total") == 2


def test_a_silent_source_is_not_ready_after_the_stall_limit() -> None:
    m = Metrics()
    m.source_up = m.sink_up = True
    m.source_stall_seconds = 3.0
    m.source_idle()
    assert m.readiness(60) == (True, "ok")
    m.last_idle_at = time.time() - 4  # the last heartbeat was 4 s ago
    ok, reason = m.readiness(60)
    assert not ok and "no event or heartbeat from the source for 4" in reason


def test_broker_health_log_says_down_once_and_back_once(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[BrokerHealth] = []
    report = HealthLog(seen.append)
    with caplog.at_level(logging.INFO, logger="cdc.sink.kafka"):
        for up in (True, False, False, True, True):
            report(BrokerHealth(up, "" if up else "lost the connection to the broker", 0.0, 0))
    lines = [r.getMessage() for r in caplog.records]
    assert len(seen) == 5 and len(lines) == 2
    assert lines[0].startswith("Kafka broker unreachable: lost the connection")
    assert lines[1].startswith("Kafka broker reachable again after")


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _Stop(threading.Event):
    def __init__(self, clock: _Clock) -> None:
        super().__init__()
        self.clock = clock
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout or 0.0)
        self.clock.now += timeout or 0.0
        return len(self.waits) >= 6


def test_backoff_resets_after_a_short_healthy_run(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr("cdc.pipeline.time.monotonic", clock)
    config = parse_config({"source": {"reconnect_backoff_initial_seconds": 1, "reconnect_backoff_max_seconds": 30,
                                      "reconnect_backoff_reset_seconds": 5}})  # fmt: skip
    m = Metrics()
    runs = iter([0.0, 0.0, 0.0, 6.0, 0.0, 0.0])  # seconds each attempt stays connected before failing

    def attempt() -> None:
        healthy = next(runs)
        if healthy:
            m.source_connected_at = clock.now
            clock.now += healthy
        raise SourceError("the binlog connection was lost")

    stop = _Stop(clock)
    supervise(attempt, lambda exc: None, config, m, stop)
    # 1, 2, 4 while it never got going; after 6 s connected (> 5 s) back to 1, then 2 again.
    assert stop.waits == [1, 2, 4, 1, 2, 4]


def test_source_server_metric_names_only_the_server_read() -> None:
    from cdc.ops.metrics import Metrics

    m = Metrics()
    m.source_server("db1:3306")
    assert m.value("wpcdc_source_server_info", {"server": "db1:3306"}) == 1
    assert m.value("wpcdc_source_server_moves_total") == 0
    m.source_server("db2:3306")
    m.source_server("db2:3306")
    assert m.registry.get_sample_value("wpcdc_source_server_info", {"server": "db1:3306"}) is None
    assert m.value("wpcdc_source_server_info", {"server": "db2:3306"}) == 1
    assert m.value("wpcdc_source_server_moves_total") == 1
