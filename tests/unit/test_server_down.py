"""A server that is down while the stream runs (restart, failover) is transient for the parts that query
it on the side: the pipeline's supervisor retries them. Before, the connection error escaped as a
preflight error and `run` exited 3 in the middle of a source restart."""

from __future__ import annotations

import socket

import pytest

from cdc.config import parse_config
from cdc.errors import LookupUnavailable, PreflightError, ServerUnreachable
from cdc.snapshot.reader import DatabaseChunkSource
from cdc.source.lookup import DatabaseLookup
from cdc.source.server import connect


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def down_config():  # type: ignore[no-untyped-def]
    return parse_config({"mysql": {"host": "127.0.0.1", "port": _closed_port(), "connect_timeout_seconds": 1}})


def test_connect_to_a_server_that_is_down_says_unreachable(down_config) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ServerUnreachable) as err:
        connect(down_config)
    assert isinstance(err.value, PreflightError)  # still fatal where a preflight catches it
    assert "cannot connect to MySQL" in err.value.problem


def test_a_lookup_while_the_server_is_down_is_transient(down_config) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(LookupUnavailable):
        DatabaseLookup(down_config).post(1, 1)


def test_a_snapshot_read_while_the_server_is_down_is_transient(down_config) -> None:  # type: ignore[no-untyped-def]
    source = DatabaseChunkSource(down_config)
    with pytest.raises(LookupUnavailable):
        source.blogs()
