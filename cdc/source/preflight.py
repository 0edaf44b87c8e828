"""Start-up checks of the source server and the broker. Each failure names the setting, its value
and the fix; `wpcdc check` prints them all, `run` refuses to start on any failure."""

from __future__ import annotations

import re
from dataclasses import dataclass

from cdc.config import Config
from cdc.core.tables import TableKind, table_name
from cdc.source.server import LOG_BIN_FIX, Server


@dataclass(frozen=True, slots=True)
class Finding:
    ok: bool
    what: str
    detail: str
    fix: str = ""
    warning: bool = False  # reported, but does not stop `run`


_REQUIRED_VARIABLES = [
    # (variable, required value, fix)
    ("log_bin", "ON", LOG_BIN_FIX),
    ("binlog_format", "ROW", "SET GLOBAL binlog_format=ROW and put binlog_format=ROW in my.cnf"),
    ("binlog_row_image", "FULL", "SET GLOBAL binlog_row_image=FULL and put it in my.cnf; before images are needed"),
    (
        "binlog_row_metadata",
        "FULL",
        "SET GLOBAL binlog_row_metadata=FULL (MySQL >= 8.0.14, MariaDB >= 10.5) and put it in my.cnf; "
        "without it the binlog has no column names",
    ),
]

_FORBIDDEN_VARIABLES = [
    ("log_bin_compress", "ON", "SET GLOBAL log_bin_compress=OFF: compressed rows events cannot be decoded"),
    (
        "binlog_row_value_options",
        "PARTIAL_JSON",
        "SET PERSIST binlog_row_value_options='' (MySQL; or put binlog_row_value_options='' in my.cnf): "
        "partial JSON updates have no full after image",
    ),
]


_WRITE_PRIVILEGES = ("INSERT", "UPDATE", "DELETE", "DROP", "ALTER", "SUPER")


def check_server(config: Config, server: Server) -> list[Finding]:
    out: list[Finding] = []
    names = [v for v, _, _ in _REQUIRED_VARIABLES] + [v for v, _, _ in _FORBIDDEN_VARIABLES]
    names += ["server_id", "log_slave_updates", "log_replica_updates", "read_only", "gtid_mode"]
    names += ["binlog_expire_logs_seconds", "expire_logs_days", "binlog_expire_logs_auto_purge"]
    values = server.variables(*names)
    version = server.version()
    mariadb = "mariadb" in version.lower()
    out.append(Finding(True, "server", version))

    for var, required, fix in _REQUIRED_VARIABLES:
        value = values.get(var)
        if value is None:
            out.append(
                Finding(False, var, "not supported by this server version", "use MySQL >= 8.0.14 or MariaDB >= 10.5")
            )
        else:
            out.append(Finding(value.upper() == required, var, f"{var}={value} (need {required})", fix))
    for var, bad, fix in _FORBIDDEN_VARIABLES:
        value = values.get(var)
        if value is not None and value.upper() == bad:
            out.append(Finding(False, var, f"{var}={value}", fix))

    source_id = int(values.get("server_id", "0"))
    out.append(
        Finding(
            source_id != config.mysql.server_id,
            "mysql.server_id",
            f"reader server_id {config.mysql.server_id}, source server_id {source_id}",
            "set mysql.server_id to a value no server or replica in the topology uses",
        )
    )
    if values.get("read_only", "OFF").upper() == "ON":
        # MySQL 8.0.26 renamed log_slave_updates to log_replica_updates; MariaDB kept the old name.
        var = "log_replica_updates" if "log_replica_updates" in values else "log_slave_updates"
        replica_updates = values.get(var, "OFF")
        out.append(
            Finding(
                replica_updates.upper() == "ON",
                var,
                f"the source is read-only (a replica?) and {var}={replica_updates}",
                f"put {var}=ON in the replica's my.cnf and restart it, or its binlog lacks the replicated changes",
                warning=True,
            )
        )
    out.append(_check_gtid_mode(values, mariadb))
    out.append(_check_retention(values))

    out.append(_check_privileges(server))
    out.append(_check_tables(config, server))
    return out


