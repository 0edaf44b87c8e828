"""The producer child imports kafka-python and cdc.sink's producer modules only: no pydantic and none
of the streamer's configuration, mapping or pipeline modules (they cost the child ~0.2 CPU s and
~15 MiB at every start), and its settings survive the trip down the pipe as a plain dict."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

from cdc.config import KafkaConfig
from cdc.sink.wire import ProducerSettings


def test_the_child_imports_neither_pydantic_nor_the_streamer() -> None:
    code = "import json, sys; import cdc.sink.child; print(json.dumps(sorted(sys.modules)))"
    modules = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout)
    assert "kafka.producer.kafka" in modules
    assert not [m for m in modules if m.split(".")[0] in ("pydantic", "pydantic_core", "yaml")]
    assert sorted(m for m in modules if m.startswith("cdc")) == [
        "cdc", "cdc.errors", "cdc.sink", "cdc.sink.child", "cdc.sink.producer", "cdc.sink.topics", "cdc.sink.wire",
    ]  # fmt: skip


def test_the_streamer_imports_no_kafka_python_unless_it_produces_in_process() -> None:
    """The reader's side of the producer child (cdc.sink.process), the runner and the CLI import no
    kafka-python: the child, which loads it anyway, asks the broker about the topics (~0.2 CPU s less
    at every start of the reader)."""
    code = (
        "import json, sys; import cdc.cli, cdc.runner, cdc.sink.process, cdc.pipeline; "
        "print(json.dumps(sorted(sys.modules)))"
    )
    modules = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout)
    assert "cdc.sink.process" in modules and "cdc.sink.topics" in modules
    assert not [m for m in modules if m.split(".")[0] == "kafka"]


def test_settings_are_the_configs_values_as_a_plain_dict() -> None:
    config = KafkaConfig(
        bootstrap_servers=["k1:9092", "k2:9092"], topic="t", linger_ms=7, delivery="exactly_once",
        transactional_id="wpcdc-1", security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
        sasl_username="u", sasl_password="s3cret",
    )  # fmt: skip
    settings = dataclasses.asdict(ProducerSettings.of(config))
    assert json.loads(json.dumps(settings)) == settings, "plain values only (no pydantic objects to unpickle)"
    back = ProducerSettings(**settings)
    assert (back.bootstrap_servers, back.linger_ms, back.transactional_id) == (["k1:9092", "k2:9092"], 7, "wpcdc-1")
    assert back.security["sasl_plain_password"] == "s3cret"
    assert "s3cret" not in repr(back), "the password never reaches a log line through repr"
