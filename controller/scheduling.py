"""When cycles run: the first as soon as the view is trusted, then one every interval (with jitter).

Cycles never overlap: the next wait starts when a cycle ends. A tick at which the view is not
trusted, or this replica is not the leader, is skipped, counted with its reason and logged;
the first cycle instead waits (polling) until the view is trusted, so a fresh start does not
lose a whole interval to the initial LIST, but every interval that passes without a first
cycle counts as a skipped tick too: a replica that can never prune (a standby, a Lease it
may not write, a source answering 403 from the start) shows it from the first interval on.
The schedule ends when `stopping` is set, after the cycle in progress (if any) returns.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

import anyio

from controller.settings import format_duration

log = logging.getLogger(__name__)

UNTRUSTED_VIEW = "untrusted-view"
NOT_LEADER = "not-leader"
SKIP_REASONS = (UNTRUSTED_VIEW, NOT_LEADER)
"""Every `Blocked.reason` (the label values of the skipped-cycles metric)."""


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
    # one of SKIP_REASONS
    detail: str
    expected: bool = False
    # a normal state, such as a standby replica while another holds the Lease: the skip is
    # counted all the same, but logged at INFO instead of WARNING


async def run_schedule(
    cycle: Callable[[], Awaitable[object]],
    *,
    blocked: Callable[[], Blocked | None],
    schedule: Schedule,
    on_skip: Callable[[Blocked], None],
    stopping: anyio.Event,
    rnd: random.Random | None = None,
) -> None:
    """Run `cycle` on `schedule` until `stopping` is set; `blocked` says why it must not run now."""
    rnd = rnd or random.Random()
    started = anyio.current_time()
    tick = started + next_wait(schedule, rnd)
    announced: Blocked | None = None
    while (block := blocked()) is not None:
        now = anyio.current_time()
        if now >= tick:
            on_skip(block)
            _log_skip(
                block,
                f"no cycle yet, {format_duration(timedelta(seconds=round(now - started)))} after start",
            )
            tick = now + next_wait(schedule, rnd)
        elif block != announced:
            log.info("first cycle waits: %s: %s", block.reason, block.detail)
            announced = block
        if await _sleep_or_stop(schedule.poll, stopping):
            return
    while not stopping.is_set():
        await cycle()
        while True:
            if await _sleep_or_stop(next_wait(schedule, rnd), stopping):
                return
            block = blocked()
            if block is None:
                break
            on_skip(block)
            _log_skip(block, "cycle skipped")


def _log_skip(block: Blocked, what: str) -> None:
    log.log(
        logging.INFO if block.expected else logging.WARNING,
        "%s: %s: %s",
        what,
        block.reason,
        block.detail,
        extra={"reason": block.reason},
    )


async def _sleep_or_stop(seconds: float, stopping: anyio.Event) -> bool:
    """Sleep for `seconds`, or less if `stopping` is set meanwhile; whether it is set."""
    with anyio.move_on_after(seconds):
        await stopping.wait()
    return stopping.is_set()
