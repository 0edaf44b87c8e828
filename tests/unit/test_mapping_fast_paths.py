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
        if kind in (TableKind.TERM_TAXONOMY, TableKind.TERMS) and draw(st.booleans()):
            tt = draw(st.integers(1, 3))  # term_id tt + 10, as RecordingLookup's terms
            row = {"term_taxonomy_id": tt, "term_id": tt + 10, "taxonomy": "post_tag", "slug": f"s{tt}", "name": "N"}
            return mutate(row, data) if draw(st.booleans()) else row
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
        return self._post(post_id)

    def term(self, blog_id: int, tt_id: int) -> TermInfo | None:
        self.asked.append(("term", blog_id, tt_id))
        return self._term(tt_id)

    def posts(self, blog_id: int, post_ids: list[int]) -> dict[int, PostInfo]:
        self.asked.append(("posts", blog_id, tuple(post_ids)))
        return {p: info for p in post_ids if (info := self._post(p)) is not None}

    def terms(self, blog_id: int, tt_ids: list[int]) -> dict[int, TermInfo]:
        self.asked.append(("terms", blog_id, tuple(tt_ids)))
        return {t: info for t in tt_ids if (info := self._term(t)) is not None}

    @staticmethod
    def _post(post_id: int) -> PostInfo | None:
        return PostInfo("page" if post_id % 2 else "post", "publish") if post_id < 3 else None

    @staticmethod
    def _term(tt_id: int) -> TermInfo | None:
        return TermInfo(tt_id + 10, "category", f"t{tt_id}", f"T{tt_id}") if tt_id < 3 else None


def questions(asked: list[tuple[Any, ...]], kinds: tuple[str, ...]) -> list[tuple[Any, ...]]:
    return [q for q in asked if q[0] in kinds]


def ids_asked(asked: list[tuple[Any, ...]]) -> set[tuple[int, int]]:
    return {(q[1], i) for q in asked for i in (q[2] if isinstance(q[2], tuple) else (q[2],))}


@EXAMPLES
@given(st.data())
def test_one_pass_prefetch_asks_what_the_reference_asks_and_maps_the_same(data: st.DataObject) -> None:
    """Batches of rows (odd values included) prefetched then mapped: the same questions about posts
    in the same order, about terms no term the reference does not ask about, then the same events."""
    lookups = RecordingLookup(), RecordingLookup()
    fast, reference = (
        Mapper(WordPressState(lookup), 7, FilterConfig(exclude_post_types=["page"]), fast_paths=fast)
        for lookup, fast in zip(lookups, (True, False), strict=True)
    )
    for _ in range(data.draw(st.integers(1, 3))):
        batch = data.draw(st.lists(row_change(data), min_size=1, max_size=10))
        fast.prefetch_changes(batch)
        reference.prefetch_changes(batch)
        for change in batch:
            assert outcome(fast.map(change)) == outcome(reference.map(change))
        posts_fast, posts_reference = (questions(x.asked, ("post", "posts")) for x in lookups)
        assert posts_fast == posts_reference
        terms_fast, terms_reference = (questions(x.asked, ("term", "terms")) for x in lookups)
        assert ids_asked(terms_fast) <= ids_asked(terms_reference)
        assert len(terms_fast) <= len(terms_reference)  # a term left out is never asked for alone


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
    assert questions(lookup.asked, ("posts", "terms")) == [("posts", 1, (1, 2, 3, 4)), ("terms", 1, (1, 2))]


def test_terms_the_batch_writes_before_naming_them_are_not_asked_for() -> None:
    """A post saved with two new tags: wp_terms and wp_term_taxonomy rows, then the relationships.
    The reference asks the database for both terms (then the batch's rows replace the answers);
    the fast path asks nothing, and the events are the same, with the binlog's names."""
    lookups = RecordingLookup(), RecordingLookup()
    fast, reference = (
        Mapper(WordPressState(lookup), 7, fast_paths=fast) for lookup, fast in zip(lookups, (True, False), strict=True)
    )
    terms, taxonomy = WordPressTable(1, TableKind.TERMS), WordPressTable(1, TableKind.TERM_TAXONOMY)
    rel, posts = WordPressTable(1, TableKind.TERM_RELATIONSHIPS), WordPressTable(1, TableKind.POSTS)
    batch = [RowChange("insert", "wp_posts", posts, None, post_row(9, post_status="publish"), "b", 4, 0, 0, None)]
    for tt in (1, 2):
        batch += [
            RowChange("insert", "wp_terms", terms, None, {"term_id": tt + 20, "name": f"New {tt}", "slug": f"new-{tt}",
                      "term_group": 0}, "b", 5, tt, 0, None),
            RowChange("insert", "wp_term_taxonomy", taxonomy, None, {"term_taxonomy_id": tt, "term_id": tt + 20,
                      "taxonomy": "post_tag", "description": "", "parent": 0, "count": 0}, "b", 6, tt, 0, None),
        ]  # fmt: skip
    batch += [
        RowChange("insert", "wp_term_relationships", rel, None, rel_row(9, tt), "b", 7, tt, 0, None) for tt in (1, 2)
    ]
    fast.prefetch_changes(batch)
    reference.prefetch_changes(batch)
    fast_out, reference_out = ([m.map(c) for c in batch] for m in (fast, reference))
    assert [outcome(m) for m in fast_out] == [outcome(m) for m in reference_out]
    assert lookups[1].asked == [("terms", 1, (1, 2))]
    assert lookups[0].asked == []
    added = [e for m in fast_out for e in m.events if e["event_type"] == ev.POST_TERM_ADDED]
    assert [(e["data"]["name"], e["source"].get("lookups")) for e in added] == [("New 1", None), ("New 2", None)]


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
