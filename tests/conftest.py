"""Shared pytest fixtures: the anyio backend (asyncio only: kubernetes_asyncio and aiobotocore need it)."""

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print what tests measured (tests/figures.py), e.g. the container image's size."""
    from tests.figures import FIGURES

    if FIGURES:
        terminalreporter.section("measured")
        for line in FIGURES:
            terminalreporter.write_line(line)
