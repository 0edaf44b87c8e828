"""Reads snapshot chunks from the WordPress tables: posts by primary key, with their meta and terms,
in one consistent read bracketed by binlog watermarks (see cdc.snapshot.snapshotter). Read-only: it never writes
to the server, so it works on a replica."""

from __future__ import annotations

import codecs
import time
from typing import Any

import pymysql
from pymysql.constants import FIELD_TYPE

from cdc.config import Config, FilterConfig
from cdc.core.tables import TableKind, TableMatcher, table_name
from cdc.core.values import INVALID_DATE, RawValue, invalid_text
from cdc.errors import LookupUnavailable, ServerUnreachable
from cdc.snapshot.snapshotter import Chunk, SnapshotPost, SnapshotRequest
from cdc.source.server import Server

_DATE_TYPES = frozenset({FIELD_TYPE.DATETIME, FIELD_TYPE.DATE, FIELD_TYPE.TIMESTAMP, FIELD_TYPE.NEWDATE})

# pymysql decodes text strictly, and one value stored in a non-strict sql_mode (utf8mb4 holding the
# bytes ED A0 80) would fail the whole chunk on every retry. Snapshot reads decode with
# surrogateescape instead, which keeps the stored bytes recoverable, and _dicts turns such a value
# into the RawValue the binlog decoders give for it.
_LENIENT_UTF8 = "wpcdc_utf8_surrogateescape"


def _lenient_utf8(name: str) -> codecs.CodecInfo | None:
    if name != _LENIENT_UTF8:
        return None
    utf8 = codecs.lookup("utf-8")
    return codecs.CodecInfo(
        utf8.encode,
        lambda data, errors="strict": codecs.utf_8_decode(data, "surrogateescape", True),
        name=_LENIENT_UTF8,
    )


codecs.register(_lenient_utf8)


