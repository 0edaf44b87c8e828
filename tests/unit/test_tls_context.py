"""One TLS context per process and per set of TLS settings (cdc.source.server._Connection): the
context every connection gets is the one PyMySQL itself would build for those settings, and a
different setting or a replaced certificate file gives a different one."""

from __future__ import annotations

import os
import shutil
import ssl
from pathlib import Path
from typing import Any

import pymysql
import pytest

from cdc.config import parse_config
from cdc.dev.stack import make_tls_files
from cdc.source import server


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    server._SSL_CONTEXTS.clear()


def _settings(mysql: dict[str, Any]) -> dict[str, Any]:
    return parse_config({"mysql": mysql}).mysql.tls_settings()


def _ctx(settings: dict[str, Any]) -> ssl.SSLContext:
    """The context a connection with these TLS settings uses (nothing is connected)."""
    conn = server._Connection(host="127.0.0.1", defer_connect=True, **settings)
    return conn.ctx  # type: ignore[no-any-return]


def _pymysql_ctx(settings: dict[str, Any]) -> ssl.SSLContext:
    return pymysql.connections.Connection(host="127.0.0.1", defer_connect=True, **settings).ctx  # type: ignore[no-any-return]


def _same_verification(a: ssl.SSLContext, b: ssl.SSLContext) -> None:
    assert (a.verify_mode, a.check_hostname, a.verify_flags, a.options, a.minimum_version) == (
        b.verify_mode, b.check_hostname, b.verify_flags, b.options, b.minimum_version,
    )  # fmt: skip
    assert a.cert_store_stats() == b.cert_store_stats()  # the same CA certificates loaded
    assert sorted(c["subject"] for c in a.get_ca_certs()) == sorted(c["subject"] for c in b.get_ca_certs())


def test_without_mysql_tls_every_connection_shares_pymysqls_unverified_context() -> None:
    first, second = _ctx({}), _ctx({})
    assert first is second
    _same_verification(first, _pymysql_ctx({}))
    assert first.verify_mode == ssl.CERT_NONE and not first.check_hostname  # offered TLS, verifies nothing


def test_mysql_tls_context_verifies_as_pymysqls_own(tls_dir: Path) -> None:
    settings = _settings({"tls": True, "tls_ca_file": str(tls_dir / "ca.pem")})
    ctx = _ctx(settings)
    assert _ctx(settings) is ctx
    _same_verification(ctx, _pymysql_ctx(settings))
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert [c["subject"] for c in ctx.get_ca_certs()] == [((("commonName", "wpcdc test CA"),),)]

    no_identity = _settings({"tls": True, "tls_ca_file": str(tls_dir / "ca.pem"), "tls_verify_identity": False})
    other = _ctx(no_identity)
    assert other is not ctx
    assert other.verify_mode == ssl.CERT_REQUIRED and not other.check_hostname
    _same_verification(other, _pymysql_ctx(no_identity))
    assert _ctx({}) is not ctx  # the unverified one is another context, not this one


def test_a_client_certificate_is_loaded_as_pymysql_loads_it(tls_dir: Path) -> None:
    settings = _settings(
        {"tls": True, "tls_ca_file": str(tls_dir / "ca.pem"),
         "tls_cert_file": str(tls_dir / "server.pem"), "tls_key_file": str(tls_dir / "server.key")}
    )  # fmt: skip
    assert _ctx(settings) is _ctx(settings)
    _same_verification(_ctx(settings), _pymysql_ctx(settings))
    with pytest.raises(ssl.SSLError):  # a key that is not the certificate's fails as in PyMySQL
        _ctx({**settings, "ssl_key": str(tls_dir / "ca.key")})


def test_a_replaced_ca_file_is_read_again(tls_dir: Path, tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    shutil.copy(tls_dir / "ca.pem", ca)
    settings = _settings({"tls": True, "tls_ca_file": str(ca)})
    before = _ctx(settings)
    assert _ctx(settings) is before
    replacement = tmp_path / "new.pem"
    shutil.copy(tls_dir / "server.pem", replacement)  # another certificate under the same name
    os.replace(replacement, ca)
    after = _ctx(settings)
    assert after is not before
    _same_verification(after, _pymysql_ctx(settings))
    assert before.cert_store_stats()["x509_ca"] == 1 and after.cert_store_stats()["x509_ca"] == 0  # the new file's


def test_a_missing_ca_file_fails_as_before_and_is_not_cached(tmp_path: Path) -> None:
    missing = {"ssl_ca": str(tmp_path / "gone.pem"), "ssl_verify_cert": True, "ssl_verify_identity": True}
    with pytest.raises(FileNotFoundError):
        _pymysql_ctx(missing)
    with pytest.raises(FileNotFoundError):
        _ctx(missing)
    assert not server._SSL_CONTEXTS
