"""Pure parts of the group: a source's derived config, the lease a member gives its sources, and the
member's metrics. The group itself runs on Apache Kafka in tests/kafka/test_cluster.py."""

from __future__ import annotations

import os
import threading
import time

import pytest

from cdc.cluster import watch_lease
from cdc.config import parse_config
from cdc.errors import ConfigError
from cdc.ops.group import GroupMetrics

GROUP = {
    "mysql": {"host": "db", "server_id": 100, "password_file": "/run/top"},
    "kafka": {"topic": "shared.posts", "transactional_id": "top-level-id"},
    "checkpoint": {"store": "kafka", "kafka_key": "top-level-key", "path": "/var/lib/wpcdc/cp.json"},
    "metrics": {"enabled": True, "port": 9000},
    "cluster": {
        "group_id": "g",
        "sources": [
            {"name": "a", "wordpress": {"database": "blog_a"}},
            {"name": "b", "mysql": {"host": "db-b", "password": "pw-b"}, "topic": "b.posts", "checkpoint_key": "kb"},
        ],
    },
}


def test_a_source_inherits_the_top_level_except_what_must_be_its_own() -> None:
    config = parse_config(GROUP)
    a, b = config.for_source("a"), config.for_source("b")
    assert (a.mysql.host, a.wordpress.database, a.kafka.topic) == ("db", "blog_a", "shared.posts")
    assert (b.mysql.host, b.wordpress.database, b.kafka.topic) == ("db-b", "wordpress", "b.posts")
    # Never inherited: two sources sharing a key, transactional id, reader id or lock would collide.
    assert a.checkpoint_key() == "db:3306/blog_a" and b.checkpoint_key() == "kb"
    assert a.transactional_id() == "wpcdc:db:3306/blog_a" and b.transactional_id() == "wpcdc:kb"
    assert (a.mysql.server_id, b.mysql.server_id) == (100, 102)
    assert str(a.checkpoint.path) == "/var/lib/wpcdc/cp.a.json" and (a.metrics.port, b.metrics.port) == (9001, 9002)
    # A source's own password replaces the top level's file (and WPCDC_MYSQL_PASSWORD, see cli).
    assert a.mysql.password_file is not None and b.mysql.password_file is None
    assert config.source_has_own_password("b") and not config.source_has_own_password("a")
    assert a.cluster.group_id is None and not a.cluster.sources  # a source's config is a single-source one
    with pytest.raises(ConfigError, match="no source 'c'"):
        config.for_source("c")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"checkpoint_key": "db:3306/blog_a"}, "same checkpoint key"),
        ({"mysql": {"server_id": 100}, "wordpress": {"database": "other"}}, "same mysql host, port and server_id"),
        ({"metrics_port": 9001}, "same metrics port"),
        ({"name": "bad name"}, "cluster.sources.1.name"),
    ],
)
def test_sources_that_would_collide_are_refused(change: dict, message: str) -> None:
    sources = [GROUP["cluster"]["sources"][0], {"name": "b", "mysql": {"host": "db"}, **change}]  # type: ignore[index]
    with pytest.raises(ConfigError, match=message):
        parse_config({**GROUP, "cluster": {"group_id": "g", "sources": sources}})


def test_a_config_without_cluster_is_unchanged() -> None:
    config = parse_config({"mysql": {"host": "db"}})
    assert config.cluster.group_id is None and config.source_names() == []


def _lease(seconds: float) -> tuple[threading.Event, int, threading.Thread]:
    read, write = os.pipe()
    stop = threading.Event()
    return stop, write, watch_lease(stop, seconds, read)


def test_the_lease_holds_while_renewed_and_ends_when_the_member_is_gone() -> None:
    stop, write, thread = _lease(0.6)
    for _ in range(6):
        os.write(write, b".")
        time.sleep(0.2)
    assert not stop.is_set()  # 1.2 s, renewed every 0.2 s
    os.close(write)  # the member died (kill -9 closes the pipe)
    thread.join(5)
    assert stop.is_set()


def test_the_lease_expires_without_renewals() -> None:
    stop, write, thread = _lease(0.5)
    thread.join(5)
    assert stop.is_set()
    os.close(write)


def test_group_metrics_count_ownership_and_readiness_comes_from_the_member() -> None:
    m = GroupMetrics(["a", "b"], "g")
    assert m.value("wpcdc_cluster_source_running", {"source": "b"}) == 0  # present from the start
    m.ownership_change("a", "acquired")
    m.running("a", True)
    m.ownership_change("a", "lost")
    assert m.value("wpcdc_cluster_ownership_changes_total", {"source": "a", "change": "acquired"}) == 1
    assert m.value("wpcdc_cluster_ownership_changes_total", {"source": "a", "change": "lost"}) == 1
    assert m.value("wpcdc_cluster_source_owned", {"source": "a"}) == 0
    assert m.readiness(60) == (False, "not started")
    m.readiness_probe = lambda: (True, "standby")
    assert m.readiness(60) == (True, "standby")


class _Exited:
    """A source child that has exited with `code` (only what Member._supervise reads)."""

    def __init__(self, code: int, started_at: float) -> None:
        self.code, self.started_at = code, started_at

    def alive(self) -> bool:
        return False

    def exit_code(self) -> int:
        return self.code

    def close(self) -> None:
        pass


def test_after_a_pause_past_the_session_no_source_restarts_until_the_group_has_answered(tmp_path) -> None:
    # A lease that lapsed in a pause stops the source with exit 0 (nothing to commit), not 8: restarted
    # one backoff later, before Kafka told the member it lost the partition, it would fence the new owner.
    from cdc.cluster import Member

    config = parse_config(GROUP)
    member = Member(config, tmp_path / "config.yaml", "kafka", threading.Event())
    started: list[int] = []
    member._start = started.append  # type: ignore[method-assign]
    session = config.cluster.session_timeout_ms / 1000
    member._owned = {0, 1}
    assert not member.note_pause(session * 0.5, now=1000.0)  # a short stall is not a pause
    assert member.note_pause(session + 1, now=1000.0)
    member._children = {0: _Exited(0, started_at=0.0), 1: _Exited(1, started_at=0.0)}  # type: ignore[dict-item]
    member._supervise(now=1002.0)
    member._supervise(now=1000.0 + 2 * session - 0.1)
    assert started == []
    member._supervise(now=1000.0 + 2 * session)
    assert sorted(started) == [0, 1]


def test_without_a_pause_an_exited_source_restarts_after_its_backoff(tmp_path) -> None:
    from cdc.cluster import Member

    member = Member(parse_config(GROUP), tmp_path / "config.yaml", "kafka", threading.Event())
    started: list[int] = []
    member._start = started.append  # type: ignore[method-assign]
    member._owned = {0}
    member._children = {0: _Exited(0, started_at=0.0)}  # type: ignore[dict-item]
    member._supervise(now=500.0)  # ran for more than 60 s: restarted after 1 s
    assert started == []
    member._supervise(now=501.0)
    assert started == [0]
