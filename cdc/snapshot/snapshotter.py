"""Snapshots while streaming: which posts to read next, and when a chunk that was read may be published.

The DBLog approach, for a read-only replica: a chunk of posts (rows, meta, terms, in one consistent
read) is bracketed by the binlog end just before (low watermark) and just after (high watermark) the
read. The stream goes on; every row change between the watermarks marks its post as touched. When the
stream reaches the high watermark, the chunk is published *there*, in stream order, minus the touched
posts: their chunk state may predate a change the consumer has now seen, so they are read again in a
later chunk. A post's snapshot therefore never overwrites newer state, and per-post order between
snapshot and stream events holds because both go through the same ordered sink.

Progress (per blog, the last post ID published) is saved in the checkpoint with the binlog position,
so a restart resumes at the next chunk. No I/O here: reading goes through `ChunkSource`.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from cdc.core.changes import RowChange
from cdc.core.position import BinlogPosition
from cdc.core.tables import TableKind


@dataclass(frozen=True)
class SnapshotRequest:
    """What to snapshot; `None` means no restriction."""

    id: str
    blogs: tuple[int, ...] | None = None
    post_types: tuple[str, ...] | None = None
    post_ids: tuple[int, ...] | None = None
    modified_since: str | None = None  # UTC, 'YYYY-MM-DD HH:MM:SS', compared with post_modified_gmt
    requested_at: str = ""

    @staticmethod
    def new(
        blogs: list[int] | None = None,
        post_types: list[str] | None = None,
        post_ids: list[int] | None = None,
        modified_since: str | None = None,
    ) -> SnapshotRequest:
        now = dt.datetime.now(dt.timezone.utc)
        return SnapshotRequest(
            id=now.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3),
            blogs=tuple(blogs) if blogs else None,
            post_types=tuple(post_types) if post_types else None,
            post_ids=tuple(sorted(set(post_ids))) if post_ids else None,
            modified_since=modified_since,
            requested_at=now.isoformat(timespec="seconds").replace("+00:00", "Z"),
        )

    def describe(self) -> str:
        parts = [f"blogs {','.join(map(str, self.blogs))}" if self.blogs else "all blogs"]
        if self.post_types:
            parts.append("types " + ",".join(self.post_types))
        if self.post_ids:
            parts.append(f"{len(self.post_ids)} post ids")
        if self.modified_since:
            parts.append(f"modified since {self.modified_since} UTC")
        return ", ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "blogs": list(self.blogs) if self.blogs else None,
            "post_types": list(self.post_types) if self.post_types else None,
            "post_ids": list(self.post_ids) if self.post_ids else None,
            "modified_since": self.modified_since,
            "requested_at": self.requested_at,
        }

    @staticmethod
    def from_json(d: dict[str, Any]) -> SnapshotRequest:
        return SnapshotRequest(
            id=str(d["id"]),
            blogs=tuple(int(b) for b in d["blogs"]) if d.get("blogs") else None,
            post_types=tuple(str(t) for t in d["post_types"]) if d.get("post_types") else None,
            post_ids=tuple(int(i) for i in d["post_ids"]) if d.get("post_ids") else None,
            modified_since=d.get("modified_since"),
            requested_at=str(d.get("requested_at", "")),
        )


@dataclass
class SnapshotPost:
    """One post as a chunk read it: the wp_posts row, its meta rows and its term relationships (with
    taxonomy, term_id, slug, name already joined)."""

    row: dict[str, Any]
    meta: list[dict[str, Any]]
    terms: list[dict[str, Any]]


@dataclass
class Chunk:
    blog: int
    table: str  # the blog's wp_posts table, for the events' source block
    low: BinlogPosition
    high: BinlogPosition
    posts: list[SnapshotPost]  # by ID
    last_id: int  # the chunk key after this chunk (unchanged when only retried posts were read)
    blog_done: bool  # no post after last_id in this blog
    read_at: int  # unix time of the read, for occurred_at
    touched: set[int] = field(default_factory=set)


@dataclass
class Ready:
    snapshot_id: str
    chunk: Chunk
    posts: list[SnapshotPost]  # the chunk's posts that did not change while it was read


class ChunkSource(Protocol):
    def blogs(self) -> list[int]: ...

    def count(self, blog: int, request: SnapshotRequest) -> int: ...

    def read(self, blog: int, request: SnapshotRequest, after_id: int, retry: list[int], limit: int) -> Chunk: ...


@dataclass
class SnapshotState:
    """One running snapshot and the ones queued behind it; what the checkpoint stores."""

    request: SnapshotRequest
    blogs: list[int] | None = None  # resolved on the first chunk
    blog_index: int = 0
    last_id: int = 0
    retry: list[int] = field(default_factory=list)  # post ids of the current blog to read again
    done_posts: int = 0
    total_posts: int | None = None
    queued: list[SnapshotRequest] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)  # not saved: the rate is per process
    done_at_start: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "request": self.request.to_json(),
            "blogs": self.blogs,
            "blog_index": self.blog_index,
            "last_id": self.last_id,
            "retry": self.retry,
            "done_posts": self.done_posts,
            "total_posts": self.total_posts,
            "queued": [q.to_json() for q in self.queued],
        }

    @staticmethod
    def from_json(d: dict[str, Any]) -> SnapshotState:
        return SnapshotState(
            request=SnapshotRequest.from_json(d["request"]),
            blogs=[int(b) for b in d["blogs"]] if d.get("blogs") is not None else None,
            blog_index=int(d.get("blog_index", 0)),
            last_id=int(d.get("last_id", 0)),
            retry=[int(i) for i in d.get("retry", [])],
            done_posts=int(d.get("done_posts", 0)),
            total_posts=int(d["total_posts"]) if d.get("total_posts") is not None else None,
            queued=[SnapshotRequest.from_json(q) for q in d.get("queued", [])],
            done_at_start=int(d.get("done_posts", 0)),
        )


class Snapshotter:
    """Drives the snapshots in `state` from inside the stream: `observe()` every captured row change,
    `at()` at every transaction end or heartbeat position; `at()` returns the chunk's posts to publish."""

    def __init__(self, source: ChunkSource, chunk_size: int, state: SnapshotState | None = None) -> None:
        self.source = source
        self.chunk_size = chunk_size
        self.state = state
        self.chunk: Chunk | None = None
        self.completed: list[str] = []  # snapshot ids finished since the pipeline last looked
        self.finished: set[str] = set()  # every snapshot id finished in this process
        self.retried = 0  # posts read again because they changed while their chunk was read
        self._read_error: Exception | None = None  # a read that failed after chunks were finished: see at()

    @property
    def active(self) -> bool:
        return self.state is not None

    def restore(self, saved: dict[str, Any] | None) -> None:
        """Back to what a checkpoint recorded (at start-up, and after a failure)."""
        self.state = SnapshotState.from_json(saved) if saved else None
        self.chunk = None
        self._read_error = None
        if self.state is not None:
            self.finished -= {self.state.request.id, *(q.id for q in self.state.queued)}

    def knows(self, request_id: str) -> bool:
        """Running, queued, or finished by this process."""
        state = self.state
        if state is not None and (state.request.id == request_id or any(q.id == request_id for q in state.queued)):
            return True
        return request_id in self.finished

    def request(self, request: SnapshotRequest) -> None:
        if self.state is None:
            self.state = SnapshotState(request)
        else:
            self.state.queued.append(request)

    def to_json(self) -> dict[str, Any] | None:
        return self.state.to_json() if self.state is not None else None

    def observe(self, change: RowChange) -> None:
        chunk = self.chunk
        if chunk is None or change.wp.blog_id != chunk.blog:
            return
        at = BinlogPosition(change.file, change.pos)
        if at < chunk.low or not at < chunk.high:
            return
        image = change.after if change.after is not None else change.before
        if image is None:
            return
        kind = change.wp.kind
        col = "ID" if kind is TableKind.POSTS else "post_id" if kind is TableKind.POSTMETA else "object_id"
        if kind in (TableKind.POSTS, TableKind.POSTMETA, TableKind.TERM_RELATIONSHIPS):
            post = image.get(col)
            if isinstance(post, int):
                chunk.touched.add(post)
            if change.before is not None and change.after is not None and isinstance(change.before.get(col), int):
                chunk.touched.add(change.before[col])  # a row moved to another post touches both

    def at(self, position: BinlogPosition, max_chunks: int = 8) -> list[Ready]:
        """At a position the stream has fully reached: the chunks to publish now, in order. A chunk
        whose high watermark the stream has already reached (nothing was written meanwhile) is due at
        once, so an idle server does not pace the snapshot by its heartbeat.

        A chunk read that fails (a lost connection) after chunks were finished here does not raise
        now: the state already counts those chunks as published, and the checkpoint written on the
        way to the restart would save it without them. They are returned; the next call raises."""
        error, self._read_error = self._read_error, None
        if error is not None:
            raise error
        out: list[Ready] = []
        while len(out) < max_chunks:
            chunk = self.chunk
            if chunk is not None and chunk.high <= position:
                assert self.state is not None
                out.append(Ready(self.state.request.id, chunk, self._finish(chunk)))
                self.chunk = chunk = None
            if chunk is None and self.state is not None:
                try:
                    self.chunk = chunk = self._next_chunk()
                except Exception as exc:
                    if not out:
                        raise
                    self._read_error = exc
                    break
            if chunk is None or not chunk.high <= position:
                break
        return out

    def _finish(self, chunk: Chunk) -> list[SnapshotPost]:
        state = self.state
        assert state is not None
        ready = [p for p in chunk.posts if p.row["ID"] not in chunk.touched]
        again = sorted({p.row["ID"] for p in chunk.posts if p.row["ID"] in chunk.touched})
        self.retried += len(again)
        state.retry = again
        state.last_id = chunk.last_id
        state.done_posts += len(ready)
        if chunk.blog_done and not again:
            state.blog_index += 1
            state.last_id = 0
        return ready

    def _next_chunk(self) -> Chunk | None:
        while self.state is not None:
            state = self.state
            req = state.request
            if state.blogs is None:
                found = self.source.blogs()
                blogs = [b for b in found if req.blogs is None or b in req.blogs]
                # Both or neither: a count that fails must not leave the blogs resolved without a total.
                state.total_posts = sum(self.source.count(b, req) for b in blogs)
                state.blogs = blogs
            if state.blog_index < len(state.blogs):
                blog = state.blogs[state.blog_index]
                return self.source.read(blog, req, state.last_id, state.retry, self.chunk_size)
            self.completed.append(req.id)
            self.finished.add(req.id)
            self.state = SnapshotState(state.queued[0], queued=state.queued[1:]) if state.queued else None
        return None

    def rate(self) -> float:
        if self.state is None:
            return 0.0
        done = self.state.done_posts - self.state.done_at_start
        return done / max(time.monotonic() - self.state.started, 1e-6)
