"""Fills `WordPressState` misses from the database (posts and terms not seen since start-up)."""

from __future__ import annotations

import logging

import pymysql

from cdc.config import Config
from cdc.core.facts import PostInfo, TermInfo
from cdc.core.tables import TableKind, table_name
from cdc.errors import LookupUnavailable, ServerUnreachable
from cdc.source.server import connect

log = logging.getLogger(__name__)

# Ids per query of a batch (a rows event can hold thousands of rows): keeps statements far below
# max_allowed_packet.
_BATCH = 1000


class DatabaseLookup:
    def __init__(self, config: Config) -> None:
        self._config = config
        self._prefix = config.wordpress.table_prefix
        self._conn: pymysql.connections.Connection | None = None

    def retarget(self, config: Config) -> None:
        """Read another server of mysql.hosts from now on (after a move)."""
        self.close()
        self._config = config

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _one(self, sql: str, arg: int) -> tuple[object, ...] | None:
        rows = self._all(sql, (arg,))
        return rows[0] if rows else None

    def _all(self, sql: str, args: tuple[int, ...]) -> tuple[tuple[object, ...], ...]:
        for attempt in (1, 2):
            try:
                if self._conn is None:
                    self._conn = connect(self._config, self._config.wordpress.database)
                with self._conn.cursor() as cur:
                    cur.execute(sql, args)
                    return cur.fetchall()  # type: ignore[no-any-return]
            except pymysql.err.ProgrammingError as exc:
                if exc.args and exc.args[0] == 1146:  # the blog's table is gone (site deleted)
                    return ()
                raise LookupUnavailable(f"lookup query failed: {exc}") from None
            except (pymysql.err.OperationalError, pymysql.err.InterfaceError, ServerUnreachable) as exc:
                self.close()
                if attempt == 2:
                    raise LookupUnavailable(f"lookup connection failed: {exc}") from None
        return ()

    def _many(self, sql: str, ids: list[int]) -> list[tuple[object, ...]]:
        """The rows of `sql` + ` IN (ids)`, _BATCH ids per query."""
        out: list[tuple[object, ...]] = []
        for i in range(0, len(ids), _BATCH):
            part = tuple(ids[i : i + _BATCH])
            out += self._all(f"{sql} IN ({', '.join(['%s'] * len(part))})", part)
        return out

    def post(self, blog_id: int, post_id: int) -> PostInfo | None:
        table = table_name(self._prefix, blog_id, TableKind.POSTS)
        row = self._one(f"SELECT post_type, post_status FROM `{table}` WHERE ID = %s", post_id)
        return PostInfo(str(row[0]), str(row[1])) if row else None

    def posts(self, blog_id: int, post_ids: list[int]) -> dict[int, PostInfo]:
        """Many posts in one round trip (per 1,000): the ids found, with what `post` answers for each."""
        table = table_name(self._prefix, blog_id, TableKind.POSTS)
        rows = self._many(f"SELECT ID, post_type, post_status FROM `{table}` WHERE ID", post_ids)
        return {int(r[0]): PostInfo(str(r[1]), str(r[2])) for r in rows}  # type: ignore[call-overload]

    def term(self, blog_id: int, term_taxonomy_id: int) -> TermInfo | None:
        row = self._one(self._term_sql(blog_id) + " = %s", term_taxonomy_id)
        return _term(row[1:]) if row else None

    def terms(self, blog_id: int, term_taxonomy_ids: list[int]) -> dict[int, TermInfo]:
        """Many terms in one round trip (per 1,000): the ids found, with what `term` answers for each."""
        rows = self._many(self._term_sql(blog_id), term_taxonomy_ids)
        return {int(r[0]): _term(r[1:]) for r in rows}  # type: ignore[call-overload]

    def _term_sql(self, blog_id: int) -> str:
        tt = table_name(self._prefix, blog_id, TableKind.TERM_TAXONOMY)
        terms = table_name(self._prefix, blog_id, TableKind.TERMS)
        return (
            f"SELECT tt.term_taxonomy_id, tt.term_id, tt.taxonomy, t.slug, t.name FROM `{tt}` tt "
            f"LEFT JOIN `{terms}` t ON t.term_id = tt.term_id WHERE tt.term_taxonomy_id"
        )


def _term(row: tuple[object, ...]) -> TermInfo:
    return TermInfo(int(row[0]), str(row[1]), _opt(row[2]), _opt(row[3]))  # type: ignore[call-overload]


def _opt(v: object) -> str | None:
    return None if v is None else str(v)
