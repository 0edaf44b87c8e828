"""classify(): the checkpoint's GTID state against one server's GTIDs, on fixtures of both servers
(mysql.hosts and Server.gtid_resume_problem both ask it)."""

from __future__ import annotations

import pytest

from cdc.source.server import Classification, GtidSet, ServerGtids, Verdict, classify, parse_binlog_state

A = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
B = "4f22ab58-82db-22f2-af44-d91bb0530673"
F = "99999999-0000-0000-0000-000000000009"


def mysql(executed: str, purged: str = "") -> ServerGtids:
    return ServerGtids(GtidSet.parse(executed), GtidSet.parse(purged))


def mariadb(pos: str, state: str = "", oldest_starts_after: str = "") -> ServerGtids:
    return ServerGtids(GtidSet.parse(pos), GtidSet.parse(oldest_starts_after), parse_binlog_state(state or pos))


def verdict(checkpoint: str, server: ServerGtids) -> Verdict:
    result = classify(GtidSet.parse(checkpoint), server)
    assert isinstance(result, Classification) and result.detail
    return result.verdict


@pytest.mark.parametrize(
    ("checkpoint", "executed", "purged", "expected"),
    [
        (f"{A}:1-100", f"{A}:1-100", f"{A}:1-40", Verdict.OK),  # caught up exactly
        (f"{A}:1-100", f"{A}:1-150", f"{A}:1-100", Verdict.OK),  # ahead, purged only what was read
        # after a switch of primary: the checkpoint has both UUIDs, the other replica too
        (f"{A}:1-100,{B}:1-7", f"{A}:1-100,{B}:1-9", "", Verdict.OK),
        (f"{A}:1-100", f"{A}:1-90", "", Verdict.LAGGING),
        (f"{A}:1-100,{B}:1-7", f"{A}:1-100", "", Verdict.LAGGING),  # has not seen the new primary yet
        (f"{A}:1-100", f"{A}:1-50:52-150", "", Verdict.LAGGING),  # a hole (parallel applier)
        (f"{A}:1-100", "", "", Verdict.LAGGING),  # a new replica that has applied nothing yet
        (f"{A}:1-100", f"{A}:1-200", f"{A}:1-120", Verdict.PURGED),
        (f"{A}:1-100", f"{A}:1-200,{B}:1-3", f"{B}:1-3", Verdict.PURGED),  # purged what the checkpoint never had
        (f"{A}:1-100", f"{F}:1-500", "", Verdict.FOREIGN),
        (f"{A}:1-100", f"{F}:1-500", f"{F}:1-400", Verdict.FOREIGN),  # foreign wins over purged
        (f"{A}:1-100", f"{A}:tag:1-3,{A}:1-100", "", Verdict.OK),  # tagged GTIDs are part of the set
        (f"{A}:tag:1-3,{A}:1-100", f"{A}:1-100", "", Verdict.LAGGING),
        ("", f"{F}:1-5", "", Verdict.OK),  # nothing read with GTIDs yet: any server will do
        ("", f"{A}:1-5", f"{A}:1-2", Verdict.PURGED),  # ... that still has every transaction it wrote
    ],
)
def test_mysql(checkpoint: str, executed: str, purged: str, expected: Verdict) -> None:
    assert verdict(checkpoint, mysql(executed, purged)) is expected


@pytest.mark.parametrize(
    ("checkpoint", "server", "expected"),
    [
        ("0-301-100", mariadb("0-301-100"), Verdict.OK),
        ("0-301-100", mariadb("0-301-140"), Verdict.OK),
        # a switch of primary: 302 continued the domain's sequence; this replica has both writers
        ("0-302-105", mariadb("0-302-110", "0-301-100,0-302-110"), Verdict.OK),
        ("0-301-100", mariadb("0-301-90"), Verdict.LAGGING),
        # the checkpoint is past the switch, this replica has not received anything from 302 yet
        ("0-302-105", mariadb("0-301-100"), Verdict.LAGGING),
        ("0-301-100,1-301-5", mariadb("0-301-100"), Verdict.LAGGING),  # a domain it has not got yet
        ("0-301-100", mariadb(""), Verdict.LAGGING),
        ("0-301-100", mariadb("0-301-200", oldest_starts_after="0-301-150"), Verdict.PURGED),
        ("0-301-100", mariadb("0-301-200", oldest_starts_after="0-301-100"), Verdict.OK),  # nothing needed gone
        ("0-301-100", mariadb("0-301-200,2-305-9", oldest_starts_after="0-301-90,2-305-4"), Verdict.PURGED),
        ("0-301-100", mariadb("9-901-500"), Verdict.FOREIGN),  # another topology, its own domain
        # another topology in the same domain 0 that went past our sequence number without 301's transactions
        ("0-301-100", mariadb("0-901-500"), Verdict.FOREIGN),
        ("", mariadb("9-901-500"), Verdict.OK),
        ("", mariadb("0-301-200", oldest_starts_after="0-301-150"), Verdict.PURGED),
    ],
)
def test_mariadb(checkpoint: str, server: ServerGtids, expected: Verdict) -> None:
    assert verdict(checkpoint, server) is expected


def test_details_name_what_is_missing() -> None:
    lagging = classify(GtidSet.parse(f"{A}:1-100,{B}:1-7"), mysql(f"{A}:1-100,{B}:1-4"))
    assert f"{B}:5-7" in lagging.detail
    purged = classify(GtidSet.parse(f"{A}:1-100"), mysql(f"{A}:1-200", f"{A}:1-120"))
    assert f"{A}:101-120" in purged.detail
    foreign = classify(GtidSet.parse("0-301-100"), mariadb("9-901-500"))
    assert "9-901-500" in foreign.detail and "domains (0)" in foreign.detail


def test_binlog_state_keeps_every_writer() -> None:
    assert parse_binlog_state("0-301-100,0-302-110, 1-5-3\n") == {(0, 301): 100, (0, 302): 110, (1, 5): 3}
