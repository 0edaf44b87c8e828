"""Errors that reach the user: each names the problem and the fix, and carries an exit code.

The CLI prints these without a stack trace; anything else is a bug and is shown with one.
"""

from __future__ import annotations

# Exit codes are part of the interface (systemd units and scripts branch on them).
EXIT_CONFIG = 2
EXIT_PREFLIGHT = 3
EXIT_POSITION_GONE = 4
EXIT_CHECKPOINT = 5
EXIT_SINK = 6
EXIT_SOURCE = 7
EXIT_FENCED = 8


class WpcdcError(Exception):
    exit_code = 1

    def __init__(self, problem: str, fix: str = "") -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix

    def render(self) -> str:
        text = f"error: {self.problem}"
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text


class ConfigError(WpcdcError):
    exit_code = EXIT_CONFIG


class PreflightError(WpcdcError):
    exit_code = EXIT_PREFLIGHT


class ServerUnreachable(PreflightError):
    """No connection to the server could be made. Fatal when starting (`check`, `run`'s preflight), but
    transient for a lookup or a snapshot read in a running stream: the server may be restarting."""


class PositionGoneError(WpcdcError):
    """The checkpoint (or --from) names a binlog file the server no longer has."""

    exit_code = EXIT_POSITION_GONE


class CheckpointError(WpcdcError):
    exit_code = EXIT_CHECKPOINT


class SinkError(WpcdcError):
    """The sink could not confirm delivery. Transient: the pipeline restarts from its checkpoint."""

    exit_code = EXIT_SINK


class OversizeError(WpcdcError):
    """An event is over the broker's limit and kafka.oversize_policy is `fail`: stop, do not retry."""

    exit_code = EXIT_SINK


class KafkaSetupError(WpcdcError):
    """Kafka refuses something wpcdc needs and retrying will not change it (a topic missing on a broker
    that does not create topics, rejected credentials): stop with the fix rather than retry forever."""

    exit_code = EXIT_SINK


class ProducerFenced(WpcdcError):
    """kafka.delivery exactly_once: a newer producer with this source's transactional id took over
    (another wpcdc started on the same source). Not retried: this process stops the source, and
    nothing it sent in its open transaction becomes visible to read_committed consumers.

    The interface for running sources: `run_live` raises it (after logging `event: fenced`); a caller
    running several sources stops that one and reports it fenced; `wpcdc run` exits 8."""

    exit_code = EXIT_FENCED


class SourceError(WpcdcError):
    """The binlog connection failed. Transient unless `fatal` is set."""

    exit_code = EXIT_SOURCE

    def __init__(self, problem: str, fix: str = "", *, fatal: bool = False) -> None:
        super().__init__(problem, fix)
        self.fatal = fatal


class LookupUnavailable(Exception):
    """The lookup could not answer (database down). Not a property of the row: the pipeline restarts
    rather than dead-letter a row or emit an event without its post type."""
