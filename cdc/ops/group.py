"""The metrics of a group member (`run` with cluster.group_id): which sources run here, ownership
changes, and the member's readiness. Each source's own pipeline metrics are served by its process
(on cluster.sources[].metrics_port)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge


class GroupMetrics:
    def __init__(self, sources: list[str], group_id: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        self._running = Gauge(
            "wpcdc_cluster_source_running", "1 while this process runs the source (its child process is up)",
            ["source"], registry=r,
        )  # fmt: skip
        self._owned = Gauge(
            "wpcdc_cluster_source_owned", "1 while the group assigns the source to this process", ["source"], registry=r
        )
        self._changes = Counter(
            "wpcdc_cluster_ownership_changes_total",
            "Sources this process gained (acquired) or gave up (revoked: a rebalance; lost: evicted from the group)",
            ["source", "change"], registry=r,
        )  # fmt: skip
        self._restarts = Counter(
            "wpcdc_cluster_source_restarts_total", "Sources restarted after their process exited", ["source"],
            registry=r,
        )  # fmt: skip
        self._fenced = Counter(
            "wpcdc_cluster_source_fenced_total",
            "Sources stopped because a newer producer with their transactional id fenced this one",
            ["source"], registry=r,
        )  # fmt: skip
        self.member = False
        Gauge("wpcdc_cluster_member", "1 while this process is a stable member of its group", registry=r).set_function(
            lambda: 1 if self.member else 0
        )
        Gauge("wpcdc_cluster_info", "The group this process is in (value 1)", ["group_id"], registry=r).labels(
            group_id
        ).set(1)
        for name in sources:  # every series exists from the start, at 0, so alerts can use absent()/rate()
            self._running.labels(name).set(0)
            self._owned.labels(name).set(0)
            for change in ("acquired", "revoked", "lost"):
                self._changes.labels(name, change)
            self._restarts.labels(name)
            self._fenced.labels(name)
        self.readiness_probe: Callable[[], tuple[bool, str]] = lambda: (False, "not started")

    def ownership_change(self, source: str, change: str) -> None:
        self._changes.labels(source, change).inc()
        self._owned.labels(source).set(1 if change == "acquired" else 0)

    def running(self, source: str, up: bool) -> None:
        self._running.labels(source).set(1 if up else 0)

    def restart(self, source: str) -> None:
        self._restarts.labels(source).inc()

    def fenced(self, source: str) -> None:
        self._fenced.labels(source).inc()

    def readiness(self, max_lag_seconds: float) -> tuple[bool, str]:
        """Ready: a stable member of the group whose assigned sources all stream (each source's own
        /readyz, which has the lag limit), or a standby that holds none."""
        return self.readiness_probe()

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.registry.get_sample_value(name, labels or {}) or 0.0
