"""The producer child's side of cdc.sink.process, imported alone by the child (`python -c`): kafka-python
(through cdc.sink.producer) and the standard library only, so the child starts without pydantic or
the streamer's configuration and mapping modules."""

from __future__ import annotations

import dataclasses
import signal
import sys
from multiprocessing.connection import Connection

from cdc.errors import ProducerFenced, SinkError, WpcdcError
from cdc.sink.producer import BrokerHealth, Producer, ProducerSettings


class _HealthPipe:
    """The child's BrokerHealth reports, sent over a pipe of their own to the parent's watcher
    (which logs and feeds the metrics: the child has no logging set up and the main pipe is busy
    with batches and flushes). A pipe rather than multiprocessing shared memory: that needs
    multiprocessing to start the child, and its spawn start method runs a resource-tracker
    process besides (12 MiB) that has nothing to track here."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.last = BrokerHealth()

    def write(self, health: BrokerHealth) -> None:
        try:
            self.conn.send(tuple(dataclasses.astuple(health)))
        except OSError:
            pass  # the parent is gone; the main pipe tells the child so

    def read(self, timeout: float) -> BrokerHealth:
        """The latest report, waiting up to `timeout` for one; the previous one if none came."""
        try:
            while self.conn.poll(timeout):
                self.last = BrokerHealth(*self.conn.recv())
                timeout = 0
        except (EOFError, OSError):
            pass
        return self.last


def main() -> None:
    """Entry point of `python -c` in the child: the two pipes' descriptors are in argv, the
    producer settings (a dict of ProducerSettings' fields) come first down the main pipe."""
    conn, health = (Connection(int(fd)) for fd in sys.argv[1:3])
    settings = ProducerSettings(**conn.recv())
    _child(conn, settings, _HealthPipe(health))


def _verdict(exc: WpcdcError) -> tuple[str, str, str]:
    return ("fenced" if isinstance(exc, ProducerFenced) else "error", exc.problem, exc.fix)


def _child(conn: Connection, config: ProducerSettings, health: _HealthPipe) -> None:
    # The parent decides when to stop (flush, checkpoint, then close); a terminal's Ctrl-C reaches
    # the whole process group and must not kill the producer mid-flush.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        sink = Producer(config, report=health.write)
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
                        sink.produce_batch(payload)
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
