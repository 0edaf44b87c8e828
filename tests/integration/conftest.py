"""A real server (MariaDB, then Oracle MySQL: see tests/conftest.py; binlog ROW/FULL/FULL) and a real
Kafka-protocol broker (Tansu), started once per session on free ports and stopped by PID; each test gets
its own schema, topics and checkpoint."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from cdc.dev.kafka import Kafka
from cdc.dev.mysql import MySQL
from cdc.dev.stack import (
    MYSQL_PASSWORD,
    MYSQL_USER,
    MariaDB,
    Tansu,
    create_topics,
    create_wordpress_tables,
)
from tests.processes import wait_or_kill

_counter = itertools.count(1)
_SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
_validators: dict[str, Any] = {}


def assert_schema_valid(value: dict[str, Any]) -> None:
    """Every event any integration test reads is checked against the checked-in JSON Schema."""
    import json

    from jsonschema import Draft202012Validator

    kind = value["event_type"]
    if kind not in _validators:
        _validators[kind] = Draft202012Validator(json.loads((_SCHEMAS / f"{kind}.json").read_text()))
    errors = sorted(_validators[kind].iter_errors(value), key=str)
    assert not errors, f"{kind} does not match schemas/{kind}.json: {errors[0].message}"


Server = MariaDB | MySQL


def new_server(kind: str, base: Path, **kwargs: Any) -> Server:
    """A server of this kind ("mariadb" or "mysql"), not started."""
    return MySQL(base, **kwargs) if kind == "mysql" else MariaDB(base, **kwargs)


def status_statement(kind: str) -> str:
    """The binlog end: MySQL 8.4 removed SHOW MASTER STATUS (SHOW BINARY LOG STATUS exists since 8.2)."""
    return "SHOW BINARY LOG STATUS" if kind == "mysql" else "SHOW MASTER STATUS"


@dataclass
class Stack:
    db: Server
    broker: Tansu | Kafka
    base: Path

    @property
    def kind(self) -> str:
        return self.db.kind

    def new_server(self, base: Path, **kwargs: Any) -> Server:
        """Another server of the same kind as the session's, not started (for tests that restart one)."""
        return new_server(self.kind, base, **kwargs)


@dataclass
class Record:
    key: str
    value: dict[str, Any]
    headers: dict[str, str]
    partition: int
    offset: int
    raw: bytes = b""  # the message value as the broker holds it


class Streamer:
    def __init__(self, site: Site, *extra: str) -> None:
        self.log = site.dir / f"streamer-{next(_counter)}.log"
        self._fh = open(self.log, "wb")
        site.streamers.append(self)  # stopped by the fixture if the test does not get that far
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cdc.cli", "run", "--config", str(site.config_path), *extra],
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, "WPCDC_MYSQL_PASSWORD": MYSQL_PASSWORD},
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait(timeout)

    def wait(self, timeout: float = 30) -> int:
        return wait_or_kill(self.proc, timeout, self._fh)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


