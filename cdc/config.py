"""The one configuration model tree. Every default lives here and nowhere else."""

from __future__ import annotations

import os
import re
import ssl
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from cdc.errors import ConfigError

# Secrets may come from these environment variables; they win over the file so that a config file
# can be committed without the password in it.
ENV_MYSQL_PASSWORD = "WPCDC_MYSQL_PASSWORD"
ENV_KAFKA_SASL_PASSWORD = "WPCDC_KAFKA_SASL_PASSWORD"


def _secret(env: str, file: Path | None, value: SecretStr | None, key: str) -> str | None:
    from_env = os.environ.get(env)
    if from_env is not None:
        return from_env
    if file is not None:
        try:
            return file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(
                f"{key}_file: cannot read {file}: {exc.strerror}",
                f"point {key}_file at a readable file, or set {env}",
            ) from None
    return value.get_secret_value() if value is not None else None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MySQLConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(3306, ge=1, le=65535)
    # Several servers of one replication topology, "host:port" each; when set it replaces host/port
    # (user, password and TLS settings are shared). `run` reads the first healthy one and moves to the
    # next when it fails, resuming from the checkpoint's GTID state (README "Several servers"); the
    # other commands use the first entry.
    hosts: list[str] = Field(default_factory=list)
    user: str = "wpcdc"
    password: SecretStr | None = None
    password_file: Path | None = None
    # The replica id this reader announces; must differ from every server and replica in the topology.
    server_id: int = Field(4201, ge=1, le=4294967295)
    connect_timeout_seconds: float = Field(10.0, gt=0)
    # The server sends a heartbeat when idle, so a quiet stream still notices SIGTERM and dead peers.
    heartbeat_seconds: float = Field(1.0, gt=0, le=60)
    # The live stream counts as dead after this many heartbeat periods without an event or a heartbeat
    # (/readyz 503 at once, then the connection is rebuilt).
    stall_heartbeats: int = Field(3, ge=2, le=100)
    # Queries (lookups, snapshots, the replay stream); connect_timeout_seconds bounds connect + handshake.
    read_timeout_seconds: float = Field(30.0, gt=0)
    # TLS to MySQL. The server certificate is always verified: against tls_ca_file, or the system's
    # CA bundle when that is null. tls_cert_file/tls_key_file: a client certificate, if required.
    tls: bool = False
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # Also check that the certificate names mysql.host (turn off only when connecting by IP address).
    tls_verify_identity: bool = True

    def tls_settings(self) -> dict[str, object]:
        """PyMySQL keyword arguments for TLS (empty without TLS)."""
        if not self.tls:
            return {}
        ca = self.tls_ca_file or ssl.get_default_verify_paths().cafile
        if ca is None:
            raise ConfigError(
                "mysql.tls is on but there is no CA bundle to verify the server certificate with",
                "set mysql.tls_ca_file to the CA certificate that signed the server's certificate",
            )
        out: dict[str, object] = {
            "ssl_ca": str(ca),
            "ssl_verify_cert": True,
            "ssl_verify_identity": self.tls_verify_identity,
        }
        if self.tls_cert_file is not None:
            out["ssl_cert"] = str(self.tls_cert_file)
        if self.tls_key_file is not None:
            out["ssl_key"] = str(self.tls_key_file)
        return out

    def stall_seconds(self) -> float:
        return self.heartbeat_seconds * self.stall_heartbeats

    def servers(self) -> list[tuple[str, int]]:
        """The servers wpcdc may read, in order: mysql.hosts, or mysql.host/mysql.port."""
        if not self.hosts:
            return [(self.host, self.port)]
        out = []
        for entry in self.hosts:
            host, port = _split_host_port(entry)
            out.append((host, int(port or 0)))
        return out

    @model_validator(mode="before")
    @classmethod
    def _first_host_is_host(cls, data: object) -> object:
        """With mysql.hosts, mysql.host/port are its first entry: what the other commands (check,
        replay, checkpoint set, snapshot) connect to. `run` reads whichever entry serves."""
        hosts = data.get("hosts") if isinstance(data, dict) else None
        first = (
            hosts.split(",")[0] if isinstance(hosts, str) else hosts[0] if isinstance(hosts, list) and hosts else None
        )
        if isinstance(first, str):
            host, port = _split_host_port(first.strip())
            if host and port and port.isdigit():
                return {**data, "host": host, "port": int(port)}  # type: ignore[dict-item]
        return data

    @field_validator("hosts", mode="before")
    @classmethod
    def _split_hosts(cls, v: object) -> object:
        return [s.strip() for s in v.split(",") if s.strip()] if isinstance(v, str) else v

    @field_validator("hosts")
    @classmethod
    def _hosts_are_host_port(cls, hosts: list[str]) -> list[str]:
        for entry in hosts:
            host, port = _split_host_port(entry)
            if not host or any(c.isspace() for c in entry) or port is None:
                raise ValueError(f"{entry!r} is not HOST:PORT (e.g. replica1.example.com:3306)")
            if not (port.isdigit() and 1 <= int(port) <= 65535):
                raise ValueError(f"{entry!r}: the port {port!r} is not a number from 1 to 65535")
        seen = [f"{h.lower()}:{int(p or 0)}" for h, p in map(_split_host_port, hosts)]
        twice = sorted({e for e in seen if seen.count(e) > 1})
        if twice:
            raise ValueError(f"lists {', '.join(twice)} more than once; list each server once")
        return hosts

    def resolved_password(self) -> str:
        return _secret(ENV_MYSQL_PASSWORD, self.password_file, self.password, "mysql.password") or ""


