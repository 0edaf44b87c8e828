"""The Kafka-facing suite runs on Apache Kafka (see tests/conftest.py `apache_kafka`): what Tansu
cannot prove — topic limits, missing topics, SASL/SCRAM over TLS, checkpoints kept in Kafka.

It runs on the MariaDB leg only: what it proves is the broker side (limits, topics, SCRAM, the Kafka
checkpoint store), which reads the same events whatever server produced them; the server-specific
parts (decoding, kill -9 and resume with file checkpoints, outages) run on both legs in
tests/integration and tests/faults. A test here that does depend on the server names its legs itself
with `@pytest.mark.parametrize("stack", [...], indirect=True)`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from tests.conftest import BROKER_FIGURES
from tests.integration.conftest import Site, Stack
from tests.topics import read_values

KAFKA_LEG = "mariadb"


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test of this directory on the KAFKA_LEG only, unless it parametrizes `stack` itself: the
    mark goes on before pytest parametrizes, so it takes the place of the fixture's two params."""
    named = any("stack" in str(m.args[0]) for m in metafunc.definition.iter_markers("parametrize") if m.args)
    if "stack" in metafunc.fixturenames and not named:
        metafunc.definition.add_marker(pytest.mark.parametrize("stack", [KAFKA_LEG], indirect=True))


@pytest.fixture
def asite(apache_stack: Stack, tmp_path: Path) -> Iterator[Site]:
    """A Site whose topics (3 partitions each) are on Apache Kafka."""
    s = Site(apache_stack, tmp_path)
    try:
        yield s
    finally:
        s.close()  # no streamer outlives a failed test


def read_topic(
    site: Site, topic: str | None = None, committed: bool = True, idle: float = 2.0, timeout: float = 120
) -> list[dict[str, Any]]:
    """Every value on the topic (default: the site's) as a consumer with isolation.level
    read_committed (or read_uncommitted) sees it: read to the end offsets (read_committed: the last
    stable offset), then until nothing came for `idle` s."""
    return read_values(
        site.stack.broker.bootstrap, topic or site.topic, committed=committed, idle=idle, timeout=timeout
    )


def tally(expected: int, committed: list[dict[str, Any]], uncommitted: list[dict[str, Any]]) -> tuple[int, int, int]:
    """(lost, duplicated, records in aborted transactions) of a run that should have published
    `expected` events, from what read_committed and read_uncommitted consumers saw (read_topic)."""
    ids = Counter(str(v["event_id"]) for v in committed)
    return expected - len(ids), sum(n - 1 for n in ids.values()), len(uncommitted) - len(committed)


def set_topic_config(bootstrap: str, topic: str, **configs: Any) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="wpcdc-tests")
    try:
        resource = ConfigResource(
            ConfigResourceType.TOPIC, topic, configs={k.replace("_", "."): str(v) for k, v in configs.items()}
        )
        admin.alter_configs([resource])
    finally:
        admin.close()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if BROKER_FIGURES:
        terminalreporter.section("brokers")
        for line in BROKER_FIGURES:
            terminalreporter.write_line(line)