class DatabaseChunkSource:
    def __init__(self, config: Config) -> None:
        self._config = config
        self._prefix = config.wordpress.table_prefix
        self._filters: FilterConfig = config.filters
        self._server: Server | None = None

    def retarget(self, config: Config) -> None:
        """Read another server of mysql.hosts from now on (after a move)."""
        self.close()
        self._config = config

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    def _db(self) -> Server:
        if self._server is None:
            # A server that is down (restarting, failing over) is transient here, as a lost connection is.
            try:
                server = Server(self._config)
            except ServerUnreachable as exc:
                raise LookupUnavailable(f"snapshot read failed: {exc.problem}") from None
            self._server = server
            self._guard(server.query, f"USE `{self._config.wordpress.database}`")
        return self._server

    def _guard(self, fn: Any, *args: Any) -> Any:
        """A lost connection is transient (the pipeline restarts from its checkpoint and the chunk is
        read again); anything else is a bug worth stopping for."""
        try:
            return fn(*args)
        except (pymysql.err.OperationalError, pymysql.err.InterfaceError) as exc:
            self.close()
            raise LookupUnavailable(f"snapshot read failed: {exc}") from None

    def blogs(self) -> list[int]:
        return self._guard(self._blogs)  # type: ignore[no-any-return]

    def _blogs(self) -> list[int]:
        like = self._prefix.replace("_", "\\_") + "%posts"
        matcher = TableMatcher(self._prefix)
        found = set()
        for (name,) in self._db().query("SHOW TABLES LIKE %s", (like,)):
            wp = matcher.match(str(name))
            if wp is not None and wp.kind is TableKind.POSTS:
                found.add(wp.blog_id)
        return sorted(found)

    def _where(self, request: SnapshotRequest) -> tuple[str, list[Any]]:
        f = self._filters
        clauses: list[str] = []
        args: list[Any] = []

        def among(column: str, values: Any, negate: bool = False) -> None:
            if values:
                clauses.append(f"{column} {'NOT IN' if negate else 'IN'} ({','.join(['%s'] * len(values))})")
                args.extend(values)

        among("post_type", f.exclude_post_types, negate=True)
        among("post_status", f.exclude_post_statuses, negate=True)
        among("post_type", request.post_types)
        among("ID", request.post_ids)
        if request.modified_since:
            clauses.append("post_modified_gmt >= %s")
            args.append(request.modified_since)
        return (" AND ".join(clauses) or "1=1"), args

    def count(self, blog: int, request: SnapshotRequest) -> int:
        where, args = self._where(request)
        table = table_name(self._prefix, blog, TableKind.POSTS)
        rows = self._guard(self._db().query, f"SELECT COUNT(*) FROM `{table}` WHERE {where}", args)
        return int(rows[0][0])

    def read(self, blog: int, request: SnapshotRequest, after_id: int, retry: list[int], limit: int) -> Chunk:
        return self._guard(self._read, blog, request, after_id, retry, limit)  # type: ignore[no-any-return]

    def _read(self, blog: int, request: SnapshotRequest, after_id: int, retry: list[int], limit: int) -> Chunk:
        db = self._db()
        posts_t = table_name(self._prefix, blog, TableKind.POSTS)
        meta_t = table_name(self._prefix, blog, TableKind.POSTMETA)
        rel_t = table_name(self._prefix, blog, TableKind.TERM_RELATIONSHIPS)
        tt_t = table_name(self._prefix, blog, TableKind.TERM_TAXONOMY)
        terms_t = table_name(self._prefix, blog, TableKind.TERMS)
        where, args = self._where(request)
        low = db.current_position()
        read_at = int(time.time())
        strict = db.conn.encoding
        if codecs.lookup(strict).name == "utf-8":
            db.conn.encoding = _LENIENT_UTF8
        with db.conn.cursor() as cur:
            # One consistent read for the posts, their meta and their terms: the state at one instant
            # between the two watermarks.
            cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            try:
                cur.execute(
                    f"SELECT * FROM `{posts_t}` WHERE ID > %s AND {where} ORDER BY ID LIMIT %s",
                    [after_id, *args, limit],
                )
                rows = _dicts(cur)
                page = [r["ID"] for r in rows]
                if retry:
                    marks = ",".join(["%s"] * len(retry))
                    cur.execute(f"SELECT * FROM `{posts_t}` WHERE ID IN ({marks}) AND {where}", [*retry, *args])
                    rows += [r for r in _dicts(cur) if r["ID"] <= after_id]  # later ones come in order anyway
                ids = sorted({r["ID"] for r in rows})
                meta: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
                terms: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
                if ids:
                    marks = ",".join(["%s"] * len(ids))
                    cur.execute(
                        f"SELECT meta_id, post_id, meta_key, meta_value FROM `{meta_t}` "
                        f"WHERE post_id IN ({marks}) ORDER BY meta_id",
                        ids,
                    )
                    for m in _dicts(cur):
                        meta[m["post_id"]].append(m)
                    cur.execute(
                        f"SELECT tr.object_id, tr.term_taxonomy_id, tr.term_order, tt.taxonomy, tt.term_id, "
                        f"t.slug, t.name FROM `{rel_t}` tr "
                        f"LEFT JOIN `{tt_t}` tt ON tt.term_taxonomy_id = tr.term_taxonomy_id "
                        f"LEFT JOIN `{terms_t}` t ON t.term_id = tt.term_id "
                        f"WHERE tr.object_id IN ({marks}) ORDER BY tr.object_id, tr.term_taxonomy_id",
                        ids,
                    )
                    for t in _dicts(cur):
                        terms[t.pop("object_id")].append(t)
            finally:
                cur.execute("COMMIT")
                db.conn.encoding = strict
        high = db.current_position()
        by_id = {r["ID"]: r for r in rows}
        return Chunk(
            blog=blog,
            table=posts_t,
            low=low,
            high=high,
            posts=[SnapshotPost(by_id[i], meta[i], terms[i]) for i in ids],
            last_id=max(page) if page else after_id,
            blog_done=len(page) < limit,
            read_at=read_at,
        )


def _dicts(cur: Any) -> list[dict[str, Any]]:
    """Rows as dicts, with the values the binlog decoders would give: None for a zero date, a
    RawValue for a date pymysql could not convert (2024-00-15) or text that is not valid UTF-8."""
    names = [d[0] for d in cur.description]
    dates = [d[0] for d in cur.description if d[1] in _DATE_TYPES]
    rows = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    for r in rows:
        for col, v in r.items():
            if type(v) is str and not v.isascii():
                try:
                    v.encode("utf-8")
                except UnicodeEncodeError:  # surrogateescape'd bytes: not valid UTF-8 as stored
                    r[col] = invalid_text(v.encode("utf-8", "surrogateescape"), "utf-8")
        for col in dates:
            v = r[col]
            if type(v) is str:  # pymysql hands back the text of a date it cannot convert
                r[col] = None if not v.strip("0-: .") else RawValue(v, INVALID_DATE)
    return rows
