from typing import Any

from tests.integration.conftest import make_site, site  # noqa: F401 - shared fixtures

FIGURES: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The fault scenarios' figures, in the summary of every run (CI logs included)."""
    if FIGURES:
        terminalreporter.section("fault scenarios")
        for line in FIGURES:
            terminalreporter.write_line(line)
