"""A throttled BatchDeleteImage is retried by the pruner, never by the SDK, and every attempt is
checked again: the race from the safety review, end to end through the real parts.

The ECR side is the ECR simulator through aioboto3 (the real gateway); the cluster is the
API-server simulator, watched by the real Watcher. BatchDeleteImage is throttled N times; 0.1 s
after the first attempt a rollback pod starts that runs an image of the batch. Before the fix,
botocore's adaptive retry resent the batch after its back-off with no new check, and the
image was deleted under the pod with no veto counted.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from controller.clusters import connect
from controller.ecr import AioEcr, EcrError, RetryPolicy, open_ecr
from controller.identifiers import SourceKey
from controller.images import Digest
from controller.inventory import InUseIndex
from controller.kinds import KINDS
from controller.policy import Rules
from controller.pruning import CycleReport, PruneOptions, Pruner
from controller.settings import RepositorySelection
from controller.trust import SourceTracker, View
from controller.watching import Watcher, WatchOptions
from sandbox.ecrsim import EcrSimulator
from sandbox.kubesim import KubeSimulator, pod, write_kubeconfig
from tests.waiting import eventually

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
HOST = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
TOKEN = "retry-token"
PODS = SourceKey("sim", "pods")
STEADY = RetryPolicy(base=0.3, max_backoff=0.3, jitter=lambda: 1.0)
# 0.3 s before every retry: time for the rollback pod (0.1 s after the first attempt) to be seen


@dataclass
class Rig:
    ecr_sim: EcrSimulator
    kube: KubeSimulator
    ecr: AioEcr
    index: InUseIndex
    tracker: SourceTracker
    digests: list[str]

    def gate(self) -> str | None:
        return self.tracker.refusal(
            self.index, time.monotonic(), max_staleness=300, may_be_empty=lambda _s: False
        )

    def pruner(self, retry: RetryPolicy = STEADY) -> Pruner:
        return Pruner(
            self.ecr,
            self.index,
            PruneOptions(
                RepositorySelection(("app",)),
                lambda _name: Rules(max_images=10),
                dry_run=False,
                delete_retry=retry,
            ),
        )

    def delete_requests(self) -> list[list[str]]:
        return [
            [i["imageDigest"] for i in r.params["imageIds"]]
            for r in self.ecr_sim.requests
            if r.operation == "BatchDeleteImage"
        ]


@pytest.fixture
async def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Rig]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    async with EcrSimulator() as ecr_sim, KubeSimulator(token=TOKEN) as kube:
        ecr_sim.create_repository("app")
        digests = [
            ecr_sim.add_image(
                "app",
                tags=(f"build-{n}",),
                pushed_at=NOW - timedelta(hours=n),
                config_seed=f"app-{n}",
            )
            for n in range(150)
        ]
        kube.create("pods", pod("web-1", "shop", {"web": f"{HOST}/app:build-0"}))
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"sim": kube}, token=TOKEN)
        async with (
            connect(kubeconfig=str(kubeconfig), contexts=(), in_cluster=False) as (cluster,),
            open_ecr(
                region="us-east-1",
                registry_id=None,
                concurrency=4,
                endpoint_url=ecr_sim.endpoint_url,
            ) as ecr,
            anyio.create_task_group() as tg,
        ):
            index, tracker = InUseIndex(), SourceTracker()
            watcher = Watcher(
                cluster,
                KINDS["pods"],
                "",
                view=View(index, tracker),
                options=WatchOptions(timeout_seconds=30, backoff_initial=0.02, backoff_max=0.1),
            )
            tg.start_soon(watcher.run)
            with anyio.fail_after(5):
                while not index.is_synced(PODS):  # noqa: ASYNC110 - waiting on shared state
                    await anyio.sleep(0.01)
            yield Rig(ecr_sim, kube, ecr, index, tracker, digests)
            tg.cancel_scope.cancel()


async def rollback_after_first_delete(rig: Rig, victim: str, *, delay: float = 0.1) -> None:
    """Start a pod running `victim` `delay` seconds after the first BatchDeleteImage arrives."""
    with anyio.fail_after(10):
        while not rig.delete_requests():  # noqa: ASYNC110 - polling the simulator's record
            await anyio.sleep(0.005)
    await anyio.sleep(delay)
    rig.kube.create(
        "pods",
        pod(
            "rollback",
            "shop",
            {"web": f"{HOST}/app@{victim}"},
            image_ids={"web": f"{HOST}/app@{victim}"},
        ),
    )


async def cycle_with_rollback(rig: Rig, victim: str, pruner: Pruner) -> CycleReport:
    async with anyio.create_task_group() as tg:
        tg.start_soon(rollback_after_first_delete, rig, victim)
        report = await pruner.run_cycle(now=NOW, gate=rig.gate, clock=lambda: NOW)
    return report


@pytest.mark.parametrize("throttled", [1, 3, 8])
async def test_a_rollback_during_the_back_off_keeps_its_image(rig: Rig, throttled: int) -> None:
    victim = rig.digests[120]  # among the 100 oldest: in the first batch
    rig.ecr_sim.throttle("BatchDeleteImage", times=throttled)
    report = await cycle_with_rollback(rig, victim, rig.pruner())

    (repo,) = report.repositories
    assert victim in rig.ecr_sim.digests("app"), "the retried call deleted the rollback's image"
    assert repo.vetoed == 1
    requests = rig.delete_requests()
    # the first batch: the throttled attempts, then the retry that went through; then batch 2
    assert len(requests) == throttled + 2
    first_batch = requests[: throttled + 1]
    assert all(victim in attempt for attempt in first_batch[:1])
    assert victim not in first_batch[-1]  # checked again before the attempt that deleted
    assert all(victim not in later for later in requests[throttled + 1 :])
    assert len(repo.deleted) == 139
    assert len(rig.ecr_sim.digests("app")) == 11  # 10 kept by the count, 1 by the rollback
    assert rig.ecr.stats.throttles["BatchDeleteImage"] == throttled
    assert repo.ok


async def test_the_sdk_itself_never_retries_a_delete(rig: Rig) -> None:
    target = (await rig.ecr.repositories(["app"])).repositories[0]
    rig.ecr_sim.throttle("BatchDeleteImage", times=1)
    with pytest.raises(EcrError) as caught:
        await rig.ecr.delete(target, [Digest(rig.digests[149])])
    assert caught.value.code == "ThrottlingException"
    assert caught.value.retryable
    assert len(rig.delete_requests()) == 1  # one call, one attempt
    assert rig.digests[149] in rig.ecr_sim.digests("app")


async def test_reading_calls_are_retried(rig: Rig) -> None:
    target = (await rig.ecr.repositories(["app"])).repositories[0]
    rig.ecr_sim.reset_calls()
    rig.ecr_sim.throttle("DescribeImages", times=2)
    assert len(await rig.ecr.images(target)) == 150
    assert rig.ecr_sim.calls["DescribeImages"] == 3


async def test_leadership_lost_during_the_back_off_sends_no_retry(rig: Rig) -> None:
    rig.ecr_sim.throttle("BatchDeleteImage", times=2)
    attempts: list[int] = []

    def gate() -> str | None:
        attempts.append(len(rig.delete_requests()))
        return "not-leader: lease lost" if len(rig.delete_requests()) >= 1 else rig.gate()

    report = await rig.pruner().run_cycle(now=NOW, gate=gate, clock=lambda: NOW)
    (repo,) = report.repositories
    assert len(rig.delete_requests()) == 1  # the throttled first attempt, and no retry
    assert len(rig.ecr_sim.digests("app")) == 150
    assert repo.held_back == 140
    assert [str(e) for e in repo.errors] == [
        "stopped before deleting 140 image(s): not-leader: lease lost"
    ]


async def test_a_delete_that_keeps_failing_gives_up_within_its_budget(rig: Rig) -> None:
    rig.ecr_sim.server_error("BatchDeleteImage", times=50)
    budget = RetryPolicy(attempts=50, base=0.1, max_backoff=0.1, budget=0.5, jitter=lambda: 1.0)
    started = time.monotonic()
    report = await rig.pruner(budget).run_cycle(now=NOW, gate=rig.gate, clock=lambda: NOW)
    elapsed = time.monotonic() - started
    (repo,) = report.repositories
    assert [(e.operation, e.code) for e in repo.errors] == [("BatchDeleteImage", "ServerException")]
    assert len(rig.delete_requests()) == 6  # 5 waits of 0.1 s fill the 0.5 s budget
    assert elapsed < 5
    assert len(rig.ecr_sim.digests("app")) == 150


def test_the_default_policy_is_botocore_s_back_off() -> None:
    policy = RetryPolicy(jitter=lambda: 1.0)
    assert policy.attempts == 9  # the SDK's 8 retries for every other call, plus the first
    assert [policy.delay(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 20, 20, 20]
    assert RetryPolicy(jitter=lambda: 0.5).delay(3) == 2.0


@asynccontextmanager
async def seeded(
    monkeypatch: pytest.MonkeyPatch, names: tuple[str, ...], images: int
) -> AsyncIterator[EcrSimulator]:
    """An ECR simulator with `images` images (an hour apart) in each repository of `names`."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    async with EcrSimulator() as sim:
        for name in names:
            sim.create_repository(name)
            for n in range(images):
                sim.add_image(
                    name,
                    tags=(f"b{n}",),
                    pushed_at=NOW - timedelta(hours=n),
                    config_seed=f"{name}{n}",
                )
        yield sim


