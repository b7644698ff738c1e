"""Waiting in tests for a state that has no event to wait on: poll it, within a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio


async def eventually(predicate: Callable[[], bool], within: float = 2.0) -> float:
    """Wait until `predicate` holds, polling every 2 ms; returns how long it took.

    Fails (TimeoutError) after `within` seconds."""
    start = time.monotonic()
    with anyio.fail_after(within):
        while not predicate():  # noqa: ASYNC110 - polling shared state is the point here
            await anyio.sleep(0.002)
    return time.monotonic() - start
