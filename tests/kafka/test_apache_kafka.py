"""What only a real Apache Kafka can show: the broker's own message size limit, a topic missing on a
broker that does not create topics, and SASL/SCRAM over TLS. Real MariaDB, real broker, the real CLI."""

from __future__ import annotations

import base64
import json
import os

import pytest

from cdc.dev.kafka import SCRAM_PASSWORD, SCRAM_USER, Kafka
from tests.integration.conftest import Site
from tests.kafka.conftest import set_topic_config

pytestmark = pytest.mark.kafka

TOPIC_LIMIT = 65_536


def incompressible(n: int) -> str:
    # lz4 would shrink repeated text under the topic's limit: only the uncompressed size is the client's to know.
    return base64.b64encode(os.urandom(n * 3 // 4)).decode()


@pytest.mark.parametrize("policy", ["truncate", "dead_letter", "fail"])
def test_an_event_over_the_topics_max_message_bytes_follows_the_oversize_policy(asite: Site, policy: str) -> None:
    # kafka.max_request_size stays at its 1 MiB default: only the topic says 64 KiB.
    set_topic_config(asite.stack.broker.bootstrap, asite.topic, max_message_bytes=TOPIC_LIMIT)
    asite.config["kafka"]["oversize_policy"] = policy
    asite.write_config()
    asite.set_checkpoint()
    s = asite.streamer()
    big = asite.insert_post("huge", post_content="<p>" + incompressible(200_000) + "</p>")
    small = asite.insert_post("small")
    if policy == "fail":
        code = s.wait(60)
        out = s.output()
        assert code == 6 and "oversize_policy is fail" in out and "max.message.bytes" in out, out
        assert "fix:" in out and "Traceback" not in out
        assert asite.consume(idle=1.0) == []
        cp = json.loads(asite.checkpoint_path.read_text())
        assert f"{cp['file']}:{cp['pos']}" == asite.start
        return
    records = asite.consume(expect=2 if policy == "truncate" else 1, timeout=60)
    dead = asite.consume(idle=1.0, topic=asite.dead_letter_topic)
    assert s.stop() == 0, s.output()
    by_post = {r.value["post_id"]: r.value for r in records}
    assert small in by_post, s.output()  # not stuck behind the big one
    if policy == "truncate":
        post = by_post[big]["data"]["post"]
        assert post["content_truncated"] is True and post["content_bytes"] > 200_000 and dead == []
        assert len(json.dumps(by_post[big])) < TOPIC_LIMIT
    else:
        assert big not in by_post
        assert len(dead) == 1 and dead[0].value["post_id"] == big and "max.message.bytes" in dead[0].value["error"]


def test_batches_stay_under_the_topics_max_message_bytes(asite: Site) -> None:
    # Each event fits, but a producer batch of them would not: kafka-python does not split a batch
    # the broker refuses, so without the cap the stream would be stuck at the first full batch.
    set_topic_config(asite.stack.broker.bootstrap, asite.topic, max_message_bytes=16_384)
    asite.config["kafka"].update({"compression_type": "none", "linger_ms": 50})
    asite.write_config()
    asite.set_checkpoint()
    s = asite.streamer()
    # One 200-row statement; a recursive CTE instead of MariaDB's seq_1_to_200 (MySQL has no Sequence engine).
    asite.sql(
        "INSERT INTO wp_posts (post_title, post_status, post_type, post_content, post_excerpt, to_ping, pinged,"
        " post_content_filtered) WITH RECURSIVE n (seq) AS (SELECT 1 UNION ALL SELECT seq + 1 FROM n WHERE seq < 200)"
        " SELECT CONCAT('bulk ', seq), 'draft', 'post', REPEAT('x', 2000), '', '', '', '' FROM n"
    )
    records = asite.consume(expect=200, timeout=60)
    assert s.stop() == 0, s.output()
    assert len({r.value["post_id"] for r in records if r.value["event_type"] == "post_created"}) == 200


@pytest.mark.parametrize("which", ["topic", "dead_letter_topic"])
def test_a_missing_topic_stops_run_with_the_fix(asite: Site, which: str) -> None:
    missing = f"missing-{which}-{os.getpid()}"
    asite.config["kafka"][which] = missing
    asite.write_config()
    asite.set_checkpoint()
    s = asite.streamer()
    code = s.wait(60)  # retried forever as transient before: this wait timed out
    out = s.output()
    assert code == 6, out
    assert f"Kafka topic {missing!r} does not exist" in out and "fix: create it" in out and "Traceback" not in out
    check = asite.cli("check")
    assert check.returncode == 3 and f"FAIL     kafka: Kafka topic {missing!r} does not exist" in check.stdout


def _sasl(site: Site, broker: Kafka, password: str) -> None:
    password_file = site.dir / "kafka-password"
    password_file.write_text(password + "\n")
    site.config["kafka"].update(
        {
            "bootstrap_servers": [broker.sasl_bootstrap],
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": SCRAM_USER,
            "sasl_password_file": str(password_file),
            "ssl_cafile": str(broker.tls_dir / "ca.pem") if broker.tls_dir else None,
            "max_block_ms": 5000,  # the shortest wait for a verdict on the login (see cdc/sink/topics.py)
        }
    )
    site.write_config()


def test_sasl_scram_sha_512_over_tls(asite: Site, apache_kafka: Kafka) -> None:
    _sasl(asite, apache_kafka, SCRAM_PASSWORD)
    asite.set_checkpoint()
    s = asite.streamer()
    post = asite.insert_post("over SASL_SSL")
    records = asite.consume(expect=1)  # read back over the PLAINTEXT listener
    assert s.stop() == 0, s.output()
    assert [(r.value["post_id"], r.value["event_type"]) for r in records] == [(post, "post_created")]
    assert SCRAM_PASSWORD not in s.output()


def test_a_wrong_scram_password_is_a_clear_error_without_the_secret(asite: Site, apache_kafka: Kafka) -> None:
    wrong = "not-the-password-9f3c"
    _sasl(asite, apache_kafka, wrong)
    asite.set_checkpoint()
    s = asite.streamer()
    code = s.wait(60)
    out = s.output()
    assert code == 6, out
    assert f"rejected the SASL credentials of user {SCRAM_USER!r}" in out and "fix:" in out, out
    assert wrong not in out and "Traceback" not in out
    check = asite.cli("check")
    assert check.returncode == 3 and "rejected the SASL credentials" in check.stdout, check.stdout
    assert wrong not in check.stdout + check.stderr