class WordPressConfig(_Strict):
    database: str = "wordpress"
    table_prefix: str = "wp_"

    @field_validator("table_prefix")
    @classmethod
    def _prefix_is_identifier(cls, v: str) -> str:
        if not v or not all(c.isalnum() or c == "_" for c in v):
            raise ValueError("must be letters, digits and underscores, like WordPress's $table_prefix")
        return v


class KafkaConfig(_Strict):
    bootstrap_servers: list[str] = Field(default_factory=lambda: ["127.0.0.1:9092"], min_length=1)
    topic: str = "wordpress.posts"
    dead_letter_topic: str = "wordpress.posts.dead-letter"
    client_id: str = "wpcdc"
    compression_type: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "lz4"
    linger_ms: int = Field(20, ge=0)
    batch_size: int = Field(1_048_576, ge=1024)
    max_request_size: int = Field(1_048_576, ge=4096)
    # An event larger than max_request_size: "truncate" cuts post_content / meta values to fit and
    # flags it (size and SHA-256 of the original); "dead_letter" sends its coordinates to the
    # dead-letter topic instead; "fail" stops wpcdc (exit 6) until the limit or the policy changes.
    oversize_policy: Literal["truncate", "dead_letter", "fail"] = "truncate"
    # How long a send may wait for metadata or buffer space before the pipeline treats the broker as down.
    max_block_ms: int = Field(10_000, ge=100)
    request_timeout_ms: int = Field(30_000, ge=100)
    # How long to wait for acknowledgements at a checkpoint before restarting from the last checkpoint.
    flush_timeout_seconds: float = Field(60.0, gt=0)
    # The broker counts as unreachable (wpcdc_sink_connected 0, /readyz 503, a warning in the log) when
    # a metadata probe (sent every second) fails or is unanswered this long, or a message waits this
    # long for its acknowledgement.
    health_timeout_seconds: float = Field(5.0, gt=0)
    # Cap of kafka-python's reconnect backoff: how soon a broker that is back is tried again.
    reconnect_backoff_max_ms: int = Field(1000, ge=50)
    # Run the producer in a child process so it does not share the GIL with binlog decoding
    # (about 2x end-to-end throughput on 2 cores). false: produce in the streamer's own process.
    producer_process: bool = True
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    sasl_password_file: Path | None = None
    ssl_cafile: Path | None = None
    # at_least_once: a crash re-sends the events after the last checkpoint (same event_ids).
    # exactly_once: each checkpoint interval's events, dead letters and checkpoint record are one Kafka
    # transaction (needs checkpoint.store: kafka); consumers must read with isolation.level=read_committed.
    delivery: Literal["at_least_once", "exactly_once"] = "at_least_once"
    # exactly_once: the producer's transactional.id, one per source: a newer producer with the same id
    # fences the older one. null: "wpcdc:" + the checkpoint key (Config.transactional_id()).
    transactional_id: str | None = None
    # exactly_once: the broker aborts a transaction left open this long (a producer that died mid-interval
    # and never came back); consumers cannot read past it meanwhile. Must not exceed the broker's
    # transaction.max.timeout.ms (15 min by default).
    transaction_timeout_ms: int = Field(60_000, ge=1000)

    def producer_security(self) -> dict[str, object]:
        """kafka-python keyword arguments for TLS/SASL; only those that are set."""
        out: dict[str, object] = {"security_protocol": self.security_protocol}
        if self.security_protocol.startswith("SASL"):
            if not self.sasl_mechanism or not self.sasl_username:
                raise ConfigError(
                    f"kafka.security_protocol={self.security_protocol} needs kafka.sasl_mechanism and "
                    "kafka.sasl_username",
                    "set both, and the password in " + ENV_KAFKA_SASL_PASSWORD + " or kafka.sasl_password_file",
                )
            out["sasl_mechanism"] = self.sasl_mechanism
            out["sasl_plain_username"] = self.sasl_username
            out["sasl_plain_password"] = _secret(
                ENV_KAFKA_SASL_PASSWORD, self.sasl_password_file, self.sasl_password, "kafka.sasl_password"
            )
        if self.ssl_cafile is not None:
            out["ssl_cafile"] = str(self.ssl_cafile)
        return out

    @field_validator("bootstrap_servers", mode="before")
    @classmethod
    def _split(cls, v: object) -> object:
        return [s.strip() for s in v.split(",") if s.strip()] if isinstance(v, str) else v

    @field_validator("bootstrap_servers")
    @classmethod
    def _host_port(cls, servers: list[str]) -> list[str]:
        # kafka-python would fail on these deep inside its connect code, with a traceback.
        for entry in servers:
            host, port = _split_host_port(entry)
            if not host or any(c.isspace() for c in entry):
                raise ValueError(f"{entry!r} is not HOST:PORT (e.g. kafka1.example.com:9092)")
            if port is not None and not (port.isdigit() and 1 <= int(port) <= 65535):
                raise ValueError(f"{entry!r}: the port {port!r} is not a number from 1 to 65535")
        return servers


