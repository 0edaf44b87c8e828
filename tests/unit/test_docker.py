"""docker/ cannot run here (no Docker engine); check what can be checked without one."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

from cdc.dev.mysql import CDC_SETTINGS
from cdc.ops.metrics import Metrics

DOCKER = Path(__file__).resolve().parents[2] / "docker"
# Images and tags as published on Docker Hub (official images and the projects' own repositories).
KNOWN_IMAGES = {
    "mysql": "8.4",
    "apache/kafka": "3.9.0",
    "wordpress": ("6.6-apache", "cli-2.11-php8.3"),
    "prom/prometheus": "v2.53.0",
    "grafana/grafana": "11.1.0",
}


def compose() -> dict:
    return yaml.safe_load((DOCKER / "docker-compose.yml").read_text())


def test_compose_services_images_and_mounts() -> None:
    c = compose()
    services = c["services"]
    assert {"mysql", "kafka", "kafka-init", "wordpress", "wp-install", "wpcdc", "prometheus", "grafana"} <= set(
        services
    )
    for name, svc in services.items():
        if "image" in svc:
            repo, _, tag = svc["image"].partition(":")
            assert repo in KNOWN_IMAGES, f"{name}: unknown image {svc['image']}"
            allowed = KNOWN_IMAGES[repo]
            assert tag in (allowed if isinstance(allowed, tuple) else (allowed,)), f"{name}: pin {svc['image']}"
        else:
            assert svc["build"]["dockerfile"] == "docker/Dockerfile"
        for vol in svc.get("volumes", []):
            source = vol.split(":")[0]
            if source.startswith("."):
                assert (DOCKER / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in c["volumes"], f"{name}: undeclared volume {source}"
        for dep in svc.get("depends_on", []):
            assert dep in services


def test_mysql_is_configured_for_cdc() -> None:
    cmd = compose()["services"]["mysql"]["command"]
    assert any(flag.startswith("--log-bin=") for flag in cmd)
    # Exactly the settings the integration, fault and e2e suites prove on their MySQL (cdc/dev/mysql.py).
    for flag in CDC_SETTINGS:
        assert flag in cmd, f"docker's MySQL lacks {flag}, which the suite's MySQL runs with"
    # wpcdc check warns below a day of binlog retention; the stack keeps a week.
    retention = next(f for f in cmd if f.startswith("--binlog-expire-logs-seconds="))
    assert int(retention.split("=")[1]) >= 86400
    # MySQL 8.4 has mysql_native_password off: the wpcdc user gets caching_sha2_password, the plugin the
    # suite logs in with (over TLS and over plain TCP with the RSA exchange: tests/integration/test_auth.py).
    init = (DOCKER / "mysql-init" / "01-wpcdc-user.sh").read_text()
    assert "mysql_native_password" not in init and "mysql_native_password" not in " ".join(cmd)
    assert "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'wpcdc'@'%';" in init


def test_every_variable_has_a_default_so_compose_config_works_without_env() -> None:
    text = (DOCKER / "docker-compose.yml").read_text()
    for var in re.findall(r"(?<!\$)\$\{([^}]*)\}", text):
        assert ":-" in var, f"${{{var}}} has no default"


def test_the_mounted_config_validates_offline() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cdc.cli", "check", "--offline", "--config", str(DOCKER / "wpcdc.yaml")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    cfg = yaml.safe_load((DOCKER / "wpcdc.yaml").read_text())
    assert cfg["metrics"]["enabled"] and cfg["metrics"]["port"] == 9187  # what the HEALTHCHECK calls
    assert cfg["checkpoint"]["path"].startswith("/var/lib/wpcdc/")  # the volume


def test_dockerfile_is_non_root_with_healthcheck() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^USER wpcdc$", text, re.M)
    assert "HEALTHCHECK" in text and "/healthz" in text and "EXPOSE 9187" in text
    assert text.startswith("#") and "FROM python:3.12-slim" in text


def test_prometheus_scrapes_wpcdc_and_dashboard_uses_real_metrics() -> None:
    prom = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    targets = [t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert "wpcdc:9187" in targets
    known = {m.name for m in Metrics().registry.collect()}
    known |= {n + "_total" for n in known}
    dash = json.loads((DOCKER / "grafana" / "dashboards" / "wpcdc.json").read_text())
    used = {name for p in dash["panels"] for t in p["targets"] for name in re.findall(r"wpcdc_[a-z_]+", t["expr"])}
    assert used and used <= known, used - known
    for f in (DOCKER / "grafana" / "provisioning").rglob("*.yml"):
        assert yaml.safe_load(f.read_text())["apiVersion"] == 1


def test_kafka_writes_its_log_into_the_volume() -> None:
    kafka = compose()["services"]["kafka"]
    # apache/kafka maps KAFKA_<NAME> to <name> with `_` -> `.`; its default log.dirs is under /tmp.
    log_dirs = str(kafka["environment"].get("KAFKA_LOG_DIRS", "/tmp/kraft-combined-logs"))
    mounts = [v.split(":")[1] for v in kafka["volumes"] if v.split(":")[0] in compose()["volumes"]]
    for d in log_dirs.split(","):
        assert any(d == m or d.startswith(m.rstrip("/") + "/") for m in mounts), f"log dir {d} is not on a volume"


def test_build_context_leaves_out_local_state() -> None:
    context = (DOCKER / compose()["services"]["wpcdc"]["build"]["context"]).resolve()
    ignore = context / ".dockerignore"
    assert ignore.exists(), "the build context would send .venv, var/ and .git"
    patterns = {line.strip().rstrip("/") for line in ignore.read_text().splitlines() if line.strip()[:1] not in "#"}
    assert {".git", ".venv", "var", "**/__pycache__"} <= patterns
    for needed in ("pyproject.toml", "README.md", "cdc"):  # what the Dockerfile COPYs
        assert needed not in patterns and (context / needed).exists()


def test_two_wpcdc_services_form_one_group_each_with_its_own_volume() -> None:
    from cdc.config import load_config

    services = compose()["services"]
    members = {name: svc for name, svc in services.items() if name.startswith("wpcdc")}
    assert len(members) == 2
    mounts = [{v.split(":")[0]: v.split(":")[1] for v in svc["volumes"]} for svc in members.values()]
    assert all(m["./wpcdc.yaml"] == "/etc/wpcdc/config.yaml" for m in mounts)  # one config, one group
    data = [src for m in mounts for src, dst in m.items() if dst == "/var/lib/wpcdc"]
    assert len(set(data)) == 2, data  # each its own disk, as on its own machine
    config = load_config(DOCKER / "wpcdc.yaml")
    assert config.cluster.group_id and config.checkpoint.store == "kafka"
    init = services["kafka-init"]["command"][0]
    assert f"--topic {config.checkpoint.kafka_topic} " in init and "cleanup.policy=compact" in init
    prom = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    targets = {t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert {f"{name}:{config.metrics.port}" for name in members} <= targets
