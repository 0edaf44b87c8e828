"""The Kafka-facing suite runs on Apache Kafka (see tests/conftest.py `apache_kafka`): what Tansu
cannot prove — topic limits, missing topics, SASL/SCRAM over TLS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from tests.conftest import BROKER_FIGURES
from tests.integration.conftest import Site, Stack


@pytest.fixture
def asite(apache_stack: Stack, tmp_path: Path) -> Iterator[Site]:
    """A Site whose topics (3 partitions each) are on Apache Kafka."""
    s = Site(apache_stack, tmp_path)
    yield s
    s.conn.close()


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
