"""Start-up cost of wpcdc's processes: CPU seconds (user + sys, from /proc) of the reader and the
producer child for `wpcdc --help`, `wpcdc check` and a `wpcdc replay` of a tiny range (a few posts,
so nearly all of it is start-up), over several rounds; prints each process's median. Asserts nothing.

`--tree DIR` (repeatable) runs `python -m cdc.cli` from another checkout (e.g. an exported older
commit) instead of this one; the trees' runs alternate round by round, so a change of load falls on
all of them.

    .venv/bin/python bench/bench_startup.py --server mariadb --rounds 5
    .venv/bin/python bench/bench_startup.py --server mysql --tls --tree /tmp/base --tree .
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

from bench import DB, ProcessTree, drain, generate, start_servers, write_config
from cdc.dev.mysql import MySQL
from cdc.dev.stack import MYSQL_PASSWORD, MariaDB, Tansu, make_tls_files


def wpcdc_in(tree: Path, *args: str) -> subprocess.Popen[str]:
    """`python -m cdc.cli` with `tree` first on the path (its cdc package, not the installed one)."""
    env = {**os.environ, "WPCDC_MYSQL_PASSWORD": MYSQL_PASSWORD, "PYTHONPATH": str(tree)}
    return subprocess.Popen(
        [sys.executable, "-m", "cdc.cli", *args], cwd=tree,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


def measure(tree: Path, *args: str) -> dict[str, float]:
    proc = wpcdc_in(tree, *args)
    watched = ProcessTree(proc)
    err = drain(proc)
    code = watched.wait()
    if code != 0:
        raise SystemExit(f"wpcdc {' '.join(args)} failed ({code}) in {tree}:\n{err}")
    return watched.cpu_by_name()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--server", choices=["mariadb", "mysql"], default="mariadb")
    ap.add_argument("--tls", action="store_true", help="server with a throwaway CA; mysql.tls on, verified")
    ap.add_argument("--posts", type=int, default=20, help="posts in the replayed range (8 row changes each)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tree", type=Path, action="append", help="checkout to run (default: this one)")
    ap.add_argument("--dir", type=Path, default=Path("var/bench-startup"))
    args = ap.parse_args()
    trees = [t.resolve() for t in (args.tree or [Path(__file__).resolve().parent.parent])]

    shutil.rmtree(args.dir, ignore_errors=True)
    base = args.dir.resolve()
    tls_dir = make_tls_files(base / "tls") if args.tls else None
    db: MariaDB | MySQL = (MySQL if args.server == "mysql" else MariaDB)(
        base / args.server, server_id=301, tls_dir=tls_dir
    )
    broker = Tansu(base / "tansu")
    try:
        start_servers(db, broker)
        config = write_config(base, db, broker, DB)
        if tls_dir is not None:
            doc = yaml.safe_load(config.read_text())
            doc["mysql"].update(tls=True, tls_ca_file=str(tls_dir / "ca.pem"))
            config.write_text(yaml.safe_dump(doc))
        start = db.binlog_end()
        rows = generate(db, args.posts)
        end = db.binlog_end()
        print(
            f"{db.version} on :{db.port}, TLS {'verified' if tls_dir else 'as the server offers'}; {rows} row changes"
        )
        commands = {
            "--help": ["--help"],
            "check": ["check", "--config", str(config)],
            "replay": ["replay", "--config", str(config), "--from", start, "--to", end, "--sink", "kafka"],
        }
        results: dict[tuple[Path, str], list[dict[str, float]]] = {}
        for _ in range(args.rounds):
            for name, argv in commands.items():
                for tree in trees:
                    results.setdefault((tree, name), []).append(measure(tree, *argv))
            print(f"  round done, load average {os.getloadavg()[0]:.1f}", flush=True)
        for name in commands:
            for tree in trees:
                runs = results[(tree, name)]
                procs = dict.fromkeys(p for r in runs for p in r)
                figures = ", ".join(
                    f"{p} {statistics.median(r.get(p, 0.0) for r in runs):.2f} "
                    f"({min(r.get(p, 0.0) for r in runs):.2f}-{max(r.get(p, 0.0) for r in runs):.2f})"
                    for p in procs
                )
                total = statistics.median(sum(r.values()) for r in runs)
                print(f"{name:8} {tree!s:40} CPU s median (range): {figures}; total {total:.2f}")
    finally:
        broker.stop()
        db.stop()


if __name__ == "__main__":
    main()
