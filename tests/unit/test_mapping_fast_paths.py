"""The mapper's fast paths (one-pass post rows, remembered PHP decodings and dates, the one-pass
prefetch) against its reference code (`fast_paths=False`): the same bytes, filters, dead letters and
lookups for any row changes in any order. And the sink's cached headers against plain ones."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdc.config import FilterConfig, KafkaConfig
from cdc.core.changes import RowChange
from cdc.core.tables import TableKind, WordPressTable
from cdc.mapping import events as ev
from cdc.mapping import mapper as mapper_module
from cdc.mapping.events import encode
from cdc.mapping.mapper import Mapped, Mapper
from cdc.mapping.state import NoLookup, PostInfo, TermInfo, WordPressState
from cdc.sink.kafka import KafkaMessages
from tests.rows import meta_row, post_row, rel_row
from tests.unit.test_mapping_properties import image, mutate, serialized

EXAMPLES = settings(
    max_examples=int(os.environ.get("WPCDC_HYPOTHESIS_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
KINDS = [TableKind.POSTS, TableKind.POSTMETA, TableKind.TERM_RELATIONSHIPS, TableKind.TERM_TAXONOMY, TableKind.TERMS]
# Values that come back, so that the remembered decodings are read as well as written.
REPEATED = ['a:2:{s:5:"width";s:4:"wide";s:4:"tags";a:2:{i:0;s:1:"x";i:1;s:1:"y";}}', "a:0:{}", "b:1;", "a:1:{"]


def outcome(m: Mapped) -> tuple[Any, ...]:
    """What leaves the mapper, compared as bytes (a float NaN in a row is not equal to itself)."""
    dead = encode(m.dead_letter) if m.dead_letter is not None else None
    return (m.encoded, [e["event_type"] for e in m.events], m.filtered, dead, m.decode_errors)


def both(lookup: Any = None, **filters: Any) -> tuple[Mapper, Mapper]:
    def one(fast: bool) -> Mapper:
        return Mapper(WordPressState(lookup or NoLookup()), 7, FilterConfig(**filters), fast_paths=fast)

    return one(True), one(False)


@st.composite
def row_change(draw: st.DrawFn, data: st.DataObject) -> RowChange:
    kind = draw(st.sampled_from(KINDS))
    op = draw(st.sampled_from(["insert", "update", "delete"]))
    pid = draw(st.integers(1, 4))  # few posts: later rows find what earlier ones told the state

    def one_image() -> dict[str, Any]:
        if kind is TableKind.POSTS and draw(st.booleans()):
            stamp = draw(st.sampled_from([dt.datetime(2026, 1, 2, 3, 4, 5), dt.datetime(2026, 1, 2, 3, 4, 5, 6)]))
            row = post_row(pid, post_status=draw(st.sampled_from(["draft", "publish", "trash", "auto-draft"])),
                           post_date=stamp, post_modified=stamp, post_modified_gmt=stamp)  # fmt: skip
            return mutate(row, data) if draw(st.booleans()) else row
        if kind is TableKind.POSTMETA and draw(st.booleans()):
            value = draw(st.one_of(st.sampled_from(REPEATED), serialized()))
            return meta_row(draw(st.integers(1, 3)), pid, draw(st.sampled_from(["k", "_edit_lock"])), value)
        if kind is TableKind.TERM_RELATIONSHIPS and draw(st.booleans()):
            return rel_row(pid, draw(st.integers(1, 3)), draw(st.integers(0, 2)))
        return image(kind, data)

    before = one_image() if op != "insert" else None
    after = one_image() if op != "delete" else None
    blog = draw(st.integers(1, 2))
    return RowChange(
        op, f"wp_{kind.value}", WordPressTable(blog, kind), before, after, "binlog.000001",
        draw(st.integers(4, 6)), draw(st.integers(0, 3)), draw(st.sampled_from([0, 1_700_000_000])), None,
    )  # fmt: skip


@EXAMPLES
@given(st.data())
def test_fast_paths_map_any_rows_in_any_order_to_the_reference_bytes(data: st.DataObject) -> None:
    fast, reference = both()
    for change in data.draw(st.lists(row_change(data), min_size=1, max_size=8)):
        assert outcome(fast.map(change)) == outcome(reference.map(change))


def test_fast_paths_match_the_reference_on_the_bench_shaped_rows_and_decode_a_repeated_value_once(
    monkeypatch: Any,
) -> None:
    """The bench's row changes per post (insert, guid backfill, three meta rows, a term, publish with
    new content): the same bytes both ways, and the fast path decodes the shared layout value once."""
    calls: list[str] = []
    decode = mapper_module.decode_php

    def counting(raw: str, **limits: int) -> Any:
        calls.append(raw)
        return decode(raw, **limits)

    monkeypatch.setattr(mapper_module, "decode_php", counting)
    layout = REPEATED[0]
    changes: list[RowChange] = []
    for pid in range(1, 21):
        now = dt.datetime(2026, 12, 1, 20, 0, pid % 3)
        draft = post_row(pid, post_date=now, post_date_gmt=None, post_modified=now, post_modified_gmt=now, guid="")
        backfilled = {**draft, "guid": f"http://bench.test/?p={pid}"}
        published = {**backfilled, "post_status": "publish", "post_content": "<p>new</p>" * 200, "post_date_gmt": now}
        rows = [
            (TableKind.POSTS, "insert", None, draft),
            (TableKind.POSTS, "update", draft, backfilled),
            (TableKind.POSTMETA, "insert", None, meta_row(3 * pid, pid, "_price", str(pid))),
            (TableKind.POSTMETA, "insert", None, meta_row(3 * pid + 1, pid, "_layout", layout)),
            (TableKind.POSTMETA, "insert", None, meta_row(3 * pid + 2, pid, "_edit_lock", "1:1")),
            (TableKind.TERM_RELATIONSHIPS, "insert", None, rel_row(pid, 1 + pid % 3)),
            (TableKind.POSTS, "update", backfilled, published),
        ]
        for n, (kind, op, before, after) in enumerate(rows):
            changes.append(
                RowChange(op, f"wp_{kind.value}", WordPressTable(1, kind), before, after, "binlog.000001",
                          1000 + 100 * pid + n, 0, 1_764_619_200 + pid, None)
            )  # fmt: skip
    fast, reference = both()
    fast_outcomes = [fast.map(change) for change in changes]
    assert calls.count(layout) == 1
    assert [outcome(m) for m in fast_outcomes] == [outcome(reference.map(change)) for change in changes]
    assert calls.count(layout) == 1 + 20  # the reference decodes it for every post
    assert sum(len(m.events) for m in fast_outcomes) == 20 * 6  # created, 3 meta, term, updated + published
    for event in (e for m in fast_outcomes for e in m.events):
        ev.EVENT_MODELS[event["event_type"]].model_validate(event)


class RecordingLookup:
    """A batch lookup that knows some posts and terms and records every question."""

    live = True

    def __init__(self) -> None:
        self.asked: list[tuple[Any, ...]] = []

    def post(self, blog_id: int, post_id: int) -> PostInfo | None:
        self.asked.append(("post", blog_id, post_id))
        return PostInfo("page" if post_id % 2 else "post", "publish") if post_id < 3 else None

    def term(self, blog_id: int, tt_id: int) -> TermInfo | None:
        self.asked.append(("term", blog_id, tt_id))
        return TermInfo(tt_id + 10, "category", f"t{tt_id}", f"T{tt_id}") if tt_id < 3 else None

    def posts(self, blog_id: int, post_ids: list[int]) -> dict[int, PostInfo]:
        self.asked.append(("posts", blog_id, tuple(post_ids)))
        return {p: info for p in post_ids if (info := self.post(blog_id, p)) is not None}

    def terms(self, blog_id: int, tt_ids: list[int]) -> dict[int, TermInfo]:
        self.asked.append(("terms", blog_id, tuple(tt_ids)))
        return {t: info for t in tt_ids if (info := self.term(blog_id, t)) is not None}


@EXAMPLES
@given(st.data())
def test_one_pass_prefetch_asks_what_the_reference_asks_and_maps_the_same(data: st.DataObject) -> None:
    """Batches of rows (odd values included) prefetched then mapped: the same questions to the
    database in the same order, then the same events."""
    lookups = RecordingLookup(), RecordingLookup()
    fast, reference = (
        Mapper(WordPressState(lookup), 7, FilterConfig(exclude_post_types=["page"]), fast_paths=fast)
        for lookup, fast in zip(lookups, (True, False), strict=True)
    )
    for _ in range(data.draw(st.integers(1, 3))):
        batch = data.draw(st.lists(row_change(data), min_size=1, max_size=10))
        fast.prefetch_changes(batch)
        reference.prefetch_changes(batch)
        assert lookups[0].asked == lookups[1].asked
        for change in batch:
            assert outcome(fast.map(change)) == outcome(reference.map(change))
        assert lookups[0].asked == lookups[1].asked


def test_the_one_pass_prefetch_asks_for_many_posts_and_terms_in_one_query_each() -> None:
    """So that the comparison above is not between two prefetches that ask nothing."""
    lookup = RecordingLookup()
    fast = Mapper(WordPressState(lookup), 7, fast_paths=True)
    meta, rel = WordPressTable(1, TableKind.POSTMETA), WordPressTable(1, TableKind.TERM_RELATIONSHIPS)
    batch = [
        RowChange("insert", "wp_postmeta", meta, None, meta_row(1, 1), "b", 4, 0, 0, None),
        RowChange("insert", "wp_postmeta", meta, None, meta_row(2, 2), "b", 4, 1, 0, None),
        RowChange("insert", "wp_term_relationships", rel, None, rel_row(3, 1), "b", 5, 0, 0, None),
        RowChange("insert", "wp_term_relationships", rel, None, rel_row(4, 2), "b", 5, 1, 0, None),
    ]
    fast.prefetch_changes(batch)
    assert [a for a in lookup.asked if a[0] in ("posts", "terms")] == [("posts", 1, (1, 2, 3, 4)), ("terms", 1, (1, 2))]


@given(
    kind=st.sampled_from([*ev.EVENT_MODELS, "post_custom"]),
    version=st.one_of(st.sampled_from([ev.SCHEMA_VERSION, 1, 3, 2.0]), st.integers(), st.booleans(), st.floats()),
    event_id=st.text(),
)
def test_cached_headers_are_the_plain_headers(kind: str, version: Any, event_id: str) -> None:
    event = {"event_type": kind, "event_id": event_id.encode("utf-8", "replace").decode(), "schema_version": version,
             "blog_id": 1, "post_id": 2}  # fmt: skip
    _topic, _key, _value, headers = KafkaMessages(KafkaConfig()).event(event, b"{}")
    assert headers == [
        ("event_type", kind.encode()),
        ("event_id", event["event_id"].encode()),
        ("schema_version", str(version).encode()),
    ]
