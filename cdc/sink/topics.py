"""What the broker says about wpcdc's topics, asked once before producing.

Two things a producer cannot learn by sending, and that retrying never fixes: a topic that does not
exist on a broker that does not create topics on demand (every send would wait for metadata until
kafka.max_block_ms, forever), and credentials the broker rejects (kafka-python keeps reconnecting
and only reports a bootstrap timeout). Both become a KafkaSetupError, which `run` does not retry.

And one limit a producer cannot see: the topic's `max.message.bytes`. A record batch over it is
refused by the broker on every retry, so the sink would be stuck at that event; events are fitted
(kafka.oversize_policy) and batches capped below the smaller of it and kafka.max_request_size.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cdc.errors import KafkaSetupError, SinkError
from cdc.sink.wire import ProducerSettings

if TYPE_CHECKING:
    from kafka import KafkaAdminClient

    from cdc.config import KafkaConfig

log = logging.getLogger(__name__)

# Kafka error codes in a DescribeTopics (metadata) answer.
_UNKNOWN_TOPIC = 3
_TOPIC_AUTHORIZATION_FAILED = 29
# Room for the batch header, the record's key, headers and framing around an event's JSON.
FRAMING = 512
_SMALLEST_LIMIT = 4096


@dataclass(frozen=True)
class TopicLimits:
    """What the broker said of the topics' `max.message.bytes`: those it gave, or why it gave none."""

    max_message_bytes: dict[str, int] = field(default_factory=dict)
    unreadable: str | None = None


class _AuthFailures(logging.Handler):
    """kafka-python logs a SASL rejection and retries until its bootstrap timeout, which it reports
    like an unreachable broker: this picks the rejection out of its log records."""

    def __init__(self, rejection: type[Exception]) -> None:
        super().__init__(logging.WARNING)
        self.seen: str | None = None
        self._rejection = rejection

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        for arg in args:
            if isinstance(arg, self._rejection):
                self.seen = str(arg)
                return
        if self.seen is None and "SaslAuthenticationFailed" in record.getMessage():
            self.seen = record.getMessage()


def _admin(config: ProducerSettings, wait_ms: int) -> KafkaAdminClient:
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError, SaslAuthenticationFailedError

    servers = ",".join(config.bootstrap_servers)
    security = config.security
    watcher = _AuthFailures(SaslAuthenticationFailedError)
    # The client's own lines about each retry are noise here: the outcome is reported below. They
    # still reach the watcher, which needs them.
    kafka_log = logging.getLogger("kafka")
    level, propagate = kafka_log.level, kafka_log.propagate
    kafka_log.setLevel(logging.WARNING)
    kafka_log.propagate = False
    kafka_log.addHandler(watcher)
    try:
        return KafkaAdminClient(
            bootstrap_servers=config.bootstrap_servers,
            client_id=f"{config.client_id}-setup",
            request_timeout_ms=min(config.request_timeout_ms, wait_ms),
            bootstrap_timeout_ms=wait_ms,
            # After a rejected SCRAM login the broker closes the socket, and kafka-python usually reports
            # that as "socket disconnected" rather than the rejection (about 1 attempt in 4 shows it, on
            # Apache Kafka 4.1 over TLS). With its default backoff (growing to ~13 s) a wrong password often
            # looked like an unreachable broker within the wait; retrying quickly sees the rejection.
            reconnect_backoff_ms=50,
            reconnect_backoff_max_ms=500,
            **security,
        )
    except KafkaError as exc:
        if watcher.seen is not None:
            # The rejection names the mechanism, never the password; the message below names neither.
            raise KafkaSetupError(
                f"Kafka at {servers} rejected the SASL credentials of user {security.get('sasl_plain_username')!r} "
                f"({security.get('sasl_mechanism')} over {security.get('security_protocol')})",
                "check kafka.sasl_username and its password (WPCDC_KAFKA_SASL_PASSWORD, kafka.sasl_password_file "
                "or kafka.sasl_password), and that the user exists on the broker for this mechanism",
            ) from None
        raise SinkError(
            f"cannot connect to Kafka at {servers}: {type(exc).__name__}",
            "check kafka.bootstrap_servers, kafka.security_protocol / ssl_cafile, and that the brokers are up",
        ) from None
    finally:
        kafka_log.removeHandler(watcher)
        kafka_log.setLevel(level)
        kafka_log.propagate = propagate


