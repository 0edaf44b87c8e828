"""Prometheus metrics. Children of labelled metrics are cached: `.labels()` is too slow per event."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self._published = Counter(
            "wpcdc_events_published_total", "Events handed to the sink, by type", ["event_type"], registry=r
        )
        self._filtered = Counter(
            "wpcdc_rows_filtered_total", "Row changes dropped by a documented filter rule", ["reason"], registry=r
        )
        self.dead_letters = Counter("wpcdc_dead_letters_total", "Row changes sent to the dead-letter path", registry=r)
        self.transactions = Counter("wpcdc_transactions_total", "Binlog transactions processed", registry=r)
        self._reconnects = Counter(
            "wpcdc_reconnects_total", "Restarts of the reader or producer after a failure", ["reason"], registry=r
        )
        self.checkpoint_pos = Gauge("wpcdc_checkpoint_position", "Binlog position of the last checkpoint", registry=r)
        self.decode_errors = Counter(
            "wpcdc_decode_errors_total", "Meta values that looked PHP-serialized but did not decode", registry=r
        )
        self._children: dict[tuple[str, str], Counter] = {}

    def _child(self, metric: Counter, name: str, label: str) -> Counter:
        key = (name, label)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(label)
        return child

    def published(self, event_type: str) -> None:
        self._child(self._published, "p", event_type).inc()

    def filtered(self, reason: str) -> None:
        self._child(self._filtered, "f", reason).inc()

    def reconnect(self, reason: str) -> None:
        self._child(self._reconnects, "r", reason).inc()

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.registry.get_sample_value(name, labels or {}) or 0.0
