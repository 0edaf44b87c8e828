"""Start-up checks of the source server and the broker. Each failure names the setting, its value
and the fix; `wpcdc check` prints them all, `run` refuses to start on any failure."""

from __future__ import annotations

from dataclasses import dataclass

from cdc.config import Config
from cdc.core.tables import TableKind, table_name
from cdc.source.server import Server


@dataclass(frozen=True, slots=True)
class Finding:
    ok: bool
    what: str
    detail: str
    fix: str = ""
    warning: bool = False  # reported, but does not stop `run`


_REQUIRED_VARIABLES = [
    # (variable, required value, fix)
    ("log_bin", "ON", "start the server with --log-bin (log_bin=ON in my.cnf)"),
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
        "SET GLOBAL binlog_row_value_options='': partial JSON updates have no full after image",
    ),
]


def check_server(config: Config, server: Server) -> list[Finding]:
    out: list[Finding] = []
    names = [v for v, _, _ in _REQUIRED_VARIABLES] + [v for v, _, _ in _FORBIDDEN_VARIABLES]
    names += ["server_id", "log_slave_updates", "log_replica_updates", "read_only"]
    values = server.variables(*names)
    version = server.version()
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
        replica_updates = values.get("log_slave_updates", values.get("log_replica_updates", "OFF"))
        out.append(
            Finding(
                replica_updates.upper() == "ON",
                "log_slave_updates",
                f"the source is read-only (a replica?) and log_slave_updates={replica_updates}",
                "set log_slave_updates=ON (log_replica_updates on MySQL) or the replica's binlog lacks "
                "the replicated changes",
                warning=True,
            )
        )

    out.append(_check_privileges(server))
    out.append(_check_tables(config, server))
    return out


def _check_privileges(server: Server) -> Finding:
    grants = " ".join(server.grants()).upper()
    if "ALL PRIVILEGES ON *.*" in grants:
        return Finding(
            False,
            "privileges",
            "ALL PRIVILEGES: more than wpcdc needs",
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
