"""The pure parts of `make bench`'s Debezium comparison (bench/debezium_harness.py): reading the
harness's result line, the GTID state Debezium resumes from, and the goal lines' maths."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    # bench/ is scripts, not a package: load the module by path.
    spec = importlib.util.spec_from_file_location("debezium_harness", ROOT / "bench" / "debezium_harness.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("debezium_harness", module)
    spec.loader.exec_module(module)
    return module


dbz = _load()


def _line(**over: object) -> str:
    data: dict[str, object] = {
        "rows": 3,
        "expected": 3,
        "first_to_last_s": 0.25,
        "main_to_last_s": 4.0,
        "jvm_start_to_last_s": 4.5,
        "by_table": {"bench.wp_bench.wp_posts": 2, "bench.wp_bench.wp_postmeta": 1},
        "error": None,
    }
    data.update(over)
    return dbz.RESULT_PREFIX + json.dumps(data)


def test_the_result_line_is_found_among_the_engines_output() -> None:
    out = "[main] INFO io.debezium... starting\n" + _line() + "\n[main] INFO stopped\n"
    r = dbz.parse_result(out)
    assert (r.rows, r.first_to_last_s) == (3, 0.25)
    assert r.by_table == {"bench.wp_bench.wp_posts": 2, "bench.wp_bench.wp_postmeta": 1}


def test_a_failed_run_is_an_error_naming_the_engines_reason() -> None:
    with pytest.raises(dbz.HarnessError, match="SHOW BINARY LOG STATUS"):
        dbz.parse_result(_line(rows=0, error="engine stopped: should support SHOW BINARY LOG STATUS"))


def test_a_short_count_is_an_error_not_a_rate() -> None:
    with pytest.raises(dbz.HarnessError, match="delivered 2 change records, expected 3"):
        dbz.parse_result(_line(rows=2))


def test_no_result_line_is_an_error() -> None:
    with pytest.raises(dbz.HarnessError, match="no result line"):
        dbz.parse_result("Exception in thread main\n")


def test_gtid_state_mysql_takes_the_status_rows_executed_set_without_newlines() -> None:
    row = ("binlog.000001", 4891, "", "", "5334c8c8-eda5-11f1-8894-02fc00000001:1-11,\n9a1e-0002:1-3")
    assert dbz.gtid_state("mysql", row, None) == "5334c8c8-eda5-11f1-8894-02fc00000001:1-11,9a1e-0002:1-3"
    assert dbz.gtid_state("mysql", ("binlog.000001", 4), None) == ""  # gtid_mode=OFF: by file:pos


def test_gtid_state_mariadb_is_its_binlog_pos() -> None:
    assert dbz.gtid_state("mariadb", ("binlog.000001", 4891, "", ""), "0-301-9") == "0-301-9"


@pytest.mark.parametrize(
    ("rate", "cpu", "rate_word", "cpu_word"),
    [
        ((15000, 10000), (0.10, 0.30), "1.50x (>= 1.5x: met)", "0.33 (<= 0.33: met)"),
        ((14900, 10000), (0.11, 0.30), "1.49x (>= 1.5x: NOT met)", "0.37 (<= 0.33: NOT met)"),
    ],
)
def test_goal_lines(rate: tuple[float, float], cpu: tuple[float, float], rate_word: str, cpu_word: str) -> None:
    lines = dbz.ratio_goals(rate[0], rate[1], cpu[0], cpu[1])
    assert lines == [
        f"goal wpcdc / Debezium streaming rate: {rate_word}",
        f"goal CPU per row change wpcdc / Debezium: {cpu_word}",
    ]


def test_the_command_keeps_the_password_out_of_argv() -> None:
    cmd = dbz.command(
        "cp", "mariadb", host="127.0.0.1", port=3306, user="wpcdc", database="wp_bench",
        tables=["wp_posts", "wp_postmeta"], start="binlog.000001:4891", gtids="0-301-9", rows=10,
        workdir=Path("/tmp/x"),
    )  # fmt: skip
    assert "connector=io.debezium.connector.mariadb.MariaDbConnector" in cmd
    assert {"file=binlog.000001", "pos=4891", "gtids=0-301-9", "tables=wp_posts,wp_postmeta"} <= set(cmd)
    assert not any(a.startswith("password=") for a in cmd)
