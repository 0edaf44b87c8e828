"""Row images in, WordPress domain events out. No I/O: everything outside the row comes from
`WordPressState`, which the mapper also keeps up to date as posts and terms go by.

Each row change yields exactly one of: events (a list of dicts, the Kafka message values), a
filter reason (a documented rule dropped it), or a dead-letter record (it could not be mapped).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from cdc.config import FilterConfig, MappingConfig
from cdc.core.changes import RowChange, TableChange, UndecodableRows
from cdc.core.tables import TableKind, WordPressTable
from cdc.core.values import RawValue
from cdc.errors import LookupUnavailable
from cdc.mapping import events as ev
from cdc.mapping.events import encode
from cdc.mapping.serialized import NOT_SERIALIZED, Decoded, decode_php
from cdc.mapping.state import PostInfo, WordPressState
from cdc.snapshot.snapshotter import Chunk, SnapshotPost

# Filter reasons (the `reason` label of wpcdc_rows_filtered_total); documented in the README.
EXCLUDED_POST_TYPE = "excluded_post_type"
EXCLUDED_POST_STATUS = "excluded_post_status"
EXCLUDED_META_KEY = "excluded_meta_key"
MODIFIED_ONLY_UPDATE = "modified_only_update"
GUID_BACKFILL = "guid_backfill"
TRASH_SLUG = "trash_slug"
NO_CHANGE = "no_change"
TERM_LOOKUP_TABLE = "term_lookup_table"

_TABLE_EVENTS = {"truncated": ev.TABLE_TRUNCATED, "dropped": ev.TABLE_DROPPED, "renamed": ev.TABLE_RENAMED}
_MODIFIED_COLUMNS = frozenset({"post_modified", "post_modified_gmt"})
_GUID_BACKFILL_COLUMNS = _MODIFIED_COLUMNS | {"guid"}
_TRASH_SLUG_COLUMNS = _MODIFIED_COLUMNS | {"post_name"}
_TRASHED_SUFFIX = "__trashed"  # wp_add_trashed_suffix_to_post_name_for_post()
_UTC_COLUMNS = frozenset({"post_date_gmt", "post_modified_gmt"})
_INT_POST_COLUMNS = ("ID", "post_author", "post_parent", "menu_order", "comment_count")
# Serialized meta values up to this many characters are remembered, at most this many: 0.5 M
# characters of text at most, a few MiB with their decodings.
_MEMO_MAX_CHARS = 512
_MEMO_ENTRIES = 1024
# Text in the event contract (dates become ISO strings first); anything else is a schema change
# the contract does not describe, so the row is dead-lettered rather than published malformed.
_TEXT_POST_COLUMNS = (
    "post_date", "post_date_gmt", "post_content", "post_title", "post_excerpt", "post_status", "comment_status",
    "ping_status", "post_name", "to_ping", "pinged", "post_modified", "post_modified_gmt", "post_content_filtered",
    "guid", "post_type", "post_mime_type",
)  # fmt: skip
_EXPECTED_POST_TYPES: dict[str, type] = {
    **{col: int for col in _INT_POST_COLUMNS}, **{col: str for col in _TEXT_POST_COLUMNS}
}  # fmt: skip


class MappingError(Exception):
    """The row cannot become an event (missing columns, unexpected types)."""


@dataclass(slots=True)
class Mapped:
    events: list[dict[str, Any]] = field(default_factory=list)
    filtered: str | None = None
    dead_letter: dict[str, Any] | None = None
    decode_errors: int = 0
    # The events as the sink publishes them (one per event), encoded inside the per-row guard so
    # that a value JSON cannot carry dead-letters its row instead of failing in the sink.
    encoded: list[bytes] = field(default_factory=list)


_SKIP = object()  # value of a column that must not be emitted
# source.lookups: fields taken from the database's current state (a cache miss), not from the binlog.
_POST_LOOKUP = ["post_type"]
_TERM_LOOKUP = ["data.taxonomy", "data.term_id", "data.slug", "data.name"]


class Mapper:
    def __init__(
        self,
        state: WordPressState,
        server_id: int,
        filters: FilterConfig | None = None,
        mapping: MappingConfig | None = None,
        gtid_ids: bool = False,
        *,
        fast_paths: bool = True,
    ) -> None:
        """`gtid_ids` (GTID positions, source.position): event ids from the transaction's GTID and the
        row's ordinal in it, the same on every server of the topology; else from file and position.
        `fast_paths`: off only in the tests that prove the events are the same bytes either way."""
        self.state = state
        self.server_id = server_id
        self.gtid_ids = gtid_ids
        f = filters or FilterConfig()
        m = mapping or MappingConfig()
        self._excluded_types = frozenset(f.exclude_post_types)
        self._excluded_statuses = frozenset(f.exclude_post_statuses)
        self._excluded_meta_keys = frozenset(f.exclude_meta_keys)
        self._drop_modified_only = f.drop_modified_only_updates
        self._drop_guid_backfill = f.drop_guid_backfill
        self._drop_trash_slug = f.drop_trash_slug_update
        self._max_content = m.max_content_bytes
        self._max_decode_bytes = m.max_decode_bytes
        self._max_decode_depth = m.max_decode_depth
        self._ts_cache: tuple[int, str] = (-1, "")
        self._fast = fast_paths
        # Serialized meta values seen before -> their decoding (phpserialize's pure-Python parser is
        # most of a meta row's cost, and sites repeat values: defaults, plugin settings, layouts).
        # Decoded values are shared between events, which nothing changes after mapping (the
        # oversize path deep-copies before cutting).
        self._decoded: dict[str, Decoded] = {}
        # datetime -> isoformat(): a post row's four dates are mostly one or two instants.
        self._iso: dict[dt.datetime, str] = {}

    # -- entry point ---------------------------------------------------------------------------

    def map(self, change: RowChange) -> Mapped:
        """The row's outcome, its events already encoded: mapping and encoding share one guard, so
        anything in row data that either cannot handle dead-letters this row and nothing else."""
        _raw_seen[0] = False
        try:
            kind = change.wp.kind
            if kind is TableKind.POSTS:
                mapped = self._post(change)
            elif kind is TableKind.POSTMETA:
                mapped = self._meta(change)
            elif kind is TableKind.TERM_RELATIONSHIPS:
                mapped = self._term_relationship(change)
            else:
                self._learn_terms(change)
                return Mapped(filtered=TERM_LOOKUP_TABLE)
            if mapped.events:
                mapped.encoded = _encode_all(mapped.events, _column_warnings(change) if _raw_seen[0] else None)
            return mapped
        except LookupUnavailable:
            raise
        except Exception as exc:  # any failure becomes a dead letter: never a crash loop on one row
            return Mapped(dead_letter=self._dead_letter(change, exc))

    def prefetch(self, wp: WordPressTable, op: str, rows: list[dict[str, Any]]) -> None:
        """Before the rows of one rows event are mapped (`rows` as the library decodes them): ask for
        every post and term they will look up in one query each, instead of one per row. Only ids the
        rows' own mapping would ask for; a row that cannot be read here is left to `map`."""
        kind = wp.kind
        if len(rows) < 2 or (kind is not TableKind.POSTMETA and kind is not TableKind.TERM_RELATIONSHIPS):
            return
        images = [
            (r.get("before_values"), r.get("after_values")) if op == "update" else (None, r.get("values"))
            if op == "insert" else (r.get("values"), None)
            for r in rows
        ]  # fmt: skip
        self.state.prefetch_posts(wp.blog_id, self._posts_named(kind, images))
        if kind is TableKind.TERM_RELATIONSHIPS:
            self.state.prefetch_terms(wp.blog_id, self._terms_named(wp.blog_id, images))

    def prefetch_changes(self, changes: list[RowChange]) -> None:
        """`prefetch` for the row changes of several rows events (consecutive transactions), per
        blog: one query for the posts and one for the terms their mapping would look up. An entry
        a row among them sets (a post or term written in the batch) replaces what was fetched before
        that row is mapped, so the events are those of mapping them without it."""
        if self._fast:
            self._prefetch_changes_common(changes)
        else:
            self._prefetch_changes_reference(changes)

    def _prefetch_changes_common(self, changes: list[RowChange]) -> None:
        """`_prefetch_changes_reference` in one pass over the rows, the posts a meta or relationship
        row names read inline when its columns have their usual types (a row that does not takes
        the reference's per-row code): the same post ids in the same order of blogs, so the same
        queries. Unlike the reference it leaves out a term whose term_taxonomy and wp_terms rows come
        in the batch before every relationship naming it (a post saved with a new tag): those rows
        set what the prefetch would have fetched before the relationship is mapped."""
        written: set[tuple[int, Any]] = set()
        first: dict[tuple[int, Any], bool] = {}
        posts: dict[int, set[int]] = {}
        relationships: dict[int, list[tuple[dict[str, Any] | None, dict[str, Any] | None]]] = {}
        taxonomy_set: dict[tuple[int, int], int] = {}  # (blog, tt id) -> term_id, by a row before this one
        names_set: set[tuple[int, int]] = set()  # (blog, term_id) by a wp_terms row before this one
        needed: set[tuple[int, Any]] = set()  # (blog, tt id) named by a relationship before those two
        excluded_keys = self._excluded_meta_keys
        meta_kind, rel_kind, posts_kind = TableKind.POSTMETA, TableKind.TERM_RELATIONSHIPS, TableKind.POSTS
        for c in changes:
            wp = c.wp
            kind, blog = wp.kind, wp.blog_id
            before, after = c.before, c.after
            if kind is posts_kind:
                if after is not None:
                    written.add((blog, after.get("ID")))
                continue
            if kind is meta_kind:
                column = "post_id"
            elif kind is rel_kind:
                column = "object_id"
                relationships.setdefault(blog, []).append((before, after))
                for image in (before, after):
                    if image is not None:
                        key = (blog, image.get("term_taxonomy_id"))
                        term_id = taxonomy_set.get(key)  # type: ignore[arg-type]
                        if term_id is None or (blog, term_id) not in names_set:
                            needed.add(key)
            else:
                self._note_term_row(kind, blog, after, taxonomy_set, names_set)
                continue
            named = posts.get(blog)
            if named is None:
                named = posts[blog] = set()
            for image in (before, after):
                if image is not None:
                    key = (blog, image.get(column))
                    if key not in first:
                        first[key] = key in written
            image = after if after is not None else before
            assert image is not None
            post = image.get(column)
            if type(post) is not int:
                named.update(self._posts_named(kind, [(before, after)]))  # dead-lettered by map(), skipped here
            elif kind is meta_kind:
                meta_key = image.get("meta_key", _SKIP)
                if type(meta_key) is str or meta_key is None:
                    if meta_key not in excluded_keys:
                        named.add(post)
                else:
                    named.update(self._posts_named(kind, [(before, after)]))
            elif before is not None and after is not None:
                named.update(self._posts_named(kind, [(before, after)]))
            else:
                named.add(post)
        state = self.state
        for blog, ids in posts.items():
            state.prefetch_posts(blog, {p for p in ids if not first.get((blog, p))})
        for blog, images in relationships.items():
            state.prefetch_terms(blog, {t for t in self._terms_named(blog, images) if (blog, t) in needed})

    @staticmethod
    def _note_term_row(
        kind: TableKind,
        blog: int,
        after: dict[str, Any] | None,
        taxonomy_set: dict[tuple[int, int], int],
        names_set: set[tuple[int, int]],
    ) -> None:
        """What a term row of the batch will tell the state when it is mapped (`_learn_terms`), when
        its columns have the types that let it (else it is dead-lettered and tells nothing)."""
        if after is None:
            return  # a delete leaves the cached term as it was
        if kind is TableKind.TERM_TAXONOMY:
            tt_id, term_id = after.get("term_taxonomy_id"), after.get("term_id")
            taxonomy = after.get("taxonomy", _SKIP)
            if type(tt_id) is int and type(term_id) is int and (taxonomy is None or type(taxonomy) is str):
                taxonomy_set[(blog, tt_id)] = term_id
        elif kind is TableKind.TERMS:
            term_id, slug, name = after.get("term_id"), after.get("slug", _SKIP), after.get("name", _SKIP)
            if type(term_id) is int and (slug is None or type(slug) is str) and (name is None or type(name) is str):
                names_set.add((blog, term_id))

    def _prefetch_changes_reference(self, changes: list[RowChange]) -> None:
        tables: dict[WordPressTable, list[tuple[dict[str, Any] | None, dict[str, Any] | None]]] = {}
        written: set[tuple[int, Any]] = set()  # posts a wp_posts row of the batch sets (set_post)
        # Per post named by a meta or relationship row: whether a wp_posts row before that first
        # mention sets it (then no read asks the database for it, so neither does the prefetch).
        first: dict[tuple[int, Any], bool] = {}
        for c in changes:
            kind, blog = c.wp.kind, c.wp.blog_id
            if kind is TableKind.POSTS:
                if c.after is not None:
                    written.add((blog, c.after.get("ID")))
            elif kind is TableKind.POSTMETA or kind is TableKind.TERM_RELATIONSHIPS:
                tables.setdefault(c.wp, []).append((c.before, c.after))
                column = "post_id" if kind is TableKind.POSTMETA else "object_id"
                for image in (c.before, c.after):
                    if image is not None:
                        key = (blog, image.get(column))
                        if key not in first:
                            first[key] = key in written
        # One query for the posts of each blog, then one for its terms (which leaves out the terms
        # of posts now known to be excluded, as `prefetch` does).
        posts: dict[int, set[int]] = {}
        for wp, images in tables.items():
            posts.setdefault(wp.blog_id, set()).update(self._posts_named(wp.kind, images))
        for blog, ids in posts.items():
            self.state.prefetch_posts(blog, {p for p in ids if not first.get((blog, p))})
        terms: dict[int, set[int]] = {}
        for wp, images in tables.items():
            if wp.kind is TableKind.TERM_RELATIONSHIPS:
                terms.setdefault(wp.blog_id, set()).update(self._terms_named(wp.blog_id, images))
        for blog, ids in terms.items():
            self.state.prefetch_terms(blog, ids)

    def _posts_named(
        self, kind: TableKind, images: list[tuple[dict[str, Any] | None, dict[str, Any] | None]]
    ) -> set[int]:
        """The posts the mapping of these meta or relationship rows looks up."""
        posts: set[int] = set()
        for before, after in images:
            image = after if after is not None else before
            try:
                if kind is TableKind.POSTMETA:
                    if _str(image, "meta_key") not in self._excluded_meta_keys:  # type: ignore[arg-type]
                        posts.add(_int(image, "post_id"))  # type: ignore[arg-type]
                else:
                    posts.add(_int(image, "object_id"))  # type: ignore[arg-type]
                    if before is not None and after is not None:
                        posts.add(_int(before, "object_id"))
            except Exception:  # map() dead-letters it
                continue
        return posts

    def _terms_named(self, blog: int, images: list[tuple[dict[str, Any] | None, dict[str, Any] | None]]) -> set[int]:
        """The terms the mapping of these relationship rows looks up (call after their posts' prefetch)."""
        state = self.state
        terms: set[int] = set()
        for before, after in images:
            try:
                image = after if after is not None else before
                info = state.post_known(blog, _int(image, "object_id"))  # type: ignore[arg-type]
                if info is not None and self._excluded(info.post_type, info.post_status):
                    continue
                if before is None or after is None:
                    terms.add(_int(image, "term_taxonomy_id"))  # type: ignore[arg-type]
                    continue
                old, new = _int(before, "term_taxonomy_id"), _int(after, "term_taxonomy_id")
                if _int(before, "object_id") == _int(after, "object_id") and old == new:
                    if _int(before, "term_order") != _int(after, "term_order"):
                        terms.add(new)
                else:
                    terms.update((old, new))
            except Exception:  # map() dead-letters it
                continue
        return terms

    # -- wp_posts ------------------------------------------------------------------------------

    def _excluded(self, post_type: str | None, status: str | None) -> str | None:
        if post_type in self._excluded_types:
            return EXCLUDED_POST_TYPE
        if status in self._excluded_statuses:
            return EXCLUDED_POST_STATUS
        return None

    def _post(self, c: RowChange) -> Mapped:
        image = c.after if c.after is not None else c.before
        assert image is not None
        post_id = _int(image, "ID")
        post_type = _str(image, "post_type")
        status = _str(image, "post_status")
        blog = c.wp.blog_id
        if c.op != "delete":
            self.state.set_post(blog, post_id, PostInfo(post_type, status))

        if c.op == "update":
            assert c.before is not None and c.after is not None
            before_excluded = self._excluded(_str(c.before, "post_type"), _str(c.before, "post_status"))
            after_excluded = self._excluded(post_type, status)
            if before_excluded and after_excluded:
                return Mapped(filtered=after_excluded)
            if before_excluded:
                # The first real save of an auto-draft (or a type moved out of the excluded set): the
                # consumer never saw this post, so it is created now.
                return self._post_created(c, post_id, post_type, status)
            return self._post_updated(c, post_id, post_type)

        reason = self._excluded(post_type, status)
        if reason:
            return Mapped(filtered=reason)
        if c.op == "insert":
            return self._post_created(c, post_id, post_type, status)
        return Mapped([self._event(c, ev.POST_DELETED, post_id, post_type, {"post": self._post_row(image)})])

    def _post_created(self, c: RowChange, post_id: int, post_type: str | None, status: str | None) -> Mapped:
        assert c.after is not None
        out = [self._event(c, ev.POST_CREATED, post_id, post_type, {"post": self._post_row(c.after)})]
        lifecycle = _lifecycle(None, status)
        if lifecycle:
            out.append(self._event(c, lifecycle, post_id, post_type, {"from": None, "to": status}, "lifecycle"))
        return Mapped(out)

    def _post_updated(self, c: RowChange, post_id: int, post_type: str | None) -> Mapped:
        before, after = c.before, c.after
        assert before is not None and after is not None
        changed = [k for k, v in after.items() if before.get(k, _SKIP) != v]
        if not changed:
            return Mapped(filtered=NO_CHANGE)
        changed_set = frozenset(changed)
        if self._drop_modified_only and changed_set <= _MODIFIED_COLUMNS:
            return Mapped(filtered=MODIFIED_ONLY_UPDATE)
        if (
            self._drop_guid_backfill
            and "guid" in changed_set
            and changed_set <= _GUID_BACKFILL_COLUMNS
            and not before.get("guid")
        ):
            return Mapped(filtered=GUID_BACKFILL)
        if (
            self._drop_trash_slug
            and "post_name" in changed_set
            and changed_set <= _TRASH_SLUG_COLUMNS
            and str(after.get("post_name") or "").endswith(_TRASHED_SUFFIX)
            and not str(before.get("post_name") or "").endswith(_TRASHED_SUFFIX)
        ):
            # wp_trash_post() renames the slug in an UPDATE of its own just before the status change;
            # alone it shows a live post with a trashed slug. The next UPDATE carries the new slug.
            return Mapped(filtered=TRASH_SLUG)

        changes: dict[str, dict[str, Any]] = {}
        for col in changed:
            if col == "post_password":
                changes["has_password"] = {"old": bool(before.get(col)), "new": bool(after.get(col))}
            elif col == "post_content":
                changes[col] = self._content_change(before.get(col), after[col])
            else:
                changes[col] = {"old": _value(col, before.get(col)), "new": _value(col, after[col])}
        out = [self._event(c, ev.POST_UPDATED, post_id, post_type, {"post": self._post_row(after), "changes": changes})]
        old_status, new_status = _str(before, "post_status"), _str(after, "post_status")
        lifecycle = _lifecycle(old_status, new_status)
        if lifecycle:
            data = {"from": old_status, "to": new_status}
            out.append(self._event(c, lifecycle, post_id, post_type, data, "lifecycle"))
        return Mapped(out)

    def _post_row(self, image: dict[str, Any]) -> dict[str, Any]:
        if self._fast:
            row = self._post_row_common(image)
            if row is not None:
                return row
        return self._post_row_reference(image)

    def _post_row_common(self, image: dict[str, Any]) -> dict[str, Any] | None:
        """`_post_row` for rows of text, integers, NULLs and dates only (every WordPress core row), in
        one pass with the type checks folded in; None for anything else, including every row the
        reference would reject, so that it builds that row (or its error) itself."""
        row: dict[str, Any] = {}
        expected = _EXPECTED_POST_TYPES
        iso = self._iso
        for col, raw in image.items():
            t = type(raw)
            if t is str or t is int or raw is None:
                if col == "post_content":
                    self._put_content(row, raw)
                    continue
                if col == "post_password":
                    row["has_password"] = bool(raw)
                    continue
                want = expected.get(col)
                if want is not None and t is not want and raw is not None:
                    return None
                row[col] = raw
            elif t is dt.datetime:
                if expected.get(col) is int or col == "post_content" or col == "post_password":
                    return None
                text = iso.get(raw)
                if text is None:
                    if len(iso) >= 64:
                        iso.clear()
                    text = iso[raw] = raw.isoformat()
                row[col] = text + "Z" if col in _UTC_COLUMNS else text
            else:
                return None
        if type(row.get("post_status")) is not str or type(row.get("post_type")) is not str:
            return None
        row.setdefault("has_password", False)
        row.setdefault("content_truncated", False)
        return row

    def _put_content(self, row: dict[str, Any], raw: Any) -> None:
        content, full_bytes, digest = self._content(raw)
        row["post_content"] = content
        row["content_truncated"] = full_bytes is not None
        if full_bytes is not None:
            row["content_bytes"] = full_bytes
            row["content_sha256"] = digest

    def _post_row_reference(self, image: dict[str, Any]) -> dict[str, Any]:
        row: dict[str, Any] = {}
        for col, raw in image.items():
            if col == "post_password":
                row["has_password"] = bool(raw)
            elif col == "post_content":
                self._put_content(row, raw)
            else:
                row[col] = _value(col, raw)
        for col in _INT_POST_COLUMNS:
            if col in row and row[col] is not None and type(row[col]) is not int:
                raise MappingError(f"wp_posts.{col} is {type(row[col]).__name__}, expected an integer")
        for col in _TEXT_POST_COLUMNS:
            if col in row and row[col] is not None and type(row[col]) is not str:
                raise MappingError(f"wp_posts.{col} is {type(row[col]).__name__}, expected text or a date")
        if type(row.get("post_status")) is not str or type(row.get("post_type")) is not str:
            raise MappingError("wp_posts.post_status and post_type must be text (they are NOT NULL in WordPress)")
        row.setdefault("has_password", False)
        row.setdefault("content_truncated", False)
        return row

    def _content_change(self, old: Any, new: Any) -> dict[str, Any]:
        """{"old", "new"}, each cut like post.post_content and flagged beside it (old_truncated, …)."""
        change: dict[str, Any] = {}
        for side, raw in (("old", old), ("new", new)):
            content, full_bytes, digest = self._content(raw)
            change[side] = content
            if full_bytes is not None:
                change[f"{side}_truncated"] = True
                change[f"{side}_bytes"] = full_bytes
                change[f"{side}_sha256"] = digest
        return change

    def _content(self, raw: Any) -> tuple[str | None, int | None, str | None]:
        """(content, full size if truncated, sha256 if truncated)."""
        text = _text(raw)
        if text is None or len(text) * 4 <= self._max_content:  # cannot exceed the limit: skip encoding
            return text, None, None
        data = text.encode("utf-8", "surrogatepass")
        if len(data) <= self._max_content:
            return text, None, None
        cut = data[: self._max_content].decode("utf-8", "ignore")  # never split a character
        return cut, len(data), hashlib.sha256(data).hexdigest()

    # -- wp_postmeta ---------------------------------------------------------------------------

    def _meta(self, c: RowChange) -> Mapped:
        image = c.after if c.after is not None else c.before
        assert image is not None
        meta_id = _int(image, "meta_id")
        post_id = _int(image, "post_id")
        meta_key = _str(image, "meta_key")
        if meta_key in self._excluded_meta_keys:
            return Mapped(filtered=EXCLUDED_META_KEY)
        info, from_db = self.state.post_fact(c.wp.blog_id, post_id)
        post_type = info.post_type if info else None
        if info is not None:
            reason = self._excluded(info.post_type, info.post_status)
            if reason:
                return Mapped(filtered=reason)

        if c.op == "update":
            assert c.before is not None
            if c.before == c.after:
                return Mapped(filtered=NO_CHANGE)
            kind = ev.POST_META_UPDATED
        else:
            kind = ev.POST_META_ADDED if c.op == "insert" else ev.POST_META_DELETED
        data: dict[str, Any] = {"meta_id": meta_id, "meta_key": meta_key}
        errors = self._meta_value(data, _text(c.after["meta_value"]) if c.after is not None else None)
        if c.before is not None:
            data["previous_value"] = _text(c.before.get("meta_value"))
        event = self._event(c, kind, post_id, post_type, data)
        if from_db:
            event["source"]["lookups"] = [*_POST_LOOKUP]
        return Mapped([event], decode_errors=errors)

    # -- wp_term_relationships -----------------------------------------------------------------

    def _term_relationship(self, c: RowChange) -> Mapped:
        image = c.after if c.after is not None else c.before
        assert image is not None
        post_id = _int(image, "object_id")
        info, from_db = self.state.post_fact(c.wp.blog_id, post_id)
        if info is not None:
            reason = self._excluded(info.post_type, info.post_status)
            if reason:
                return Mapped(filtered=reason)
        post_type = info.post_type if info else None

        if c.op == "insert":
            return Mapped([self._term_event(c, ev.POST_TERM_ADDED, post_type, c.after, None, from_db)])  # type: ignore[arg-type]
        if c.op == "delete":
            return Mapped([self._term_event(c, ev.POST_TERM_REMOVED, post_type, c.before, None, from_db)])  # type: ignore[arg-type]
        assert c.before is not None and c.after is not None
        same_link = _int(c.before, "object_id") == post_id and _int(c.before, "term_taxonomy_id") == _int(
            c.after, "term_taxonomy_id"
        )
        if same_link:
            if _int(c.before, "term_order") == _int(c.after, "term_order"):
                return Mapped(filtered=NO_CHANGE)
            e = self._term_event(c, ev.POST_TERM_UPDATED, post_type, c.after, None, from_db)
            e["data"]["previous_term_order"] = _int(c.before, "term_order")
            return Mapped([e])
        # A plugin re-pointed the relationship: to a consumer that is one term removed, another added.
        before_post = _int(c.before, "object_id")
        before_info, before_db = self.state.post_fact(c.wp.blog_id, before_post)
        removed = self._term_event(
            c, ev.POST_TERM_REMOVED, before_info.post_type if before_info else None, c.before, "removed", before_db
        )
        return Mapped([removed, self._term_event(c, ev.POST_TERM_ADDED, post_type, c.after, "added", from_db)])

    def _term_event(
        self,
        c: RowChange,
        kind: str,
        post_type: str | None,
        image: dict[str, Any],
        suffix: str | None = None,
        post_from_db: bool = False,
    ) -> dict[str, Any]:
        tt_id = _int(image, "term_taxonomy_id")
        term, term_from_db = self.state.term_fact(c.wp.blog_id, tt_id)
        data = {
            "term_taxonomy_id": tt_id,
            "term_order": _int(image, "term_order"),
            "taxonomy": term.taxonomy if term else None,
            "term_id": term.term_id if term else None,
            "slug": term.slug if term else None,
            "name": term.name if term else None,
        }
        event = self._event(c, kind, _int(image, "object_id"), post_type, data, suffix)
        if post_from_db or term_from_db:
            event["source"]["lookups"] = (_POST_LOOKUP if post_from_db else []) + (_TERM_LOOKUP if term_from_db else [])
        return event

    def _learn_terms(self, c: RowChange) -> None:
        image = c.after
        if image is None:
            return  # a deleted term keeps its cached name: relationship deletes may still refer to it
        blog = c.wp.blog_id
        if c.wp.kind is TableKind.TERM_TAXONOMY:
            self.state.set_term_taxonomy(
                blog, _int(image, "term_taxonomy_id"), _int(image, "term_id"), _str(image, "taxonomy")
            )
        else:
            self.state.set_term(blog, _int(image, "term_id"), _str(image, "slug"), _str(image, "name"))

    # -- snapshots -----------------------------------------------------------------------------

    def snapshot(self, snapshot_id: str, chunk: Chunk, post: SnapshotPost, row: int) -> Mapped:
        """A post_snapshot event: the post row normalised as in post_created, its meta (excluded keys
        left out) with decoded values, its terms. Positioned at the chunk's high watermark."""
        image = post.row
        blog = chunk.blog
        try:
            post_id = _int(image, "ID")
            post_type, status = _str(image, "post_type"), _str(image, "post_status")
            # The post cache is left alone: at the high watermark the stream has already told it as
            # much, and filling it from a 200k-post site would cost memory for nothing.
            reason = self._excluded(post_type, status)
            if reason:
                return Mapped(filtered=reason)
            meta = []
            decode_errors = 0
            warnings = _image_warnings("after", image) if _has_raw(image) else []
            for m in post.meta:
                key = _str(m, "meta_key")
                if key in self._excluded_meta_keys:
                    continue
                item: dict[str, Any] = {"meta_id": _int(m, "meta_id"), "meta_key": key}
                if _has_raw(m):
                    warnings += [{**w, "meta_id": item["meta_id"]} for w in _image_warnings("after", m)]
                decode_errors += self._meta_value(item, _text(m.get("meta_value")))
                meta.append(item)
            terms = [
                {
                    "term_taxonomy_id": _int(t, "term_taxonomy_id"),
                    "term_order": _int(t, "term_order"),
                    "taxonomy": _str(t, "taxonomy"),
                    "term_id": t["term_id"] if isinstance(t.get("term_id"), int) else None,
                    "slug": _str(t, "slug"),
                    "name": _str(t, "name"),
                }
                for t in post.terms
            ]
            data = {"snapshot_id": snapshot_id, "post": self._post_row(image), "meta": meta, "terms": terms}
            event = {
                "event_id": f"{self._snapshot_prefix()}:{snapshot_id}:{blog}:{post_id}",
                "event_type": ev.POST_SNAPSHOT,
                "schema_version": ev.SCHEMA_VERSION,
                "occurred_at": self._occurred_at(chunk.read_at),
                "blog_id": blog,
                "post_id": post_id,
                "post_type": post_type,
                "source": self._snapshot_source(chunk, row),
                "data": data,
            }
            return Mapped([event], decode_errors=decode_errors, encoded=_encode_all([event], warnings))
        except Exception as exc:
            return Mapped(dead_letter=self._snapshot_dead_letter(snapshot_id, chunk, post, row, exc))

    def _snapshot_source(self, chunk: Chunk, row: int) -> dict[str, Any]:
        high = chunk.high
        return {"server_id": self.server_id, "file": high.file, "pos": high.pos, "row": row, "table": chunk.table}

    def _snapshot_dead_letter(
        self, snapshot_id: str, chunk: Chunk, post: SnapshotPost, row: int, exc: Exception
    ) -> dict[str, Any]:
        post_id = post.row.get("ID") if isinstance(post.row.get("ID"), int) else None
        return self._dead_letter_record(
            f"{self._snapshot_prefix()}:{snapshot_id}:{chunk.blog}:{post_id}:dead_letter", chunk.read_at, chunk.blog,
            post_id, self._snapshot_source(chunk, row), f"snapshot of this post failed: {_reason(exc)}",
            "insert", None, post.row,
        )  # fmt: skip

    def _meta_value(self, data: dict[str, Any], value: str | None) -> int:
        """Sets value (and value_decoded or value_decode_error); returns 1 on a decode error."""
        data["value"] = value
        if value is None:
            return 0
        decoded = self._decode(value)
        if decoded.ok:
            data["value_decoded"] = decoded.value
            if decoded.as_text:
                data["value_decoded_as_text"] = list(decoded.as_text)
        elif decoded.error:
            data["value_decode_error"] = decoded.error
            return 1
        return 0

    def _decode(self, value: str) -> Decoded:
        if not self._fast or len(value) > _MEMO_MAX_CHARS:
            return decode_php(value, max_bytes=self._max_decode_bytes, max_depth=self._max_decode_depth)
        memo = self._decoded
        decoded = memo.get(value)
        if decoded is None:
            decoded = decode_php(value, max_bytes=self._max_decode_bytes, max_depth=self._max_decode_depth)
            if decoded is not NOT_SERIALIZED:  # plain values cost only is_serialized()'s test
                if len(memo) >= _MEMO_ENTRIES:
                    del memo[next(iter(memo))]  # the oldest: a bounded memo, not a cache to tune
                memo[value] = decoded
        return decoded

    # -- envelope ------------------------------------------------------------------------------

    def _occurred_at(self, ts: int) -> str:
        cached_ts, text = self._ts_cache
        if cached_ts != ts:
            text = dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            self._ts_cache = (ts, text)
        return text

    def _snapshot_prefix(self) -> str:
        # With GTID ids no server's identity: a snapshot resumed on another server keeps its ids.
        return "snapshot" if self.gtid_ids else f"{self.server_id}:snapshot"

    def _coordinates(self, c: RowChange | UndecodableRows) -> str:
        """The event-id prefix: server:file:pos, or server:file:pos.event inside a compressed transaction."""
        if c.event is None:
            return f"{self.server_id}:{c.file}:{c.pos}"
        return f"{self.server_id}:{c.file}:{c.pos}.{c.event}"

    def _row_id(self, c: RowChange | UndecodableRows) -> str:
        """The event id without its suffix. GTID ids: `gtid:txn_row` (`uuid[:tag]:gno:N`, MariaDB
        `domain-server-seq:N`), N the row's ordinal among its transaction's captured rows. Else
        `server_id:file:pos[.event]:row`."""
        if self.gtid_ids and c.gtid is not None:
            return f"{c.gtid}:{c.txn_row}"
        return f"{self._coordinates(c)}:{c.row if type(c) is RowChange else 0}"

    def _source(self, c: RowChange | UndecodableRows, row: int | None = None) -> dict[str, Any]:
        src: dict[str, Any] = {
            "server_id": self.server_id,
            "file": c.file,
            "pos": c.pos,
            "row": c.row if row is None else row,
            "table": c.table,
        }
        if c.event is not None:
            src["event"] = c.event
        if c.gtid is not None:
            src["gtid"] = c.gtid
        return src

    def _event(
        self,
        c: RowChange,
        kind: str,
        post_id: int,
        post_type: str | None,
        data: dict[str, Any],
        suffix: str | None = None,
    ) -> dict[str, Any]:
        event_id = self._row_id(c)
        if suffix:
            event_id += ":" + suffix
        return {
            "event_id": event_id,
            "event_type": kind,
            "schema_version": ev.SCHEMA_VERSION,
            "occurred_at": self._occurred_at(c.timestamp),
            "blog_id": c.wp.blog_id,
            "post_id": post_id,
            "post_type": post_type,
            "source": self._source(c),
            "data": data,
        }

    def table_event(self, t: TableChange) -> dict[str, Any]:
        """table_truncated / table_dropped / table_renamed for a DDL query on a captured table."""
        data: dict[str, Any] = {"table": t.table, "table_kind": t.wp.kind.value, "statement": t.statement}
        if t.kind == "renamed":
            data["renamed_from"] = t.renamed_from
            data["renamed_to"] = t.renamed_to
        source: dict[str, Any] = {"server_id": self.server_id, "file": t.file, "pos": t.pos, "row": t.index}
        source["table"] = t.table
        if t.gtid is not None:
            source["gtid"] = t.gtid
        return {
            "event_id": f"{t.gtid}:{t.index}"
            if self.gtid_ids and t.gtid
            else f"{self.server_id}:{t.file}:{t.pos}:{t.index}",
            "event_type": _TABLE_EVENTS[t.kind],
            "schema_version": ev.SCHEMA_VERSION,
            "occurred_at": self._occurred_at(t.timestamp),
            "blog_id": t.wp.blog_id,
            "post_id": None,
            "post_type": None,
            "source": source,
            "data": data,
        }

    def undecodable(self, u: UndecodableRows) -> dict[str, Any]:
        """Dead-letter record for a rows event the decoder could not read: coordinates, the error
        and the raw event (base64), enough to decode it by hand or replay it after a fix."""
        return {
            "event_type": ev.DEAD_LETTER,
            "event_id": f"{self._row_id(u)}:undecodable",
            "schema_version": ev.SCHEMA_VERSION,
            "occurred_at": self._occurred_at(u.timestamp),
            "blog_id": u.wp.blog_id,
            "post_id": None,
            "source": self._source(u, row=0),
            "error": f"the row images of this rows event could not be decoded: {u.error}",
            "op": u.op,
            "before": None,
            "after": None,
            "raw_event": base64.b64encode(u.raw_event).decode(),
        }

    def _dead_letter(self, c: RowChange, exc: Exception) -> dict[str, Any]:
        image = c.after if c.after is not None else c.before or {}
        post_id = None
        for col in ("ID", "post_id", "object_id"):
            if isinstance(image.get(col), int):
                post_id = image[col]
                break
        return self._dead_letter_record(
            f"{self._row_id(c)}:dead_letter", c.timestamp, c.wp.blog_id, post_id,
            self._source(c), _reason(exc), c.op, c.before, c.after,
        )  # fmt: skip

    def _dead_letter_record(
        self, event_id: str, ts: int, blog: int, post_id: int | None, source: dict[str, Any], error: str, op: str,
        before: dict[str, Any] | None, after: dict[str, Any] | None,
    ) -> dict[str, Any]:  # fmt: skip
        return {
            "event_type": ev.DEAD_LETTER,
            "event_id": event_id,
            "schema_version": ev.SCHEMA_VERSION,
            "occurred_at": self._occurred_at(ts),
            "blog_id": blog,
            "post_id": post_id,
            "source": source,
            "error": error,
            "op": op,
            "before": _raw_image(before),
            "after": _raw_image(after),
        }


