"""The producer child's side of cdc.sink.process, imported alone by the child (`python -c`): kafka-python
(through cdc.sink.producer and cdc.sink.topics) and the standard library only, so the child starts
without pydantic or the streamer's configuration and mapping modules."""

from __future__ import annotations

import gc
import signal
import sys
from multiprocessing.connection import Connection

from cdc.errors import KafkaSetupError, ProducerFenced, SinkError, WpcdcError
from cdc.sink.producer import Producer
from cdc.sink.topics import ask_broker
from cdc.sink.wire import HealthPipe, ProducerSettings


def main() -> None:
    """Entry point of `python -c` in the child: the two pipes' descriptors are in argv. Down the
    main pipe come ("topics", settings, wait_ms) when the parent wants the broker asked about its
    topics first (answered, then the fitted settings follow), and ("start", settings): a dict of
    ProducerSettings' fields."""
    conn, health = (Connection(int(fd)) for fd in sys.argv[1:3])
    # Everything imported lives as long as the child: out of the cyclic collector's sight, which
    # walked kafka-python's protocol classes at every full collection and at exit (see cdc.cli._started).
    gc.freeze()
    # The parent decides when to stop (flush, checkpoint, then close); a terminal's Ctrl-C reaches
    # the whole process group and must not kill the producer mid-flush.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        request = conn.recv()
        if request[0] == "topics":
            if not _answer_topics(conn, ProducerSettings(**request[1]), request[2]):
                return
            request = conn.recv()
    except (EOFError, OSError):
        return  # the parent is gone, or gave up on what the broker said
    _child(conn, ProducerSettings(**request[1]), HealthPipe(health))


def _answer_topics(conn: Connection, settings: ProducerSettings, wait_ms: int) -> bool:
    """The broker's word on the topics (cdc.sink.topics.ask_broker), asked here where kafka-python is
    loaded anyway, so the streamer never imports it. False when it was a verdict to stop on."""
    try:
        limits = ask_broker(settings, wait_ms)
    except KafkaSetupError as exc:
        conn.send(("setup", exc.problem, exc.fix))
        return False
    except SinkError as exc:
        conn.send(("error", exc.problem, exc.fix))
        return False
    conn.send(("topics", limits.max_message_bytes, limits.unreadable))
    return True


def _verdict(exc: WpcdcError) -> tuple[str, str, str]:
    return ("fenced" if isinstance(exc, ProducerFenced) else "error", exc.problem, exc.fix)


def _child(conn: Connection, config: ProducerSettings, health: HealthPipe) -> None:
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
