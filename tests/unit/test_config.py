from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cdc.config import ENV_MYSQL_PASSWORD, load_config, parse_config
from cdc.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_example_config_is_valid_and_documents_every_key() -> None:
    cfg = load_config(REPO / "config.yaml")
    text = (REPO / "config.yaml").read_text()
    for section, model in cfg.model_dump().items():
        assert f"{section}:" in text
        for key in model:
            assert f"{key}:" in text, f"config.yaml does not document {section}.{key}"


def test_unknown_key_names_its_path() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"kafka": {"topik": "x"}})
    assert "kafka.topik: unknown key" in err.value.problem
    assert err.value.fix


def test_wrong_type_names_its_path() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"mysql": {"port": "many"}})
    assert "mysql.port" in err.value.problem


def test_exactly_once_without_kafka_checkpoints_is_refused_naming_both_keys() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"kafka": {"delivery": "exactly_once"}})
    problem = err.value.problem
    assert "kafka.delivery exactly_once needs checkpoint.store kafka" in problem and "(top level)" not in problem
    assert "checkpoint copy --to kafka" in problem


def test_the_transactional_id_is_one_per_source_unless_set() -> None:
    base = {"kafka": {"delivery": "exactly_once"}, "checkpoint": {"store": "kafka"}}
    a = parse_config({**base, "wordpress": {"database": "a"}})
    b = parse_config({**base, "wordpress": {"database": "b"}})
    assert a.transactional_id() == "wpcdc:127.0.0.1:3306/a" != b.transactional_id()
    keyed = parse_config({**base, "checkpoint": {"store": "kafka", "kafka_key": "shop"}})
    assert keyed.transactional_id() == "wpcdc:shop"
    fixed = parse_config(
        {"kafka": {"delivery": "exactly_once", "transactional_id": "t"}, "checkpoint": {"store": "kafka"}}
    )
    assert fixed.transactional_id() == "t"


def test_bad_prefix_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"wordpress\.table_prefix"):
        parse_config({"wordpress": {"table_prefix": "wp-"}})


def test_password_from_env_wins_and_is_not_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_MYSQL_PASSWORD, raising=False)
    cfg = parse_config({"mysql": {"password": "from-file"}})
    assert "from-file" not in repr(cfg) and "from-file" not in str(cfg.model_dump())
    assert cfg.mysql.resolved_password() == "from-file"
    monkeypatch.setenv(ENV_MYSQL_PASSWORD, "from-env")
    assert cfg.mysql.resolved_password() == "from-env"


def test_password_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_MYSQL_PASSWORD, raising=False)
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    assert parse_config({"mysql": {"password_file": str(secret)}}).mysql.resolved_password() == "s3cret"
    with pytest.raises(ConfigError, match="password_file"):
        parse_config({"mysql": {"password_file": str(tmp_path / "missing")}}).mysql.resolved_password()


def test_bootstrap_servers_accepts_comma_string() -> None:
    assert parse_config({"kafka": {"bootstrap_servers": "a:9092, b:9092"}}).kafka.bootstrap_servers == [
        "a:9092",
        "b:9092",
    ]


@pytest.mark.parametrize("entry", ["127.0.0.1:x", "kafka:", "kafka:0", "kafka:70000", ":9092", "kafka 1:9092"])
def test_malformed_bootstrap_server_is_a_config_error_naming_the_key(entry: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"kafka": {"bootstrap_servers": ["ok:9092", entry]}})
    assert "kafka.bootstrap_servers" in err.value.problem and repr(entry) in err.value.problem


@pytest.mark.parametrize("entry", ["kafka", "kafka:9092", "10.0.0.1:19092", "[::1]:9092", "::1"])
def test_bootstrap_server_forms_kafka_python_accepts(entry: str) -> None:
    assert parse_config({"kafka": {"bootstrap_servers": [entry]}}).kafka.bootstrap_servers == [entry]


