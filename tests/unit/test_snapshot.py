"""The snapshot coordinator (watermark windows, re-reads, progress, resume) and post_snapshot mapping,
with an in-memory table standing in for the database (no I/O)."""

from __future__ import annotations

import copy
from typing import Any

from cdc.config import FilterConfig
from cdc.core.position import BinlogPosition
from cdc.core.tables import TableKind
from cdc.errors import LookupUnavailable
from cdc.mapping import events as ev
from cdc.mapping.mapper import Mapper
from cdc.mapping.state import NoLookup, WordPressState
from cdc.snapshot.snapshotter import Chunk, SnapshotPost, SnapshotRequest, SnapshotState, Snapshotter
from tests.rows import change, meta_row, post_row

FILE = "binlog.000003"


def at(pos: int) -> BinlogPosition:
    return BinlogPosition(FILE, pos)


class FakeTables:
    """Posts per blog; `binlog_end` is what SHOW MASTER STATUS would say. Each read advances it by
    `writes_during_read`, as concurrent writers would."""

    def __init__(self, posts: dict[int, dict[int, str]]) -> None:
        self.posts = posts  # blog -> id -> title
        self.binlog_end = 1000
        self.writes_during_read = 0
        self.reads: list[tuple[int, int, list[int]]] = []
        self.failing_reads: set[int] = set()  # the n-th reads (from 1) lose their connection
        self.failing_counts = 0  # this many count() calls lose theirs

    def blogs(self) -> list[int]:
        return sorted(self.posts)

    def count(self, blog: int, request: SnapshotRequest) -> int:
        if self.failing_counts:
            self.failing_counts -= 1
            raise LookupUnavailable("snapshot read failed: lost connection")
        return len(self._match(blog, request))

    def _match(self, blog: int, request: SnapshotRequest) -> list[int]:
        ids = sorted(self.posts[blog])
        return [i for i in ids if not request.post_ids or i in request.post_ids]

    def read(self, blog: int, request: SnapshotRequest, after_id: int, retry: list[int], limit: int) -> Chunk:
        self.reads.append((blog, after_id, list(retry)))
        if len(self.reads) in self.failing_reads:
            raise LookupUnavailable("snapshot read failed: lost connection")
        low = at(self.binlog_end)
        match = self._match(blog, request)
        page = [i for i in match if i > after_id][:limit]
        ids = sorted(set(page) | {i for i in retry if i in match and i <= after_id})
        posts = [SnapshotPost(post_row(i, post_title=self.posts[blog][i]), [], []) for i in ids]
        self.binlog_end += self.writes_during_read
        return Chunk(blog, "wp_posts", low, at(self.binlog_end), posts, max(page) if page else after_id,
                     len(page) < limit, 1_790_000_000)  # fmt: skip


def drain(s: Snapshotter, position: int) -> list[tuple[int, int, str]]:
    out = []
    for ready in s.at(at(position)):
        out += [(ready.chunk.blog, p.row["ID"], p.row["post_title"]) for p in ready.posts]
    return out


def test_an_idle_server_gets_every_post_once_in_key_order_per_blog() -> None:
    tables = FakeTables({1: {i: f"t{i}" for i in range(1, 26)}, 2: {1: "b2"}})
    s = Snapshotter(tables, chunk_size=10)
    s.request(SnapshotRequest.new())
    got = []
    for _ in range(10):
        got += drain(s, tables.binlog_end)
    assert [(b, i) for b, i, _ in got] == [(1, i) for i in range(1, 26)] + [(2, 1)]
    assert not s.active and len(s.finished) == 1
    assert [r[1] for r in tables.reads] == [0, 10, 20, 0]


