"""The seeded world for end-to-end tests (sandbox/world.py): seeded through moto's API once per
test process, planted fresh for every test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.moto import CREDENTIALS
from sandbox.world import Seed, World, seeded_world

__all__ = ["World", "seed_once", "world"]


@pytest.fixture(scope="session")
def seed_once() -> Seed:
    """The scenario seeded through moto's API (about 1,300 PutImage calls), once per process."""
    return Seed.take()


@pytest.fixture
def world(seed_once: Seed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """A fresh moto server and API-server simulator holding the whole seeded scenario."""
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    # short pages: the server answers fewer items than `limit`; the LIST must follow `continue`
    with seeded_world(
        tmp_path, token="e2e-token", context="e2e", short_pages=True, planted=seed_once
    ) as seeded:
        yield seeded
