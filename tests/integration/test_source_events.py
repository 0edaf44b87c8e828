"""What the binlog source makes of positions, XA transactions, rotations and table-level DDL,
against a real MariaDB (and a real broker where the whole path is claimed)."""

from __future__ import annotations

import json
import time
from typing import Any

import orjson
import pytest

from tests.integration.conftest import Site

pytestmark = pytest.mark.integration


def replay(site: Site, start: str) -> list[dict[str, Any]]:
    result = site.cli("replay", "--from", start, "--sink", "stdout")
    assert result.returncode == 0, result.stderr
    return [orjson.loads(line) for line in result.stdout.splitlines()]


def binlog_events(site: Site, file: str) -> list[tuple[Any, ...]]:
    """SHOW BINLOG EVENTS IN file: (Log_name, Pos, Event_type, Server_id, End_log_pos, Info)."""
    return site.query(f"SHOW BINLOG EVENTS IN '{file}'")


def test_event_positions_are_the_servers_own(site: Site) -> None:
    pid = site.insert_post("positions", status="publish")
    site.sql(
        f"INSERT INTO wp_postmeta (post_id, meta_key, meta_value) VALUES ({pid}, 'a', '1'), ({pid}, 'b', '2')",
        f"UPDATE wp_postmeta SET meta_value = 'x' WHERE post_id = {pid}",
        f"DELETE FROM wp_postmeta WHERE post_id = {pid} AND meta_key = 'a'",
    )
    events = replay(site, site.start)
    assert len(events) == 7, [e["event_type"] for e in events]  # created, published, 2 added, 2 updated, deleted
    rows_events = {
        (row[0], row[1]): row[2]
        for file in {e["source"]["file"] for e in events}
        for row in binlog_events(site, file)
        if str(row[2]).split("_rows")[0] in ("Write", "Update", "Delete")
    }
    for e in events:
        src = e["source"]
        at = (src["file"], src["pos"])
        assert at in rows_events, f"{e['event_type']} at {at} is not where SHOW BINLOG EVENTS has a rows event"
        assert e["event_id"].split(":")[1:3] == [src["file"], str(src["pos"])]
    kinds = {e["event_type"]: rows_events[(e["source"]["file"], e["source"]["pos"])] for e in events}
    assert kinds["post_created"].startswith("Write_rows")
    assert kinds["post_meta_updated"].startswith("Update_rows")
    assert kinds["post_meta_deleted"].startswith("Delete_rows")
