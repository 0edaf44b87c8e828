"""The Kafka sink in a child process, so producing does not share the GIL with binlog decoding.

On 2 cores the reader (decode + map + JSON) and kafka-python (~60 µs of Python per message) each
fill a core. The parent builds the messages (value, key, headers) and ships them in batches over a
pipe; the child sends them in the order received (so per-post order holds) and answers each flush
with the producer's verdict. The parent only checkpoints after that answer.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from cdc.config import KafkaConfig
from cdc.errors import ProducerFenced, SinkError, WpcdcError
from cdc.sink.kafka import BrokerHealth, HealthListener, HealthLog, KafkaMessages, KafkaProducerSink, Message

log = logging.getLogger(__name__)

_BATCH = 500  # messages per pipe write: amortises pickling and syscalls, bounds memory
# A partial batch waits at most this long: under light load an event must not sit in the parent
# until the next checkpoint (the reader may be blocked waiting for the next binlog event).
_MAX_BATCH_DELAY = 0.002


_PROBLEM_BYTES = 400


class _SharedHealth:
    """The child's BrokerHealth in shared memory, read by the parent's watcher (which logs and feeds
    the metrics: the child has no logging set up and the pipe is busy with batches and flushes).
    Unlocked: a torn read costs one stale value for a quarter of a second."""

    def __init__(self, ctx: Any) -> None:
        self.numbers = ctx.Array("d", 3, lock=False)  # up, oldest unacked seconds, failures
        self.problem = ctx.Array("c", _PROBLEM_BYTES, lock=False)
        self.numbers[0] = 1.0

    def write(self, health: BrokerHealth) -> None:
        self.problem.value = health.problem.encode("utf-8", "replace")[: _PROBLEM_BYTES - 1]
        self.numbers[1] = health.oldest_unacked_seconds
        self.numbers[2] = health.failures
        self.numbers[0] = 1.0 if health.up else 0.0

    def read(self) -> BrokerHealth:
        up, oldest, failures = self.numbers[:]
        return BrokerHealth(up == 1.0, self.problem.value.decode("utf-8", "replace"), oldest, int(failures))


def _verdict(exc: WpcdcError) -> tuple[str, str, str]:
    return ("fenced" if isinstance(exc, ProducerFenced) else "error", exc.problem, exc.fix)


def _child(conn: Connection, config: KafkaConfig, health: _SharedHealth) -> None:
    # The parent decides when to stop (flush, checkpoint, then close); a terminal's Ctrl-C reaches
    # the whole process group and must not kill the producer mid-flush.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        sink = KafkaProducerSink(config, report=health.write)
    except SinkError as exc:
        conn.send(("error", exc.problem, exc.fix))
        return
    conn.send(("ready",))
    failure: WpcdcError | None = None
    try:
        while True:
            kind, payload = conn.recv()
            if kind == "batch":
                if failure is None:
                    try:
                        for message in payload:
                            sink.produce(message)
                    except (SinkError, ProducerFenced) as exc:
                        failure = exc
            elif kind == "flush" or kind == "commit":
                try:
                    if failure is not None:
                        raise failure
                    if kind == "commit":
                        sink.commit(payload)
                    else:
                        sink.flush()
                    conn.send(("ok",))
                except (SinkError, ProducerFenced) as exc:
                    conn.send(_verdict(exc))
                    failure = None
            elif kind == "close":
                break
    except (EOFError, OSError):
        pass  # the parent is gone: nothing to report to
    finally:
        sink.close()


class ProcessSink:
    def __init__(self, config: KafkaConfig, start_timeout: float = 60.0, report: HealthListener | None = None) -> None:
        self._messages = KafkaMessages(config)
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
        ctx = multiprocessing.get_context("spawn")
        self._health = _SharedHealth(ctx)
        self._report = report if report is not None else HealthLog()
        self._conn, child_conn = ctx.Pipe()
        self._proc = ctx.Process(
            target=_child, args=(child_conn, config, self._health), name="wpcdc-producer", daemon=True
        )
        self._proc.start()
        child_conn.close()
        reply = self._reply(start_timeout, "start the producer process")
        if reply[0] != "ready":
            self._proc.join(5)
            raise _raised(reply)
        self._shipper = threading.Thread(target=self._ship_partial_batches, name="wpcdc-shipper", daemon=True)
        self._shipper.start()
        self._watcher = threading.Thread(target=self._watch_health, name="wpcdc-broker-health", daemon=True)
        self._watcher.start()

    def _watch_health(self) -> None:
        while not self._stopped.wait(0.25):
            health = self._health.read()
            if not self._proc.is_alive():
                health = BrokerHealth(False, "the producer process exited", health.oldest_unacked_seconds,
                                      health.failures + 1)  # fmt: skip
            self._report(health)
            if not self._proc.is_alive():
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

    def _reply(self, timeout: float, what: str) -> tuple[Any, ...]:
        try:
            if not self._conn.poll(timeout):
                self._kill()
                raise SinkError(f"the producer process did not {what} within {timeout:.0f}s")
            return self._conn.recv()  # type: ignore[no-any-return]
        except (EOFError, OSError):
            code = self._proc.exitcode
            raise SinkError(f"the producer process exited (code {code}) before it could {what}") from None

    def _ship(self) -> None:
        """Caller holds the lock."""
        batch, self._batch = self._batch, []
        try:
            self._conn.send(("batch", batch))
        except (BrokenPipeError, OSError):
            raise SinkError(f"the producer process exited (code {self._proc.exitcode})") from None

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
                raise SinkError(f"the producer process exited (code {self._proc.exitcode})") from None
        reply = self._reply(self._flush_timeout, "confirm delivery")
        if reply[0] != "ok":
            raise _raised(reply)

    def _kill(self) -> None:
        if self._proc.is_alive():
            self._proc.kill()
        self._proc.join(5)

    def close(self) -> None:
        self._stopped.set()
        self._closing = True
        self._pending.set()
        with self._lock:
            try:
                self._conn.send(("close", None))
            except (BrokenPipeError, OSError):
                pass
        self._proc.join(10)
        self._kill()
        self._conn.close()


def _raised(reply: tuple[Any, ...]) -> WpcdcError:
    return ProducerFenced(reply[1], reply[2]) if reply[0] == "fenced" else SinkError(reply[1], reply[2])
