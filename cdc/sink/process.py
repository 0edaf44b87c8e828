"""The Kafka sink in a child process, so producing does not share the GIL with binlog decoding.

On 2 cores the reader (decode + map + JSON) and kafka-python (~60 µs of Python per message through
send(), 30-35 µs in the child through Producer.produce_batch) would otherwise share one core.
The parent builds the messages (value, key, headers) and ships them in batches over a pipe; the
child sends them in the order received (so per-post order holds) and answers each flush with the
producer's verdict. The parent only checkpoints after that answer.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from cdc.config import KafkaConfig
from cdc.errors import KafkaSetupError, ProducerFenced, SinkError, WpcdcError
from cdc.sink.kafka import BrokerHealth, HealthListener, HealthLog, KafkaMessages, Message
from cdc.sink.topics import TopicLimits, fit, wait_ms
from cdc.sink.wire import HealthPipe, ProducerSettings

log = logging.getLogger(__name__)

_BATCH = 500  # messages per pipe write: amortises pickling and syscalls, bounds memory
# A partial batch waits at most this long: under light load an event must not sit in the parent
# until the next checkpoint (the reader may be blocked waiting for the next binlog event).
_MAX_BATCH_DELAY = 0.002


def _start_child() -> tuple[subprocess.Popen[bytes], Connection, Connection]:
    """The producer child, started as a plain `python -c` (not multiprocessing: see cdc.sink.wire.HealthPipe),
    with a duplex pipe for batches and flushes and a pipe for its health reports. It imports only
    cdc.sink.child (kafka-python, cdc.sink.producer and cdc.sink.topics), not the streamer's own modules."""
    main, main_child = socket.socketpair()
    health, health_child = socket.socketpair()
    fds = (main_child.fileno(), health_child.fileno())
    package_root = str(Path(__file__).resolve().parents[2])  # where `cdc` is, installed or not
    path = os.environ.get("PYTHONPATH")
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from cdc.sink.child import main; main()", *map(str, fds)],
            pass_fds=fds, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": package_root + (os.pathsep + path if path else "")},
        )  # fmt: skip
    except OSError as exc:
        main.close()
        health.close()
        raise SinkError(f"cannot start the producer process: {exc}") from None
    finally:
        main_child.close()
        health_child.close()
    return proc, Connection(main.detach()), Connection(health.detach())