class Site:
    """One WordPress schema on the shared server, with its own topics and config."""

    def __init__(
        self, stack: Stack, directory: Path, overrides: dict[str, Any] | None = None, database: str | None = None
    ) -> None:
        """A new schema with the WordPress tables, or (`database`) one that a real WordPress installed."""
        n = next(_counter)
        self.stack = stack
        self.dir = directory
        self.streamers: list[Streamer] = []
        self.database = database or f"wp_site_{n}_{os.getpid()}"
        self.topic = f"t{n}-{os.getpid()}.posts"
        self.dead_letter_topic = f"t{n}-{os.getpid()}.dead-letter"
        self.conn = stack.db.root()
        if database is None:
            create_wordpress_tables(self.conn, self.database)
        create_topics(stack.broker.bootstrap, [self.topic, self.dead_letter_topic], partitions=3)
        self.checkpoint_path = directory / "checkpoint.json"
        self.config: dict[str, Any] = {
            "mysql": {"host": "127.0.0.1", "port": stack.db.port, "user": MYSQL_USER, "server_id": 9000 + 2 * n},
            "wordpress": {"database": self.database, "table_prefix": "wp_"},
            "kafka": {
                "bootstrap_servers": [stack.broker.bootstrap],
                "topic": self.topic,
                "dead_letter_topic": self.dead_letter_topic,
                "linger_ms": 5,
            },
            "checkpoint": {"path": str(self.checkpoint_path), "interval_seconds": 0.2},
            "source": {"reconnect_backoff_initial_seconds": 0.2, "reconnect_backoff_max_seconds": 2},
        }
        for section, values in (overrides or {}).items():
            self.config.setdefault(section, {}).update(values)
        self.config_path = directory / "config.yaml"
        self.write_config()
        self.start = self.position()

    def write_config(self) -> None:
        import yaml

        self.config_path.write_text(yaml.safe_dump(self.config))

    def position(self) -> str:
        with self.conn.cursor() as cur:
            cur.execute(status_statement(self.stack.kind))
            file, pos = cur.fetchone()[:2]
        return f"{file}:{pos}"

    def sql(self, *statements: str, args: Any = None) -> None:
        """Each statement is its own autocommit transaction, as WordPress runs them."""
        with self.conn.cursor() as cur:
            cur.execute(f"USE `{self.database}`")
            for s in statements:
                cur.execute(s, args)

    def query(self, statement: str) -> list[tuple[Any, ...]]:
        with self.conn.cursor() as cur:
            cur.execute(f"USE `{self.database}`")
            cur.execute(statement)
            return list(cur.fetchall())

    def insert_post(self, title: str = "Post", status: str = "draft", post_type: str = "post", **cols: Any) -> int:
        values = {
            "post_title": title, "post_status": status, "post_type": post_type, "post_content": f"<p>{title}</p>",
            "post_excerpt": "", "to_ping": "", "pinged": "", "post_content_filtered": "", **cols,
        }  # fmt: skip
        names = ", ".join(values)
        marks = ", ".join(["%s"] * len(values))
        with self.conn.cursor() as cur:
            cur.execute(f"USE `{self.database}`")
            cur.execute(f"INSERT INTO wp_posts ({names}) VALUES ({marks})", list(values.values()))
            return int(cur.lastrowid)

    def cli(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cdc.cli", *args, "--config", str(self.config_path)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "WPCDC_MYSQL_PASSWORD": MYSQL_PASSWORD, **(env or {})},
        )

    def set_checkpoint(self, position: str | None = None) -> None:
        result = self.cli("checkpoint", "set", position or self.start)
        assert result.returncode == 0, result.stderr

    def streamer(self, *extra: str) -> Streamer:
        return Streamer(self, *extra)

    def close(self) -> None:
        """After the test, also when it failed or was interrupted: no streamer outlives it."""
        try:
            for s in self.streamers:
                if s.proc.poll() is None:
                    try:
                        s.stop(timeout=10)
                    except subprocess.TimeoutExpired:
                        pass  # Streamer.wait killed it
        finally:
            self.conn.close()

    def consume(
        self, expect: int | None = None, topic: str | None = None, idle: float = 2.0, timeout: float = 60
    ) -> list[Record]:
        """Everything on the topic, read with assign() (Tansu's group joins are slow). Returns once
        `expect` records arrived (then waits `idle` more for any surplus) or nothing came for `idle`s."""
        topic = topic or self.topic
        consumer = KafkaConsumer(
            bootstrap_servers=self.stack.broker.bootstrap, enable_auto_commit=False, consumer_timeout_ms=200
        )
        try:
            parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
            consumer.assign(parts)
            consumer.seek_to_beginning(*parts)
            out: list[Record] = []
            deadline = time.monotonic() + timeout
            last_new = time.monotonic()
            while time.monotonic() < deadline:
                batch = consumer.poll(timeout_ms=200)
                for _tp, msgs in batch.items():
                    for m in msgs:
                        assert_schema_valid(orjson.loads(m.value))
                        out.append(
                            Record(
                                m.key.decode(), orjson.loads(m.value), {k: v.decode() for k, v in m.headers},
                                m.partition, m.offset, m.value,
                            )
                        )  # fmt: skip
                        last_new = time.monotonic()
                quiet = time.monotonic() - last_new
                if expect is not None and len(out) >= expect and quiet >= min(idle, 0.5):
                    break
                if expect is None and quiet >= idle:
                    break
            return out
        finally:
            consumer.close()


@pytest.fixture
def site(stack: Stack, tmp_path: Path) -> Iterator[Site]:
    s = Site(stack, tmp_path)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def make_site(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    sites: list[Site] = []

    def factory(**overrides: Any) -> Site:
        s = Site(stack, tmp_path_factory.mktemp("site"), overrides)
        sites.append(s)
        return s

    try:
        yield factory
    finally:
        for s in sites:
            s.close()


def in_binlog_order(records: list[Record]) -> list[Record]:
    return sorted(
        records,
        key=lambda r: (
            r.value["source"]["file"],
            r.value["source"]["pos"],
            r.value["source"]["row"],
            r.value["event_id"],
        ),
    )