def _require_topics(admin: KafkaAdminClient, topics: list[str], servers: str) -> None:
    from kafka.errors import KafkaError

    try:
        described: list[dict[str, Any]] = admin.describe_topics(topics)
    except KafkaError as exc:
        raise SinkError(f"cannot read the metadata of topics {', '.join(topics)}: {exc}", "check the broker") from None
    for item in described:
        code = item.get("error_code", 0)
        name = item.get("name")
        if code == _UNKNOWN_TOPIC:
            raise KafkaSetupError(
                f"Kafka topic {name!r} does not exist on {servers}, and the broker does not create topics on demand",
                f"create it, e.g. `kafka-topics.sh --bootstrap-server {servers} --create --topic {name} "
                "--partitions 6` (partitions: the parallelism consumers get; events are keyed per post), "
                "or point kafka.topic / kafka.dead_letter_topic at existing topics",
            )
        if code == _TOPIC_AUTHORIZATION_FAILED:
            raise KafkaSetupError(
                f"Kafka user may not describe topic {name!r} on {servers} (TOPIC_AUTHORIZATION_FAILED)",
                "grant wpcdc's principal DESCRIBE and WRITE on the topic (kafka-acls.sh), or use another topic",
            )
        if code:
            raise SinkError(f"Kafka answered error code {code} for topic {name!r}", "check the broker's log")


def _max_message_bytes(admin: KafkaAdminClient, topics: list[str]) -> TopicLimits:
    from kafka.admin import ConfigResource, ConfigResourceType

    resources = [ConfigResource(ConfigResourceType.TOPIC, t, configs=["max.message.bytes"]) for t in topics]
    try:
        answer = admin.describe_configs(resources, config_filter="all")
    except Exception as exc:  # a broker without DescribeConfigs (or no ACL for it): fall back to the client limit
        return TopicLimits(unreadable=str(exc))
    out: dict[str, int] = {}
    for topic, entries in (answer.get("topic") or {}).items():
        value = (entries.get("max.message.bytes") or {}).get("value")
        if value is not None and str(value).isdigit():
            out[topic] = int(value)
    return TopicLimits(out)


def wait_ms(config: KafkaConfig | ProducerSettings, wait_seconds: float | None = None) -> int:
    """How long to try to reach the broker: `wait_seconds`, or kafka.max_block_ms and at least 5 s
    (enough for a TLS handshake and a SASL exchange on a loaded host; a verdict of "unreachable"
    where the broker said "wrong password" would be retried forever)."""
    return int(wait_seconds * 1000) if wait_seconds is not None else max(config.max_block_ms, 5000)


def ask_broker(config: ProducerSettings, wait: int) -> TopicLimits:
    """Both topics must exist (and the login work); their max.message.bytes. Raises KafkaSetupError
    when a topic is missing or the credentials are rejected, SinkError when the broker cannot be
    reached (transient). kafka-python is imported here, not with the module: the streamer asks
    through its producer child, which has kafka-python loaded anyway (cdc.sink.process)."""
    topics = list(dict.fromkeys([config.topic, config.dead_letter_topic]))
    admin = _admin(config, wait)
    try:
        _require_topics(admin, topics, ",".join(config.bootstrap_servers))
        return _max_message_bytes(admin, topics)
    finally:
        try:
            admin.close()
        except Exception:  # closing must not mask what was found
            log.debug("error closing the Kafka admin client", exc_info=True)


def fit_to_topics(config: KafkaConfig, wait_seconds: float | None = None) -> KafkaConfig:
    """`config` with max_request_size and batch_size lowered to the topics' max.message.bytes where
    that is smaller (see ask_broker for what it raises). `wait_seconds`: how long to try to connect
    (default: kafka.max_block_ms, at least 5 s)."""
    return fit(config, ask_broker(ProducerSettings.of(config), wait_ms(config, wait_seconds)))


def fit(config: KafkaConfig, answer: TopicLimits) -> KafkaConfig:
    """`config` fitted to what ask_broker found (in this process or the producer child's)."""
    if answer.unreadable is not None:
        log.info("cannot read the topics' max.message.bytes (%s); using kafka.max_request_size", answer.unreadable)
    limits = answer.max_message_bytes
    if not limits:
        return config
    topic, smallest = min(limits.items(), key=lambda item: item[1])
    # kafka-python does not split a batch the broker refuses as too large (the Java client does), so
    # batches must stay under the limit too, not only single events.
    batch_size = min(config.batch_size, smallest - FRAMING)
    if smallest >= config.max_request_size:
        return config if batch_size == config.batch_size else config.model_copy(update={"batch_size": batch_size})
    if smallest < _SMALLEST_LIMIT:
        raise KafkaSetupError(
            f"Kafka topic {topic!r} takes messages of at most {smallest} bytes (max.message.bytes), too small "
            "for wpcdc's events",
            f"raise it: kafka-configs.sh --alter --entity-type topics --entity-name {topic} "
            "--add-config max.message.bytes=1048588",
        )
    log.info(
        "topic %s takes messages of at most %d bytes (max.message.bytes), below kafka.max_request_size (%d): "
        "larger events follow kafka.oversize_policy (%s)",
        topic, smallest, config.max_request_size, config.oversize_policy,
        extra={"event": "topic_limit", "topic": topic, "max_message_bytes": smallest},
    )  # fmt: skip
    return config.model_copy(update={"max_request_size": smallest, "batch_size": batch_size})
