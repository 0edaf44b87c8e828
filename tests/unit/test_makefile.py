"""What `make demo` / `make test` / CI do on a fresh machine, read from the Makefile and .ci/run."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _prerequisites(target: str) -> list[str]:
    if shutil.which("make") is None:
        pytest.fail("make is not installed")
    # -p prints make's own database of rules; -q runs no recipe.
    db = subprocess.run(["make", "-p", "-q", "-n", target], cwd=ROOT, capture_output=True, text=True).stdout
    found = re.search(rf"^{target}:(.*)$", db, re.M)
    assert found, f"no rule for {target}"
    return found.group(1).split()


def test_demo_installs_the_real_wordpress_as_test_does() -> None:
    assert "wordpress" in _prerequisites("test")
    assert "wordpress" in _prerequisites("demo"), "the README promises a real WordPress for `make demo`"


@pytest.mark.parametrize("path", ["Makefile", ".ci/run"])
def test_apt_get_waits_for_the_dpkg_lock(path: str) -> None:
    text = (ROOT / path).read_text()
    # Resolve the one indirection each file uses (a make variable, a bash array) to the real command.
    expanded = text.replace("$(APT_GET)", "apt-get -o DPkg::Lock::Timeout=600 (APT_GET)")
    if "apt_get=(apt-get -o DPkg::Lock::Timeout=" in text:
        expanded = expanded.replace('"${apt_get[@]}"', "apt-get -o DPkg::Lock::Timeout=600 (apt_get)")
    expanded = re.sub(r'"[^"\n]*"', '""', expanded)  # messages that name the command do not run it
    calls = re.findall(r"apt-get\b[^\n;&|]*?\b(?:update|install)\b", expanded)
    assert calls, f"{path} installs nothing with apt-get any more: drop this test"
    for call in calls:
        assert "DPkg::Lock::Timeout=" in call, f"{path}: `{call}` fails at once when another apt holds the lock"
