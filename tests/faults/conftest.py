from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import summary_lines
from tests.integration.conftest import Stack, make_site, site  # noqa: F401 - shared fixtures


class _Figures(list[str]):
    """Each figure names the server of the leg it was measured on."""

    server = ""

    def append(self, line: str) -> None:
        super().append(f"{self.server:8} {line}")


FIGURES = summary_lines("fault scenarios", _Figures())


@pytest.fixture(autouse=True)
def _figures_server(stack: Stack) -> Iterator[None]:
    FIGURES.server = stack.kind
    yield


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The fault scenarios' figures, in the summary of every run (CI logs included)."""
    if FIGURES:
        terminalreporter.section("fault scenarios")
        for line in FIGURES:
            terminalreporter.write_line(line)
