"""What the mapper needs to know beyond one row: each post's type and status, and each term's name.

Fed from the binlog as rows go by (so it describes the post as of the change being mapped) and,
for ids not seen since start-up, filled once from a `Lookup` (the database, in production): such an
entry is the database's state at lookup time and says so (`from_db`), and the events built from it
name the fields in `source.lookups`.
Bounded: least recently used entries are dropped and looked up again if needed.

Misses are remembered like answers (a post or term the database lacks is asked for once, not once
per row naming it) until the binlog's own row for that id replaces the entry: a later INSERT of the
post or term is seen. `prefetch_posts` / `prefetch_terms` ask for every id a rows event will need in
one query (`BatchLookup`), before its first row is mapped; its rows then find them in the cache.

Crash duplicates: a restart re-reads the binlog from the last checkpoint with a cache that no longer
holds what the first pass knew there. With a `FactRecorder` (the checkpoint's fact journal), the
first read of each entry after a checkpoint is recorded (value and origin) before any event built
from it is sent, unless a row since that checkpoint set it (the re-read sets it again); `restore`
puts those values back, so a re-read builds the same events as the first pass.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Generic, Protocol, TypeVar

from cdc.core.facts import PostInfo, TermInfo

__all__ = ["FactRecorder", "Lookup", "NoLookup", "PostInfo", "TermInfo", "WordPressState"]

# Cache names in the fact journal.
POSTS, TAXONOMY, TERMS = "post", "taxonomy", "term"


class Lookup(Protocol):
    def post(self, blog_id: int, post_id: int) -> PostInfo | None: ...

    def term(self, blog_id: int, term_taxonomy_id: int) -> TermInfo | None: ...


class BatchLookup(Lookup, Protocol):
    """A lookup that answers many ids in one round trip; an id missing from the answer is not there."""

    def posts(self, blog_id: int, post_ids: list[int]) -> dict[int, PostInfo]: ...

    def terms(self, blog_id: int, term_taxonomy_ids: list[int]) -> dict[int, TermInfo]: ...


class FactRecorder(Protocol):
    def record(self, cache: str, key: tuple[int, int], value: tuple[object, ...] | None, from_db: bool) -> None: ...


class NoLookup:
    """For replays and tests without a database: unknown stays unknown (and is not a lookup)."""

    live = False

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

    def __contains__(self, key: object) -> bool:  # a peek: does not make the entry recent
        return key in self._data

    def get_quietly(self, key: K) -> V | object:
        """Like get, without making the entry recent."""
        return self._data.get(key, _MISSING)

    def get(self, key: K) -> V | object:
        try:
            value = self._data[key]
        except KeyError:
            return _MISSING
        self._data.move_to_end(key)
        return value

    def clear(self) -> None:
        self._data.clear()

    def put(self, key: K, value: V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        if len(self._data) > self._capacity:
            self._data.popitem(last=False)


Fact = tuple[object, bool]  # (value, from_db)


class WordPressState:
    def __init__(
        self,
        lookup: Lookup,
        capacity: int = 200_000,
        recorder: FactRecorder | None = None,
        *,
        remember_term_misses: bool = True,
    ) -> None:
        self._lookup = lookup
        # Whether a miss asks the database (its answers are flagged); NoLookup answers nothing.
        self._live: bool = getattr(lookup, "live", True)
        self._batch = self._live and all(callable(getattr(lookup, m, None)) for m in ("posts", "terms"))
        # Off only in the test that proves the events are the same either way.
        self._remember_term_misses = remember_term_misses
        self._posts: _Lru[tuple[int, int], tuple[PostInfo | None, bool]] = _Lru(capacity)
        # term_taxonomy_id -> (term_id, taxonomy) and term_id -> (slug, name), as the two tables hold them;
        # a term_taxonomy_id the database lacks -> None (a remembered miss).
        self._taxonomy: _Lru[tuple[int, int], tuple[tuple[int | None, str | None] | None, bool]] = _Lru(capacity)
        self._terms: _Lru[tuple[int, int], tuple[tuple[str | None, str | None], bool]] = _Lru(capacity)
        self.recorder = recorder
        # Entries read or set since the last checkpoint (only with a recorder): recorded once each.
        self._touched: set[tuple[str, int, int]] = set()

    # -- the fact journal ------------------------------------------------------------------------

    def checkpointed(self) -> None:
        """A checkpoint was written: a re-read starts there, so entries are recorded afresh."""
        self._touched.clear()

    def restore(self, facts: list[tuple[str, tuple[int, int], tuple[object, ...] | None, bool]]) -> None:
        """Back to what the first pass knew at the checkpoint: the cache holds only `facts` (the
        entries read since it); everything else is read again from the binlog or looked up."""
        self._posts.clear()
        self._taxonomy.clear()
        self._terms.clear()
        self._touched.clear()
        caches: dict[str, _Lru[tuple[int, int], Any]] = {
            POSTS: self._posts, TAXONOMY: self._taxonomy, TERMS: self._terms
        }  # fmt: skip
        for cache, key, value, from_db in facts:
            tag = (cache, *key)
            if tag in self._touched or cache not in caches:
                continue  # the first record of an entry is its state at the checkpoint
            self._touched.add(tag)  # type: ignore[arg-type]
            if cache == POSTS and value is not None:
                value = PostInfo(*value)  # type: ignore[arg-type]
            elif cache == TERMS and value is None:
                continue  # not written by wpcdc: a term's names are always a pair
            caches[cache].put(key, (value, from_db))

    def _read(self, cache: str, key: tuple[int, int], fact: tuple[Any, bool]) -> None:
        tag = (cache, *key)
        if tag not in self._touched:
            self._touched.add(tag)  # type: ignore[arg-type]
            assert self.recorder is not None
            self.recorder.record(cache, key, fact[0], fact[1])

    def _set(self, cache: str, key: tuple[int, int]) -> None:
        self._touched.add((cache, *key))  # type: ignore[arg-type]

    # -- posts -------------------------------------------------------------------------------------

    def post(self, blog_id: int, post_id: int) -> PostInfo | None:
        return self.post_fact(blog_id, post_id)[0]

    def post_fact(self, blog_id: int, post_id: int) -> tuple[PostInfo | None, bool]:
        """The post's type and status, and whether they are the database's current state (a lookup)."""
        key = (blog_id, post_id)
        found = self._posts.get(key)
        if found is _MISSING:
            found = (self._lookup.post(blog_id, post_id), self._live)
            self._posts.put(key, found)  # type: ignore[arg-type]  # a miss is remembered too: orphaned meta must not query per row
        if self.recorder is not None:
            self._read(POSTS, key, found)  # type: ignore[arg-type]
        return found  # type: ignore[return-value]

    def set_post(self, blog_id: int, post_id: int, info: PostInfo) -> None:
        self._posts.put((blog_id, post_id), (info, False))
        if self.recorder is not None:
            self._set(POSTS, (blog_id, post_id))

    # -- terms -------------------------------------------------------------------------------------

    def term(self, blog_id: int, term_taxonomy_id: int) -> TermInfo | None:
        return self.term_fact(blog_id, term_taxonomy_id)[0]

    def term_fact(self, blog_id: int, term_taxonomy_id: int) -> tuple[TermInfo | None, bool]:
        """The term of a term_taxonomy_id, and whether any of it is the database's current state."""
        tt_key = (blog_id, term_taxonomy_id)
        tax = self._taxonomy.get(tt_key)
        if tax is not _MISSING:
            if tax[0] is None:  # type: ignore[index]  # the database had no such term when asked
                if self.recorder is not None:
                    self._read(TAXONOMY, tt_key, tax)  # type: ignore[arg-type]
                return None, tax[1]  # type: ignore[index]
            (term_id, taxonomy), tax_db = tax  # type: ignore[misc]
            if term_id is None:
                names: Any = ((None, None), tax_db)
            else:
                names = self._terms.get((blog_id, term_id))
            if names is not _MISSING:
                (slug, name), names_db = names
                if self.recorder is not None:
                    self._read(TAXONOMY, tt_key, tax)  # type: ignore[arg-type]
                    if term_id is not None:
                        self._read(TERMS, (blog_id, term_id), names)
                return TermInfo(term_id, taxonomy, slug, name), tax_db or names_db
        found = self._lookup.term(blog_id, term_taxonomy_id)
        return self._learn_lookup(tt_key, found, record=self.recorder is not None)

    def _learn_lookup(
        self, tt_key: tuple[int, int], found: TermInfo | None, record: bool
    ) -> tuple[TermInfo | None, bool]:
        """Cache a lookup's answer; `record`: it is being read now (a prefetch is read by the rows later)."""
        if found is None:
            if self._live and self._remember_term_misses:
                # Until the binlog's own term_taxonomy row for it (set_term_taxonomy) replaces it.
                miss = (None, True)
                self._taxonomy.put(tt_key, miss)
                if record:
                    self._read(TAXONOMY, tt_key, miss)
            return None, self._live
        blog_id = tt_key[0]
        tax = ((found.term_id, found.taxonomy), True)
        self._taxonomy.put(tt_key, tax)  # type: ignore[arg-type]
        if record:
            self._read(TAXONOMY, tt_key, tax)  # type: ignore[arg-type]
        if found.term_id is not None:
            names = ((found.slug, found.name), True)
            self._terms.put((blog_id, found.term_id), names)
            if record:
                self._read(TERMS, (blog_id, found.term_id), names)
        return found, True

    # -- one query for a whole rows event ------------------------------------------------------------

    def prefetch_posts(self, blog_id: int, post_ids: set[int]) -> None:
        """Ask for the posts among `post_ids` that the next reads would look up, in one query."""
        if not self._batch:
            return
        missing = [pid for pid in post_ids if (blog_id, pid) not in self._posts]
        if len(missing) < 2:
            return  # one query either way: the read asks for it
        found = self._lookup.posts(blog_id, sorted(missing))  # type: ignore[attr-defined]
        for pid in missing:
            self._posts.put((blog_id, pid), (found.get(pid), True))

    def prefetch_terms(self, blog_id: int, term_taxonomy_ids: set[int]) -> None:
        """Ask for the terms among `term_taxonomy_ids` that the next reads would look up, in one query."""
        if not self._batch:
            return
        missing = []
        for tt_id in term_taxonomy_ids:
            tax = self._taxonomy.get_quietly((blog_id, tt_id))
            if tax is _MISSING:
                missing.append(tt_id)
                continue
            value = tax[0]  # type: ignore[index]
            if value is not None and value[0] is not None and (blog_id, value[0]) not in self._terms:
                missing.append(tt_id)  # its names are not known: term_fact would ask for the whole term
        if len(missing) < 2:
            return
        found = self._lookup.terms(blog_id, sorted(missing))  # type: ignore[attr-defined]
        for tt_id in missing:
            self._learn_lookup((blog_id, tt_id), found.get(tt_id), record=False)

    def post_known(self, blog_id: int, post_id: int) -> PostInfo | None:
        """The cached post, if any, without a lookup, a journal record or a change of recency."""
        entry = self._posts.get_quietly((blog_id, post_id))
        return None if entry is _MISSING else entry[0]  # type: ignore[index]

    def set_term_taxonomy(self, blog_id: int, tt_id: int, term_id: int | None, taxonomy: str | None) -> None:
        self._taxonomy.put((blog_id, tt_id), ((term_id, taxonomy), False))
        if self.recorder is not None:
            self._set(TAXONOMY, (blog_id, tt_id))

    def set_term(self, blog_id: int, term_id: int, slug: str | None, name: str | None) -> None:
        self._terms.put((blog_id, term_id), ((slug, name), False))
        if self.recorder is not None:
            self._set(TERMS, (blog_id, term_id))
