"""Logging in the way each server makes its users log in: on MySQL a fresh caching_sha2_password user
(MySQL's default and, on 9.x, its only built-in password plugin) over plain TCP, where the password
goes RSA-encrypted (PyMySQL[rsa]), and over verified TLS (test_streaming's TLS test); on MariaDB its
default plugin the same two ways."""

from __future__ import annotations

from pathlib import Path

import pymysql
import pytest

from tests.integration.conftest import Site, Stack

pytestmark = pytest.mark.integration


def test_fresh_user_over_plain_tcp_without_tls(stack: Stack, tmp_path: Path) -> None:
    # A server without TLS, so nothing can fall back to sending the password inside TLS.
    no_tls = ["--tls-version="] if stack.kind == "mysql" else []
    own = stack.new_server(tmp_path / f"no-tls-{stack.kind}", server_id=203, extra_args=no_tls).start()
    try:
        site = Site(Stack(own, stack.broker, tmp_path), tmp_path)
        site.sql(
            "CREATE USER 'wpcdc_plain'@'%' IDENTIFIED BY 'plain-secret'",
            "GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO 'wpcdc_plain'@'%'",
        )
        plugin = site.query("SELECT plugin FROM mysql.user WHERE user = 'wpcdc_plain'")[0][0]
        assert plugin == ("caching_sha2_password" if stack.kind == "mysql" else "mysql_native_password")
        site.config["mysql"]["user"] = "wpcdc_plain"
        site.write_config()
        env = {"WPCDC_MYSQL_PASSWORD": "plain-secret"}
        # The first login of a user the server has not cached: on MySQL the full caching_sha2 exchange,
        # which without TLS needs the server's RSA key.
        check = site.cli("check", env=env)
        assert check.returncode == 0, check.stdout + check.stderr
        pid = site.insert_post("over plain TCP")
        replay = site.cli("replay", "--from", site.start, env=env)  # the binlog stream's own login
        assert replay.returncode == 0, replay.stderr
        assert f'"post_id":{pid}' in replay.stdout
        with pymysql.connect(host="127.0.0.1", port=own.port, user="wpcdc_plain", password="plain-secret") as conn:
            with conn.cursor() as cur:
                cur.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
                assert cur.fetchone()[1] == "", "the connection was plain TCP"
        site.conn.close()
    finally:
        own.stop()