def _split_host_port(entry: str) -> tuple[str, str | None]:
    """'host:port', '[v6]:port', 'host' (kafka-python's default port) -> (host, port or None)."""
    if entry.startswith("["):
        host, sep, rest = entry[1:].partition("]")
        if not sep:
            return "", None
        return host, (rest[1:] if rest.startswith(":") else (None if not rest else rest))
    if entry.count(":") > 1:  # a bare IPv6 address
        return entry, None
    host, sep, port = entry.partition(":")
    return host, (port if sep else None)


class CheckpointConfig(_Strict):
    # Where the checkpoint lives: "file" (checkpoint.path) or "kafka" (a record keyed by kafka_key in
    # the compacted topic kafka_topic, on the kafka.* brokers with their security settings). With
    # "kafka", checkpoint.path still names the local lock and snapshot-request files beside it.
    store: Literal["file", "kafka"] = "file"
    path: Path = Path("wpcdc-checkpoint.json")
    # Create it compacted, e.g. --partitions 1 --config cleanup.policy=compact; wpcdc never creates it.
    kafka_topic: str = "wpcdc.checkpoints"
    # The record key: which source this checkpoint is for. null: "<mysql.host>:<mysql.port>/<wordpress.database>".
    kafka_key: str | None = None
    # At most one checkpoint write (with a wait for broker acks) per interval; lower = fewer duplicates
    # after a crash, higher = more throughput.
    interval_seconds: float = Field(1.0, gt=0)
    # Also checkpoint once this many events are unacknowledged, to bound memory and replay after a crash.
    max_pending_events: int = Field(50_000, ge=1)


class SourceConfig(_Strict):
    # Where `run` starts when there is no checkpoint yet: the current end of the binlog (like Maxwell and
    # Debezium's schema-only mode) or the oldest binlog file the server still has.
    start_at: Literal["end", "beginning"] = "end"
    # How the checkpoint names the place to resume: `gtid` (the GTID state: resumable on any server of
    # the replication topology, event ids from GTIDs), `file` (file and position of one server), or
    # `auto`: gtid on MySQL with gtid_mode=ON and on MariaDB with gtid_strict_mode=ON, else file.
    position: Literal["auto", "gtid", "file"] = "auto"
    reconnect_backoff_initial_seconds: float = Field(0.5, gt=0)
    reconnect_backoff_max_seconds: float = Field(5.0, gt=0)
    # A run that stayed connected this long was healthy: the next failure waits the initial backoff again.
    reconnect_backoff_reset_seconds: float = Field(5.0, gt=0)
    # Memoized TABLE_MAP parsing, a direct row decoder for common column types and packets cut from
    # large socket reads: several times faster decoding with identical output. Off (the library's own
    # code) only to rule it out.
    fast_decoding: bool = True


