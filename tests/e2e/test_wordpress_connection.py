"""How WordPress itself reaches each server: its own user with a password, over TLS, through PHP's
mysqlnd (on MySQL: caching_sha2_password, the default since 8.0 and the only one on 9.x)."""

from __future__ import annotations

from typing import Any

from tests.e2e.conftest import WordPressStream


def test_wordpress_logs_in_as_its_own_user_over_tls(wp: WordPressStream, stack: Any) -> None:
    seen = wp.wp.php(
        """global $wpdb;
        return ['user' => $wpdb->get_var('SELECT CURRENT_USER()'),
                'cipher' => $wpdb->get_row("SHOW SESSION STATUS LIKE 'Ssl_cipher'", ARRAY_N)[1],
                'version' => $wpdb->db_version(), 'wp' => get_bloginfo('version')];"""
    )
    assert seen["user"] == "wordpress@%"
    assert seen["cipher"], "WordPress's connection is TLS (MYSQL_CLIENT_FLAGS)"
    plugin = wp.site.query("SELECT plugin FROM mysql.user WHERE user = 'wordpress'")[0][0]
    assert plugin == ("caching_sha2_password" if stack.kind == "mysql" else "mysql_native_password")
    assert seen["wp"].startswith("6.")
