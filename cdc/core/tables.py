"""Which binlog tables are WordPress tables, and of which blog."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum


class TableKind(str, Enum):
    POSTS = "posts"
    POSTMETA = "postmeta"
    TERM_RELATIONSHIPS = "term_relationships"
    TERM_TAXONOMY = "term_taxonomy"
    TERMS = "terms"


@dataclass(frozen=True, slots=True)
class WordPressTable:
    blog_id: int
    kind: TableKind


class TableMatcher:
    """Maps `wp_posts`, `wp_7_postmeta`, … to (blog_id, kind); anything else to None.

    Blogs are found by name rather than listed up front, so a multisite blog created while the
    streamer runs is captured from its first row.
    """

    def __init__(self, prefix: str) -> None:
        kinds = "|".join(k.value for k in TableKind)
        self._pattern = re.compile(rf"^{re.escape(prefix)}(?:(\d+)_)?({kinds})$")
        self._memo: dict[str, WordPressTable | None] = {}

    def match(self, table: str) -> WordPressTable | None:
        try:
            return self._memo[table]
        except KeyError:
            pass
        m = self._pattern.match(table)
        found = None
        if m:
            blog = int(m.group(1)) if m.group(1) else 1
            # WordPress never numbers blog 1's tables; `wp_1_posts` is not a WordPress table.
            if not (m.group(1) and blog == 1):
                found = WordPressTable(blog, TableKind(m.group(2)))
        if len(self._memo) < 100_000:
            self._memo[table] = found
        return found


def table_name(prefix: str, blog_id: int, kind: TableKind) -> str:
    return f"{prefix}{kind.value}" if blog_id == 1 else f"{prefix}{blog_id}_{kind.value}"
