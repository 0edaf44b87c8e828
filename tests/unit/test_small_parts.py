"""Table-name parsing, positions, checkpoints and the schema files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import pytest

from cdc.checkpoint.facts import FactJournal
from cdc.checkpoint.store import Checkpoint, FileCheckpointStore
from cdc.core.changes import RowChange
from cdc.core.facts import PostInfo, TermInfo
from cdc.core.position import BinlogPosition
from cdc.core.tables import TableKind, TableMatcher, WordPressTable
from cdc.errors import CheckpointError, ConfigError
from cdc.mapping.events import json_schemas
from cdc.mapping.mapper import Mapper
from cdc.mapping.state import WordPressState

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("wp_posts", WordPressTable(1, TableKind.POSTS)),
        ("wp_postmeta", WordPressTable(1, TableKind.POSTMETA)),
        ("wp_2_posts", WordPressTable(2, TableKind.POSTS)),
        ("wp_17_term_relationships", WordPressTable(17, TableKind.TERM_RELATIONSHIPS)),
        ("wp_3_term_taxonomy", WordPressTable(3, TableKind.TERM_TAXONOMY)),
        ("wp_terms", WordPressTable(1, TableKind.TERMS)),
        ("wp_options", None),
        ("wp_2_options", None),
        ("wp_1_posts", None),
        ("wp_posts_backup", None),
        ("xwp_posts", None),
        ("wp_x_posts", None),
    ],
)
def test_table_matcher(name: str, expected: WordPressTable | None) -> None:
    assert TableMatcher("wp_").match(name) == expected


def test_custom_prefix_is_literal() -> None:
    m = TableMatcher("my.site_")
    assert m.match("my.site_posts") == WordPressTable(1, TableKind.POSTS)
    assert m.match("myXsite_posts") is None


def test_position_parse_and_order() -> None:
    assert BinlogPosition.parse("binlog.000042:1234") == BinlogPosition("binlog.000042", 1234)
    for bad in ("binlog.000042", "binlog.000042:x", ":12", "binlog.000001:2"):
        with pytest.raises(ConfigError):
            BinlogPosition.parse(bad)
    assert BinlogPosition("binlog.000009", 900) < BinlogPosition("binlog.000010", 4)
    assert BinlogPosition("binlog.000010", 4) <= BinlogPosition("binlog.000010", 4)


def test_checkpoint_roundtrip_and_atomic_replace(tmp_path: Path) -> None:
    store = FileCheckpointStore(tmp_path / "sub" / "cp.json")
    assert store.load() is None
    saved = store.save(Checkpoint(BinlogPosition("binlog.000002", 400), 101, "0-101-9"))
    assert saved.updated_at and saved.updated_at.endswith("Z")
    loaded = store.load()
    assert loaded is not None and loaded.position == BinlogPosition("binlog.000002", 400)
    assert (loaded.server_id, loaded.gtid) == (101, "0-101-9")
    store.save(Checkpoint(BinlogPosition("binlog.000002", 900), 101))
    assert json.loads(store.path.read_text())["pos"] == 900
    assert [p.name for p in store.path.parent.iterdir()] == ["cp.json"]  # no temp files left
    assert store.reset() and store.load() is None


def test_corrupt_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    p = tmp_path / "cp.json"
    p.write_text("{not json")
    with pytest.raises(CheckpointError, match="not a valid wpcdc checkpoint"):
        FileCheckpointStore(p).load()


def test_checkpoint_on_a_non_directory_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(CheckpointError, match="cannot write"):
        FileCheckpointStore(tmp_path / "file" / "cp.json").save(Checkpoint(BinlogPosition("b.000001", 4), 1))


def test_checked_in_schemas_match_the_models() -> None:
    expected = json_schemas()
    present = {p.name for p in (REPO / "schemas").glob("*.json")}
    assert present == set(expected), "run `make schemas` and commit the result"
    for name, schema in expected.items():
        on_disk = json.loads((REPO / "schemas" / name).read_text())
        assert on_disk == json.loads(json.dumps(schema)), f"schemas/{name} is stale: run `make schemas`"


def test_fact_journal_gives_a_restart_what_the_first_pass_knew(tmp_path: Path) -> None:
    class Db:
        live = True
        posts: ClassVar[dict[tuple[int, int], PostInfo | None]] = {(1, 7): PostInfo("page", "publish")}

        def post(self, blog_id: int, post_id: int) -> PostInfo | None:
            return self.posts.get((blog_id, post_id))

        def term(self, blog_id: int, term_taxonomy_id: int) -> TermInfo | None:
            return TermInfo(3, "category", "news", "News")

    cp = BinlogPosition("binlog.000001", 400)
    first = WordPressState(Db())
    journal = FactJournal(tmp_path / "cp.json")
    journal.attach(first)
    journal.rewind(cp)
    first.set_post(1, 5, PostInfo("post", "draft"))  # seen before the checkpoint ...
    journal.reset(cp)  # ... which is then written
    assert first.post_fact(1, 5) == (PostInfo("post", "draft"), False)  # read after it: recorded
    assert first.post_fact(1, 7) == (PostInfo("page", "publish"), True)  # a lookup: recorded as one
    assert first.term_fact(1, 9) == (TermInfo(3, "category", "news", "News"), True)
    first.set_post(1, 8, PostInfo("post", "publish"))  # set by a row after the checkpoint: not recorded
    first.post_fact(1, 8)
    journal.close()

    Db.posts = {}  # every post deleted since, terms renamed: a lookup now knows nothing
    again = WordPressState(Db())
    journal = FactJournal(tmp_path / "cp.json")
    journal.attach(again)
    journal.rewind(cp)
    assert again.post_fact(1, 5) == (PostInfo("post", "draft"), False)
    assert again.post_fact(1, 7) == (PostInfo("page", "publish"), True)
    assert again.term_fact(1, 9)[0] == TermInfo(3, "category", "news", "News")
    assert again.post_fact(1, 8) == (None, True)  # the re-read sets it from its row before any use
    journal.close()
    # A journal of another checkpoint (the process died between the checkpoint and the reset) is ignored.
    other = WordPressState(Db())
    journal = FactJournal(tmp_path / "cp.json")
    journal.attach(other)
    journal.rewind(BinlogPosition("binlog.000001", 999))
    assert other.post_fact(1, 5) == (None, True)
    journal.close()


def test_meta_of_an_unseen_post_names_the_looked_up_field() -> None:
    class Db:
        live = True

        def post(self, blog_id: int, post_id: int) -> PostInfo | None:
            return None  # deleted

        def term(self, blog_id: int, term_taxonomy_id: int) -> TermInfo | None:
            return None

    change = RowChange(
        "insert", "wp_postmeta", WordPressTable(1, TableKind.POSTMETA), None,
        {"meta_id": 1, "post_id": 5, "meta_key": "k", "meta_value": "v"}, "binlog.000001", 400, 0, 1700000000, None,
    )  # fmt: skip
    (looked_up,) = Mapper(WordPressState(Db()), 1).map(change).events
    assert looked_up["post_type"] is None and looked_up["source"]["lookups"] == ["post_type"]
    state = WordPressState(Db())
    state.set_post(1, 5, PostInfo("post", "draft"))
    (from_binlog,) = Mapper(state, 1).map(change).events
    assert from_binlog["post_type"] == "post" and "lookups" not in from_binlog["source"]


def test_a_remembered_term_miss_is_in_the_fact_journal(tmp_path: Path) -> None:
    class Db:
        live = True
        terms: ClassVar[dict[tuple[int, int], TermInfo]] = {}
        asked = 0

        def post(self, blog_id: int, post_id: int) -> PostInfo | None:
            return None

        def term(self, blog_id: int, term_taxonomy_id: int) -> TermInfo | None:
            Db.asked += 1
            return self.terms.get((blog_id, term_taxonomy_id))

    cp = BinlogPosition("binlog.000001", 400)
    first = WordPressState(Db())
    journal = FactJournal(tmp_path / "cp.json")
    journal.attach(first)
    journal.rewind(cp)
    assert first.term_fact(1, 9) == (None, True) and first.term_fact(1, 9) == (None, True)
    assert Db.asked == 1
    journal.close()

    Db.terms = {(1, 9): TermInfo(3, "category", "news", "News")}  # created since (after the re-read range)
    again = WordPressState(Db())
    journal = FactJournal(tmp_path / "cp.json")
    journal.attach(again)
    journal.rewind(cp)
    assert again.term_fact(1, 9) == (None, True), "a re-read builds what the first pass built"
    assert Db.asked == 1
    again.set_term_taxonomy(1, 9, 3, "category")  # the binlog's own row replaces the miss
    again.set_term(1, 3, "news", "News")
    assert again.term_fact(1, 9) == (TermInfo(3, "category", "news", "News"), False)
    journal.close()
