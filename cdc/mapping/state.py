"""What the mapper needs to know beyond one row: each post's type and status, and each term's name.

Fed from the binlog as rows go by (so it describes the post as of the change being mapped) and,
for ids not seen since start-up, filled once from a `Lookup` (the database, in production).
Bounded: least recently used entries are dropped and looked up again if needed.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, Protocol, TypeVar

from cdc.core.facts import PostInfo, TermInfo

__all__ = ["Lookup", "NoLookup", "PostInfo", "TermInfo", "WordPressState"]


class Lookup(Protocol):
    def post(self, blog_id: int, post_id: int) -> PostInfo | None: ...

    def term(self, blog_id: int, term_taxonomy_id: int) -> TermInfo | None: ...


class NoLookup:
    """For replays and tests without a database: unknown stays unknown."""

    def post(self, blog_id: int, post_id: int) -> PostInfo | None:
        return None

    def term(self, blog_id: int, term_taxonomy_id: int) -> TermInfo | None:
        return None


K = TypeVar("K")
V = TypeVar("V")
_MISSING = object()


class _Lru(Generic[K, V]):
    def __init__(self, capacity: int) -> None:
        self._data: OrderedDict[K, V] = OrderedDict()
        self._capacity = capacity

    def get(self, key: K) -> V | object:
        try:
            value = self._data[key]
        except KeyError:
            return _MISSING
        self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        if len(self._data) > self._capacity:
            self._data.popitem(last=False)


class WordPressState:
    def __init__(self, lookup: Lookup, capacity: int = 200_000) -> None:
        self._lookup = lookup
        self._posts: _Lru[tuple[int, int], PostInfo | None] = _Lru(capacity)
        # term_taxonomy_id -> (term_id, taxonomy) and term_id -> (slug, name), as the two tables hold them.
        self._taxonomy: _Lru[tuple[int, int], tuple[int | None, str | None]] = _Lru(capacity)
        self._terms: _Lru[tuple[int, int], tuple[str | None, str | None]] = _Lru(capacity)

    def post(self, blog_id: int, post_id: int) -> PostInfo | None:
        key = (blog_id, post_id)
        found = self._posts.get(key)
        if found is _MISSING:
            found = self._lookup.post(blog_id, post_id)
            self._posts.put(key, found)  # a miss is remembered too: orphaned meta must not query per row
        return found  # type: ignore[return-value]

    def set_post(self, blog_id: int, post_id: int, info: PostInfo) -> None:
        self._posts.put((blog_id, post_id), info)

    def term(self, blog_id: int, term_taxonomy_id: int) -> TermInfo | None:
        tax = self._taxonomy.get((blog_id, term_taxonomy_id))
        if tax is not _MISSING:
            term_id, taxonomy = tax  # type: ignore[misc]
            names = self._terms.get((blog_id, term_id)) if term_id is not None else (None, None)
            if names is not _MISSING:
                slug, name = names  # type: ignore[misc]
                return TermInfo(term_id, taxonomy, slug, name)
        found = self._lookup.term(blog_id, term_taxonomy_id)
        if found is None:
            return None
        self.set_term_taxonomy(blog_id, term_taxonomy_id, found.term_id, found.taxonomy)
        if found.term_id is not None:
            self.set_term(blog_id, found.term_id, found.slug, found.name)
        return found

    def set_term_taxonomy(self, blog_id: int, tt_id: int, term_id: int | None, taxonomy: str | None) -> None:
        self._taxonomy.put((blog_id, tt_id), (term_id, taxonomy))

    def set_term(self, blog_id: int, term_id: int, slug: str | None, name: str | None) -> None:
        self._terms.put((blog_id, term_id), (slug, name))