def test_a_post_changed_between_the_watermarks_is_read_again_not_published_stale() -> None:
    tables = FakeTables({1: {1: "old one", 2: "old two", 3: "old three"}})
    tables.writes_during_read = 50  # the chunk's window is [1000, 1050)
    s = Snapshotter(tables, chunk_size=10)
    s.request(SnapshotRequest.new())
    assert drain(s, 900) == []  # reads the chunk; the stream is still before its high watermark
    assert s.chunk is not None and (s.chunk.low, s.chunk.high) == (at(1000), at(1050))

    # The stream reaches rows inside the window: post 2 changes (its row image says so).
    tables.posts[1][2] = "new two"
    s.observe(change(TableKind.POSTS, "update", post_row(2), post_row(2, post_title="new two"), pos=1020))
    s.observe(change(TableKind.POSTMETA, "insert", None, meta_row(post_id=3), pos=999))  # before the window
    s.observe(change(TableKind.POSTMETA, "insert", None, meta_row(post_id=3), pos=1050))  # at the high mark: after
    s.observe(change(TableKind.POSTS, "update", post_row(1), post_row(1), pos=1030, blog_id=2))  # another blog

    published = drain(s, 1050)
    assert published == [(1, 1, "old one"), (1, 3, "old three")], "post 2's chunk state may predate the change"
    assert s.retried == 1
    # The re-read happens in the next window and carries the new state.
    again = drain(s, tables.binlog_end)
    assert again == [(1, 2, "new two")]
    assert tables.reads[-1] == (1, 3, [2])
    assert not s.active


def test_meta_and_term_rows_touch_their_post_and_a_moved_row_touches_both() -> None:
    tables = FakeTables({1: {1: "a", 2: "b", 3: "c"}})
    tables.writes_during_read = 10
    s = Snapshotter(tables, chunk_size=10)
    s.request(SnapshotRequest.new())
    drain(s, 0)
    s.observe(change(TableKind.POSTMETA, "update", meta_row(post_id=1), meta_row(post_id=3), pos=1005))
    assert s.chunk is not None and s.chunk.touched == {1, 3}
    assert drain(s, 1010) == [(1, 2, "b")]


def test_progress_survives_a_restart_through_the_checkpoint() -> None:
    # Publish one chunk at a time, as a busy stream would (the high mark moves past each position).
    tables = FakeTables({1: {i: f"t{i}" for i in range(1, 8)}})
    tables.writes_during_read = 5
    s = Snapshotter(tables, chunk_size=3)
    s.request(SnapshotRequest.new())
    drain(s, 0)
    assert [i for _, i, _ in drain(s, 1005)] == [1, 2, 3]
    saved: dict[str, Any] | None = copy.deepcopy(s.to_json())
    assert saved is not None and saved["last_id"] == 3 and saved["done_posts"] == 3 and saved["total_posts"] == 7

    # A new process: the chunk in flight (4..6) was never published; it is read again.
    resumed = Snapshotter(tables, chunk_size=3)
    resumed.restore(SnapshotState.from_json(saved).to_json())
    rest = []
    for _ in range(5):
        rest += [i for _, i, _ in drain(resumed, tables.binlog_end)]
    assert rest == [4, 5, 6, 7]
    assert not resumed.active


def test_a_read_failing_after_finished_chunks_loses_none_of_them() -> None:
    # An idle server: several chunks are due in one call. The third read loses its connection after
    # two chunks were finished (and counted in the state). The pipeline's recovery checkpoints that
    # state (try_commit) and restores from it: every post counted as done must have been handed out.
    tables = FakeTables({1: {i: f"t{i}" for i in range(1, 6)}})
    tables.failing_reads = {3}
    s = Snapshotter(tables, chunk_size=1)
    s.request(SnapshotRequest.new())
    published: list[int] = []
    failures = 0
    for _ in range(10):
        try:
            published += [i for _, i, _ in drain(s, tables.binlog_end)]
        except LookupUnavailable:
            failures += 1
            saved = copy.deepcopy(s.to_json())
            assert saved is not None and saved["done_posts"] == len(published), "it counts only what was sent"
            s.restore(saved)
    assert failures == 1, "the read's failure still reaches the pipeline (it restarts and reconnects)"
    assert published == [1, 2, 3, 4, 5]
    assert not s.active


