"""GTID positions as pure logic: the GTID state kept in the checkpoint, its wire encoding, GTID event ids."""

from __future__ import annotations

import dataclasses
import json
import struct
import uuid
from pathlib import Path
from typing import Any

import pytest

from cdc.checkpoint.store import Checkpoint, FileCheckpointStore
from cdc.core.position import BinlogPosition
from cdc.core.tables import TableKind
from cdc.errors import CheckpointError
from cdc.mapping.mapper import Mapper
from cdc.mapping.state import NoLookup, WordPressState
from cdc.source.server import GtidSet, _gtid_list
from tests.rows import change, post_row

A = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
B = "0b9a1e4c-0000-4000-8000-000000000001"


def test_adding_transactions_keeps_intervals_and_tags() -> None:
    s = GtidSet.parse(f"{A}:1-5")
    for gtid in (f"{A}:6", f"{A}:8", f"{A.upper()}:7", f"{A}:blue:1", f"{A}:blue:2", f"{B}:3", f"{A}:2"):
        s = s.add(gtid)
    assert str(s) == f"{B}:3,{A}:1-8:blue:1-2"
    assert s.add(None) is s and s.add("not a gtid") is s
    assert GtidSet.parse(str(s)) == s


def test_adding_mariadb_gtids_keeps_the_last_one_per_domain() -> None:
    s = GtidSet.parse("0-1-100,1-2-5").add("0-3-101").add("2-1-1")
    assert str(s) == "0-3-101,1-2-5,2-1-1"  # gtid_binlog_pos: whichever server wrote the domain's last one


def test_missing_from_is_the_set_difference_with_tags_and_per_domain_for_mariadb() -> None:
    have = GtidSet.parse(f"{A}:1-10:20-30:blue:1-4,{B}:1-3")
    server = GtidSet.parse(f"{A}:1-5:8-25:blue:1-4")
    assert str(have.missing_from(server)) == f"{B}:1-3,{A}:6-7:26-30"
    assert str(server.missing_from(have)) == f"{A}:11-19"
    assert not GtidSet.parse(f"{A}:2-3:blue:1").missing_from(have)
    assert str(GtidSet.parse("0-1-10,1-1-5").missing_from(GtidSet.parse("0-2-9,1-1-7"))) == "0-1-10"


def _decode(data: bytes) -> tuple[bool, list[tuple[str, str, list[tuple[int, int]]]]]:
    """MySQL's Gtid_set::add_gtid_encoding, written from its description, to check encoded()."""
    (head,) = struct.unpack_from("<Q", data, 0)
    tagged = head >> 56 == 1
    assert not tagged or head & 0xFF == 1
    n = (head >> 8) & 0xFFFFFFFFFFFF if tagged else head
    pos, out = 8, []
    for _ in range(n):
        sid = str(uuid.UUID(bytes=data[pos : pos + 16]))
        pos += 16
        tag = ""
        if tagged:
            length = data[pos] >> 1
            tag = data[pos + 1 : pos + 1 + length].decode()
            pos += 1 + length
        (count,) = struct.unpack_from("<Q", data, pos)
        pos += 8
        ivs = [struct.unpack_from("<QQ", data, pos + 16 * i) for i in range(count)]
        pos += 16 * count
        out.append((sid, tag, [(a, b) for a, b in ivs]))
    assert pos == len(data)
    return tagged, out


def test_the_dump_encoding_is_mysqls_with_and_without_tags() -> None:
    tagged, plain = _decode(GtidSet.parse(f"{A}:1-5:7").encoded())
    assert not tagged and plain == [(A, "", [(1, 6), (7, 8)])]  # end exclusive
    assert GtidSet.parse(f"{A}:1-5").encoded()[:8] == struct.pack("<Q", 1)  # what every server version reads
    tagged, entries = _decode(GtidSet.parse(f"{A}:1-5:blue:1-2,{B}:9").encoded())
    assert tagged and sorted(entries) == sorted([(A, "", [(1, 6)]), (A, "blue", [(1, 3)]), (B, "", [(9, 10)])])
    assert GtidSet().encoded() == b"\0" * 8


def test_a_gtid_list_reads_as_the_last_gtid_per_domain() -> None:
    assert str(_gtid_list("[0-1-5,0-2-9,1-3-4]")) == "0-2-9,1-3-4"
    assert str(_gtid_list("[]")) == ""


def test_the_checkpoint_keeps_the_gtid_state_and_old_checkpoints_still_load(tmp_path: Path) -> None:
    store = FileCheckpointStore(tmp_path / "cp.json")
    cp = Checkpoint(BinlogPosition("binlog.000002", 900), 1, f"{A}:blue:2", gtid_set=f"{A}:1-8:blue:1-2")
    store.save(cp)
    data = json.loads((tmp_path / "cp.json").read_text())
    assert data["format"] == 2 and data["gtid_set"] == f"{A}:1-8:blue:1-2"
    assert store.load() == dataclasses.replace(cp, updated_at=data["updated_at"])
    # format 1 (no "format", no "gtid_set"): a file/position checkpoint
    (tmp_path / "cp.json").write_text(json.dumps({"file": "binlog.000002", "pos": 900, "server_id": 1}))
    loaded = store.load()
    assert loaded is not None and loaded.gtid_set is None and loaded.position == BinlogPosition("binlog.000002", 900)
    (tmp_path / "cp.json").write_text(json.dumps({"file": "b.000001", "pos": 4, "server_id": 1, "gtid_set": "x:y"}))
    with pytest.raises(CheckpointError):
        store.load()


def _ids(gtid_ids: bool, **row: Any) -> str:
    m = Mapper(WordPressState(NoLookup()), 101, gtid_ids=gtid_ids)
    c = change(TableKind.POSTS, "insert", after=post_row(7), gtid=f"{A}:blue:42", pos=1300, row=2)
    c = dataclasses.replace(c, **row)
    (e,) = m.map(c).events
    return str(e["event_id"])


def test_gtid_event_ids_name_the_transaction_and_the_row_in_it_not_the_servers_coordinates() -> None:
    assert _ids(True, txn_row=5) == f"{A}:blue:42:5"
    # Another server splits or compresses the rows events differently: same id.
    assert _ids(True, txn_row=5, file="mysql-bin.000009", pos=77, row=0, event=3) == f"{A}:blue:42:5"
    assert _ids(False, txn_row=5) == "101:binlog.000003:1300:2"
    assert _ids(True, txn_row=5, gtid=None) == "101:binlog.000003:1300:2"  # an anonymous transaction


def test_gtid_ids_keep_the_suffix_and_the_source_keeps_the_servers_position() -> None:
    m = Mapper(WordPressState(NoLookup()), 101, gtid_ids=True)
    before, after = post_row(7), post_row(7, post_status="publish", post_date_gmt=None)
    c = dataclasses.replace(change(TableKind.POSTS, "update", before, after, gtid="0-101-7", pos=1400), txn_row=3)
    events = m.map(c).events
    assert [e["event_id"] for e in events] == ["0-101-7:3", "0-101-7:3:lifecycle"]
    assert events[0]["source"] == {
        "server_id": 101, "file": "binlog.000003", "pos": 1400, "row": 0, "table": "wp_posts", "gtid": "0-101-7"
    }  # fmt: skip