def _check_gtid_mode(values: dict[str, str], mariadb: bool) -> Finding:
    """GTIDs are not needed to stream (positions are FILE:POS) but fill each event's source.gtid."""
    if mariadb:
        return Finding(True, "gtid_mode", "MariaDB writes a GTID for every transaction")
    mode = values.get("gtid_mode", "OFF")
    return Finding(
        mode.upper() == "ON",
        "gtid_mode",
        f"gtid_mode={mode}" + ("" if mode.upper() == "ON" else ": events carry no source.gtid"),
        "turn GTIDs on (enforce_gtid_consistency=ON, then gtid_mode OFF_PERMISSIVE, ON_PERMISSIVE, ON with "
        "SET PERSIST) to get source.gtid on every event",
        warning=True,
    )


_MIN_RETENTION_SECONDS = 24 * 3600


def _check_retention(values: dict[str, str]) -> Finding:
    """How long the server keeps binlogs is how long wpcdc may be down without losing its place.
    binlog_expire_logs_seconds: MySQL >= 8.0, MariaDB >= 10.6; expire_logs_days before (0 = never)."""
    fix = (
        "SET PERSIST binlog_expire_logs_seconds=604800 (MySQL; SET GLOBAL and my.cnf on MariaDB) or longer "
        "than wpcdc could be down"
    )
    if values.get("binlog_expire_logs_auto_purge", "ON").upper() == "OFF":  # MySQL >= 8.0.29
        return Finding(True, "binlog_expire_logs_seconds", "binlog_expire_logs_auto_purge=OFF: never expired")
    seconds = _number(values.get("binlog_expire_logs_seconds"))
    var = "binlog_expire_logs_seconds"
    if not seconds:
        seconds = _number(values.get("expire_logs_days")) * 86400
        var = "expire_logs_days" if seconds else var
    if not seconds:
        return Finding(True, "binlog_expire_logs_seconds", "binlogs are never expired (purged by hand only)")
    detail = f"{var}={values.get(var)} (binlogs kept {seconds / 3600:g} h)"
    if seconds < _MIN_RETENTION_SECONDS:
        return Finding(False, "binlog_expire_logs_seconds", detail + ": less than a day", fix, warning=True)
    return Finding(True, "binlog_expire_logs_seconds", detail)


def _number(value: str | None) -> float:
    try:
        return float(value or 0)
    except ValueError:
        return 0.0


def _check_privileges(server: Server) -> Finding:
    rows = [g.upper() for g in server.grants()]
    grants = " ".join(rows)
    # MySQL lists ALL PRIVILEGES ON *.* as the privileges themselves: look for global write rights too.
    writes = [p for p in _WRITE_PRIVILEGES if any(re.search(rf"(^|[ ,]){p}(?=[ ,]).* ON \*\.\* ", g) for g in rows)]
    if "ALL PRIVILEGES ON *.*" in grants or writes:
        return Finding(
            False,
            "privileges",
            f"{'ALL PRIVILEGES' if 'ALL PRIVILEGES ON *.*' in grants else ', '.join(writes) + ' ON *.*'}: "
            "more than wpcdc needs",
            "grant only REPLICATION SLAVE, REPLICATION CLIENT ON *.* and SELECT on the WordPress schema",
            warning=True,
        )
    slave = "REPLICATION SLAVE" in grants or "REPLICATION REPLICA" in grants
    # MariaDB >= 10.5 calls REPLICATION CLIENT "BINLOG MONITOR".
    client = "REPLICATION CLIENT" in grants or "BINLOG MONITOR" in grants or "SUPER" in grants
    missing = [n for n, ok in (("REPLICATION SLAVE", slave), ("REPLICATION CLIENT", client)) if not ok]
    return Finding(
        not missing,
        "privileges",
        "replication privileges present" if not missing else f"missing {', '.join(missing)}",
        "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO the wpcdc user",
    )


def _check_tables(config: Config, server: Server) -> Finding:
    db = config.wordpress.database
    present = set(server.tables(db))
    prefix = config.wordpress.table_prefix
    missing = [table_name(prefix, 1, k) for k in TableKind if table_name(prefix, 1, k) not in present]
    return Finding(
        not missing,
        "tables",
        f"WordPress tables in {db!r} with prefix {prefix!r}"
        + ("" if not missing else f": missing {', '.join(missing)}"),
        "set wordpress.database and wordpress.table_prefix to match wp-config.php ($table_prefix), and "
        "GRANT SELECT ON the WordPress schema",
    )


def failures(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if not f.ok and not f.warning]