class ProcessSink:
    def __init__(
        self,
        config: KafkaConfig,
        start_timeout: float = 60.0,
        report: HealthListener | None = None,
        fit_to_topics: bool = True,
    ) -> None:
        """`fit_to_topics`: the child first asks the broker whether both topics exist and what their
        max.message.bytes is (cdc.sink.topics; KafkaSetupError or SinkError as there), and the
        producer and the messages are fitted to that. Asked there and not here because the child
        has kafka-python loaded anyway: the streamer then never imports it."""
        self._batch: list[Message] = []
        self._lock = threading.Lock()  # serialises the batch and every write to the pipe
        self._pending = threading.Event()
        self._closing = False
        self._ship_error: SinkError | None = None
        self._last_add = 0.0
        self._flush_timeout = config.flush_timeout_seconds + 10
        # exactly_once: `commit` is the one place that waits; a flush only hands on what is batched.
        self.transactional = config.delivery == "exactly_once" and config.transactional_id is not None
        self._stopped = threading.Event()
        self._report = report if report is not None else HealthLog()
        settings = ProducerSettings.of(config)  # ConfigError here, before a child starts
        self._proc, self._conn, health = _start_child()
        self._health = HealthPipe(health)
        try:
            if fit_to_topics:
                wait = wait_ms(config)
                self._send_start(("topics", dataclasses.asdict(settings), wait))
                reply = self._reply(start_timeout + wait / 1000, "say what the broker has of the topics")
                if reply[0] != "topics":
                    raise _raised(reply)
                config = fit(config, TopicLimits(reply[1], reply[2]))
                settings = ProducerSettings.of(config)
            self._send_start(("start", dataclasses.asdict(settings)))
            reply = self._reply(start_timeout, "start the producer process")
            if reply[0] != "ready":
                raise _raised(reply)
        except BaseException:
            self._conn.close()  # a child still waiting for its settings sees the pipe close and exits
            self._join(5)
            self._kill()
            self._health.conn.close()
            raise
        self._messages = KafkaMessages(config)
        self._shipper = threading.Thread(target=self._ship_partial_batches, name="wpcdc-shipper", daemon=True)
        self._shipper.start()
        self._watcher = threading.Thread(target=self._watch_health, name="wpcdc-broker-health", daemon=True)
        self._watcher.start()

    def _watch_health(self) -> None:
        while not self._stopped.is_set():
            health = self._health.read(0.25)
            if self._stopped.is_set():
                return
            alive = self._proc.poll() is None
            if not alive:
                health = BrokerHealth(False, "the producer process exited", health.oldest_unacked_seconds,
                                      health.failures + 1)  # fmt: skip
            self._report(health)
            if not alive:
                return

    def _ship_partial_batches(self) -> None:
        """Ships a partial batch once the reader has added nothing for _MAX_BATCH_DELAY. Under load
        the reader ships full batches itself and this thread only naps."""
        while True:
            self._pending.wait()
            self._pending.clear()
            while not self._closing:
                time.sleep(_MAX_BATCH_DELAY)
                with self._lock:
                    if not self._batch:
                        break
                    if time.monotonic() - self._last_add >= _MAX_BATCH_DELAY and self._ship_error is None:
                        try:
                            self._ship()
                        except SinkError as exc:
                            self._ship_error = exc
                        break
            if self._closing:
                return

    def _send_start(self, request: tuple[Any, ...]) -> None:
        try:
            self._conn.send(request)
        except OSError:
            pass  # the child died at start: _reply names its exit code

    def _reply(self, timeout: float, what: str) -> tuple[Any, ...]:
        try:
            if not self._conn.poll(timeout):
                self._kill()
                raise SinkError(f"the producer process did not {what} within {timeout:.0f}s")
            return self._conn.recv()  # type: ignore[no-any-return]
        except (EOFError, OSError):
            code = self._join(5)
            raise SinkError(f"the producer process exited (code {code}) before it could {what}") from None

    def _ship(self) -> None:
        """Caller holds the lock."""
        batch, self._batch = self._batch, []
        try:
            self._conn.send(("batch", batch))
        except (BrokenPipeError, OSError):
            raise SinkError(f"the producer process exited (code {self._proc.poll()})") from None

    def _add(self, message: Message) -> None:
        with self._lock:
            if self._ship_error is not None:
                raise self._ship_error
            self._batch.append(message)
            self._last_add = time.monotonic()
            if len(self._batch) >= _BATCH:
                self._ship()
            elif len(self._batch) == 1:
                self._pending.set()

    def send(self, event: dict[str, Any], value: bytes | None = None) -> None:
        self._add(self._messages.event(event, value))

    def send_dead_letter(self, record: dict[str, Any]) -> None:
        self._add(self._messages.dead_letter(record))

    def flush(self) -> None:
        self._request("flush", None)

    def commit(self, record: tuple[str, bytes, bytes]) -> None:
        """exactly_once: commit the open transaction with the checkpoint `record` in it (see
        KafkaProducerSink.commit). Raises ProducerFenced or SinkError."""
        self._request("commit", record)

    def _request(self, kind: str, payload: object) -> None:
        with self._lock:
            if self._ship_error is not None:
                error, self._ship_error = self._ship_error, None
                raise error
            if self._batch:
                self._ship()
            if kind == "flush" and self.transactional:
                return  # the commit right after it waits for everything, with its checkpoint record
            try:
                self._conn.send((kind, payload))
            except (BrokenPipeError, OSError):
                raise SinkError(f"the producer process exited (code {self._proc.poll()})") from None
        reply = self._reply(self._flush_timeout, "confirm delivery")
        if reply[0] != "ok":
            raise _raised(reply)

    def _join(self, timeout: float) -> int | None:
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def _kill(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._join(5)

    def close(self) -> None:
        self._stopped.set()
        self._closing = True
        self._pending.set()
        with self._lock:
            try:
                self._conn.send(("close", None))
            except (BrokenPipeError, OSError):
                pass
        self._join(10)
        self._kill()
        self._conn.close()
        self._health.conn.close()


def _raised(reply: tuple[Any, ...]) -> WpcdcError:
    if reply[0] == "fenced":
        return ProducerFenced(reply[1], reply[2])
    if reply[0] == "setup":
        return KafkaSetupError(reply[1], reply[2])
    return SinkError(reply[1], reply[2])
