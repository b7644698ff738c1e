"""When cycles run: the first as soon as the view is trusted, then one every interval (with jitter).

Cycles never overlap: the next wait starts when a cycle ends. A tick at which the view is not
trusted, or this replica is not the leader, is skipped and counted with its reason; the
first cycle instead waits (polling) until the view is trusted, so a fresh start does not
lose a whole interval to the initial LIST.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Schedule:
    interval: float
    # seconds between the end of one cycle and the start of the next
    jitter: float = 0.0
    # each wait is interval × (1 ± jitter), uniformly
    poll: float = 0.5
    # how often the first cycle checks whether the view is trusted


def next_wait(schedule: Schedule, rnd: random.Random) -> float:
    if schedule.jitter <= 0:
        return schedule.interval
    return schedule.interval * rnd.uniform(1 - schedule.jitter, 1 + schedule.jitter)


@dataclass(frozen=True, slots=True)
class Blocked:
    """Why a cycle must not run now: a short label (a metric label value) and the detail."""

    reason: str
    detail: str


async def run_schedule(
    cycle: Callable[[], Awaitable[object]],
    *,
    blocked: Callable[[], Blocked | None],
    schedule: Schedule,
    on_skip: Callable[[Blocked], None],
    rnd: random.Random | None = None,
) -> None:
    """Run `cycle` forever on `schedule`; `blocked` says why a cycle must not run now."""
    rnd = rnd or random.Random()
    waited_for: Blocked | None = None
    while (block := blocked()) is not None:
        if block != waited_for:
            log.info("first cycle waits: %s: %s", block.reason, block.detail)
            waited_for = block
        await anyio.sleep(schedule.poll)
    while True:
        await cycle()
        await anyio.sleep(next_wait(schedule, rnd))
        while (block := blocked()) is not None:
            on_skip(block)
            log.warning(
                "cycle skipped: %s: %s", block.reason, block.detail, extra={"reason": block.reason}
            )
            await anyio.sleep(next_wait(schedule, rnd))