async def test_a_throttled_read_gives_its_slot_up_while_it_backs_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # before: botocore retried a read inside the gateway's slot, so with the limit down to one
    # call in flight (where throttles take it) every other call waited out the read's back-off
    async with (
        seeded(monkeypatch, ("throttled", "other"), 1) as sim,
        open_ecr(
            region="us-east-1", registry_id=None, concurrency=1, endpoint_url=sim.endpoint_url
        ) as ecr,
    ):
        (throttled,) = (await ecr.repositories(["throttled"])).repositories
        sim.throttle("DescribeImages", times=3)
        done: list[str] = []

        async def read(name: str, call: Callable[[], Awaitable[object]]) -> None:
            await call()
            done.append(name)

        async with anyio.create_task_group() as group:
            group.start_soon(read, "throttled", lambda: ecr.images(throttled))
            await eventually(lambda: sim.calls["DescribeImages"] >= 1)
            group.start_soon(read, "other", lambda: ecr.repositories(["other"]))
    assert sim.calls["DescribeImages"] == 4  # three throttled attempts, then the answer
    assert ecr.stats.throttles["DescribeImages"] == 3
    assert done == ["other", "throttled"]


async def test_a_repository_whose_reads_keep_failing_is_given_up_within_the_call_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # before: DescribeImages answering 500 every time held the whole cycle for 54-71 s of SDK
    # retries before the repository's error was counted
    async with (
        seeded(monkeypatch, ("broken", "fine"), 20) as sim,
        open_ecr(
            region="us-east-1",
            registry_id=None,
            concurrency=4,
            endpoint_url=sim.endpoint_url,
            call_budget=2.0,
        ) as ecr,
    ):
        broken = (await ecr.repositories(["broken"])).repositories[0]
        sim.server_error("DescribeImages", times=1000)
        started = time.monotonic()
        with pytest.raises(EcrError) as caught:
            await ecr.images(broken)
        elapsed = time.monotonic() - started
    assert caught.value.code == "CallBudgetExceeded"
    assert caught.value.message == "no answer within 2s, retries included"
    assert 1.9 < elapsed < 4
    assert sim.calls["DescribeImages"] >= 2  # retried, within the budget
