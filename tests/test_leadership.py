"""Leader election: LeaderElector replicas campaigning for one Lease on the API-server simulator.

Every replica has its own kubernetes_asyncio ApiClient (as separate pods would). A replica can
be put behind a `Plug`, a TCP forwarder whose `pull()` refuses and resets its connections: the
honest way to make the API unreachable for that one replica (crashed node, network partition)
while the others still reach it.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
from anyio.abc import SocketAttribute, SocketStream, TaskStatus

from controller.clusters import connect
from controller.leadership import (
    JITTER_FACTOR,
    AlwaysLeader,
    ElectionConfig,
    LeaderElector,
    Leadership,
    micro_time,
)
from sandbox.kubesim import KubeSimulator, write_kubeconfig
from tests import waiting

TOKEN = "lease-token"
LEASE = "kube-ecr-cleanup-controller"
NS = "kube-system"
LEASES = f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases"
LEASE_DURATION, RENEW_DEADLINE, RETRY = 1.0, 0.6, 0.1
MAX_POLL = RETRY * (1 + JITTER_FACTOR)  # a candidate's longest wait between two looks
MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


async def eventually(predicate: Callable[[], bool], within: float = 3.0) -> float:
    return await waiting.eventually(predicate, within)  # lease changes may take up to 3 s


class Plug:
    """A TCP forwarder between one replica and the simulator; `pull()` cuts that replica off."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.url = ""
        self._scope = anyio.CancelScope()

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        with self._scope:
            listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
            self.url = f"http://127.0.0.1:{listener.extra(SocketAttribute.local_port)}"
            task_status.started()
            async with listener:
                await listener.serve(self._forward)

    def pull(self) -> None:
        """Stop listening and reset every open connection."""
        self._scope.cancel()

    async def _forward(self, downstream: SocketStream) -> None:
        async with (
            downstream,
            await anyio.connect_tcp("127.0.0.1", self.target_port) as upstream,
            anyio.create_task_group() as tg,
        ):

            async def pipe(source: SocketStream, sink: SocketStream) -> None:
                with contextlib.suppress(
                    anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError
                ):
                    async for chunk in source:
                        await sink.send(chunk)
                tg.cancel_scope.cancel()

            tg.start_soon(pipe, downstream, upstream)
            tg.start_soon(pipe, upstream, downstream)


@dataclass
class Replica:
    elector: LeaderElector
    changes: list[bool] = field(default_factory=list)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    done: anyio.Event = field(default_factory=anyio.Event)

    @property
    def identity(self) -> str:
        return self.elector.config.identity

    @property
    def leads(self) -> bool:
        return self.elector.is_leader

    async def run(self) -> None:
        try:
            with self.scope:
                await self.elector.run()
        finally:
            self.done.set()

    async def stop(self) -> None:
        """Graceful shutdown: cancel `run` and wait until it has released the Lease."""
        self.scope.cancel()
        await self.done.wait()


@dataclass
class Sampler:
    """Counts how many of `replicas` (a shared list) believe they lead, every 2 ms."""

    replicas: list[Replica]
    most: int = 0
    fewest: int = 1_000
    samples: int = 0

    async def run(self) -> None:
        while True:
            leading = sum(r.leads for r in self.replicas)
            self.most = max(self.most, leading)
            self.fewest = min(self.fewest, leading)
            self.samples += 1
            await anyio.sleep(0.002)


