"""The scheduler: the first cycle as soon as the view is trusted, skipped ticks counted from the
first interval on (a standby, a view never trusted), the level of their log lines, stopping."""

from __future__ import annotations

import logging
import random

import anyio
import pytest

from controller.scheduling import NOT_LEADER, UNTRUSTED_VIEW, Blocked, Schedule, run_schedule

INTERVAL = 0.4
FAST = Schedule(INTERVAL, poll=0.01)


class Recorder:
    def __init__(self) -> None:
        self.cycles = 0
        self.skips: list[Blocked] = []

    async def cycle(self) -> None:
        self.cycles += 1

    def skipped(self, block: Blocked) -> None:
        self.skips.append(block)


async def run_for(
    seconds: float,
    blocked: object,
    recorder: Recorder,
    schedule: Schedule = FAST,
) -> anyio.Event:
    stopping = anyio.Event()
    with anyio.move_on_after(seconds):
        await run_schedule(
            recorder.cycle,
            blocked=blocked,  # type: ignore[arg-type]
            schedule=schedule,
            on_skip=recorder.skipped,
            stopping=stopping,
            rnd=random.Random(1),
        )
    return stopping


async def test_the_first_cycle_runs_as_soon_as_the_view_is_trusted() -> None:
    recorder = Recorder()
    started = anyio.current_time()
    ready_at = started + 0.05

    def blocked() -> Blocked | None:
        if anyio.current_time() < ready_at:
            return Blocked(UNTRUSTED_VIEW, "initial LIST not complete")
        return None

    async def cycle() -> None:
        recorder.cycles += 1
        if recorder.cycles == 1:
            first.append(anyio.current_time() - started)

    first: list[float] = []
    recorder.cycle = cycle  # type: ignore[method-assign]
    await run_for(INTERVAL * 2.5, blocked, recorder)
    assert first
    assert first[0] < INTERVAL / 2  # not after a whole interval
    assert recorder.cycles == 3  # then one per interval
    assert recorder.skips == []  # waiting for the first LIST within one interval is no skip


async def test_a_standby_counts_one_skip_per_interval_from_the_first(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # before the fix nothing was counted until a first cycle, which a standby never runs
    recorder = Recorder()
    standby = Blocked(NOT_LEADER, "not leader: held by pod-a", expected=True)
    with caplog.at_level(logging.INFO, logger="controller.scheduling"):
        await run_for(INTERVAL * 3.5, lambda: standby, recorder)
    assert recorder.cycles == 0
    assert recorder.skips == [standby] * 3
    skips = [r for r in caplog.records if "no cycle yet" in r.getMessage()]
    assert len(skips) == 3
    assert {r.levelno for r in skips} == {logging.INFO}  # a healthy standby is no warning


async def test_a_view_never_trusted_warns_once_an_interval_has_passed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Recorder()
    denied = Blocked(UNTRUSTED_VIEW, "prod/pods: answers 403: Forbidden")
    with caplog.at_level(logging.INFO, logger="controller.scheduling"):
        await run_for(INTERVAL * 2.5, lambda: denied, recorder)
    assert recorder.skips == [denied] * 2
    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert lines[0] == (
        logging.INFO,
        "first cycle waits: untrusted-view: prod/pods: answers 403: Forbidden",
    )
    warnings = [m for level, m in lines if level == logging.WARNING]
    assert len(warnings) == 2
    assert warnings[0].startswith("no cycle yet, 0s after start: untrusted-view: prod/pods")


async def test_lease_trouble_is_a_warning_not_a_standby() -> None:
    recorder = Recorder()
    failing = Blocked(NOT_LEADER, "not leader: reading the Lease: HTTP 403 Forbidden")
    assert failing.expected is False
    await run_for(INTERVAL * 1.5, lambda: failing, recorder)
    assert recorder.skips == [failing]


async def test_ticks_after_a_cycle_are_skipped_with_their_reason() -> None:
    recorder = Recorder()
    block: list[Blocked | None] = [None]

    async def cycle() -> None:
        recorder.cycles += 1
        block[0] = Blocked(UNTRUSTED_VIEW, "stale")

    recorder.cycle = cycle  # type: ignore[method-assign]
    await run_for(INTERVAL * 3.5, lambda: block[0], recorder)
    assert recorder.cycles == 1
    assert [b.reason for b in recorder.skips] == [UNTRUSTED_VIEW] * 3


async def test_stopping_ends_the_schedule_promptly_even_mid_wait() -> None:
    recorder = Recorder()
    stopping = anyio.Event()
    long = Schedule(3600, poll=0.01)
    with anyio.fail_after(1):
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                lambda: run_schedule(
                    recorder.cycle,
                    blocked=lambda: None,
                    schedule=long,
                    on_skip=recorder.skipped,
                    stopping=stopping,
                )
            )
            await anyio.sleep(0.05)
            stopping.set()
    assert recorder.cycles == 1


async def test_stopping_during_the_first_wait_runs_no_cycle() -> None:
    recorder = Recorder()
    stopping = anyio.Event()
    stopping.set()
    with anyio.fail_after(1):
        await run_schedule(
            recorder.cycle,
            blocked=lambda: Blocked(UNTRUSTED_VIEW, "not synced"),
            schedule=FAST,
            on_skip=recorder.skipped,
            stopping=stopping,
        )
    assert recorder.cycles == 0


def test_every_skip_reason_is_declared() -> None:
    from controller.scheduling import SKIP_REASONS

    assert SKIP_REASONS == (UNTRUSTED_VIEW, NOT_LEADER)
