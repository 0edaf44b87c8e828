"""A throwaway Apache Kafka broker for the Kafka-facing tests: one KRaft node (broker and controller
in one JVM), own log dir, free loopback ports, stopped by PID, like `Tansu` in stack.py.

Tansu cannot prove what these tests are about (it auto-creates topics, ignores max.message.bytes,
has no SCRAM), so they need the real thing. The jars come from Maven Central once (`make kafka`, or
the first `ensure_jars()`), into a cache outside the repository like the venv: a throwaway pom.xml
naming `org.apache.kafka:kafka_2.13` and `mvn dependency:copy-dependencies`. No Kafka distribution
tarball is needed, and nothing of it is imported by `run`.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from cdc.dev.stack import DevStackError, _tail, _wait_port, free_port, start_in_session, stop_process

KAFKA_VERSION = "4.1.0"
# log4j-slf4j-impl: the broker logs through slf4j 1.7; without a binding its log would be empty.
_LOG4J_VERSION = "2.24.3"
_READY_LINE = "Kafka Server started"
# The SCRAM-SHA-512 user the test broker knows when started with `scram_users=SCRAM_USERS`.
SCRAM_USER = "wpcdc"
SCRAM_PASSWORD = "wpcdc-scram-test-password"
SCRAM_USERS = {SCRAM_USER: SCRAM_PASSWORD}

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>wpcdc.dev</groupId><artifactId>kafka-broker-jars</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version></dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: org.apache.kafka.clients
        level: WARN
"""


def cache_dir(version: str = KAFKA_VERSION) -> Path:
    root = os.environ.get("WPCDC_KAFKA_CACHE")
    base = Path(root) if root else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "wpcdc"
    return base / f"kafka-{version}"


def java_binary() -> str:
    java = shutil.which("java")
    if not java:
        raise DevStackError(
            "java is not installed, and the Apache Kafka test broker needs Java 17+; "
            "install it with `apt-get install openjdk-17-jre-headless` (make kafka does this on Debian)"
        )
    return java