@dataclass
class Lab:
    sim: KubeSimulator
    tg: anyio.abc.TaskGroup
    stack: AsyncExitStack
    tmp: Path

    async def replica(
        self,
        name: str,
        *,
        server: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        start: bool = True,
    ) -> Replica:
        path = write_kubeconfig(
            self.tmp / f"{name}.kubeconfig", {name: server or self.sim}, token=TOKEN
        )
        (cluster,) = await self.stack.enter_async_context(
            connect(kubeconfig=str(path), contexts=(), in_cluster=False)
        )
        config = ElectionConfig(
            LEASE,
            NS,
            f"{name}_{secrets.token_hex(3)}",
            lease_duration=LEASE_DURATION,
            renew_deadline=RENEW_DEADLINE,
            retry_period=RETRY,
        )
        changes: list[bool] = []
        elector = LeaderElector(cluster.api, config, clock=clock, on_change=changes.append)
        replica = Replica(elector, changes)
        if start:
            self.tg.start_soon(replica.run)
        return replica

    async def plug(self) -> Plug:
        plug = Plug(self.sim.port)
        await self.tg.start(plug.serve)
        return plug

    def sample(self, replicas: list[Replica]) -> Sampler:
        sampler = Sampler(replicas)
        self.tg.start_soon(sampler.run)
        return sampler

    def lease(self) -> dict[str, Any]:
        lease = self.sim.get("leases", NS, LEASE)
        assert lease is not None
        spec: dict[str, Any] = lease["spec"]
        return spec


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Lab]:
    async with (
        KubeSimulator(token=TOKEN) as sim,
        AsyncExitStack() as stack,  # the ApiClients, closed after the replicas have stopped
        anyio.create_task_group() as tg,
    ):
        yield Lab(sim, tg, stack, tmp_path)
        tg.cancel_scope.cancel()


async def leader_and_follower(lab: Lab, a_server: str | None = None) -> tuple[Replica, Replica]:
    a = await lab.replica("a", server=a_server)
    await eventually(lambda: a.leads)
    b = await lab.replica("b")
    await eventually(lambda: b.elector.holder == a.identity)
    return a, b


# ------------------------------------------------------------------------------------ units


def test_config_is_validated_like_client_go() -> None:
    with pytest.raises(ValueError, match="lease_duration"):
        ElectionConfig("l", "ns", "me", lease_duration=10, renew_deadline=10)
    with pytest.raises(ValueError, match="renew_deadline"):
        ElectionConfig("l", "ns", "me", renew_deadline=2.0, retry_period=2.0)
    with pytest.raises(ValueError, match="identity"):
        ElectionConfig("l", "ns", "")
    config = ElectionConfig(
        "l", "ns", "me", lease_duration=1.5, renew_deadline=1.0, retry_period=0.5
    )
    assert config.lease_duration_seconds == 2  # rounded up: others never wait less


def test_micro_time_always_has_six_fractional_digits() -> None:
    assert micro_time(datetime(2026, 11, 27, 10, 0, tzinfo=UTC)) == "2026-11-27T10:00:00.000000Z"


async def test_always_leader_leads_and_sleeps_until_cancelled() -> None:
    changes: list[bool] = []
    leader: Leadership = AlwaysLeader(on_change=changes.append)
    assert leader.is_leader
    assert leader.leading_lost_reason() is None
    with anyio.move_on_after(0.05) as scope:
        await leader.run()
    assert scope.cancelled_caught
    assert changes == [True]


# ------------------------------------------------------------------------------------ election


async def test_one_of_two_leads_and_the_other_observes_the_holder(lab: Lab) -> None:
    a = await lab.replica("a")
    b = await lab.replica("b")
    sampler = lab.sample([a, b])
    await eventually(lambda: a.leads or b.leads)
    leader, follower = (a, b) if a.leads else (b, a)
    await eventually(lambda: follower.elector.holder == leader.identity)
    first = lab.lease()
    await anyio.sleep(5 * RETRY)

    assert sampler.most == 1
    assert leader.leads
    assert not follower.leads
    assert leader.elector.leading_lost_reason() is None
    assert follower.elector.leading_lost_reason() == f"not leader: held by {leader.identity}"
    spec = lab.lease()
    assert spec["holderIdentity"] == leader.identity
    assert spec["leaseDurationSeconds"] == 1
    assert spec["leaseTransitions"] == 0
    assert spec["acquireTime"] == first["acquireTime"]  # renewing keeps the acquire time
    assert spec["renewTime"] > first["renewTime"]
    assert MICRO_TIME.match(spec["renewTime"])
    assert MICRO_TIME.match(spec["acquireTime"])
    assert (leader.changes, follower.changes) == ([True], [])


