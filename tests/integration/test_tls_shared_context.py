"""The TLS context built once per process (cdc.source.server) still verifies: connections made with
mysql.tls share one context and are encrypted, and a CA that did not sign the server's certificate
fails the next connection in the same process although a context that verifies is cached."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cdc.config import Config, parse_config
from cdc.dev.stack import MYSQL_PASSWORD, MYSQL_USER
from cdc.errors import ServerUnreachable
from cdc.source import server
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("stack", ["mysql"], indirect=True)
def test_connections_share_a_verifying_context(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    tls = stack.db.tls_dir
    assert tls is not None
    monkeypatch.setenv("WPCDC_MYSQL_PASSWORD", MYSQL_PASSWORD)
    monkeypatch.setattr(server, "_SSL_CONTEXTS", {})

    def config(ca: Path) -> Config:
        mysql = {"host": "127.0.0.1", "port": stack.db.port, "user": MYSQL_USER, "tls": True, "tls_ca_file": str(ca)}
        return parse_config({"mysql": mysql})

    conns = [server.connect(config(tls / "ca.pem")) for _ in range(3)]
    try:
        assert len({id(c.ctx) for c in conns}) == 1 and len(server._SSL_CONTEXTS) == 1
        for conn in conns:
            with conn.cursor() as cur:
                cur.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
                assert cur.fetchone()[1], "the connection was not encrypted"
    finally:
        for conn in conns:
            conn.close()

    with pytest.raises(ServerUnreachable) as wrong:
        server.connect(config(tls / "server.pem"))  # not the CA
    assert "certificate" in wrong.value.problem.lower()
    assert len(server._SSL_CONTEXTS) == 2
    assert os.environ["WPCDC_MYSQL_PASSWORD"] not in wrong.value.problem