def ensure_jars(version: str = KAFKA_VERSION, quiet: bool = False) -> Path:
    """The directory holding the broker's jars, fetched with Maven on first use. Raises DevStackError
    (never skips) when they cannot be had."""
    home = cache_dir(version)
    libs = home / "libs"
    stamp = home / ".complete"
    if stamp.exists() and libs.is_dir():
        return libs
    mvn = shutil.which("mvn")
    if not mvn:
        raise DevStackError(
            f"Apache Kafka {version} jars are not in {libs} and Maven (mvn) is not installed to fetch them; "
            "run `make kafka` (installs maven on Debian) or `apt-get install maven`"
        )
    home.mkdir(parents=True, exist_ok=True)
    (home / "pom.xml").write_text(_POM.format(kafka=version, log4j=_LOG4J_VERSION))
    partial = home / "libs.partial"
    shutil.rmtree(partial, ignore_errors=True)
    if not quiet:
        print(f"fetching Apache Kafka {version} jars from Maven Central into {libs} (once)", file=sys.stderr)
    done = subprocess.run(
        [mvn, "-q", "-B", "-f", str(home / "pom.xml"), "dependency:copy-dependencies",
         f"-DoutputDirectory={partial}", "-DincludeScope=runtime"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    if done.returncode != 0 or not any(partial.glob(f"kafka_2.13-{version}.jar")):
        raise DevStackError(
            f"could not fetch Apache Kafka {version} from Maven Central (mvn exited {done.returncode}):\n"
            f"{done.stdout[-3000:]}\nfix: check that Maven Central is reachable, then rerun `make kafka`"
        )
    shutil.rmtree(libs, ignore_errors=True)
    partial.rename(libs)
    stamp.write_text(version + "\n")
    return libs


def _cluster_id() -> str:
    # What `kafka-storage random-uuid` prints, without starting a JVM for it; like Kafka's own
    # Uuid.randomUuid, never one starting with "-", which the storage tool would take for an option.
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


@dataclass
class Kafka:
    """A single-node Apache Kafka (KRaft, broker+controller) with auto-creation of topics off.

    `bootstrap` is a PLAINTEXT listener. With `tls_dir` (see stack.make_tls_files) and `scram_users`
    it also has a SASL_SSL listener (`sasl_bootstrap`) taking SCRAM-SHA-512 for those users, whose
    credentials are written into the log dir when it is formatted."""

    base: Path
    port: int = 0
    controller_port: int = 0
    sasl_port: int = 0
    tls_dir: Path | None = None
    scram_users: dict[str, str] = field(default_factory=dict)
    heap: str = "512m"
    version: str = KAFKA_VERSION
    proc: subprocess.Popen[bytes] | None = None
    started_in: float = 0.0  # seconds from launching the JVM to "Kafka Server started"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def sasl_bootstrap(self) -> str:
        if not self.sasl_port:
            raise DevStackError("this broker has no SASL_SSL listener (pass tls_dir and scram_users)")
        return f"127.0.0.1:{self.sasl_port}"

    @property
    def log(self) -> Path:
        return self.base / "kafka.log"

    @property
    def datadir(self) -> Path:
        return self.base / "data"

    def _properties(self) -> str:
        listeners = [f"PLAINTEXT://127.0.0.1:{self.port}"]
        protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        lines = [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.bootstrap.servers=127.0.0.1:{self.controller_port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={self.datadir}",
            # What the tests are for: a missing topic must stay missing.
            "auto.create.topics.enable=false",
            # One node: internal topics cannot have more replicas, and need few partitions.
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=4",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=4",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "num.network.threads=2",
            "num.io.threads=2",
            "log.cleaner.dedupe.buffer.size=8388608",
        ]
        if self.scram_users:
            if self.tls_dir is None:
                raise DevStackError("scram_users need tls_dir: the SASL listener is SASL_SSL")
            listeners.append(f"SASL_SSL://127.0.0.1:{self.sasl_port}")
            protocols.append("SASL_SSL:SASL_SSL")
            keystore = self.base / "keystore.pem"
            keystore.write_text((self.tls_dir / "server.key").read_text() + (self.tls_dir / "server.pem").read_text())
            lines += [
                "sasl.enabled.mechanisms=SCRAM-SHA-512",
                "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
                "listener.name.sasl_ssl.ssl.keystore.type=PEM",
                f"listener.name.sasl_ssl.ssl.keystore.location={keystore}",
            ]
        lines += [
            f"listeners={','.join([*listeners, f'CONTROLLER://127.0.0.1:{self.controller_port}'])}",
            f"advertised.listeners={','.join(listeners)}",
            f"listener.security.protocol.map={','.join(protocols)}",
        ]
        return "\n".join(lines) + "\n"

    def _java(self, libs: Path, main: str, *args: str, heap: str) -> list[str]:
        # C1 only and the serial collector: a test broker lives for minutes on 2 shared cores, where
        # the C2 compiler's warm-up cost more start-up time (~30%) and memory than it ever paid back.
        return [
            java_binary(), f"-Xmx{heap}", "-Xms64m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.base / 'log4j2.yaml'}", "-cp", f"{libs}/*", main, *args,
        ]  # fmt: skip

    def start(self, timeout: float = 180.0) -> Kafka:
        libs = ensure_jars(self.version)
        self.base = self.base.resolve()
        self.base.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self.controller_port = self.controller_port or free_port()
        if self.scram_users:
            self.sasl_port = self.sasl_port or free_port()
        props = self.base / "server.properties"
        props.write_text(self._properties())
        (self.base / "log4j2.yaml").write_text(_LOG4J2)
        if not (self.datadir / "meta.properties").exists():
            scram = [
                a
                for name, password in self.scram_users.items()
                for a in ("--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]")
            ]
            done = subprocess.run(
                self._java(libs, "kafka.tools.StorageTool", "format", "-t", _cluster_id(), "-c", str(props),
                           "--standalone", *scram, heap="256m"),
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
            )  # fmt: skip
            if done.returncode != 0:
                raise DevStackError(f"kafka-storage format failed ({done.returncode}):\n{done.stdout[-3000:]}")
        began = time.monotonic()
        # A session of its own, like the other dev servers: a Ctrl-C reaches pytest, which stops it.
        self.proc = start_in_session(self._java(libs, "kafka.Kafka", str(props), heap=self.heap), self.log)
        try:
            _wait_port(self.port, self.proc, self.log, timeout)
            self._wait_ready(began + timeout)
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - began
        return self

    def _wait_ready(self, deadline: float) -> None:
        # The listener accepts connections before the broker has caught up with its metadata log.
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DevStackError(f"kafka exited with {self.proc.returncode}; see {self.log}:\n{_tail(self.log)}")
            if _READY_LINE in self.log.read_text(errors="replace"):
                return
            time.sleep(0.1)
        raise DevStackError(f"kafka did not report ready in time; see {self.log}:\n{_tail(self.log)}")

    def rss_bytes(self) -> int:
        """Resident memory of the broker's JVM (Linux /proc)."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=30)


def main(argv: list[str] | None = None) -> int:
    """`python -m cdc.dev.kafka fetch` (what `make kafka` runs), or `... start DIR` to try one out."""
    args = sys.argv[1:] if argv is None else argv
    try:
        if args[:1] == ["fetch"]:
            print(ensure_jars())
            return 0
        if args[:1] == ["start"] and len(args) == 2:
            broker = Kafka(Path(args[1])).start()
            pid = broker.proc.pid if broker.proc else "?"
            print(
                f"Apache Kafka {KAFKA_VERSION} at {broker.bootstrap} (pid {pid}), started in {broker.started_in:.1f}s, "
                f"RSS {broker.rss_bytes() / 2**20:.0f} MiB; Ctrl-C stops it"
            )
            try:
                assert broker.proc is not None
                broker.proc.wait()
            except KeyboardInterrupt:
                broker.stop()
            return 0
    except DevStackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("usage: python -m cdc.dev.kafka fetch | start DIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
