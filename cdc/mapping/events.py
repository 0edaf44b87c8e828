"""The event contract: pydantic models that define every event type and generate `schemas/`.

The mapper builds plain dicts on the hot path (pydantic validation per event would cost more than
the rest of the pipeline); unit tests validate its output against these models, and the checked-in
JSON Schemas are generated from them by `wpcdc schemas export`.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

# 2: positions (source.pos, event_id) are the server's own event starts, 23 bytes before v1's (README Changelog).
SCHEMA_VERSION = 2

# The one encoding of an event, the Kafka message value byte for byte. The mapper calls it inside
# its per-row guard (a failure dead-letters that row); the sink reuses those bytes.
encode = orjson.dumps

POST_CREATED = "post_created"
POST_UPDATED = "post_updated"
POST_DELETED = "post_deleted"
POST_PUBLISHED = "post_published"
POST_UNPUBLISHED = "post_unpublished"
POST_SCHEDULED = "post_scheduled"
POST_TRASHED = "post_trashed"
POST_RESTORED = "post_restored"
POST_META_ADDED = "post_meta_added"
POST_META_UPDATED = "post_meta_updated"
POST_META_DELETED = "post_meta_deleted"
POST_TERM_ADDED = "post_term_added"
POST_TERM_REMOVED = "post_term_removed"
POST_TERM_UPDATED = "post_term_updated"
POST_SNAPSHOT = "post_snapshot"
TABLE_TRUNCATED = "table_truncated"
TABLE_DROPPED = "table_dropped"
TABLE_RENAMED = "table_renamed"
DEAD_LETTER = "dead_letter"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Source(_Model):
    """Where the row change is in the binlog; with `row` it identifies the change."""

    server_id: int = Field(description="server_id of the MySQL/MariaDB server whose binlog was read")
    file: str
    pos: int = Field(
        description="start of the rows event (of the DDL query for table events), as SHOW BINLOG EVENTS "
        "(Pos) and mysqlbinlog (# at) show it"
    )
    row: int = Field(description="index of the row within the rows event (table events: of the table in the DDL)")
    event: int | None = Field(
        None,
        description="only for a compressed MySQL transaction (binlog_transaction_compression): pos is the "
        "transaction payload's position and this the rows event's 0-based ordinal among the payload's inner events",
    )
    table: str
    gtid: str | None = Field(None, description="GTID of the transaction, when the server has one")
    lookups: list[str] | None = Field(
        None,
        description="Fields of this event taken from the database's state when it was read (a cache miss: the "
        "post or term was not seen in the binlog since start-up or the last restart), not from the binlog: "
        "post_type and, on term events, data.taxonomy/term_id/slug/name. Absent when every field came from the "
        "binlog. A copy of the event re-read later (wpcdc replay) may differ from the first in these fields.",
    )


class PostRow(BaseModel):
    """A `wp_posts` row. Columns plugins or later WordPress versions add are passed through."""

    model_config = ConfigDict(extra="allow")

    ID: int
    post_author: int | None = None
    post_date: str | None = Field(None, description="site-local wall-clock time, ISO 8601; null for a zero date")
    post_date_gmt: str | None = Field(None, description="UTC, ISO 8601 with Z; null for a zero date (drafts)")
    post_content: str | None = None
    post_title: str | None = None
    post_excerpt: str | None = None
    post_status: str
    comment_status: str | None = None
    ping_status: str | None = None
    has_password: bool = Field(description="post_password is never emitted; this says whether one is set")
    post_name: str | None = None
    to_ping: str | None = None
    pinged: str | None = None
    post_modified: str | None = None
    post_modified_gmt: str | None = None
    post_content_filtered: str | None = None
    post_parent: int | None = None
    guid: str | None = None
    menu_order: int | None = None
    post_type: str
    post_mime_type: str | None = None
    comment_count: int | None = None
    content_truncated: bool = Field(description="post_content was cut at mapping.max_content_bytes")
    content_bytes: int | None = Field(None, description="size of the full post_content (only when truncated)")
    content_sha256: str | None = Field(None, description="SHA-256 of the full post_content (only when truncated)")


class Change(_Model):
    old: Any
    new: Any
    # Only post_content is ever cut (mapping.max_content_bytes, kafka.oversize_policy: truncate).
    old_truncated: bool | None = Field(None, description="old was cut; present only when it was")
    old_bytes: int | None = Field(None, description="size of the full old value (only when truncated)")
    old_sha256: str | None = Field(None, description="SHA-256 of the full old value (only when truncated)")
    new_truncated: bool | None = Field(None, description="new was cut; present only when it was")
    new_bytes: int | None = Field(None, description="size of the full new value (only when truncated)")
    new_sha256: str | None = Field(None, description="SHA-256 of the full new value (only when truncated)")


class PostData(_Model):
    post: PostRow


class PostUpdatedData(_Model):
    post: PostRow
    changes: dict[str, Change] = Field(description="changed columns only; post_password shows as has_password")


class LifecycleData(_Model):
    from_: str | None = Field(alias="from", description="post_status before; null for a new post")
    to: str


class MetaData(_Model):
    meta_id: int
    meta_key: str | None
    value: str | None = Field(description="raw meta_value; null after a delete")
    value_decoded: Any = Field(None, description="PHP-unserialized value as JSON; absent when not serialized")
    value_decode_error: str | None = Field(None, description="present when the value looks serialized but failed")
    value_decoded_as_text: list[str] | None = Field(
        None,
        description="JSON Pointers into value_decoded of numbers JSON cannot carry, given as text as PHP prints "
        "them: integers beyond 64 bits (digits) and INF, -INF, NAN floats; absent when there are none",
    )
    previous_value: str | None = Field(None, description="raw value before an update or delete")
    previous_value_truncated: bool | None = Field(None, description="previous_value was cut to fit the message limit")
    previous_value_bytes: int | None = Field(None, description="size of the full previous_value (only when truncated)")
    previous_value_sha256: str | None = Field(
        None, description="SHA-256 of the full previous_value (only when truncated)"
    )
    value_truncated: bool | None = Field(None, description="value was cut to fit the broker's message limit")
    value_bytes: int | None = Field(None, description="size of the full value (only when truncated)")
    value_sha256: str | None = Field(None, description="SHA-256 of the full value (only when truncated)")


class TermData(_Model):
    term_taxonomy_id: int
    term_order: int
    previous_term_order: int | None = Field(None, description="only on post_term_updated")
    taxonomy: str | None
    term_id: int | None
    slug: str | None
    name: str | None


class SnapshotMeta(_Model):
    meta_id: int
    meta_key: str | None
    value: str | None = Field(description="raw meta_value")
    value_decoded: Any = Field(None, description="PHP-unserialized value as JSON; absent when not serialized")
    value_decode_error: str | None = Field(None, description="present when the value looks serialized but failed")
    value_decoded_as_text: list[str] | None = Field(
        None,
        description="JSON Pointers into value_decoded of numbers JSON cannot carry, given as text as PHP prints "
        "them: integers beyond 64 bits (digits) and INF, -INF, NAN floats; absent when there are none",
    )
    value_truncated: bool | None = Field(None, description="value was cut to fit the broker's message limit")
    value_bytes: int | None = Field(None, description="size of the full value (only when truncated)")
    value_sha256: str | None = Field(None, description="SHA-256 of the full value (only when truncated)")


class SnapshotTerm(_Model):
    term_taxonomy_id: int
    term_order: int
    taxonomy: str | None
    term_id: int | None
    slug: str | None
    name: str | None


class SnapshotData(_Model):
    """The whole current state of one post: replaces whatever a consumer held for it."""

    snapshot_id: str = Field(description="the snapshot run this event belongs to (see `wpcdc snapshot`)")
    post: PostRow
    meta: list[SnapshotMeta] = Field(description="every meta row (excluded keys left out), by meta_id")
    terms: list[SnapshotTerm] = Field(description="every term relationship, with taxonomy, slug and name")


class ColumnWarning(_Model):
    """A column whose value in the event is not the stored value itself (see the README)."""

    image: Literal["before", "after"] = Field(description="the row image the column is in")
    column: str
    problem: Literal["invalid_text", "invalid_date"] = Field(
        description="invalid_text: bytes not valid in the column's character set (e.g. encoded surrogates "
        "stored in a non-strict sql_mode), each invalid byte replaced by U+FFFD; invalid_date: a date "
        "with a zero month or day (or one no calendar has), given as the server's text, e.g. "
        "'2024-00-15 10:00:00', instead of ISO 8601"
    )
    meta_id: int | None = Field(None, description="in a post_snapshot: the meta row the column is in")


class _Envelope(_Model):
    event_id: str = Field(description="deterministic: server_id:file:pos:row[:suffix]; a replay yields the same id")
    schema_version: Literal[2]
    occurred_at: str = Field(description="binlog event time, RFC 3339 UTC")
    blog_id: int
    post_id: int
    post_type: str | None
    source: Source
    column_warnings: list[ColumnWarning] | None = Field(
        None, description="columns of the row whose value is replaced or raw text; absent when there are none"
    )


EventType = Literal[
    "post_created", "post_updated", "post_deleted", "post_published", "post_unpublished", "post_scheduled",
    "post_trashed", "post_restored", "post_meta_added", "post_meta_updated", "post_meta_deleted",
    "post_term_added", "post_term_removed", "post_term_updated", "post_snapshot",
]  # fmt: skip


class Envelope(_Envelope):
    """What every event has; `data` depends on `event_type` (see the per-type schemas)."""

    event_type: EventType
    data: dict[str, Any]


class PostCreated(_Envelope):
    event_type: Literal["post_created"]
    data: PostData


class PostUpdated(_Envelope):
    event_type: Literal["post_updated"]
    data: PostUpdatedData


class PostDeleted(_Envelope):
    event_type: Literal["post_deleted"]
    data: PostData


class PostPublished(_Envelope):
    event_type: Literal["post_published"]
    data: LifecycleData


class PostUnpublished(_Envelope):
    event_type: Literal["post_unpublished"]
    data: LifecycleData


class PostScheduled(_Envelope):
    event_type: Literal["post_scheduled"]
    data: LifecycleData


class PostTrashed(_Envelope):
    event_type: Literal["post_trashed"]
    data: LifecycleData


class PostRestored(_Envelope):
    event_type: Literal["post_restored"]
    data: LifecycleData


class PostMetaAdded(_Envelope):
    event_type: Literal["post_meta_added"]
    data: MetaData


class PostMetaUpdated(_Envelope):
    event_type: Literal["post_meta_updated"]
    data: MetaData


class PostMetaDeleted(_Envelope):
    event_type: Literal["post_meta_deleted"]
    data: MetaData


class PostTermAdded(_Envelope):
    event_type: Literal["post_term_added"]
    data: TermData


class PostTermRemoved(_Envelope):
    event_type: Literal["post_term_removed"]
    data: TermData


class PostTermUpdated(_Envelope):
    event_type: Literal["post_term_updated"]
    data: TermData


class PostSnapshot(_Envelope):
    """Emitted by a snapshot; `source` is the high watermark of the chunk the post was read in."""

    event_type: Literal["post_snapshot"]
    data: SnapshotData


class TableData(_Model):
    table: str = Field(description="the captured table, e.g. wp_postmeta or wp_7_posts")
    table_kind: Literal["posts", "postmeta", "term_relationships"]
    statement: str = Field(description="the DDL statement as the binlog has it (its first 1000 characters)")
    renamed_from: str | None = Field(None, description="table_renamed: the old name (db.table if another database)")
    renamed_to: str | None = Field(None, description="table_renamed: the new name (db.table if another database)")


class _TableEvent(_Model):
    """A table-level change no rows event tells of. Key `{blog_id}:*`, and one copy goes to every
    partition of the topic, each in order with the events of the posts on that partition."""

    event_id: str = Field(description="server_id:file:pos:row, pos of the DDL query, row the table's index in it")
    schema_version: Literal[2]
    occurred_at: str = Field(description="binlog event time, RFC 3339 UTC")
    blog_id: int
    post_id: None = Field(description="always null: the event concerns a whole table")
    post_type: None
    source: Source
    data: TableData


class TableTruncated(_TableEvent):
    """TRUNCATE of a captured table: every row of it is gone (no per-row events are written)."""

    event_type: Literal["table_truncated"]


class TableDropped(_TableEvent):
    """DROP TABLE of a captured table: its rows are gone and no further events come from it."""

    event_type: Literal["table_dropped"]


class TableRenamed(_TableEvent):
    """RENAME TABLE / ALTER TABLE ... RENAME from or to a captured table's name."""

    event_type: Literal["table_renamed"]