def test_malformed_bootstrap_server_in_check_is_exit_2_without_a_traceback(tmp_path: Path) -> None:
    import subprocess
    import sys

    config = tmp_path / "config.yaml"
    config.write_text("kafka:\n  bootstrap_servers: ['127.0.0.1:x']\n")
    done = subprocess.run(
        [sys.executable, "-m", "cdc.cli", "check", "--offline", "--config", str(config)], capture_output=True, text=True
    )
    assert done.returncode == 2, done.stderr
    assert "kafka.bootstrap_servers" in done.stderr and "Traceback" not in done.stderr


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("mysql: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_kafka_sasl_settings_and_secret_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    from cdc.config import ENV_KAFKA_SASL_PASSWORD

    monkeypatch.delenv(ENV_KAFKA_SASL_PASSWORD, raising=False)
    assert parse_config({}).kafka.producer_security() == {"security_protocol": "PLAINTEXT"}
    cfg = parse_config(
        {"kafka": {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "cdc",
                   "sasl_password": "in-file", "ssl_cafile": "/etc/ca.pem"}}
    )  # fmt: skip
    assert "in-file" not in repr(cfg)
    assert cfg.kafka.producer_security() == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "cdc",
        "sasl_plain_password": "in-file", "ssl_cafile": "/etc/ca.pem",
    }  # fmt: skip
    monkeypatch.setenv(ENV_KAFKA_SASL_PASSWORD, "from-env")
    assert cfg.kafka.producer_security()["sasl_plain_password"] == "from-env"
    with pytest.raises(ConfigError, match="sasl_mechanism"):
        parse_config({"kafka": {"security_protocol": "SASL_PLAINTEXT"}}).kafka.producer_security()


def test_mysql_tls_settings(tmp_path: Path) -> None:
    assert parse_config({}).mysql.tls_settings() == {}
    ca = tmp_path / "ca.pem"
    cfg = parse_config(
        {"mysql": {"tls": True, "tls_ca_file": str(ca), "tls_cert_file": "/c.pem", "tls_key_file": "/k"}}
    )
    assert cfg.mysql.tls_settings() == {
        "ssl_ca": str(ca), "ssl_verify_cert": True, "ssl_verify_identity": True, "ssl_cert": "/c.pem", "ssl_key": "/k",
    }  # fmt: skip
    no_identity = parse_config({"mysql": {"tls": True, "tls_ca_file": str(ca), "tls_verify_identity": False}})
    assert no_identity.mysql.tls_settings()["ssl_verify_identity"] is False


SECRET = "hunter2-Zq9"


