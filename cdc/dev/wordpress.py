"""A real WordPress for tests and `make demo`: Debian's `wordpress` package run from the PHP CLI
against a throwaway MariaDB or MySQL (see stack.py, mysql.py). No web server: every operation is a short PHP process
that loads WordPress and calls its own APIs (or `rest_do_request()` for REST). Not used by `run`.

The install is a multisite network (subdirectory blogs) from the start, so blog 1 uses the plain
`wp_*` tables and `add_blog()` creates `wp_<n>_*` tables, as on a real network.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cdc.dev.mysql import MySQL
from cdc.dev.stack import DevStackError, MariaDB

WORDPRESS_DIR = Path("/usr/share/wordpress")
_MARKER = "@@wpcdc-result@@"

# Loaded by every PHP process: no mail, no outbound HTTP, no cron spawned by page loads (tests run
# cron explicitly), and a custom post type with a custom taxonomy, as a plugin would register them.
_MU_PLUGIN = r"""<?php
if (!function_exists('wp_mail')) {
    function wp_mail($to, $subject, $message, $headers = '', $attachments = array()) { return true; }
}
add_filter('pre_http_request', function () { return new WP_Error('wpcdc_offline', 'no HTTP in tests'); });
add_action('init', function () {
    register_post_type('book', array(
        'public' => true, 'show_in_rest' => true, 'label' => 'Books',
        'supports' => array('title', 'editor', 'custom-fields', 'revisions', 'thumbnail'),
    ));
    register_taxonomy('genre', 'book', array('public' => true, 'show_in_rest' => true, 'hierarchical' => false));
});
"""


def wordpress_missing() -> str | None:
    """What is missing to run a real WordPress here, or None."""
    php = shutil.which("php")
    if php is None:
        return "the PHP CLI is not installed (apt-get install php-cli php-mysql)"
    if not (WORDPRESS_DIR / "wp-settings.php").exists():
        return f"WordPress is not installed in {WORDPRESS_DIR} (apt-get install wordpress)"
    modules = subprocess.run([php, "-m"], capture_output=True, text=True).stdout.split()
    if "mysqli" not in modules:
        return "PHP has no mysqli extension (apt-get install php-mysql)"
    return None


class PHPError(DevStackError):
    pass


@dataclass
class WordPress:
    db: MariaDB | MySQL
    directory: Path
    database: str = "wordpress"
    prefix: str = "wp_"
    domain: str = "example.test"
    title: str = "wpcdc e2e"
    # WordPress logs in as its own user with a password, as on a real site (on MySQL that is
    # caching_sha2_password's full exchange), over TLS when `tls` (MYSQL_CLIENT_FLAGS, unverified:
    # wpdb cannot be given a CA).
    db_user: str = "wordpress"
    db_password: str = "wordpress-test-password"
    tls: bool = False

    @property
    def config_file(self) -> Path:
        return self.directory / "wp-config.php"

    def install(self) -> WordPress:
        """Create the database, install WordPress and turn it into a multisite network."""
        missing = wordpress_missing()
        if missing:
            raise DevStackError(f"cannot install a real WordPress: {missing}")
        self.directory = self.directory.resolve()
        (self.directory / "wp-content" / "mu-plugins").mkdir(parents=True, exist_ok=True)
        (self.directory / "wp-content" / "mu-plugins" / "wpcdc-e2e.php").write_text(_MU_PLUGIN)
        with self.db.root() as conn, conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE IF NOT EXISTS `{self.database}` CHARACTER SET utf8mb4")
            cur.execute(f"CREATE USER IF NOT EXISTS '{self.db_user}'@'%' IDENTIFIED BY '{self.db_password}'")
            cur.execute(f"GRANT ALL ON `{self.database}`.* TO '{self.db_user}'@'%'")
        self.config_file.write_text(self._wp_config())
        self.php(
            """
            require_once ABSPATH . 'wp-admin/includes/upgrade.php';
            $r = wp_install($args['title'], 'admin', 'admin@' . $args['domain'], true, '', 'admin-password');
            update_option('permalink_structure', '/%postname%/');
            require_once ABSPATH . 'wp-admin/includes/network.php';
            global $wpdb;  // as wp-admin/network.php does before installing the network tables
            foreach ($wpdb->tables('ms_global') as $table => $prefixed) { $wpdb->$table = $prefixed; }
            install_network();
            $e = populate_network(1, $args['domain'], 'admin@' . $args['domain'], 'wpcdc network', '/', false);
            if (is_wp_error($e)) { throw new Exception($e->get_error_message()); }
            return $r['user_id'];
            """,
            prelude="define('WP_INSTALLING', true);",
            title=self.title,
            domain=self.domain,
        )
        (self.directory / "multisite.php").write_text(
            "<?php\n"
            "define('MULTISITE', true);\n"
            "define('SUBDOMAIN_INSTALL', false);\n"
            f"define('DOMAIN_CURRENT_SITE', '{self.domain}');\n"
            "define('PATH_CURRENT_SITE', '/');\n"
            "define('SITE_ID_CURRENT_SITE', 1);\n"
            "define('BLOG_ID_CURRENT_SITE', 1);\n"
        )
        return self

    def add_blog(self, path: str, title: str) -> int:
        """A new blog on the network: WordPress creates its `wp_<n>_*` tables."""
        return int(
            self.php(
                """
                $id = wpmu_create_blog($args['domain'], $args['path'], $args['title'], 1);
                if (is_wp_error($id)) { throw new Exception($id->get_error_message()); }
                return $id;
                """,
                domain=self.domain,
                path=path,
                title=title,
            )
        )

    def php(self, code: str, /, prelude: str = "", timeout: float = 120, **args: Any) -> Any:
        """Run `code` (a PHP function body with `$args` in scope) inside a loaded WordPress as the admin
        user; returns what it returns, through JSON. Raises PHPError with PHP's output on failure."""
        script = (
            "<?php\n"
            "$_SERVER['HTTP_HOST'] = $_SERVER['SERVER_NAME'] = " + _php_str(self.domain) + ";\n"
            "$_SERVER['REQUEST_URI'] = '/'; $_SERVER['REQUEST_METHOD'] = 'GET'; $_SERVER['SERVER_PORT'] = 80;\n"
            f"{prelude}\n"
            f"require {_php_str(str(self.config_file))};\n"
            "if (!defined('WP_INSTALLING')) {\n"
            "    require_once ABSPATH . 'wp-admin/includes/admin.php';  // wp_insert_category, media, ...\n"
            "    wp_set_current_user(1);\n"
            "}\n"
            "$args = json_decode(stream_get_contents(STDIN), true);\n"
            "$__result = (function (array $args) {\n" + code + "\n})($args);\n"
            f'echo "\\n{_MARKER}" . json_encode($__result);\n'
        )
        path = self.directory / "run.php"
        path.write_text(script)
        done = subprocess.run(
            ["php", "-d", "display_errors=stderr", "-d", "error_reporting=E_ALL & ~E_DEPRECATED", str(path)],
            input=json.dumps(args),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        _, marker, result = done.stdout.rpartition(_MARKER)
        if done.returncode != 0 or not marker:
            # WordPress's die handler prints an HTML page; the PHP message after it is what matters.
            output = re.sub(r"(?s)<!DOCTYPE html>.*?</html>", "", done.stdout + done.stderr)[-3000:]
            raise PHPError(f"PHP failed ({done.returncode}):\n{output}\n--- script:\n{code}")
        return json.loads(result)

    def _wp_config(self) -> str:
        d = self.directory
        return f"""<?php
// Generated by wpcdc's devwordpress for a throwaway test site.
define('DB_NAME', {_php_str(self.database)});
define('DB_USER', {_php_str(self.db_user)});
define('DB_PASSWORD', {_php_str(self.db_password)});
define('DB_HOST', '127.0.0.1:{self.db.port}');
{"define('MYSQL_CLIENT_FLAGS', MYSQLI_CLIENT_SSL | MYSQLI_CLIENT_SSL_DONT_VERIFY_SERVER_CERT);" if self.tls else ""}
define('DB_CHARSET', 'utf8mb4');
define('DB_COLLATE', '');
$table_prefix = {_php_str(self.prefix)};
define('WP_CONTENT_DIR', {_php_str(str(d / "wp-content"))});
define('WP_ALLOW_MULTISITE', true);
define('DISABLE_WP_CRON', true);
define('AUTOMATIC_UPDATER_DISABLED', true);
define('WP_DEBUG', false);
foreach (array('AUTH_KEY', 'SECURE_AUTH_KEY', 'LOGGED_IN_KEY', 'NONCE_KEY', 'AUTH_SALT', 'SECURE_AUTH_SALT',
               'LOGGED_IN_SALT', 'NONCE_SALT') as $k) {{ define($k, 'wpcdc-test-' . $k); }}
if (file_exists(__DIR__ . '/multisite.php')) {{ require __DIR__ . '/multisite.php'; }}
define('ABSPATH', {_php_str(str(WORDPRESS_DIR) + "/")});
require_once ABSPATH . 'wp-settings.php';
"""


def _php_str(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