class DeadLetter(_Model):
    """A row the mapper could not turn into an event; published to the dead-letter topic."""

    event_type: Literal["dead_letter"]
    event_id: str
    schema_version: Literal[2]
    occurred_at: str
    blog_id: int
    post_id: int | None
    source: Source
    error: str
    op: Literal["insert", "update", "delete"]
    before: dict[str, Any] | None = Field(description="raw row image, values rendered as JSON-safe text")
    after: dict[str, Any] | None
    raw_event: str | None = Field(None, description="base64 of the binlog event, when its rows could not be decoded")


EVENT_MODELS: dict[str, type[BaseModel]] = {
    POST_CREATED: PostCreated,
    POST_UPDATED: PostUpdated,
    POST_DELETED: PostDeleted,
    POST_PUBLISHED: PostPublished,
    POST_UNPUBLISHED: PostUnpublished,
    POST_SCHEDULED: PostScheduled,
    POST_TRASHED: PostTrashed,
    POST_RESTORED: PostRestored,
    POST_META_ADDED: PostMetaAdded,
    POST_META_UPDATED: PostMetaUpdated,
    POST_META_DELETED: PostMetaDeleted,
    POST_TERM_ADDED: PostTermAdded,
    POST_TERM_REMOVED: PostTermRemoved,
    POST_TERM_UPDATED: PostTermUpdated,
    POST_SNAPSHOT: PostSnapshot,
    TABLE_TRUNCATED: TableTruncated,
    TABLE_DROPPED: TableDropped,
    TABLE_RENAMED: TableRenamed,
    DEAD_LETTER: DeadLetter,
}


def json_schemas() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema, for `wpcdc schemas export` and the drift test."""
    out: dict[str, dict[str, Any]] = {}
    for name, model in {"envelope": Envelope, **EVENT_MODELS}.items():
        schema = model.model_json_schema(by_alias=True)
        schema["$id"] = f"https://wpcdc.dev/schemas/v{SCHEMA_VERSION}/{name}.json"
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        out[f"{name}.json"] = schema
    return out
