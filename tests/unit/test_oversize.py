from __future__ import annotations

import hashlib

import orjson
import pytest

from cdc.config import parse_config
from cdc.core.tables import TableKind
from cdc.errors import OversizeError
from cdc.mapping import events as ev
from cdc.mapping.mapper import Mapper
from cdc.mapping.state import NoLookup, WordPressState
from cdc.sink.kafka import KafkaMessages
from cdc.sink.oversize import shrink_to_fit
from tests.rows import change, meta_row, post_row

BIG = "é" * 40_000  # 80,000 bytes


def one(c):  # type: ignore[no-untyped-def]
    (e,) = [x for x in Mapper(WordPressState(NoLookup()), 1).map(c).events if x["event_type"].startswith("post_")][:1]
    return e


def test_post_content_is_cut_to_fit_and_flagged_with_the_original() -> None:
    e = one(change(TableKind.POSTS, "insert", after=post_row(1, post_content=BIG)))
    out = shrink_to_fit(e, 20_000)
    assert out is not None and len(orjson.dumps(out)) <= 20_000
    post = out["data"]["post"]
    assert post["content_truncated"] is True and post["content_bytes"] == 80_000
    assert post["content_sha256"] == hashlib.sha256(BIG.encode()).hexdigest()
    assert BIG.startswith(post["post_content"]) and len(post["post_content"]) > 9_000
    ev.PostCreated.model_validate(out)
    assert len(orjson.dumps(shrink_to_fit(e, 19_000))) <= 19_000  # type: ignore[arg-type]


def test_post_updated_cuts_the_changes_too() -> None:
    c = change(
        TableKind.POSTS, "update", before=post_row(1, post_content=BIG), after=post_row(1, post_content=BIG + "!")
    )
    e = one(c)
    out = shrink_to_fit(e, 30_000)
    assert out is not None and len(orjson.dumps(out)) <= 30_000
    ev.PostUpdated.model_validate(out)


def test_meta_value_is_cut_decoded_value_dropped() -> None:
    serialized = 'a:1:{i:0;s:80000:"' + "x" * 80_000 + '";}'
    e = one(change(TableKind.POSTMETA, "insert", after=meta_row(1, 1, "blob", serialized)))
    assert "value_decoded" in e["data"]
    out = shrink_to_fit(e, 10_000)
    assert out is not None and len(orjson.dumps(out)) <= 10_000
    d = out["data"]
    assert d["value_truncated"] is True and d["value_bytes"] == len(serialized) and "value_decoded" not in d
    assert d["value_sha256"] == hashlib.sha256(serialized.encode()).hexdigest()
    ev.PostMetaAdded.model_validate(out)


def test_event_that_cannot_fit_returns_none() -> None:
    e = one(change(TableKind.POSTS, "insert", after=post_row(1, post_title="t" * 50_000)))
    assert shrink_to_fit(e, 10_000) is None  # the title is not cut: it goes to the dead-letter topic


@pytest.mark.parametrize("policy", ["truncate", "dead_letter", "fail"])
def test_policies_in_the_message_builder(policy: str) -> None:
    cfg = parse_config({"kafka": {"max_request_size": 20_000, "oversize_policy": policy}}).kafka
    e = one(change(TableKind.POSTS, "insert", after=post_row(1, post_content=BIG)))
    messages = KafkaMessages(cfg)
    if policy == "fail":
        with pytest.raises(OversizeError, match="oversize_policy"):
            messages.event(e)
        return
    topic, key, value, _ = messages.event(e)
    assert len(value) <= 20_000 and key == b"1:1"
    if policy == "truncate":
        assert topic == cfg.topic and orjson.loads(value)["data"]["post"]["content_truncated"] is True
    else:
        dl = orjson.loads(value)
        assert topic == cfg.dead_letter_topic and dl["event_type"] == "dead_letter"
        assert "over kafka.max_request_size" in dl["error"] and dl["event_id"].endswith(":too_large")


def test_a_snapshot_cuts_its_meta_values_and_post_content() -> None:
    from cdc.core.position import BinlogPosition
    from cdc.snapshot.snapshotter import Chunk, SnapshotPost

    post = SnapshotPost(
        post_row(1, post_status="publish", post_content=BIG),
        [{"meta_id": 1, "meta_key": "big", "meta_value": BIG}, {"meta_id": 2, "meta_key": "small", "meta_value": "x"}],
        [],
    )
    at = BinlogPosition("binlog.000001", 100)
    chunk = Chunk(1, "wp_posts", at, at, [post], 1, True, 1_790_000_000)
    (e,) = Mapper(WordPressState(NoLookup()), 1).snapshot("s1", chunk, post, 0).events
    out = shrink_to_fit(e, 30_000)
    assert out is not None and len(orjson.dumps(out)) <= 30_000
    big, small = out["data"]["meta"]
    assert big["value_truncated"] is True and big["value_bytes"] == 80_000
    assert big["value_sha256"] == hashlib.sha256(BIG.encode()).hexdigest()
    assert small == {"meta_id": 2, "meta_key": "small", "value": "x"}
    assert out["data"]["post"]["content_truncated"] is True
    ev.EVENT_MODELS[ev.POST_SNAPSHOT].model_validate(out)