async def test_a_crashed_leader_is_replaced_once_its_lease_expires(lab: Lab) -> None:
    plug = await lab.plug()
    a, b = await leader_and_follower(lab, a_server=plug.url)
    sampler = lab.sample([a, b])

    plug.pull()  # the node dies: nothing a sends arrives any more ...
    killed = time.monotonic()
    await a.stop()  # ... so its release on the way out fails too
    assert lab.lease()["holderIdentity"] == a.identity
    await eventually(lambda: b.leads)
    took = time.monotonic() - killed

    # b counts lease_duration from when *it* saw a's last renewal (at most one retry earlier)
    assert LEASE_DURATION - RETRY - 0.05 < took < LEASE_DURATION + 2 * MAX_POLL + 0.1
    assert sampler.most == 1
    spec = lab.lease()
    assert (spec["holderIdentity"], spec["leaseTransitions"]) == (b.identity, 1)
    assert a.changes == [True, False]
    assert b.changes == [True]


async def test_a_partitioned_leader_steps_down_before_another_can_take_over(lab: Lab) -> None:
    plug = await lab.plug()
    a, b = await leader_and_follower(lab, a_server=plug.url)
    sampler = lab.sample([a, b])

    plug.pull()  # a keeps running but cannot reach the API server
    cut = time.monotonic()
    stepped_down = await eventually(lambda: not a.leads)
    await eventually(lambda: b.leads)
    took_over = time.monotonic() - cut

    assert stepped_down <= RENEW_DEADLINE + 0.05
    assert LEASE_DURATION - RETRY - 0.05 < took_over < LEASE_DURATION + 2 * MAX_POLL + 0.1
    assert sampler.most == 1
    assert a.changes == [True, False]
    assert "ClientConnectorError" in (a.elector.leading_lost_reason() or "")


async def test_graceful_shutdown_releases_the_lease_for_an_immediate_takeover(lab: Lab) -> None:
    a, b = await leader_and_follower(lab)
    sampler = lab.sample([a, b])

    stopped = time.monotonic()
    await a.stop()
    await eventually(lambda: b.leads)
    took = time.monotonic() - stopped

    assert took < MAX_POLL + 0.15  # one poll of b, not a lease duration
    assert sampler.most == 1
    released = [
        e.object["spec"]
        for e in lab.sim.events("leases")
        if e.object["spec"].get("holderIdentity") == ""
    ]
    assert len(released) == 1
    assert released[0]["leaseDurationSeconds"] == 1
    assert a.changes == [True, False]
    assert a.elector.leading_lost_reason() == "not leader: shutting down"
    assert b.changes == [True]
    assert lab.lease()["leaseTransitions"] == 1


async def test_racing_candidates_never_both_lead(
    lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="controller.leadership")
    # every answer takes 50 ms: the candidates all read "404" before any create lands, and
    # after each release several of them read the free Lease before the first write lands
    lab.sim.set_latency(0.05)
    replicas = [await lab.replica(f"r{i}", start=False) for i in range(4)]
    for replica in replicas:
        lab.tg.start_soon(replica.run)
    sampler = lab.sample(replicas)  # shared: replicas started later are sampled too
    leaders: list[str] = []
    for round_ in range(5):
        await eventually(lambda: any(r.leads for r in replicas))
        (leader,) = [r for r in replicas if r.leads]
        leaders.append(leader.identity)
        await anyio.sleep(3 * RETRY)
        await leader.stop()  # release: the others race to replace the free Lease
        replicas.remove(leader)
        replicas.append(await lab.replica(f"new{round_}"))
    await eventually(lambda: any(r.leads for r in replicas))

    assert sampler.most == 1
    assert sampler.samples > 500
    assert len(set(leaders)) == 5
    assert lab.sim.count("POST", LEASES) == 4  # all four tried to create it ...
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("lost the race to create the Lease") == 3  # ... three got 409
    assert "conflict writing the Lease; will re-read" in messages  # a replace lost a race


