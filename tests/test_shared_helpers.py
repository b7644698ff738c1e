"""The helpers the tests, the sandbox and the benchmarks share (tests/digests.py, tests/waiting.py,
sandbox/ports.py): each written once, so each checked once."""

from __future__ import annotations

import re
import socket

import anyio
import pytest

from sandbox.ports import free_port
from tests.digests import digest, repo_digest
from tests.waiting import eventually

WELL_FORMED = re.compile(r"^sha256:[0-9a-f]{64}$")


def test_made_up_digests_are_well_formed_and_distinct() -> None:
    made = [digest(n) for n in range(300)] + [repo_digest(r, n) for r in (1, 2) for n in range(300)]
    assert all(WELL_FORMED.match(d) for d in made)
    assert len(set(made)) == len(made)
    assert repo_digest(0, 7) == digest(7) == "sha256:" + "0" * 63 + "7"


def test_a_free_port_can_be_bound() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port()))


async def test_eventually_returns_once_the_predicate_holds() -> None:
    flag: list[bool] = []
    async with anyio.create_task_group() as tg:

        async def later() -> None:
            await anyio.sleep(0.05)
            flag.append(True)

        tg.start_soon(later)
        waited = await eventually(lambda: bool(flag), within=2.0)
    assert 0.04 <= waited < 2.0


async def test_eventually_fails_at_its_deadline() -> None:
    with pytest.raises(TimeoutError):
        await eventually(lambda: False, within=0.05)
