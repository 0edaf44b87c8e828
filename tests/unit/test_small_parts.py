"""Table-name parsing, positions, checkpoints and the schema files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cdc.checkpoint.store import Checkpoint, FileCheckpointStore
from cdc.core.position import BinlogPosition
from cdc.core.tables import TableKind, TableMatcher, WordPressTable
from cdc.errors import CheckpointError, ConfigError
from cdc.mapping.events import json_schemas

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
