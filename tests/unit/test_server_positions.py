"""What `run`, `replay --from` and `checkpoint set` say about a position the server cannot serve:
binary logging off, a purged file, a file newer than any on the server, a name it never used."""

from __future__ import annotations

import pytest

from cdc.config import parse_config
from cdc.core.position import BinlogPosition
from cdc.errors import PositionGoneError, PreflightError, WpcdcError
from cdc.source.server import Server


def server(logs: list[str]) -> Server:
    s = Server.__new__(Server)  # no connection: only the SHOW BINARY LOGS answer matters here
    s.config = parse_config({"mysql": {"host": "db.example", "port": 3307}})
    s.binary_logs = lambda: list(logs)  # type: ignore[method-assign]
    return s


def refused(logs: list[str], position: str) -> WpcdcError:
    with pytest.raises(WpcdcError) as err:
        server(logs).require_position(BinlogPosition.parse(position), "--from position")
    return err.value


def test_a_file_on_the_server_is_accepted() -> None:
    server(["binlog.000003", "binlog.000004"]).require_position(BinlogPosition("binlog.000004", 4))


def test_binary_logging_off_says_so() -> None:
    err = refused([], "binlog.000001:4")
    assert isinstance(err, PreflightError) and err.exit_code == 3
    assert (
        "binary logging is off on db.example:3307" in err.problem and "--from position binlog.000001:4" in err.problem
    )
    text = err.problem + err.fix
    assert "purged" not in text and "no longer has" not in text and "(none)" not in text
    assert "log_bin=mysql-bin" in err.fix and "log_bin=ON" not in err.fix


def test_a_purged_file_is_called_purged() -> None:
    err = refused(["binlog.000003", "binlog.000004"], "binlog.000001:4")
    assert isinstance(err, PositionGoneError) and err.exit_code == 4
    assert "no longer has" in err.problem and "oldest available: binlog.000003" in err.problem
    assert "checkpoint set binlog.000003:4" in err.fix


def test_a_file_newer_than_any_on_the_server_is_not_called_purged() -> None:
    err = refused(["binlog.000003", "binlog.000004"], "binlog.000009:120")
    assert isinstance(err, PositionGoneError)
    assert "newer than any on db.example:3307" in err.problem and "binlog.000003 to binlog.000004" in err.problem
    assert "no longer has" not in err.problem and "gone" not in err.fix and "checkpoint set" not in err.fix


def test_a_file_name_the_server_never_used_is_not_called_purged() -> None:
    err = refused(["binlog.000003", "binlog.000004"], "mysql-bin.000001:4")
    assert isinstance(err, PositionGoneError)
    assert "which is not one on db.example:3307" in err.problem and "no longer has" not in err.problem