def _reason(exc: Exception) -> str:
    return _safe_text(str(exc) if isinstance(exc, MappingError) else f"{type(exc).__name__}: {exc}")


_RAW_TYPES = frozenset({RawValue})
# Set by _text/_value when they hand on a RawValue's text, so the per-row scan for column_warnings
# runs only for the rare row that has one (scanning every row's images would cost ~1 µs each).
# The mapper runs in one thread.
_raw_seen = [False]


def _has_raw(image: dict[str, Any] | None) -> bool:
    return image is not None and not _RAW_TYPES.isdisjoint(map(type, image.values()))


def _column_warnings(c: RowChange) -> list[dict[str, Any]]:
    """The columns whose value is a RawValue, so a consumer knows which fields are not the value
    itself (replaced characters, a date's raw text)."""
    return _image_warnings("before", c.before) + _image_warnings("after", c.after)


def _image_warnings(side: str, image: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [
        {"image": side, "column": col, "problem": v.problem} for col, v in (image or {}).items() if type(v) is RawValue
    ]


def _encode_all(events: list[dict[str, Any]], warnings: list[dict[str, Any]] | None = None) -> list[bytes]:
    """The events as the sink publishes them, each given the row's column_warnings (when there are
    any) first. Both the stream and the snapshot call it inside their per-row guard."""
    if warnings:
        for event in events:
            event["column_warnings"] = warnings
    try:
        return [encode(e) for e in events]
    except TypeError as exc:  # orjson.JSONEncodeError: a value JSON cannot carry
        raise MappingError(f"the event cannot be encoded as JSON: {exc}") from None


# -- value helpers ---------------------------------------------------------------------------------


def _lifecycle(old: str | None, new: str | None) -> str | None:
    """At most one lifecycle event per post row change; the most useful one wins."""
    if new is None or old == new:
        return None
    if new == "publish":
        return ev.POST_PUBLISHED
    if new == "future":
        return ev.POST_SCHEDULED
    if new == "trash":
        return ev.POST_TRASHED
    if old == "trash":
        return ev.POST_RESTORED
    if old == "publish" and new in ("draft", "pending", "private"):
        return ev.POST_UNPUBLISHED
    return None


def _need(image: dict[str, Any], col: str) -> Any:
    try:
        return image[col]
    except KeyError:
        raise MappingError(
            f"column {col!r} is missing from the row image (binlog_row_image=FULL and "
            "binlog_row_metadata=FULL are required)"
        ) from None


def _int(image: dict[str, Any], col: str) -> int:
    v = _need(image, col)
    if type(v) is not int:
        raise MappingError(f"column {col!r} is {type(v).__name__}, expected an integer")
    return v


def _str(image: dict[str, Any], col: str) -> str | None:
    v = _need(image, col)
    return _text(v)


def _text(v: Any) -> str | None:
    if v is None or type(v) is str:
        return v
    if isinstance(v, bytes):
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError:
            raise MappingError("a text column holds bytes that are not valid UTF-8") from None
    if type(v) is RawValue:
        _raw_seen[0] = True
        return v.text
    raise MappingError(f"expected text, got {type(v).__name__}")


def _value(col: str, v: Any) -> Any:
    t = type(v)
    if v is None or t is int or t is str or t is bool or t is float:
        return v
    if t is dt.datetime:
        text = v.isoformat()
        return text + "Z" if col in _UTC_COLUMNS else text
    if t is bytes:
        return _text(v)
    if isinstance(v, (dt.date, dt.time, dt.timedelta, Decimal)):
        return str(v) if not isinstance(v, dt.date) else v.isoformat()
    if isinstance(v, (set, frozenset)):
        return sorted(v)
    if isinstance(v, (list, dict)):
        return v
    if t is RawValue:
        _raw_seen[0] = True
        return v.text
    raise MappingError(f"column {col!r} has an unsupported type {t.__name__}")


_INT64 = range(-(2**63), 2**63)


def _safe_text(text: str) -> str:
    """Text JSON can carry: lone surrogates (which orjson rejects) become backslash escapes."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "backslashreplace")


def _raw_image(image: dict[str, Any] | None) -> dict[str, Any] | None:
    """A dead letter's row image, every value JSON-safe by construction: the record that reports an
    unencodable row must itself always encode."""
    if image is None:
        return None
    out: dict[str, Any] = {}
    for k, v in image.items():
        k = _safe_text(str(k))
        if v is None or isinstance(v, (bool, float)):
            out[k] = v
        elif isinstance(v, int):
            out[k] = v if v in _INT64 else str(v)
        elif isinstance(v, str):
            out[k] = _safe_text(v)
        elif isinstance(v, bytes):
            out[k] = v.decode("utf-8", "backslashreplace")
        elif isinstance(v, RawValue):
            out[k] = v.raw.decode("utf-8", "backslashreplace") if v.raw is not None else v.text
        else:
            out[k] = _safe_text(str(v))
    return out
