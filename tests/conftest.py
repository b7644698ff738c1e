"""Shared pytest fixtures: the anyio backend (asyncio only: kubernetes_asyncio and aiobotocore need it);
the end-to-end world (tests/worlds.py); the hypothesis profile (tests/profiles.py).

`HYPOTHESIS_PROFILE=ci` (what `.ci/run` sets) runs every property's full count, the default
`local` a quarter of it; `HYPOTHESIS_PROFILE=thorough` runs 10,000 examples of each property
that leaves the count to the profile (tests/test_safety_properties.py; see
docs/safety-properties.md).
"""

from typing import Any

import pytest

import tests.profiles  # noqa: F401 - registers and loads the hypothesis profile

# the end-to-end world's fixtures (`world`, and `seed_once` under it) for every test module
pytest_plugins = ("tests.worlds",)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def no_back_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore's retries (standard and adaptive modes) and the ECR gateway's own (its reads,
    `RetryPolicy`) without their waits: for the tests of what is retried, not of how long a
    retry waits (those keep the real back-off)."""
    from botocore.retries import standard

    from controller.ecr import RetryPolicy

    monkeypatch.setattr(standard.ExponentialBackoff, "delay_amount", lambda _self, _ctx: 0.0)
    monkeypatch.setattr(RetryPolicy, "delay", lambda _self, _retry: 0.0)


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
