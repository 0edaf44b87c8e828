"""The producer child's batch path (kafka-python's record path cut short) must put on the broker
exactly what kafka-python's public send() puts there: same partition, order, key, value, headers; and
a record the broker refuses must fail the flush, without a future per record to tell it."""

from __future__ import annotations

import os
import time
import uuid

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic

from cdc.config import KafkaConfig
from cdc.dev.kafka import Kafka
from cdc.dev.stack import Tansu, create_topics
from cdc.errors import SinkError
from cdc.sink.in_process import KafkaProducerSink
from cdc.sink.kafka import KafkaMessages, Message
from cdc.sink.process import ProcessSink

pytestmark = pytest.mark.integration


def events() -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for i in range(300):
        post = i % 37  # several events per post, interleaved with other posts'
        kind = ("post_created", "post_meta_added", "post_term_added", "post_updated")[i % 4]
        out.append({
            "event_type": kind, "event_id": f"wp:binlog.000001:{1000 + i}:0:0", "schema_version": 3,
            "blog_id": 1 + i % 2, "post_id": post, "data": {"n": i, "text": "é😀" * (i % 5)},
        })  # fmt: skip
    # A table-wide event (its key goes to every partition) and one without a post.
    out.insert(100, {"event_type": "table_truncated", "event_id": "wp:t:1", "schema_version": 3, "blog_id": 1})
    out.insert(200, {"event_type": "post_deleted", "event_id": "wp:n:1", "schema_version": 3, "blog_id": 1})
    return out


def read(broker: Tansu | Kafka, topic: str, n: int) -> list[tuple[int, int, bytes, bytes, list[tuple[str, bytes]]]]:
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False, consumer_timeout_ms=200)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        out = []
        deadline = time.monotonic() + 30
        while len(out) < n and time.monotonic() < deadline:
            for r in consumer:
                out.append((r.partition, r.offset, r.key, r.value, list(r.headers)))
        return sorted(out)
    finally:
        consumer.close()


def test_batch_path_is_identical_to_kafka_pythons_send(broker: Tansu) -> None:
    """send(): kafka-python's public path; batch: produce_batch in this process; child: the producer
    child (ProcessSink), which runs produce_batch with settings that came down the pipe as a dict."""
    ways = ("send", "batch", "child")
    topics = {way: f"path-{way}-{uuid.uuid4().hex[:8]}" for way in ways}
    create_topics(broker.bootstrap, [*topics.values(), "path-dead-letter"], partitions=5)
    produced: dict[str, int] = {}
    for way, topic in topics.items():
        config = KafkaConfig(bootstrap_servers=[broker.bootstrap], topic=topic, dead_letter_topic="path-dead-letter")
        produced[way] = len(events()) + 4  # the table event went to each of the other 4 partitions too
        if way == "child":
            child = ProcessSink(config)
            try:
                for e in events():
                    child.send(e)
                child.flush()
            finally:
                child.close()
            continue
        sink = KafkaProducerSink(config)
        assert sink._fast is not None, "with kafka-python 3.0 the batch path is the one the child takes"
        messages: list[Message] = [KafkaMessages(config).event(e) for e in events()]
        try:
            if way == "send":
                for m in messages:
                    sink.produce(m)
            else:
                for i in range(0, len(messages), 64):
                    sink.produce_batch(messages[i : i + 64])
            sink.flush()
        finally:
            sink.close()
    sent, batched, child_sent = (read(broker, topics[w], produced[w]) for w in ways)
    assert len(sent) == produced["send"]
    assert batched == sent
    assert child_sent == sent
    assert len({p for p, *_ in sent}) == 5, "the keys spread over every partition"


@pytest.mark.kafka  # Tansu does not enforce max.message.bytes
def test_batch_path_fails_the_flush_for_a_refused_record_in_a_split_batch(apache_kafka: Kafka) -> None:
    """Apache Kafka refuses a batch over the topic's max.message.bytes; kafka-python splits it in
    halves and retries until each half fits or holds one record. The halves are batches produce_batch
    never saw: a flush must wait for them (kafka-python's own flush raised UnknownError, or waited
    forever), what fits must arrive once, in order, and the one record too large for the topic (not
    for kafka.max_request_size, so it is not caught before sending) must fail the flush."""
    topic = f"path-split-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=apache_kafka.bootstrap, client_id="wpcdc-tests")
    try:
        admin.create_topics([NewTopic(topic, 2, 1, topic_configs={"max.message.bytes": "16384"})])
    finally:
        admin.close()
    config = KafkaConfig(
        bootstrap_servers=[apache_kafka.bootstrap], topic=topic, dead_letter_topic=topic, compression_type="none"
    )
    # Incompressible values, 40 a partition: each partition's batch is ~4x the topic's limit.
    fitting: list[Message] = [
        (topic, f"1:{i % 8}".encode(), os.urandom(1500), [("n", str(i).encode())]) for i in range(80)
    ]
    too_large: Message = (topic, b"1:3", os.urandom(20_000), [("n", b"too-large")])
    sink = KafkaProducerSink(config)
    try:
        assert sink._fast is not None
        sink.produce_batch(fitting[:40])
        sink.flush()  # split, retried, delivered: no error
        sink.produce_batch([*fitting[40:60], too_large, *fitting[60:]])
        with pytest.raises(SinkError, match="MessageSizeTooLarge"):
            sink.flush()
    finally:
        sink.close()
    arrived = read(apache_kafka, topic, 40)  # all there is: both flushes returned
    numbers = [h[0][1] for *_, h in arrived]
    assert b"too-large" not in numbers
    assert len(numbers) == len(set(numbers)), "no record twice"
    # The first flush's records all arrived; of the second's, those the failure did not take with it
    # (the idempotent producer drops what was in flight with the refused batch: the flush failed).
    assert {str(i).encode() for i in range(40)} <= set(numbers)
    for partition in {p for p, *_ in arrived}:
        numbers = [int(h[0][1]) for p, _, _, _, h in arrived if p == partition]  # in offset order
        assert numbers == sorted(numbers), "split halves keep the partition's order"


def test_producer_child_is_one_process_without_a_resource_tracker(broker: Tansu) -> None:
    from multiprocessing import resource_tracker

    config = KafkaConfig(bootstrap_servers=[broker.bootstrap], topic="path-child", dead_letter_topic="path-child")
    create_topics(broker.bootstrap, ["path-child"], partitions=2)
    sink = ProcessSink(config)
    try:
        assert resource_tracker._resource_tracker._pid is None, "starting the child started a resource tracker"
        sink.send({"event_type": "post_created", "event_id": "wp:c:1", "schema_version": 3, "blog_id": 1, "post_id": 1})
        sink.flush()
        assert read(broker, "path-child", 1)[0][2] == b"1:1"
        # A producer that dies is a clear error at the next flush, not a hang.
        sink._proc.kill()
        sink._proc.wait(10)
        sink.send({"event_type": "post_created", "event_id": "wp:c:2", "schema_version": 3, "blog_id": 1, "post_id": 2})
        with pytest.raises(SinkError, match="the producer process exited"):
            sink.flush()
    finally:
        sink.close()