class FilterConfig(_Strict):
    exclude_post_types: list[str] = Field(
        default_factory=lambda: [
            "revision",
            "nav_menu_item",
            "customize_changeset",
            "oembed_cache",
            "user_request",
        ]
    )
    exclude_post_statuses: list[str] = Field(default_factory=lambda: ["auto-draft"])
    exclude_meta_keys: list[str] = Field(
        default_factory=lambda: [
            "_edit_lock",
            "_edit_last",
            "_pingme",
            "_encloseme",
            "_wp_trash_meta_status",
            "_wp_trash_meta_time",
            "_wp_desired_post_slug",
        ]
    )
    # UPDATEs of wp_posts that change nothing but post_modified/post_modified_gmt.
    drop_modified_only_updates: bool = True
    # The UPDATE that fills `guid` right after every INSERT into wp_posts (old guid empty, only guid and
    # modification dates change).
    drop_guid_backfill: bool = True
    # The UPDATE in which wp_trash_post() appends `__trashed` to post_name, just before the UPDATE that
    # sets post_status=trash (which carries the new post_name in its row).
    drop_trash_slug_update: bool = True


class MappingConfig(_Strict):
    # post_content longer than this (in UTF-8 bytes) is cut, flagged and hashed.
    max_content_bytes: int = Field(262_144, ge=0)
    # Meta values longer than this are not PHP-unserialized (value_decoded absent); `value` stays raw.
    max_decode_bytes: int = Field(1_048_576, ge=0)
    max_decode_depth: int = Field(64, ge=1, le=512)


class SnapshotConfig(_Strict):
    # What `run` does about the current state of the posts (post_snapshot events), besides streaming:
    #   never        only stream changes (snapshots run when requested with `wpcdc snapshot`)
    #   initial      snapshot every post once when there is no checkpoint yet, while streaming from the end
    #   when_needed  as initial, and also when the checkpoint's binlog file was purged: streaming restarts
    #                at the end of the binlog and a full snapshot covers the gap (explicit opt-in: the
    #                changes in the gap are not published as change events, only their resulting state)
    mode: Literal["never", "initial", "when_needed"] = "never"
    # Posts read per chunk (with their meta and terms), between a low and a high binlog watermark.
    chunk_size: int = Field(1000, ge=1, le=100_000)
    # How often `run` looks for a request written by `wpcdc snapshot` (a file next to the checkpoint).
    request_poll_seconds: float = Field(1.0, gt=0)


