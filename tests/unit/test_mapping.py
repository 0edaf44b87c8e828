"""The mapper, row images in and events out, against plain fixtures (no I/O)."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

import pytest

from cdc.config import FilterConfig, MappingConfig
from cdc.core.tables import TableKind, WordPressTable
from cdc.mapping import events as ev
from cdc.mapping.mapper import (
    EXCLUDED_META_KEY,
    EXCLUDED_POST_STATUS,
    EXCLUDED_POST_TYPE,
    GUID_BACKFILL,
    MODIFIED_ONLY_UPDATE,
    TERM_LOOKUP_TABLE,
    TRASH_SLUG,
    Mapped,
    Mapper,
)
from cdc.mapping.state import NoLookup, PostInfo, TermInfo, WordPressState
from tests.rows import change, meta_row, post_row, rel_row

P, M, R = TableKind.POSTS, TableKind.POSTMETA, TableKind.TERM_RELATIONSHIPS


class DictLookup:
    def __init__(self, posts: dict[tuple[int, int], PostInfo] | None = None, terms: dict[Any, TermInfo] | None = None):
        self.posts = posts or {}
        self.terms = terms or {}
        self.post_calls = 0

    def post(self, blog_id: int, post_id: int) -> PostInfo | None:
        self.post_calls += 1
        return self.posts.get((blog_id, post_id))

    def term(self, blog_id: int, tt_id: int) -> TermInfo | None:
        return self.terms.get((blog_id, tt_id))


def mapper(lookup: Any = None, **filters: Any) -> Mapper:
    mapping = filters.pop("mapping", None)
    return Mapper(WordPressState(lookup or NoLookup()), 101, FilterConfig(**filters), mapping)


def valid(mapped: Mapped) -> list[dict[str, Any]]:
    """Every event must satisfy its pydantic contract (and so the exported JSON Schema)."""
    assert mapped.dead_letter is None, mapped.dead_letter
    for e in mapped.events:
        ev.EVENT_MODELS[e["event_type"]].model_validate(e)
    return mapped.events


def types(mapped: Mapped) -> list[str]:
    return [e["event_type"] for e in valid(mapped)]


# -- wp_posts ----------------------------------------------------------------------------------


def test_insert_draft_is_post_created_with_normalised_row() -> None:
    c = change(P, "insert", after=post_row(7, post_password="hunter2", post_title="Grüße 😀"))
    (e,) = valid(mapper().map(c))
    assert e["event_type"] == "post_created"
    assert e["post_id"] == 7 and e["blog_id"] == 1 and e["post_type"] == "post"
    post = e["data"]["post"]
    assert "post_password" not in post and post["has_password"] is True
    assert post["post_title"] == "Grüße 😀"
    assert post["post_date"] == "2026-11-22T10:00:00"  # site-local: no offset
    assert post["post_modified_gmt"] == "2026-11-22T09:00:00Z"  # UTC twin
    assert post["post_date_gmt"] is None  # zero date
    assert post["content_truncated"] is False
    assert e["event_id"] == f"101:binlog.000003:{c.pos}:0"
    assert e["source"] == {
        "server_id": 101, "file": "binlog.000003", "pos": c.pos, "row": 0, "table": "wp_posts", "gtid": "0-101-7"
    }  # fmt: skip
    assert e["occurred_at"] == "2026-09-21T14:13:20Z"
    assert "hunter2" not in repr(e)


def test_insert_published_adds_lifecycle_event_with_suffixed_id() -> None:
    created, published = valid(mapper().map(change(P, "insert", after=post_row(3, post_status="publish"))))
    assert (created["event_type"], published["event_type"]) == ("post_created", "post_published")
    assert published["data"] == {"from": None, "to": "publish"}
    assert published["event_id"] == created["event_id"] + ":lifecycle"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("draft", "publish", "post_published"),
        ("future", "publish", "post_published"),
        ("publish", "draft", "post_unpublished"),
        ("publish", "pending", "post_unpublished"),
        ("publish", "private", "post_unpublished"),
        ("draft", "future", "post_scheduled"),
        ("publish", "trash", "post_trashed"),
        ("trash", "draft", "post_restored"),
        ("draft", "pending", None),
    ],
)
def test_status_transitions(old: str, new: str, expected: str | None) -> None:
    c = change(P, "update", before=post_row(2, post_status=old), after=post_row(2, post_status=new))
    out = valid(mapper().map(c))
    assert out[0]["event_type"] == "post_updated"
    assert out[0]["data"]["changes"]["post_status"] == {"old": old, "new": new}
    if expected is None:
        assert len(out) == 1
    else:
        assert [e["event_type"] for e in out[1:]] == [expected]
        assert out[1]["data"] == {"from": old, "to": new}


def test_update_lists_only_changed_columns() -> None:
    before = post_row(4, post_title="Old", post_status="publish")
    after = post_row(4, post_title="New", post_status="publish", post_modified=dt.datetime(2026, 11, 23, 8, 0))
    (e,) = valid(mapper().map(change(P, "update", before=before, after=after)))
    assert e["data"]["changes"] == {
        "post_title": {"old": "Old", "new": "New"},
        "post_modified": {"old": "2026-11-22T10:00:00", "new": "2026-11-23T08:00:00"},
    }
    assert e["data"]["post"]["post_title"] == "New"


def test_password_change_is_reported_without_the_password() -> None:
    c = change(P, "update", before=post_row(4, post_password=""), after=post_row(4, post_password="s3cret"))
    (e,) = valid(mapper().map(c))
    assert e["data"]["changes"] == {"has_password": {"old": False, "new": True}}
    assert "s3cret" not in repr(e)


def test_delete_is_post_deleted_with_before_image() -> None:
    (e,) = valid(mapper().map(change(P, "delete", before=post_row(9, post_status="publish", post_title="Bye"))))
    assert e["event_type"] == "post_deleted" and e["data"]["post"]["post_title"] == "Bye"


def test_content_over_limit_is_cut_on_a_character_boundary_flagged_and_hashed() -> None:
    content = "é" * 100  # 200 bytes
    m = mapper(mapping=MappingConfig(max_content_bytes=51))
    (e,) = valid(m.map(change(P, "insert", after=post_row(1, post_content=content))))
    post = e["data"]["post"]
    assert post["post_content"] == "é" * 25  # 50 bytes: the 51st byte would split a character
    assert post["content_truncated"] is True
    assert post["content_bytes"] == 200
    assert post["content_sha256"] == hashlib.sha256(content.encode()).hexdigest()


def test_content_at_limit_is_not_truncated() -> None:
    m = mapper(mapping=MappingConfig(max_content_bytes=10))
    (e,) = valid(m.map(change(P, "insert", after=post_row(1, post_content="x" * 10))))
    assert e["data"]["post"]["post_content"] == "x" * 10 and e["data"]["post"]["content_truncated"] is False


def test_unknown_extra_columns_pass_through() -> None:
    (e,) = valid(mapper().map(change(P, "insert", after=post_row(1, plugin_score=7))))
    assert e["data"]["post"]["plugin_score"] == 7


# -- filters -----------------------------------------------------------------------------------


def test_revision_and_auto_draft_are_filtered_by_default() -> None:
    m = mapper()
    rev = m.map(change(P, "insert", after=post_row(11, post_type="revision", post_status="inherit")))
    auto = m.map(change(P, "insert", after=post_row(12, post_status="auto-draft")))
    assert (rev.filtered, rev.events) == (EXCLUDED_POST_TYPE, [])
    assert (auto.filtered, auto.events) == (EXCLUDED_POST_STATUS, [])


def test_filters_can_be_switched_off() -> None:
    m = mapper(exclude_post_types=[], exclude_post_statuses=[], exclude_meta_keys=[])
    assert types(m.map(change(P, "insert", after=post_row(11, post_type="revision", post_status="inherit")))) == [
        "post_created"
    ]
    assert types(m.map(change(M, "insert", after=meta_row(1, 11, "_edit_lock", "1")))) == ["post_meta_added"]


def test_first_save_of_an_auto_draft_is_post_created() -> None:
    m = mapper()
    before = post_row(12, post_status="auto-draft", post_title="Auto Draft")
    after = post_row(12, post_status="publish", post_title="Real")
    created, published = valid(m.map(change(P, "update", before=before, after=after)))
    assert created["event_type"] == "post_created" and created["data"]["post"]["post_title"] == "Real"
    assert published["event_type"] == "post_published" and published["data"] == {"from": None, "to": "publish"}


def test_modified_only_update_is_dropped_by_default_and_kept_when_off() -> None:
    before = post_row(4)
    after = post_row(4, post_modified=dt.datetime(2026, 11, 23), post_modified_gmt=dt.datetime(2026, 11, 23))
    assert mapper().map(change(P, "update", before=before, after=after)).filtered == MODIFIED_ONLY_UPDATE
    kept = mapper(drop_modified_only_updates=False).map(change(P, "update", before=before, after=after))
    assert types(kept) == ["post_updated"]


def test_guid_backfill_is_dropped_but_a_guid_change_is_not() -> None:
    backfill = change(P, "update", before=post_row(4, guid=""), after=post_row(4, guid="http://x/?p=4"))
    assert mapper().map(backfill).filtered == GUID_BACKFILL
    assert types(mapper(drop_guid_backfill=False).map(backfill)) == ["post_updated"]
    moved = change(P, "update", before=post_row(4, guid="http://a/?p=4"), after=post_row(4, guid="http://b/?p=4"))
    assert types(mapper().map(moved)) == ["post_updated"]


def test_trash_slug_update_is_dropped_but_the_trashing_and_other_renames_are_not() -> None:
    live = post_row(4, post_status="publish", post_name="hello")
    suffixed = post_row(4, post_status="publish", post_name="hello__trashed")
    slug_only = change(P, "update", before=live, after=suffixed)
    assert mapper().map(slug_only).filtered == TRASH_SLUG
    kept = mapper(drop_trash_slug_update=False).map(slug_only)
    assert types(kept) == ["post_updated"]
    assert kept.events[0]["data"]["changes"]["post_name"] == {"old": "hello", "new": "hello__trashed"}
    # The status change that follows carries the new slug in its row: it is the event consumers see.
    trashed = mapper().map(change(P, "update", before=suffixed, after={**suffixed, "post_status": "trash"}))
    assert types(trashed) == ["post_updated", "post_trashed"]
    assert trashed.events[0]["data"]["post"]["post_name"] == "hello__trashed"
    # A rename that is not the trash suffix, or one together with other columns, is data.
    renamed = change(P, "update", before=live, after={**live, "post_name": "hello-again"})
    assert types(mapper().map(renamed)) == ["post_updated"]
    with_title = change(P, "update", before=live, after={**suffixed, "post_title": "New"})
    assert types(mapper().map(with_title)) == ["post_updated"]


def test_meta_and_terms_of_a_filtered_post_are_filtered() -> None:
    m = mapper()
    m.map(change(P, "insert", after=post_row(20, post_type="revision", post_status="inherit")))
    assert m.map(change(M, "insert", after=meta_row(1, 20))).filtered == EXCLUDED_POST_TYPE
    assert m.map(change(R, "insert", after=rel_row(20))).filtered == EXCLUDED_POST_TYPE


def test_excluded_meta_key() -> None:
    assert mapper().map(change(M, "insert", after=meta_row(1, 1, "_edit_lock", "1"))).filtered == EXCLUDED_META_KEY
    # Underscore keys that matter are not excluded.
    assert types(mapper().map(change(M, "insert", after=meta_row(2, 1, "_thumbnail_id", "5")))) == ["post_meta_added"]


# -- wp_postmeta -------------------------------------------------------------------------------


def test_meta_events_carry_raw_and_decoded_values_and_previous_value() -> None:
    lookup = DictLookup(posts={(1, 1): PostInfo("product", "publish")})
    m = mapper(lookup)
    serialized = 'a:2:{s:6:"layout";s:4:"wide";s:4:"tags";a:2:{i:0;s:1:"x";i:1;s:1:"y";}}'
    (added,) = valid(m.map(change(M, "insert", after=meta_row(5, 1, "opts", serialized))))
    assert added["event_type"] == "post_meta_added" and added["post_type"] == "product"
    assert added["data"]["value"] == serialized
    assert added["data"]["value_decoded"] == {"layout": "wide", "tags": ["x", "y"]}
    assert "previous_value" not in added["data"]

    (updated,) = valid(
        m.map(change(M, "update", before=meta_row(5, 1, "opts", serialized), after=meta_row(5, 1, "opts", "plain")))
    )
    assert updated["event_type"] == "post_meta_updated"
    assert updated["data"]["value"] == "plain" and "value_decoded" not in updated["data"]
    assert updated["data"]["previous_value"] == serialized

    (deleted,) = valid(m.map(change(M, "delete", before=meta_row(5, 1, "opts", "plain"))))
    assert deleted["event_type"] == "post_meta_deleted"
    assert deleted["data"]["value"] is None and deleted["data"]["previous_value"] == "plain"
    assert lookup.post_calls == 1  # the post type was looked up once, then cached


def test_meta_multibyte_serialized_strings_use_byte_lengths() -> None:
    ok = 's:4:"😀";'  # 4 bytes, 1 character
    wrong = 's:1:"😀";'
    (a,) = valid(mapper().map(change(M, "insert", after=meta_row(1, 1, "e", ok))))
    (b,) = valid(mapper().map(change(M, "insert", after=meta_row(2, 1, "e", wrong))))
    assert a["data"]["value_decoded"] == "😀"
    assert "value_decoded" not in b["data"] and "malformed" in b["data"]["value_decode_error"]
    assert b["data"]["value"] == wrong  # the raw value is always kept


def test_several_meta_rows_with_one_key_are_distinct_by_meta_id() -> None:
    m = mapper()
    a = valid(m.map(change(M, "insert", after=meta_row(1, 1, "gallery", "1"), row=0)))
    b = valid(m.map(change(M, "insert", after=meta_row(2, 1, "gallery", "2"), row=1, pos=a[0]["source"]["pos"])))
    assert (a[0]["data"]["meta_id"], b[0]["data"]["meta_id"]) == (1, 2)
    assert a[0]["event_id"] != b[0]["event_id"]


def test_meta_of_unknown_post_has_null_post_type() -> None:
    (e,) = valid(mapper().map(change(M, "insert", after=meta_row(1, 999))))
    assert e["post_type"] is None and e["post_id"] == 999


# -- wp_term_relationships ---------------------------------------------------------------------


def test_term_events_are_enriched_from_binlog_fed_cache() -> None:
    m = mapper()
    tt = {"term_taxonomy_id": 5, "term_id": 3, "taxonomy": "post_tag", "description": "", "parent": 0, "count": 0}
    assert (
        m.map(
            change(TableKind.TERMS, "insert", after={"term_id": 3, "name": "Café", "slug": "cafe", "term_group": 0})
        ).filtered
        == TERM_LOOKUP_TABLE
    )
    assert m.map(change(TableKind.TERM_TAXONOMY, "insert", after=tt)).filtered == TERM_LOOKUP_TABLE
    m.map(change(P, "insert", after=post_row(1)))
    (added,) = valid(m.map(change(R, "insert", after=rel_row(1, 5))))
    assert added["event_type"] == "post_term_added" and added["post_type"] == "post"
    assert added["data"] == {
        "term_taxonomy_id": 5, "term_order": 0, "taxonomy": "post_tag", "term_id": 3, "slug": "cafe", "name": "Café"
    }  # fmt: skip
    (removed,) = valid(m.map(change(R, "delete", before=rel_row(1, 5))))
    assert removed["event_type"] == "post_term_removed" and removed["data"]["slug"] == "cafe"


def test_term_miss_is_filled_from_lookup_and_unknown_stays_null() -> None:
    lookup = DictLookup(terms={(2, 8): TermInfo(4, "category", "news", "News")})
    m = mapper(lookup)
    (e,) = valid(m.map(change(R, "insert", after=rel_row(1, 8), blog_id=2)))
    assert (e["data"]["taxonomy"], e["data"]["slug"], e["blog_id"]) == ("category", "news", 2)
    (u,) = valid(m.map(change(R, "insert", after=rel_row(1, 9), blog_id=2)))
    assert (u["data"]["taxonomy"], u["data"]["term_id"], u["data"]["slug"], u["data"]["name"]) == (
        None,
        None,
        None,
        None,
    )


def test_term_order_only_change_is_post_term_updated() -> None:
    (e,) = valid(mapper().map(change(R, "update", before=rel_row(1, 5, 0), after=rel_row(1, 5, 3))))
    assert e["event_type"] == "post_term_updated"
    assert (e["data"]["term_order"], e["data"]["previous_term_order"]) == (3, 0)


def test_repointed_relationship_is_removed_then_added() -> None:
    out = valid(mapper().map(change(R, "update", before=rel_row(1, 5), after=rel_row(1, 6))))
    assert [e["event_type"] for e in out] == ["post_term_removed", "post_term_added"]
    assert out[0]["event_id"].endswith(":removed") and out[1]["event_id"].endswith(":added")


# -- multisite, dead letters -------------------------------------------------------------------


def test_multisite_blog_events_carry_blog_id() -> None:
    (e,) = valid(mapper().map(change(P, "insert", after=post_row(1), blog_id=2)))
    assert e["blog_id"] == 2 and e["source"]["table"] == "wp_2_posts"


def test_row_missing_a_column_goes_to_dead_letter() -> None:
    bad = post_row(1)
    del bad["post_status"]
    out = mapper().map(change(P, "insert", after=bad))
    assert out.events == [] and out.filtered is None
    dl = out.dead_letter
    assert dl is not None
    ev.DeadLetter.model_validate(dl)
    assert "post_status" in dl["error"] and dl["post_id"] == 1 and dl["after"]["ID"] == 1


def test_unexpected_type_goes_to_dead_letter() -> None:
    out = mapper().map(change(M, "insert", after=meta_row(1, 1, "k", b"\xff\xfe")))
    assert out.dead_letter is not None and "UTF-8" in out.dead_letter["error"]
    assert out.dead_letter["after"]["meta_value"] == "\\xff\\xfe"


def test_same_change_maps_to_same_ids_twice() -> None:
    c = change(P, "update", before=post_row(2), after=post_row(2, post_status="publish"))
    assert [e["event_id"] for e in mapper().map(c).events] == [e["event_id"] for e in mapper().map(c).events]


def test_raw_values_are_published_with_a_warning_naming_the_column() -> None:
    from cdc.core.values import INVALID_DATE, RawValue, invalid_text

    bad_title = invalid_text(b"A\xed\xa0\x80B", "utf-8")
    before = post_row(1, post_title=bad_title, post_date=RawValue("2024-00-15 10:00:00", INVALID_DATE))
    after = post_row(1, post_title="fixed", post_date=RawValue("2024-00-15 10:00:00", INVALID_DATE))
    (e,) = Mapper(WordPressState(NoLookup()), 1).map(change(TableKind.POSTS, "update", before, after)).events
    assert e["data"]["changes"]["post_title"] == {"old": "A\ufffd\ufffd\ufffdB", "new": "fixed"}
    assert e["data"]["post"]["post_date"] == "2024-00-15 10:00:00"
    assert e["column_warnings"] == [
        {"image": "before", "column": "post_date", "problem": "invalid_date"},
        {"image": "before", "column": "post_title", "problem": "invalid_text"},
        {"image": "after", "column": "post_date", "problem": "invalid_date"},
    ]
    ev.PostUpdated.model_validate(e)


# -- lookups: remembered misses, one query per rows event ---------------------------------------


class BatchLookup:
    """A database that also answers many ids at once; records every question."""

    live = True

    def __init__(self, posts: dict[tuple[int, int], PostInfo] | None = None, terms: dict[Any, TermInfo] | None = None):
        self._posts = posts or {}
        self._terms = terms or {}
        self.asked: list[tuple[str, list[int]]] = []

    def post(self, blog_id: int, post_id: int) -> PostInfo | None:
        self.asked.append(("post", [post_id]))
        return self._posts.get((blog_id, post_id))

    def term(self, blog_id: int, tt_id: int) -> TermInfo | None:
        self.asked.append(("term", [tt_id]))
        return self._terms.get((blog_id, tt_id))

    def posts(self, blog_id: int, post_ids: list[int]) -> dict[int, PostInfo]:
        self.asked.append(("posts", post_ids))
        return {p: self._posts[(blog_id, p)] for p in post_ids if (blog_id, p) in self._posts}

    def terms(self, blog_id: int, tt_ids: list[int]) -> dict[int, TermInfo]:
        self.asked.append(("terms", tt_ids))
        return {t: self._terms[(blog_id, t)] for t in tt_ids if (blog_id, t) in self._terms}


def test_a_term_miss_is_asked_once_until_the_binlog_creates_that_term() -> None:
    db = BatchLookup()
    m = mapper(db)
    m.map(change(P, "insert", after=post_row(1)))
    first = valid(m.map(change(R, "insert", after=rel_row(1, 9))))
    again = valid(m.map(change(R, "delete", before=rel_row(1, 9))))
    assert db.asked == [("term", [9])]  # the second row found the remembered miss
    assert first[0]["data"]["name"] is None and again[0]["data"]["name"] is None
    assert first[0]["source"]["lookups"] == again[0]["source"]["lookups"] == [
        "data.taxonomy", "data.term_id", "data.slug", "data.name"
    ]  # fmt: skip
    # The term is created: its rows replace the miss, no lookup, no `lookups`.
    m.map(change(TableKind.TERM_TAXONOMY, "insert", after={"term_taxonomy_id": 9, "term_id": 4, "taxonomy": "tag"}))
    m.map(change(TableKind.TERMS, "insert", after={"term_id": 4, "name": "New", "slug": "new"}))
    (added,) = valid(m.map(change(R, "insert", after=rel_row(1, 9))))
    assert added["data"]["name"] == "New" and "lookups" not in added["source"]
    assert db.asked == [("term", [9])]

    # Not remembered (the switch the identical-output test turns off): asked per row, same events.
    db2 = BatchLookup()
    m2 = Mapper(WordPressState(db2, remember_term_misses=False), 101)
    m2.map(change(P, "insert", after=post_row(1)))
    for e, same in (
        (valid(m2.map(change(R, "insert", after=rel_row(1, 9)))), first),
        (valid(m2.map(change(R, "delete", before=rel_row(1, 9)))), again),
    ):
        assert (e[0]["data"], e[0]["source"]["lookups"]) == (same[0]["data"], same[0]["source"]["lookups"])
    assert db2.asked == [("term", [9]), ("term", [9])]


def test_prefetch_asks_once_for_exactly_what_the_rows_of_an_event_will_look_up() -> None:
    posts = {(1, p): PostInfo("post", "publish") for p in (5, 6, 7)} | {(1, 8): PostInfo("revision", "inherit")}
    terms = {(1, 20): TermInfo(2, "category", "news", "News")}
    db = BatchLookup(posts, terms)
    state = WordPressState(db)
    m = Mapper(state, 101)
    state.set_post(1, 7, PostInfo("page", "publish"))  # known from the binlog: not asked for
    meta = [
        {"values": meta_row(1, 5)}, {"values": meta_row(2, 6)}, {"values": meta_row(3, 7)},
        {"values": {**meta_row(4, 9), "meta_key": "_edit_lock"}},  # an excluded key: no lookup
        {"values": {"meta_id": 5}},  # unreadable here: left to map(), which dead-letters it
    ]  # fmt: skip
    wp_meta = WordPressTable(1, M)
    m.prefetch(wp_meta, "insert", meta)
    assert db.asked == [("posts", [5, 6])]
    rels = [{"values": rel_row(p, t)} for p, t in ((5, 20), (6, 21), (8, 22), (10, 23))]
    m.prefetch(WordPressTable(1, R), "insert", rels)
    # Post 8 is a revision (excluded): its term is not asked for; 10 does not exist (asked, remembered).
    assert db.asked[1:] == [("posts", [8, 10]), ("terms", [20, 21, 23])]
    db.asked.clear()
    out = [m.map(change(R, "insert", after=r["values"])) for r in rels]
    assert db.asked == [], "the rows found everything in the cache"
    assert [e["data"]["slug"] for x in out for e in x.events] == ["news", None, None]
    assert out[2].filtered == EXCLUDED_POST_TYPE


def test_prefetch_without_batch_support_or_for_one_row_asks_nothing() -> None:
    db = DictLookup()
    m = mapper(db)
    m.prefetch(WordPressTable(1, M), "insert", [{"values": meta_row(1, 5)}, {"values": meta_row(2, 6)}])
    assert db.post_calls == 0
    batch = BatchLookup()
    m = Mapper(WordPressState(batch), 101)
    m.prefetch(WordPressTable(1, M), "insert", [{"values": meta_row(1, 5)}])
    assert batch.asked == []


def test_prefetch_changes_asks_once_for_a_run_of_transactions_and_not_for_posts_written_before_use() -> None:
    posts = {(1, p): PostInfo("post", "publish") for p in (5, 6)}
    db = BatchLookup(posts, {(1, 20): TermInfo(2, "category", "news", "News")})
    m = Mapper(WordPressState(db), 101)
    changes = [
        change(M, "insert", after=meta_row(1, 5)),  # one single-row statement each, as WordPress writes
        change(P, "insert", after=post_row(7)),  # post 7 is written before its meta: no lookup for it
        change(M, "insert", after=meta_row(2, 7)),
        change(R, "insert", after=rel_row(6, 20)),
        change(M, "insert", after=meta_row(3, 8)),  # 8 is mentioned first, written after: asked for
        change(P, "insert", after=post_row(8)),
        change(R, "insert", after=rel_row(6, 21)),
    ]
    m.prefetch_changes(changes)
    assert db.asked == [("posts", [5, 6, 8]), ("terms", [20, 21])]  # one query each, 7 is not asked for
    db.asked.clear()
    out = [m.map(c) for c in changes]
    assert db.asked == [], "every read found its answer in the cache"
    # The same events as mapping the rows one by one with a lookup per miss.
    db2 = BatchLookup(posts, {(1, 20): TermInfo(2, "category", "news", "News")})
    m2 = Mapper(WordPressState(db2), 101)
    assert [x.encoded for x in out] == [m2.map(c).encoded for c in changes]
    assert db2.asked != []
