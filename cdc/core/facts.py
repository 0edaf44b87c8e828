"""What is known about a post or a term beyond one row: the values the mapper's caches hold and a
lookup (the database, in production) answers with. Shared by the source side, which asks the database,
and the mapping, which must stay free of I/O."""

from __future__ import annotations

from typing import NamedTuple


class PostInfo(NamedTuple):
    post_type: str | None
    post_status: str | None


class TermInfo(NamedTuple):
    term_id: int | None
    taxonomy: str | None
    slug: str | None
    name: str | None