def test_a_failed_count_leaves_the_total_to_the_next_try() -> None:
    tables = FakeTables({1: {1: "a"}, 2: {1: "b", 2: "c"}})
    tables.failing_counts = 1
    tables.writes_during_read = 5  # the first chunk is not due yet: the state stays in progress
    s = Snapshotter(tables, chunk_size=10)
    s.request(SnapshotRequest.new())
    try:
        drain(s, 0)
    except LookupUnavailable:
        pass
    assert s.state is not None and s.state.blogs is None, "resolved again on the next try"
    drain(s, 0)
    assert s.state is not None and (s.state.blogs, s.state.total_posts) == ([1, 2], 3)


def test_requests_queue_and_a_finished_one_is_not_taken_twice() -> None:
    tables = FakeTables({1: {1: "a"}, 2: {1: "b"}})
    s = Snapshotter(tables, chunk_size=10)
    first, second = SnapshotRequest.new(blogs=[2]), SnapshotRequest.new(post_ids=[1])
    s.request(first)
    s.request(second)
    assert s.knows(second.id)
    got = drain(s, tables.binlog_end)
    assert got == [(2, 1, "b"), (1, 1, "a"), (2, 1, "b")]
    assert s.knows(first.id) and s.knows(second.id) and not s.active


def test_request_json_round_trip() -> None:
    r = SnapshotRequest.new(blogs=[2], post_types=["page"], post_ids=[3, 1, 3], modified_since="2026-11-01 00:00:00")
    assert SnapshotRequest.from_json(r.to_json()) == r
    assert r.post_ids == (1, 3)
    assert "modified since 2026-11-01 00:00:00 UTC" in r.describe()


def _chunk(posts: list[SnapshotPost]) -> Chunk:
    return Chunk(2, "wp_2_posts", at(100), at(200), posts, 9, True, 1_790_000_000)


def test_post_snapshot_event_matches_the_contract_and_applies_the_filters() -> None:
    m = Mapper(WordPressState(NoLookup()), 101, FilterConfig())
    post = SnapshotPost(
        post_row(7, post_status="publish", post_password="secret"),
        [
            {"meta_id": 1, "post_id": 7, "meta_key": "layout", "meta_value": 'a:1:{s:5:"width";s:4:"wide";}'},
            {"meta_id": 2, "post_id": 7, "meta_key": "_edit_lock", "meta_value": "1:1"},
            {"meta_id": 3, "post_id": 7, "meta_key": "broken", "meta_value": 's:1:"😀";'},
        ],
        [{"term_taxonomy_id": 5, "term_order": 0, "taxonomy": "category", "term_id": 4, "slug": "news", "name": "N"}],
    )
    mapped = m.snapshot("snap-1", _chunk([post]), post, 0)
    assert mapped.dead_letter is None and len(mapped.events) == 1
    e = mapped.events[0]
    ev.EVENT_MODELS[ev.POST_SNAPSHOT].model_validate(e)
    assert e["event_id"] == "101:snapshot:snap-1:2:7"
    assert (e["blog_id"], e["post_id"], e["post_type"]) == (2, 7, "post")
    assert e["source"] == {"server_id": 101, "file": FILE, "pos": 200, "row": 0, "table": "wp_2_posts"}
    assert e["data"]["post"]["has_password"] is True and "post_password" not in e["data"]["post"]
    assert [x["meta_key"] for x in e["data"]["meta"]] == ["layout", "broken"], "_edit_lock is internal"
    assert e["data"]["meta"][0]["value_decoded"] == {"width": "wide"}
    assert "value_decode_error" in e["data"]["meta"][1] and mapped.decode_errors == 1
    assert e["data"]["terms"][0]["slug"] == "news"

    revision = SnapshotPost(post_row(8, post_type="revision", post_status="inherit"), [], [])
    assert m.snapshot("snap-1", _chunk([revision]), revision, 1).filtered == "excluded_post_type"


def test_a_post_the_mapper_cannot_read_is_dead_lettered() -> None:
    m = Mapper(WordPressState(NoLookup()), 101, FilterConfig())
    bad = SnapshotPost(post_row(9, post_status=None), [], [])
    mapped = m.snapshot("snap-1", _chunk([bad]), bad, 0)
    assert mapped.events == [] and mapped.dead_letter is not None
    ev.EVENT_MODELS[ev.DEAD_LETTER].model_validate(mapped.dead_letter)
    assert mapped.dead_letter["post_id"] == 9
