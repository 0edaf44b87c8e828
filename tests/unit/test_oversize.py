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


def _flag_of(path: tuple[str, ...]) -> str:
    return "content" if path[-1] == "post_content" else path[-1]


def _cut_without_a_flag(original: object, cut: object, path: tuple[str, ...] = ()) -> list[str]:
    """Every string that differs between an event and its shrunk copy must be flagged beside it
    with the original's size and hash, the same way everywhere."""
    problems: list[str] = []
    if isinstance(original, dict) and isinstance(cut, dict):
        for key, value in original.items():
            if key not in cut:
                continue
            if isinstance(value, str) and cut[key] != value:
                flag, full = _flag_of((*path, key)), value.encode()
                if not (
                    cut.get(f"{flag}_truncated") is True
                    and cut.get(f"{flag}_bytes") == len(full)
                    and cut.get(f"{flag}_sha256") == hashlib.sha256(full).hexdigest()
                ):
                    problems.append(".".join((*path, key)))
            else:
                problems += _cut_without_a_flag(value, cut[key], (*path, key))
    elif isinstance(original, list) and isinstance(cut, list):
        for i, (a, b) in enumerate(zip(original, cut, strict=True)):
            problems += _cut_without_a_flag(a, b, (*path, str(i)))
    return problems


def test_every_cut_value_is_flagged_the_same_way() -> None:
    events = [
        one(change(TableKind.POSTMETA, "update", meta_row(1, 1, "k", BIG), meta_row(1, 1, "k", BIG + "!"))),
        one(change(TableKind.POSTMETA, "update", meta_row(1, 1, "k", BIG), meta_row(1, 1, "k", "small"))),
        one(change(TableKind.POSTMETA, "delete", before=meta_row(1, 1, "k", BIG))),
        one(change(TableKind.POSTS, "update", post_row(1, post_content=BIG), post_row(1, post_content=BIG + "!"))),
        one(change(TableKind.POSTS, "update", post_row(1, post_content=BIG), post_row(1, post_content="short"))),
    ]
    for e in events:
        out = shrink_to_fit(e, 30_000)
        assert out is not None and len(orjson.dumps(out)) <= 30_000
        assert _cut_without_a_flag(e, out) == []
        assert out != e  # something was cut
        ev.EVENT_MODELS[out["event_type"]].model_validate(out)
    deleted = shrink_to_fit(events[2], 30_000)
    assert deleted is not None and deleted["data"]["previous_value_truncated"] is True
    assert deleted["data"]["previous_value_bytes"] == 80_000
    updated = shrink_to_fit(events[4], 30_000)
    assert updated is not None
    content = updated["data"]["changes"]["post_content"]
    assert content["old_truncated"] is True and content["new"] == "short" and "new_truncated" not in content


def test_content_cut_by_the_mapper_in_changes_is_flagged_with_the_original() -> None:
    mapper = Mapper(
        WordPressState(NoLookup()), 1, mapping=parse_config({"mapping": {"max_content_bytes": 1000}}).mapping
    )
    c = change(TableKind.POSTS, "update", post_row(1, post_content=BIG), post_row(1, post_content=BIG + "!"))
    e = mapper.map(c).events[0]
    content = e["data"]["changes"]["post_content"]
    assert len(content["old"].encode()) <= 1000 and content["old_truncated"] is True
    assert content["old_bytes"] == 80_000 and content["new_bytes"] == 80_001
    assert content["new_sha256"] == hashlib.sha256((BIG + "!").encode()).hexdigest()
    # Cut again to fit the broker: the size and hash still describe the original, not the first cut.
    out = shrink_to_fit(e, 5_000)
    assert out is not None and out["data"]["changes"]["post_content"]["old_bytes"] == 80_000
    ev.PostUpdated.model_validate(out)
