"""Shared pytest fixtures: the anyio backend (asyncio only: kubernetes_asyncio and aiobotocore need it);
the hypothesis profiles.

`HYPOTHESIS_PROFILE=thorough` runs 10,000 examples of each property that leaves the count to
the profile (tests/test_safety_properties.py; see docs/safety-properties.md). Without it the
properties run their small default counts inside the normal test command.
"""

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

# the end-to-end world's fixtures (`world`, and `seed_once` under it) for every test module
pytest_plugins = ("tests.worlds",)

settings.register_profile(
    "thorough",
    max_examples=10_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
if os.environ.get("HYPOTHESIS_PROFILE"):
    settings.load_profile(os.environ["HYPOTHESIS_PROFILE"])


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def pytest_sessionfinish(session: pytest.Session) -> None:
    """In a pytest-xdist worker: hand the figures its tests measured to the controller."""
    from tests.figures import FIGURES

    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["figures"] = list(FIGURES)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """In the pytest-xdist controller: collect a finished worker's figures for the summary."""
    from tests.figures import FIGURES

    FIGURES.extend(getattr(node, "workeroutput", {}).get("figures", []))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print what tests measured (tests/figures.py), e.g. the container image's size."""
    from tests.figures import FIGURES

    if FIGURES:
        terminalreporter.section("measured")
        for line in FIGURES:
            terminalreporter.write_line(line)