class LogConfig(_Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # "text" for people, "json" (one object per line) for log pipelines.
    format: Literal["text", "json"] = "text"
    # A line with the checkpoint position, events and lag at most this often (every checkpoint is
    # still written; this only throttles the log).
    checkpoint_log_seconds: float = Field(60.0, gt=0)


class MetricsConfig(_Strict):
    # Prometheus /metrics and Kubernetes-style /healthz and /readyz on one HTTP port.
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(9187, ge=0, le=65535)
    # /readyz answers 503 when wpcdc is further behind the source than this.
    ready_max_lag_seconds: float = Field(60.0, gt=0)


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class ClusterSourceMySQL(_Strict):
    # Each null takes the top-level mysql value (every other mysql key is always the top level's).
    host: str | None = None
    port: int | None = Field(None, ge=1, le=65535)
    user: str | None = None
    # Either of these replaces both top-level ones, and then also wins over WPCDC_MYSQL_PASSWORD
    # (the variable is the top level's password, for sources that set neither).
    password: SecretStr | None = None
    password_file: Path | None = None
    # null: the top-level mysql.server_id + 2 * the source's index (replay reads as the id + 1).
    server_id: int | None = Field(None, ge=1, le=4294967295)


class ClusterSourceWordPress(_Strict):
    database: str | None = None
    table_prefix: str | None = None

    @field_validator("table_prefix")
    @classmethod
    def _prefix_is_identifier(cls, v: str | None) -> str | None:
        return None if v is None else WordPressConfig._prefix_is_identifier(v)


class ClusterSource(_Strict):
    # Names the source in logs, metrics (label `source`) and `wpcdc run --source NAME`.
    name: str
    mysql: ClusterSourceMySQL = Field(default_factory=ClusterSourceMySQL)
    wordpress: ClusterSourceWordPress = Field(default_factory=ClusterSourceWordPress)
    # null: the top-level kafka.topic / kafka.dead_letter_topic (sources then share it; post keys of
    # different databases are alike, only the event_id tells the server).
    topic: str | None = None
    dead_letter_topic: str | None = None
    # The source's own checkpoint record; null: "<host>:<port>/<database>" of the source (the top-level
    # checkpoint.kafka_key is never inherited: two sources must not share a key).
    checkpoint_key: str | None = None
    # The local lock and snapshot-request files; null: checkpoint.path with ".<name>" before its suffix.
    checkpoint_path: Path | None = None
    # kafka.delivery exactly_once: the source's transactional id; null: "wpcdc:" + its checkpoint key.
    transactional_id: str | None = None
    # With metrics.enabled, the source's own /metrics and /readyz (on metrics.host); null:
    # metrics.port + 1 + the source's index.
    metrics_port: int | None = Field(None, ge=1, le=65535)

    @field_validator("name")
    @classmethod
    def _name_is_simple(cls, v: str) -> str:
        if not _NAME.fullmatch(v):
            raise ValueError("must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
        return v


class ClusterConfig(_Strict):
    # null: one process, one source (the top-level mysql/wordpress), as without this section. Set: this
    # process joins the Kafka consumer group of this id with every other process of the same group_id,
    # and Kafka's assignment decides which process runs which of `sources`.
    group_id: str | None = None
    # One partition per source (partition p runs sources[p]); created at start with that many
    # partitions, or checked. null: "wpcdc.cluster.<group_id>".
    control_topic: str | None = None
    # Replication of the control topic when wpcdc creates it (-1: the broker's default.replication.factor).
    control_topic_replication_factor: int = Field(-1, ge=-1)
    # A process not heard from this long (killed, paused, cut off) loses its sources to the others.
    # The broker only accepts values between its group.min/max.session.timeout.ms (6 s to 30 min).
    session_timeout_ms: int = Field(10_000, ge=1000)
    heartbeat_interval_ms: int = Field(1_000, ge=100)
    # On revocation (or shutdown) a source gets this long to flush, checkpoint and stop before it is
    # killed; the rebalance waits for it.
    stop_timeout_seconds: float = Field(30.0, gt=0)
    # A source that exits while this process still owns it is restarted after a backoff doubling up to this.
    restart_backoff_max_seconds: float = Field(30.0, gt=0)
    # The sources of the group, in a fixed order that every process of the group must share (append
    # new ones at the end). Each key not set here is the top level's.
    sources: list[ClusterSource] = Field(default_factory=list)

    def topic(self) -> str:
        return self.control_topic or f"wpcdc.cluster.{self.group_id}"


class Config(_Strict):
    mysql: MySQLConfig = Field(default_factory=MySQLConfig)
    wordpress: WordPressConfig = Field(default_factory=WordPressConfig)
    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    source: SourceConfig = Field(default_factory=SourceConfig)
    filters: FilterConfig = Field(default_factory=FilterConfig)
    mapping: MappingConfig = Field(default_factory=MappingConfig)
    snapshot: SnapshotConfig = Field(default_factory=SnapshotConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)

    def checkpoint_key(self) -> str:
        """The source identity a Kafka-stored checkpoint is keyed by: with mysql.hosts, the first of
        them, whichever server is being read (the checkpoint belongs to the topology)."""
        if self.checkpoint.kafka_key:
            return self.checkpoint.kafka_key
        if self.mysql.hosts:
            return f"{self.mysql.hosts[0]}/{self.wordpress.database}"
        return f"{self.mysql.host}:{self.mysql.port}/{self.wordpress.database}"

    def for_server(self, host: str, port: int) -> Config:
        """This configuration reading `host:port` (one of mysql.servers()); mysql.hosts is kept."""
        return self.model_copy(update={"mysql": self.mysql.model_copy(update={"host": host, "port": port})})

    def transactional_id(self) -> str:
        """kafka.delivery exactly_once: the source's Kafka transactional.id (one per source, so a newer
        owner of the source fences the older one)."""
        return self.kafka.transactional_id or f"wpcdc:{self.checkpoint_key()}"

    @model_validator(mode="after")
    def _exactly_once_needs_kafka_checkpoints(self) -> Config:
        if self.kafka.delivery == "exactly_once" and self.checkpoint.store != "kafka":
            # The checkpoint must commit or abort with the events; a file cannot join a Kafka transaction.
            raise ValueError(
                "kafka.delivery exactly_once needs checkpoint.store kafka (the checkpoint record is written in "
                f"the same Kafka transaction as the events), but checkpoint.store is {self.checkpoint.store}: set "
                "checkpoint.store: kafka (`wpcdc checkpoint copy --to kafka` moves the position there) or "
                "kafka.delivery: at_least_once"
            )
        return self

    @model_validator(mode="after")
    def _cluster_is_complete(self) -> Config:
        cluster = self.cluster
        if cluster.group_id is None:
            if cluster.sources:
                raise ValueError(
                    "cluster.sources is set but cluster.group_id is not: the sources are run by a group of wpcdc "
                    "processes; set cluster.group_id (the same in every process), or remove cluster.sources"
                )
            return self
        if not cluster.sources:
            raise ValueError(
                "cluster.group_id is set but cluster.sources is empty: list the sources the group runs "
                "(each with at least a name and its wordpress.database or mysql.host)"
            )
        if self.checkpoint.store != "kafka":
            # Another machine takes a source over: its position must not live on this machine's disk.
            raise ValueError(
                "cluster.group_id needs checkpoint.store kafka: a source moves between processes (and machines), "
                "so its checkpoint must be in Kafka; set checkpoint.store: kafka"
            )
        if cluster.heartbeat_interval_ms * 3 > cluster.session_timeout_ms:
            raise ValueError(
                "cluster.heartbeat_interval_ms must be at most a third of cluster.session_timeout_ms "
                "(a member misses a heartbeat or two without losing its sources)"
            )
        seen: dict[str, dict[object, str]] = {}
        for s in cluster.sources:
            c = self.for_source(s.name)
            for what, value in (
                ("name", s.name),
                ("checkpoint key", c.checkpoint_key()),
                ("transactional id", c.transactional_id()),
                ("checkpoint path", c.checkpoint.path),
                ("mysql host, port and server_id", (c.mysql.host, c.mysql.port, c.mysql.server_id)),
                ("metrics port", c.metrics.port if c.metrics.enabled else s.name),
            ):
                other = seen.setdefault(what, {}).get(value)
                if other is not None:
                    raise ValueError(
                        f"cluster.sources {other!r} and {s.name!r} have the same {what}; every source needs its own"
                    )
                seen[what][value] = s.name
        return self

    def source_names(self) -> list[str]:
        return [s.name for s in self.cluster.sources]

    def for_source(self, name: str) -> Config:
        """The single-source configuration that runs cluster source `name` (`wpcdc run --source NAME`):
        the top level with the source's own keys."""
        index = next((i for i, s in enumerate(self.cluster.sources) if s.name == name), None)
        if index is None:
            known = ", ".join(self.source_names()) or "none"
            raise ConfigError(f"there is no source {name!r} in cluster.sources (known: {known})", "use one of those")
        s = self.cluster.sources[index]
        mysql = {k: v for k, v in s.mysql.model_dump().items() if v is not None}
        if "password" in mysql or "password_file" in mysql:
            mysql = {"password": None, "password_file": None, **mysql}
        mysql.setdefault("server_id", self.mysql.server_id + 2 * index)
        path = self.checkpoint.path
        return self.model_copy(
            update={
                "mysql": self.mysql.model_copy(update=mysql),
                "wordpress": self.wordpress.model_copy(
                    update={k: v for k, v in s.wordpress.model_dump().items() if v is not None}
                ),
                "kafka": self.kafka.model_copy(
                    update={
                        "topic": s.topic or self.kafka.topic,
                        "dead_letter_topic": s.dead_letter_topic or self.kafka.dead_letter_topic,
                        "transactional_id": s.transactional_id,
                    }
                ),
                "checkpoint": self.checkpoint.model_copy(
                    update={
                        "kafka_key": s.checkpoint_key,
                        "path": s.checkpoint_path or path.with_name(f"{path.stem}.{s.name}{path.suffix}"),
                    }
                ),
                "metrics": self.metrics.model_copy(update={"port": s.metrics_port or self.metrics.port + 1 + index}),
                "cluster": ClusterConfig(),
            }
        )

    def source_has_own_password(self, name: str) -> bool:
        """WPCDC_MYSQL_PASSWORD is the top level's: a source with its own password must not get it."""
        s = next(s for s in self.cluster.sources if s.name == name)
        return s.mysql.password is not None or s.mysql.password_file is not None


# A key whose name says it holds a secret: its value (and a mistyped key that may be the value) is
# never shown in an error.
_SECRET_WORDS = ("password", "passwd", "secret", "token", "credential")


def _is_secret(name: str) -> bool:
    return any(word in name.lower() for word in _SECRET_WORDS)


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        parts = [str(p) for p in item["loc"]]
        if any(_is_secret(p) for p in parts):
            # Only the path of a known key: a custom message or a mistyped key could carry the secret.
            known = [p for p in parts if p in _KEY_NAMES]
            path = ".".join(known) or "(top level)"
            what = "unknown key" if item["type"] == "extra_forbidden" else f"invalid value ({item['type']})"
            lines.append(f"{path}: {what}; the value is a secret and is not shown")
            continue
        path = ".".join(parts) or "(top level)"
        if not parts and item["type"] == "value_error":  # a rule across sections names its keys itself
            lines.append(str(item["msg"]).removeprefix("Value error, "))
        elif item["type"] == "extra_forbidden":
            lines.append(f"{path}: unknown key")
        else:
            lines.append(f"{path}: {item['msg']}")
    return "; ".join(lines)


def _key_names(model: type[BaseModel]) -> set[str]:
    names: set[str] = set()
    for name, info in model.model_fields.items():
        names.add(name)
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            names |= _key_names(info.annotation)
    return names


_KEY_NAMES = frozenset(_key_names(Config))
# A quoted fragment of the file in a YAML error message ("found undefined alias 'hunter2'"). Only
# YAML's own token names ('<scalar>', '<stream end>') and single punctuation characters are kept.
_YAML_QUOTED = re.compile(r"'([^']*)'")
_YAML_OWN = re.compile(r"<[a-z ]+>|[,\[\]{}:#&*!|>%@`-]|\\t")


def _unquote_file_text(message: str) -> str:
    return _YAML_QUOTED.sub(lambda m: m.group(0) if _YAML_OWN.fullmatch(m.group(1)) else "'…'", message)


def _yaml_problem(exc: yaml.YAMLError, text: str) -> str:
    """Where and what, never a snippet of the file: the line in error may hold a password."""
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        return f"line {line}: character #x{exc.character:04x}: {exc.reason}"
    if not isinstance(exc, yaml.MarkedYAMLError):
        return "the file could not be parsed"
    what = " ".join(_unquote_file_text(part) for part in (exc.context, exc.problem) if part)
    lines = text.splitlines()
    where = []
    for mark in (exc.context_mark, exc.problem_mark):
        if mark is None:
            continue
        at = f"line {mark.line + 1}, column {mark.column + 1}"
        key = re.match(r"\s*([A-Za-z_]\w*)\s*:", lines[mark.line]) if mark.line < len(lines) else None
        if key and key.group(1) in _KEY_NAMES:
            at += f" (key {key.group(1)})"
        if at not in where:
            where.append(at)
    return f"{' to '.join(where)}: {what}" if where else what


def parse_config(data: object, origin: str = "config") -> Config:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: the top level must be a mapping of sections", "see config.yaml")
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            f"{origin}: {_describe(exc)}",
            "correct the key or value; every key, its type and default is listed in config.yaml "
            "and in the README's configuration reference",
        ) from None


def load_config(path: Path | str) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read the configuration file {path}: {exc.strerror}",
            "pass --config with the path of a YAML file (config.yaml in the repository is an example)",
        ) from None
    except UnicodeDecodeError as exc:  # its message names the byte's offset, never the text around it
        raise ConfigError(
            f"{path} is not UTF-8 text: byte {exc.start} cannot be decoded",
            "save the file as UTF-8",
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"{path} is not valid YAML: {_yaml_problem(exc, text)}", "fix the YAML syntax at the place named"
        ) from None
    return parse_config(data, str(path))
