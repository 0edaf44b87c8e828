"""The `wpcdc` command line. Errors that wpcdc anticipates are printed as problem + fix, without a
stack trace, and exit with the code of their class (see cdc.errors)."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from cdc.config import Config, load_config
from cdc.errors import WpcdcError
from cdc.ops.logs import setup_logging

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("cdc")


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        log.info("received %s: finishing the current transaction, flushing, checkpointing", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def _friendly(fn: F) -> F:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except WpcdcError as exc:
            click.echo(exc.render(), err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper  # type: ignore[return-value]


_SOURCE = "wpcdc.source"


def _remember_source(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        ctx.meta[_SOURCE] = value
    return value


_config_path_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default="config.yaml",
    show_default=True,
    help="YAML configuration file (see config.yaml for every key).",
)
# Every command that reads the config can act on one of cluster.sources, exactly as that source's
# `run --source` child sees it (its connection, checkpoint, topics).
_source_option = click.option(
    "--source",
    default=None,
    expose_value=False,
    callback=_remember_source,
    help="With cluster.sources: act on this source alone (what a group member runs as `run --source NAME`).",
)


def config_option(fn: F) -> F:
    return _config_path_option(_source_option(fn))  # type: ignore[no-any-return]


def _source_name() -> str | None:
    ctx = click.get_current_context(silent=True)
    return ctx.meta.get(_SOURCE) if ctx is not None else None


def _load(config_path: Path) -> Config:
    setup_logging()
    config = load_config(config_path)
    name = _source_name()
    if name is None:
        setup_logging(config.log.level, config.log.format)
        return config
    import os

    from cdc.config import ENV_MYSQL_PASSWORD
    from cdc.errors import ConfigError

    if config.cluster.group_id is None:
        raise ConfigError(f"--source {name}: {config_path} has no cluster.sources", "leave out --source")
    if name in config.source_names() and config.source_has_own_password(name):
        os.environ.pop(ENV_MYSQL_PASSWORD, None)  # the variable is the top level's password
    config = config.for_source(name)
    setup_logging(config.log.level, config.log.format, source=name)
    return config


def _started() -> None:
    """Called once a streaming command has imported and configured everything: what exists now
    lives as long as the process, so the cyclic collector stops walking it (gc.freeze). It walked
    all of it (pydantic's schemas, kafka-python's protocol classes, ...) at every full collection
    while streaming and once more at exit: ~0.15-0.3 CPU s of a short replay (README "Performance",
    start-up). Nothing is collected differently: these objects were never garbage."""
    gc.freeze()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="wpcdc")
def main() -> None:
    """wpcdc: stream WordPress changes from the MySQL/MariaDB binlog to Kafka as domain events."""


@main.command()
@config_option
@click.option("--sink", type=click.Choice(["kafka", "stdout"]), default="kafka", show_default=True)
@click.option("--lease-seconds", type=float, default=None, hidden=True)
@_friendly
def run(config_path: Path, sink: str, lease_seconds: float | None) -> None:
    """Tail the binlog, publish events, checkpoint. Runs until SIGTERM/SIGINT, then flushes,
    writes the checkpoint and exits 0. Resumes from the checkpoint; without one, starts at
    source.start_at. With cluster.group_id: joins the group and runs the sources Kafka assigns
    to this process (see "Running several" in the README)."""
    from cdc.runner import run_live

    config = _load(config_path)
    stop = _stop_on_signals()
    if lease_seconds is not None:
        from cdc.cluster import watch_lease

        watch_lease(stop, lease_seconds)
    if config.cluster.group_id is not None:
        from cdc.cluster import run_member

        _started()
        run_member(config, config_path, sink, stop)
        return
    _started()
    run_live(config, sink, stop)


@main.command()
@config_option
@click.option("--from", "from_", required=True, help="Start position FILE:POS (a transaction boundary).")
@click.option(
    "--to", "to", default=None, help="Stop after the transaction that reaches FILE:POS (default: binlog end)."
)
@click.option("--sink", type=click.Choice(["stdout", "kafka"]), default="stdout", show_default=True)
@click.option("--update-checkpoint", is_flag=True, help="Move the live checkpoint to where the replay ended.")
@_friendly
def replay(config_path: Path, from_: str, to: str | None, sink: str, update_checkpoint: bool) -> None:
    """Re-read a binlog range and emit its events again, with the same event ids as the first time.
    Stdout gets one JSON event per line; the summary goes to stderr. The live checkpoint is left
    alone unless --update-checkpoint is given."""
    from cdc.core.position import BinlogPosition
    from cdc.runner import replay as do_replay

    config = _load(config_path)
    start = BinlogPosition.parse(from_, "--from")
    end = BinlogPosition.parse(to, "--to") if to else None
    stop = _stop_on_signals()
    _started()
    result = do_replay(config, start, end, sink, update_checkpoint, stop)
    s = result.stats
    total = sum(s.events.values())
    summary = {
        "from": str(start),
        "to": str(s.last_position) if s.last_position else None,
        "events": total,
        "by_type": dict(sorted(s.events.items())),
        "filtered": dict(sorted(s.filtered.items())),
        "dead_letters": s.dead_letters,
        "transactions": s.transactions,
        "seconds": round(result.seconds, 3),
    }
    click.echo("replay summary: " + json.dumps(summary), err=True)


@main.command()
@config_option
@click.option("--blog", "blogs", type=int, multiple=True, help="Only this blog (repeatable). Default: every blog.")
@click.option("--post-type", "post_types", multiple=True, help="Only this post type (repeatable).")
@click.option("--post-ids", default=None, help="Only these post ids, comma-separated (e.g. 1,2,3).")
@click.option(
    "--modified-since", default=None, help="Only posts modified at or after this UTC time (ISO 8601 date or datetime)."
)
@click.option("--sink", type=click.Choice(["kafka", "stdout"]), default="kafka", show_default=True)
@click.option("--no-wait", is_flag=True, help="Hand the request to the running `wpcdc run` and return at once.")
@_friendly
def snapshot(
    config_path: Path,
    blogs: tuple[int, ...],
    post_types: tuple[str, ...],
    post_ids: str | None,
    modified_since: str | None,
    sink: str,
    no_wait: bool,
) -> None:
    """Publish post_snapshot events (post, meta, terms) for every matching post while streaming goes on.

    When a `wpcdc run` owns the checkpoint, the request is handed to it (a file next to the
    checkpoint) and this command shows its progress until it completes; otherwise this command
    streams from the checkpoint itself, snapshots, checkpoints and exits when the snapshot is done."""
    from cdc.ops.progress import SnapshotProgress
    from cdc.runner import follow_snapshot, request_snapshot, run_live
    from cdc.snapshot.snapshotter import SnapshotRequest

    config = _load(config_path)
    request = SnapshotRequest.new(
        blogs=list(blogs) or None,
        post_types=list(post_types) or None,
        post_ids=_post_ids(post_ids),
        modified_since=_utc_datetime(modified_since),
    )
    stop = _stop_on_signals()
    bar = SnapshotProgress(sys.stderr, sys.stderr.isatty())
    if request_snapshot(config, request):
        click.echo(f"snapshot {request.id} ({request.describe()}) handed to the running wpcdc", err=True)
        if no_wait:
            return
        try:
            done = follow_snapshot(config, request, bar, stop)
        finally:
            bar.finish()
        if not done:
            click.echo(f"stopped watching; snapshot {request.id} goes on in the running wpcdc", err=True)
        return
    click.echo(
        f"no wpcdc run owns {config.checkpoint.path}: streaming and snapshotting here ({request.describe()})", err=True
    )

    def progress(snapshotter: Any) -> None:
        state = snapshotter.state
        if state is not None and state.request.id == request.id:
            bar(request.id, state.done_posts, state.total_posts)

    _started()
    try:
        stats = run_live(config, sink, stop, snapshot_request=request, snapshot_progress=progress)
    finally:
        bar.finish()
    if stop.is_set():
        click.echo(
            f"stopped; snapshot {request.id} resumes from the checkpoint with `wpcdc run` or `wpcdc snapshot`", err=True
        )
        sys.exit(0)
    click.echo(f"snapshot {request.id} complete: {stats.events.get('post_snapshot', 0)} post_snapshot events", err=True)


def _post_ids(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        ids = [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        from cdc.errors import ConfigError

        raise ConfigError(
            f"--post-ids {text!r} is not a list of post ids", "write them comma-separated: 1,2,3"
        ) from None
    return ids or None


def _utc_datetime(text: str | None) -> str | None:
    if not text:
        return None
    import datetime as dt

    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        from cdc.errors import ConfigError

        raise ConfigError(
            f"--modified-since {text!r} is not an ISO 8601 date", "e.g. 2026-11-01 or 2026-11-01T12:00:00Z"
        ) from None
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value.strftime("%Y-%m-%d %H:%M:%S")


@contextlib.contextmanager
def _no_running_streamer(config: Config) -> Iterator[None]:
    """A running `run` would overwrite the change at its next checkpoint: refuse instead."""
    from cdc.snapshot.requests import CheckpointLock

    lock = CheckpointLock(config.checkpoint.path)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


@main.group()
def checkpoint() -> None:
    """Show, set, reset or copy the stored checkpoint (checkpoint.store: file or kafka)."""


@contextlib.contextmanager
def _store(config: Config, kind: str | None = None) -> Iterator[Any]:
    from cdc.runner import make_store

    store = make_store(config, kind=kind)
    try:
        yield store
    finally:
        store.close()


@checkpoint.command("show")
@config_option
@_friendly
def checkpoint_show(config_path: Path) -> None:
    """Print the checkpoint as JSON (nothing secret is in it); `null` and exit 0 when there is none
    yet (a normal state: `run` then starts at source.start_at)."""
    config = _load(config_path)
    with _store(config) as store:
        cp = store.load()
    if cp is None:
        click.echo(f"no checkpoint at {store.where}; `run` will start at source.start_at", err=True)
        click.echo("null")  # still JSON for scripts; exit 1 is reserved for bugs
        return
    click.echo(json.dumps(cp.to_json(), indent=2))


@checkpoint.command("set")
@config_option
@click.argument("position")
@_friendly
def checkpoint_set(config_path: Path, position: str) -> None:
    """Set the checkpoint to POSITION (FILE:POS, a transaction boundary). The server is asked
    whether the file exists, whether POSITION starts a transaction (exit 7 inside one, as `run`)
    and for its server_id."""
    from cdc.checkpoint.store import Checkpoint
    from cdc.core.position import BinlogPosition
    from cdc.source.server import Server

    config = _load(config_path)
    pos = BinlogPosition.parse(position)
    with Server(config) as server:
        server.require_position(pos, "position")
        server.require_boundary(pos, "position")  # `run` would refuse it; say so now, not at start-up
        source_id = server.server_id()
    with _no_running_streamer(config), _store(config) as store:
        saved = store.save(Checkpoint(pos, source_id))
    click.echo(json.dumps(saved.to_json(), indent=2))


@checkpoint.command("reset")
@config_option
@_friendly
def checkpoint_reset(config_path: Path) -> None:
    """Delete the checkpoint; the next `run` starts at source.start_at."""
    config = _load(config_path)
    with _no_running_streamer(config), _store(config) as store:
        removed = store.reset()
    click.echo(("removed the checkpoint in " if removed else "there was no checkpoint in ") + store.where, err=True)


@checkpoint.command("copy")
@config_option
@click.option("--to", "target", type=click.Choice(["kafka", "file"]), required=True, help="The store to copy into.")
@click.option("--force", is_flag=True, help="Overwrite a checkpoint the target already has.")
@_friendly
def checkpoint_copy(config_path: Path, target: str, force: bool) -> None:
    """Copy the checkpoint from the other store into --to (file: checkpoint.path; kafka:
    checkpoint.kafka_topic, key checkpoint.kafka_key). Then set checkpoint.store to it."""
    from cdc.errors import CheckpointError

    config = _load(config_path)
    source_kind = "file" if target == "kafka" else "kafka"
    with _no_running_streamer(config), _store(config, source_kind) as source, _store(config, target) as dest:
        cp = source.load()
        if cp is None:
            raise CheckpointError(
                f"there is no checkpoint in {source.where} to copy", "check checkpoint.path / kafka_key"
            )
        existing = dest.load()
        if existing is not None and existing.to_json() != cp.to_json() and not force:
            raise CheckpointError(
                f"{dest.where} already has a checkpoint ({existing.position}, updated {existing.updated_at})",
                "pass --force to overwrite it with " + str(cp.position),
            )
        # updated_at is restamped: the copy is the newest record; the position and snapshot are the source's.
        saved = dest.save(cp)
    click.echo(f"copied {saved.position} from {source.where} to {dest.where}", err=True)
    click.echo(json.dumps(saved.to_json(), indent=2))


@main.command()
@config_option
@click.option("--offline", is_flag=True, help="Only validate the configuration file; contact nothing.")
@_friendly
def check(config_path: Path, offline: bool) -> None:
    """Preflight: configuration, server settings, privileges, tables, checkpoint, Kafka topics.
    Exits 0 when `run` would start, 3 otherwise."""
    config = _load(config_path)
    names = config.source_names()
    if offline:
        group = f" (group {config.cluster.group_id}, sources {', '.join(names)})" if names else ""
        click.echo(f"ok       configuration {config_path}{group}")
        return
    if names:
        from cdc.errors import ConfigError

        raise ConfigError(
            f"{config_path} is a group's config ({len(names)} sources): name the source to check",
            "`wpcdc check --source NAME` for each of " + ", ".join(names),
        )
    from cdc.errors import PreflightError, WpcdcError
    from cdc.runner import make_store
    from cdc.sink.in_process import probe_kafka
    from cdc.sink.topics import fit_to_topics
    from cdc.source.preflight import Finding, check_server, failures
    from cdc.source.server import GtidSet, Server

    findings: list[Finding] = [Finding(True, "configuration", str(config_path))]
    with Server(config) as server:
        findings += check_server(config, server)
        try:
            cp = make_store(config).load()
            logs = server.binary_logs()
            if logs:
                findings.append(Finding(True, "binlog files", f"{len(logs)}, oldest {logs[0]}"))
            else:
                findings.append(Finding(False, "binlog files", "none: binary logging is off (see log_bin)"))
            if cp is None:
                findings.append(Finding(True, "checkpoint", f"none yet; run starts at the {config.source.start_at}"))
            elif cp.gtid_set is not None and server.uses_gtid(config.source.position):
                problem = server.gtid_resume_problem(GtidSet.parse(cp.gtid_set))
                if problem is not None:
                    raise problem
                findings.append(
                    Finding(True, "checkpoint", f"GTID state {cp.gtid_set or '(empty)'}: the server continues it")
                )
            else:
                resumed = server.resume_position(cp.position, cp.gtid)
                where = "is on the server"
                if resumed != cp.position:
                    where = f"ends its purged file (nothing after it): run resumes at {resumed}"
                findings.append(Finding(True, "checkpoint", f"{cp.position} {where}"))
        except WpcdcError as exc:
            findings.append(Finding(False, "binlog files / checkpoint", exc.problem, exc.fix))
    try:
        # Bounded, so a missing broker fails in seconds; longer with SASL, whose TLS handshake and SCRAM
        # exchange can take several seconds on a busy broker, and whose rejection is only known once
        # the exchange ran (too short a wait reports a wrong password as an unreachable broker).
        sasl = config.kafka.security_protocol.startswith("SASL")
        kafka = fit_to_topics(config.kafka, wait_seconds=15.0 if sasl else 5.0)
        probe_kafka(kafka, timeout_seconds=5.0)
        limit = (
            f"; events up to {kafka.max_request_size} bytes"
            if kafka.max_request_size < config.kafka.max_request_size
            else ""
        )
        findings.append(Finding(True, "kafka", f"topics {config.kafka.topic}, {config.kafka.dead_letter_topic}{limit}"))
    except WpcdcError as exc:
        findings.append(Finding(False, "kafka", exc.problem, exc.fix))
    for f in findings:
        label = "ok" if f.ok else ("warning" if f.warning else "FAIL")
        click.echo(f"{label:<8} {f.what}: {f.detail}")
        if not f.ok and f.fix:
            click.echo(f"         fix: {f.fix}")
    bad = failures(findings)
    if bad:
        raise PreflightError(f"{len(bad)} check(s) failed", "see the FAIL lines above")


@main.group()
def schemas() -> None:
    """JSON Schemas of the events."""


@schemas.command("export")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default="schemas", show_default=True)
def schemas_export(out: Path) -> None:
    """Write one JSON Schema per event type, generated from the event models."""
    from cdc.mapping.events import json_schemas

    out.mkdir(parents=True, exist_ok=True)
    for name, schema in json_schemas().items():
        (out / name).write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        click.echo(f"wrote {out / name}")


if __name__ == "__main__":
    main()
