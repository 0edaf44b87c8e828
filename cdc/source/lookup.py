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
        for attempt in (1, 2):
            try:
                if self._conn is None:
                    self._conn = connect(self._config, self._config.wordpress.database)
                with self._conn.cursor() as cur:
                    cur.execute(sql, (arg,))
                    return cur.fetchone()
            except pymysql.err.ProgrammingError as exc:
                if exc.args and exc.args[0] == 1146:  # the blog's table is gone (site deleted)
                    return None
                raise LookupUnavailable(f"lookup query failed: {exc}") from None
            except (pymysql.err.OperationalError, pymysql.err.InterfaceError, ServerUnreachable) as exc:
                self.close()
                if attempt == 2:
                    raise LookupUnavailable(f"lookup connection failed: {exc}") from None
        return None

    def post(self, blog_id: int, post_id: int) -> PostInfo | None:
        table = table_name(self._prefix, blog_id, TableKind.POSTS)
        row = self._one(f"SELECT post_type, post_status FROM `{table}` WHERE ID = %s", post_id)
        return PostInfo(str(row[0]), str(row[1])) if row else None

    def term(self, blog_id: int, term_taxonomy_id: int) -> TermInfo | None:
        tt = table_name(self._prefix, blog_id, TableKind.TERM_TAXONOMY)
        terms = table_name(self._prefix, blog_id, TableKind.TERMS)
        row = self._one(
            f"SELECT tt.term_id, tt.taxonomy, t.slug, t.name FROM `{tt}` tt "
            f"LEFT JOIN `{terms}` t ON t.term_id = tt.term_id WHERE tt.term_taxonomy_id = %s",
            term_taxonomy_id,
        )
        if not row:
            return None
        return TermInfo(int(row[0]), str(row[1]), _opt(row[2]), _opt(row[3]))  # type: ignore[arg-type]


def _opt(v: object) -> str | None:
    return None if v is None else str(v)