async def test_a_conflict_is_never_taken_for_success(lab: Lab) -> None:
    a, b = await leader_and_follower(lab)
    sampler = lab.sample([a, b])
    alone = lab.sample([a])

    # somebody else writes the Lease unchanged: a's next renewal gets 409, reads it again and
    # renews - still the holder, it never stops leading
    lab.sim.apply("leases", lab.sim.get("leases", NS, LEASE) or {})
    written = lab.sim.resource_version
    await eventually(lambda: lab.sim.resource_version > written)
    await anyio.sleep(2 * RETRY)
    assert a.leads
    assert a.changes == [True]
    assert alone.fewest == 1  # a never stopped leading

    # somebody else takes the Lease: a's renewal gets 409, and the read shows another holder
    lease = lab.sim.get("leases", NS, LEASE) or {}
    now = micro_time(datetime.now(UTC))
    lease["spec"].update(holderIdentity="intruder", renewTime=now, acquireTime=now)
    lab.sim.apply("leases", lease)
    taken = time.monotonic()
    stepped_down = await eventually(lambda: not a.leads)
    assert stepped_down < RETRY + 0.1  # at once, not at the renew deadline
    assert a.changes == [True, False]
    assert a.elector.leading_lost_reason() == "not leader: held by intruder"

    # the intruder never renews: after its lease duration, one of a and b takes over
    await eventually(lambda: a.leads or b.leads)
    assert time.monotonic() - taken > LEASE_DURATION - 0.05
    assert sampler.most == 1
    assert lab.lease()["leaseTransitions"] == 1


@pytest.mark.parametrize("fault", ["500", "latency"])
async def test_api_errors_make_the_leader_step_down_before_its_lease_expires(
    lab: Lab, fault: str
) -> None:
    a, b = await leader_and_follower(lab)
    sampler = lab.sample([a, b])

    before = lab.sim.count(path_prefix=LEASES)
    if fault == "500":
        # more failures than both replicas can use up within the renew deadline (< 30/s)
        lab.sim.fail_next(30, 500, path_prefix=LEASES)
    else:
        lab.sim.set_latency(RENEW_DEADLINE + 0.2)
    stepped_down = await eventually(lambda: not a.leads)
    assert "not renewed" in (a.elector.leading_lost_reason() or "")

    # a's last renewal started before the fault; nobody else may take over before that
    # renewal, seen by them, is lease_duration old
    assert stepped_down <= RENEW_DEADLINE + 0.05
    assert stepped_down < LEASE_DURATION - RETRY - 0.1
    await eventually(lambda: a.changes == [True, False], within=RETRY + 0.1)  # run noticed
    assert not b.leads

    if fault == "500":
        await eventually(lambda: lab.sim.count(path_prefix=LEASES) >= before + 30)
    else:
        lab.sim.set_latency(0)
    await eventually(lambda: a.leads or b.leads)
    assert sampler.most == 1


async def test_is_leader_follows_the_clock_even_while_run_is_stuck(lab: Lab) -> None:
    skew = [0.0]
    a = await lab.replica("a", clock=lambda: time.monotonic() + skew[0])
    await eventually(lambda: a.leads)

    skew[0] = RENEW_DEADLINE  # time passes without a renewal (run is not even scheduled)
    assert not a.leads
    assert "renew deadline exceeded" in (a.elector.leading_lost_reason() or "")

    # run notices, reports the loss, and, still the holder, renews at once
    await eventually(lambda: a.leads)
    assert a.changes == [True, False, True]