@pytest.mark.parametrize(
    "password_line",
    [
        f'  password: "{SECRET}',  # unterminated quote
        f"  password: {SECRET}: x",  # a colon in an unquoted password
        f"  password: *{SECRET}",  # read as a YAML alias
        f"  password: [{SECRET}",  # read as a flow sequence
        f"  password: '{SECRET}'{SECRET}",  # text after the closing quote
        f"\tpassword: {SECRET}",  # a tab
        f"  password:{SECRET}\n  user: x",  # no space after the colon
    ],
)
def test_a_yaml_error_on_the_password_line_never_prints_the_password(tmp_path: Path, password_line: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"mysql:\n  host: db\n{password_line}\n  port: 3306\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    shown = f"{err.value.problem} {err.value.fix} {err.value}"
    assert SECRET not in shown and SECRET[:5] not in shown
    assert "line " in err.value.problem  # still says where


@pytest.mark.parametrize(
    "data",
    [
        {"mysql": {"password": [SECRET]}},
        {"mysql": {"password": {SECRET: 1}}},
        {"mysql": {f"password {SECRET}": 1}},
        {"kafka": {"sasl_password": [SECRET], "sasl_password_file": SECRET}},
        {"mysql": {f"{SECRET}-password": SECRET}},
    ],
)
def test_a_validation_error_on_a_secret_key_never_prints_the_value(data: dict[str, object]) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    shown = f"{err.value.problem} {err.value.fix} {err.value}"
    assert SECRET not in shown
    assert "not shown" in err.value.problem


@pytest.mark.parametrize(
    "content", [f"mysql:\n  password: {SECRET}\x00\n".encode(), f"mysql:\n  password: {SECRET}\xff\n".encode("latin-1")]
)
def test_unreadable_bytes_in_the_file_are_a_config_error_without_the_text(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert SECRET not in f"{err.value.problem} {err.value.fix}"
    assert "line 2" in err.value.problem or "byte 30" in err.value.problem


def test_checkpoint_store_and_its_kafka_key() -> None:
    cfg = parse_config({"mysql": {"host": "db1", "port": 3307}, "wordpress": {"database": "blog"}})
    assert cfg.checkpoint.store == "file" and cfg.checkpoint.kafka_topic == "wpcdc.checkpoints"
    assert cfg.checkpoint_key() == "db1:3307/blog"
    cfg = parse_config({"checkpoint": {"store": "kafka", "kafka_key": "shop-eu"}})
    assert cfg.checkpoint.store == "kafka" and cfg.checkpoint_key() == "shop-eu"
    with pytest.raises(ConfigError, match=r"checkpoint\.store"):
        parse_config({"checkpoint": {"store": "s3"}})


def test_mysql_hosts_replace_host_and_port() -> None:
    cfg = parse_config({"mysql": {"host": "ignored", "hosts": "replica1:3306, [::1]:3307,primary.example:3308"}})
    assert cfg.mysql.servers() == [("replica1", 3306), ("::1", 3307), ("primary.example", 3308)]
    assert (cfg.mysql.host, cfg.mysql.port) == ("replica1", 3306)  # check, replay, checkpoint set use it
    assert parse_config({}).mysql.servers() == [("127.0.0.1", 3306)]
    # The checkpoint belongs to the topology: its Kafka key does not follow the server being read.
    moved = cfg.for_server("primary.example", 3308)
    assert moved.mysql.host == "primary.example" and moved.mysql.port == 3308
    assert moved.checkpoint_key() == cfg.checkpoint_key() == "replica1:3306/wordpress"


@pytest.mark.parametrize(
    ("hosts", "says"),
    [
        (["replica1"], "is not HOST:PORT"),
        (["replica1:"], "is not a number"),
        (["replica1:99999"], "is not a number from 1 to 65535"),
        (["replica 1:3306"], "is not HOST:PORT"),
        (["a:3306", "A:3306"], "more than once"),
    ],
)
def test_bad_mysql_hosts_name_the_key_and_entry(hosts: list[str], says: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"mysql": {"hosts": hosts}})
    assert "mysql.hosts" in err.value.problem and says in err.value.problem


def test_config_errors_of_a_group_are_clear(tmp_path: Path) -> None:
    base = {"checkpoint": {"store": "kafka"}, "cluster": {"group_id": "g", "sources": [{"name": "a"}, {"name": "a"}]}}
    path = tmp_path / "c.yaml"
    for config, expected in (
        (base, "cluster.sources 'a' and 'a' have the same name"),
        ({**base, "checkpoint": {"store": "file"}}, "cluster.group_id needs checkpoint.store kafka"),
        ({"cluster": {"sources": [{"name": "a"}]}}, "cluster.sources is set but cluster.group_id is not"),
    ):
        path.write_text(yaml.safe_dump(config))
        result = subprocess.run(
            [sys.executable, "-m", "cdc.cli", "check", "--offline", "--config", str(path)],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 2 and expected in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_commands_act_on_one_source_of_a_group(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump({"checkpoint": {"store": "kafka"}, "cluster": {"group_id": "g", "sources": [{"name": "a"}]}})
    )

    def check(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cdc.cli", "check", *args, "--config", str(path)], capture_output=True, text=True
        )

    assert "group g, sources a" in check("--offline").stdout
    assert check("--offline", "--source", "a").returncode == 0
    wrong = check("--offline", "--source", "b")
    assert wrong.returncode == 2 and "no source 'b' in cluster.sources (known: a)" in wrong.stderr
    online = check()  # which source? it would check the top-level server, which is none of them
    assert online.returncode == 2 and "wpcdc check --source NAME" in online.stderr
