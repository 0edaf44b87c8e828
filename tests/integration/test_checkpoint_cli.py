"""`wpcdc checkpoint set/show` as an operator uses them: a position is checked against the server
before it is stored (as `run` would check it when it starts there), and no checkpoint is no error."""

from __future__ import annotations

import json

import pytest

from tests.integration.conftest import Site

pytestmark = pytest.mark.integration


def _events_of_last_transaction(site: Site) -> list[tuple[str, int, str]]:
    file = site.position().split(":")[0]
    rows = site.query(f"SHOW BINLOG EVENTS IN '{file}'")
    begin = max(i for i, r in enumerate(rows) if r[2] == "Gtid")
    return [(str(r[0]), int(r[1]), str(r[2])) for r in rows[begin:]]


def test_checkpoint_set_refuses_a_position_inside_a_transaction(site: Site) -> None:
    site.insert_post("one transaction")
    events = _events_of_last_transaction(site)
    kinds = [k for _, _, k in events]
    assert kinds[0] == "Gtid" and "Table_map" in kinds and kinds[-1] == "Xid", events
    before = site.checkpoint_path.read_text() if site.checkpoint_path.exists() else None

    # Every event after the GTID is inside the transaction, except MySQL's BEGIN: MySQL writes it as a
    # Query event of its own after the GTID, and `run` accepts starting there (it opens the transaction).
    inside_events = [e for e in events[1:] if e[2] != "Query"]
    assert inside_events
    for file, pos, kind in inside_events:
        inside = site.cli("checkpoint", "set", f"{file}:{pos}")
        assert inside.returncode == 7, (kind, inside.stderr)
        assert f"{file}:{pos} is inside a transaction" in inside.stderr and "fix:" in inside.stderr
        assert "Traceback" not in inside.stderr
    file, pos, _ = events[1]
    between = site.cli("checkpoint", "set", f"{file}:{pos + 1}")
    assert between.returncode == 7 and "is not the start of an event" in between.stderr, between.stderr
    assert (site.checkpoint_path.read_text() if site.checkpoint_path.exists() else None) == before, "nothing stored"

    gtid_file, gtid_pos, _ = events[0]
    for boundary in (f"{gtid_file}:{gtid_pos}", site.position()):  # a transaction's start; the binlog end
        ok = site.cli("checkpoint", "set", boundary)
        assert ok.returncode == 0, ok.stderr
        assert "{file}:{pos}".format(**json.loads(ok.stdout)) == boundary


def test_checkpoint_show_without_a_checkpoint_is_not_an_error(site: Site) -> None:
    assert not site.checkpoint_path.exists()
    shown = site.cli("checkpoint", "show")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) is None and "no checkpoint at" in shown.stderr
