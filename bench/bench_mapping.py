"""Benchmark: the reader's part after the source, in one process and without I/O. The bench
workload's row changes are read once from a throwaway MariaDB, then handed to `Pipeline.stream`
again and again by a stand-in source (prefetching each run of 500 as the read-ahead does), mapped,
and turned into Kafka messages as the producer process would receive them; with the mapper's fast
paths and its reference code (`fast_paths=False`), round by round. Prints CPU µs per row change
(medians of the rounds) for the mapping alone and the whole loop, and a digest of every message's
topic, key, value and headers, which must be the same both ways. Asserts nothing.

    .venv/bin/python bench/bench_mapping.py --posts 2000 --rounds 7
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import DB, generate  # bench/bench.py: this script runs from its own directory
from cdc import pipeline
from cdc.config import Config, parse_config
from cdc.core.changes import RowChange
from cdc.core.position import BinlogPosition
from cdc.dev.stack import MYSQL_PASSWORD, MYSQL_USER, MariaDB, create_wordpress_tables
from cdc.mapping.mapper import Mapper
from cdc.mapping.state import PostInfo, TermInfo, WordPressState
from cdc.ops.metrics import Metrics
from cdc.sink.kafka import KafkaMessages


class Answers:
    """A database lookup that knows nothing (the workload never needs one): no I/O in the loop."""

    live = True

    def post(self, blog_id: int, post_id: int) -> PostInfo | None:
        return None

    def term(self, blog_id: int, term_taxonomy_id: int) -> TermInfo | None:
        return None

    def posts(self, blog_id: int, post_ids: list[int]) -> dict[int, PostInfo]:
        return {}

    def terms(self, blog_id: int, term_taxonomy_ids: list[int]) -> dict[int, TermInfo]:
        return {}


class Messages:
    """The sink: Kafka messages as the producer process receives them, folded into a digest (off
    the clock) every 500, as the process sink ships its batches."""

    def __init__(self, config: Config) -> None:
        self._messages = KafkaMessages(config.kafka)
        self._batch: list[Any] = []
        self._digest = hashlib.sha256()
        self.count = 0
        self.off_clock = 0.0

    def send(self, event: dict[str, Any], value: bytes | None = None) -> None:
        self._add(self._messages.event(event, value))

    def send_dead_letter(self, record: dict[str, Any]) -> None:
        self._add(self._messages.dead_letter(record))

    def _add(self, message: Any) -> None:
        self._batch.append(message)
        if len(self._batch) >= 500:
            self._fold()

    def _fold(self) -> None:
        began = time.process_time()
        for topic, key, value, headers in self._batch:
            self._digest.update(repr((topic, key, len(value), headers)).encode() + value)
        self.count += len(self._batch)
        self._batch = []
        self.off_clock += time.process_time() - began

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def digest(self) -> str:
        self._fold()
        return self._digest.hexdigest()[:16]


def recorded(config: Config, start: str, end: str) -> list[Any]:
    file, pos = start.split(":")
    stop_file, stop_pos = end.split(":")
    source = pipeline.BinlogSource(
        config, BinlogPosition(file, int(pos)), blocking=False, stop_at=BinlogPosition(stop_file, int(stop_pos))
    )
    try:
        return list(source.items())
    finally:
        source.close()


def stand_in(items: list[Any]) -> type:
    class Recorded:
        def __init__(self, *args: Any, prefetch_changes: Any = None, **kwargs: Any) -> None:
            self._prefetch = prefetch_changes

        def items(self) -> Iterator[Any]:
            held: list[Any] = []
            rows: list[RowChange] = []
            for item in items:
                held.append(item)
                if type(item) is RowChange:
                    rows.append(item)
                    if len(rows) >= 500:
                        self._prefetch(rows)
                        yield from held
                        held, rows = [], []
            if rows:
                self._prefetch(rows)
            yield from held

        def close(self) -> None:
            pass

    return Recorded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="wpcdc-bench-mapping-"))
    db = MariaDB(base / "mariadb", server_id=301)
    try:
        db.start()
        conn = db.root()
        create_wordpress_tables(conn, DB)
        conn.close()
        start = db.binlog_end()
        generate(db, args.posts)
        end = db.binlog_end()
        os.environ["WPCDC_MYSQL_PASSWORD"] = MYSQL_PASSWORD
        config = parse_config(
            {
                "mysql": {"host": "127.0.0.1", "port": db.port, "user": MYSQL_USER, "server_id": 4242},
                "wordpress": {"database": DB},
                "kafka": {"bootstrap_servers": ["127.0.0.1:9"]},
                "checkpoint": {"path": str(base / "checkpoint.json")},
            }
        )
        items = recorded(config, start, end)
    finally:
        db.stop()
        shutil.rmtree(base, ignore_errors=True)
    rows = [i for i in items if type(i) is RowChange]
    pipeline.BinlogSource = stand_in(items)  # type: ignore[misc]

    def mapper(fast: bool) -> Mapper:
        return Mapper(WordPressState(Answers()), 4242, config.filters, config.mapping, fast_paths=fast)

    figures: dict[bool, tuple[list[float], list[float], set[tuple[int, str]]]] = {
        fast: ([], [], set()) for fast in (True, False)
    }
    for _ in range(args.rounds):
        for fast, (mapping, loop, digests) in figures.items():  # interleaved: a change of load hits both
            m = mapper(fast)
            began = time.process_time()
            for row in rows:
                m.map(row)
            mapping.append(time.process_time() - began)
            sink = Messages(config)
            p = pipeline.Pipeline(config, mapper(fast), sink, None, Metrics(), threading.Event(), 4242)
            began = time.process_time()
            p.stream(BinlogPosition(start.split(":")[0], 4), blocking=False)
            loop.append(time.process_time() - began - sink.off_clock)
            digest = sink.digest()
            digests.add((sink.count, digest))

    def us(xs: list[float]) -> str:
        return f"{1e6 * statistics.median(xs) / len(rows):.1f} µs (min {1e6 * min(xs) / len(rows):.1f})"

    print(f"{len(rows)} row changes, {args.rounds} rounds, load average {os.getloadavg()[0]:.1f}")
    for fast, (mapping, loop, digests) in figures.items():
        print(
            f"{'fast paths' if fast else 'reference '}: mapping alone {us(mapping)} per row change, pipeline loop "
            f"with prefetch and messages {us(loop)}; messages and digest {sorted(digests)}"
        )
    same = figures[True][2] == figures[False][2] and len(figures[True][2]) == 1
    print("the same messages both ways" if same else "THE MESSAGES DIFFER between the fast paths and the reference")


if __name__ == "__main__":
    main()
