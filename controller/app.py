"""The composition root: builds the clusters, the in-use index, the ECR gateway and the pruner,
and runs them in one anyio task group until done (`--once`) or until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import TextIO

import anyio
from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

from controller.clusters import Cluster, ClusterConfigError, connect
from controller.ecr import AioEcr, open_ecr
from controller.inventory import InUseIndex, SourceKey
from controller.leadership import AlwaysLeader, ElectionConfig, LeaderElector
from controller.metrics import Metrics
from controller.pruning import CycleReport, PruneOptions, Pruner
from controller.report import render
from controller.scheduling import Blocked, Schedule, run_schedule
from controller.serving import serve
from controller.settings import Settings
from controller.sources import KINDS, SourceError
from controller.trust import SourceTracker
from controller.watching import Watcher

log = logging.getLogger(__name__)

GO_DEFAULT_REGION = "us-east-1"  # the Go controller's default, kept for unchanged Deployments


def utcnow() -> datetime:
    return datetime.now(UTC)


def resolve_region(settings: Settings) -> str:
    return (
        settings.region
        or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
        or GO_DEFAULT_REGION
    )


def watched_kinds(settings: Settings) -> list[str]:
    """Pods always; workload templates unless opted out."""
    return ["pods", *sorted(k for k in settings.protect_workloads if k in KINDS and k != "pods")]


def source_keys(settings: Settings, clusters: list[Cluster]) -> list[SourceKey]:
    namespaces = settings.namespaces or ("",)
    return [
        SourceKey(cluster.name, kind, namespace)
        for cluster in clusters
        for kind in watched_kinds(settings)
        for namespace in namespaces
    ]


@dataclass
class View:
    """The in-use index and what is known about each of its sources."""

    index: InUseIndex = field(default_factory=InUseIndex)
    tracker: SourceTracker = field(default_factory=SourceTracker)

    def refusal(self, settings: Settings) -> str | None:
        return self.tracker.refusal(
            self.index,
            time.monotonic(),
            max_staleness=settings.max_staleness.total_seconds(),
            allow_empty=settings.allow_empty,
        )


async def list_everything(
    view: View, clusters: list[Cluster], keys: list[SourceKey], *, concurrency: int = 8
) -> None:
    """LIST every source once into the view (for --once); a failure leaves its source unsynced."""
    by_name = {c.name: c for c in clusters}
    limiter = anyio.CapacityLimiter(concurrency)

    async def one(watcher: Watcher) -> None:
        async with limiter:
            try:
                await watcher.list_once()
            except (SourceError, TimeoutError) as exc:
                status = exc.status if isinstance(exc, SourceError) else None
                view.tracker.disconnected(
                    watcher.source, time.monotonic(), str(exc), status_code=status
                )
                log.error(
                    "cannot list %s: %s", watcher.source, exc, extra={"source": str(watcher.source)}
                )

    watchers = [
        Watcher(
            by_name[key.cluster],
            KINDS[key.kind],
            key.namespace,
            index=view.index,
            tracker=view.tracker,
        )
        for key in keys
    ]
    async with anyio.create_task_group() as tg:
        for watcher in watchers:
            tg.start_soon(one, watcher)


def prune_options(settings: Settings) -> PruneOptions:
    return PruneOptions(
        selection=settings.repositories,
        rules_for=settings.rules_for,
        dry_run=settings.dry_run,
        concurrency=settings.concurrency,
    )


def open_clusters(settings: Settings) -> AbstractAsyncContextManager[list[Cluster]]:
    return connect(
        kubeconfig=settings.kubeconfig,
        contexts=settings.kube_contexts,
        in_cluster=settings.in_cluster,
    )


def open_registry(settings: Settings) -> AbstractAsyncContextManager[AioEcr]:
    return open_ecr(
        region=resolve_region(settings),
        registry_id=settings.registry_id,
        concurrency=settings.concurrency,
    )


async def run_once(
    settings: Settings, *, out: TextIO = sys.stdout, clock: Callable[[], datetime] = utcnow
) -> int:
    """LIST the clusters, prune once, print the report. 0 when all went well, 1 otherwise."""
    view = View()
    async with open_clusters(settings) as clusters:
        await list_everything(view, clusters, source_keys(settings, clusters))
    log.info(
        "in use: %d digests across %d objects",
        view.index.digests_in_use(),
        view.index.object_count(),
    )
    async with open_registry(settings) as ecr:
        report = await Pruner(ecr, view.index, prune_options(settings)).run_cycle(
            now=clock(), gate=lambda: view.refusal(settings), clock=clock
        )
    print(render(report, settings.output), file=out, flush=True)
    return 0 if report.ok else 1


async def watch_signals(stopping: anyio.Event, scope: anyio.CancelScope) -> None:
    """SIGTERM/SIGINT: start no new delete call, let an in-flight one finish, then stop everything."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as received:
        async for signum in received:
            log.info("received %s, shutting down", signal.Signals(signum).name)
            stopping.set()
            scope.cancel()
            return


def lease_identity() -> str:
    return f"{os.environ.get('HOSTNAME') or socket.gethostname()}_{secrets.token_hex(4)}"


def elector(
    settings: Settings, clusters: list[Cluster], metrics: Metrics
) -> LeaderElector | AlwaysLeader:
    if not settings.leader_elect:
        metrics.set_leader(True)
        return AlwaysLeader()
    namespace = settings.lease_namespace or "default"
    if settings.lease_namespace is None:
        log.info("no --lease-namespace and not in a pod: the Lease goes to namespace %s", namespace)
    duration = settings.lease_duration.total_seconds()
    config = ElectionConfig(
        name=settings.lease_name,
        namespace=namespace,
        identity=lease_identity(),
        lease_duration=duration,
        renew_deadline=duration * 2 / 3,
        retry_period=duration * 2 / 15,
    )
    log.info(
        "leader election: Lease %s/%s in cluster %s as %s",
        namespace,
        config.name,
        clusters[0].name,
        config.identity,
    )
    return LeaderElector(clusters[0].api, config, on_change=metrics.set_leader)


@dataclass
class Liveness:
    """Which long-running tasks are alive, for /healthz."""

    running: set[str] = field(default_factory=set)
    expected: set[str] = field(default_factory=set)

    async def keep(self, name: str, fn: Callable[[], Awaitable[None]]) -> None:
        self.expected.add(name)
        self.running.add(name)
        try:
            await fn()
        finally:
            self.running.discard(name)

    def healthy(self) -> bool:
        return self.running == self.expected


def readiness(view: View) -> str | None:
    unsynced = view.index.unsynced()
    return "not synced: " + ", ".join(str(s) for s in unsynced) if unsynced else None


async def run_service(settings: Settings) -> int:
    """Watch the clusters, serve /metrics, and (as leader) prune every interval, until SIGTERM."""
    view = View()
    disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` series
    registry = CollectorRegistry()
    for collector in (ProcessCollector, PlatformCollector, GCCollector):
        collector(registry=registry)
    metrics = Metrics(registry)
    metrics.watch_sources(
        view.tracker, view.index, time.monotonic, refusal=lambda: view.refusal(settings)
    )
    stopping = anyio.Event()
    liveness = Liveness()
    async with (
        open_clusters(settings) as clusters,
        open_registry(settings) as ecr,
        anyio.create_task_group() as tg,
    ):
        metrics.watch_ecr(ecr.stats)
        leader = elector(settings, clusters, metrics)
        port = await tg.start(
            partial(
                serve,
                settings.metrics_address,
                registry=registry,
                healthy=liveness.healthy,
                ready=lambda: readiness(view),
            )
        )
        log.info("serving /metrics, /healthz and /readyz on port %s", port)
        by_name = {c.name: c for c in clusters}
        for key in source_keys(settings, clusters):
            watcher = Watcher(
                by_name[key.cluster],
                KINDS[key.kind],
                key.namespace,
                index=view.index,
                tracker=view.tracker,
            )
            tg.start_soon(liveness.keep, f"watch {key}", watcher.run, name=f"watch {key}")
        tg.start_soon(leader.run, name="leader election")
        tg.start_soon(watch_signals, stopping, tg.cancel_scope, name="signals")
        cycles = partial(
            _cycles, settings, view, ecr, metrics=metrics, leader=leader, stopping=stopping
        )
        tg.start_soon(liveness.keep, "scheduler", cycles, name="scheduler")
    log.info("stopped")
    return 0


async def _cycles(
    settings: Settings,
    view: View,
    ecr: AioEcr,
    *,
    metrics: Metrics,
    leader: LeaderElector | AlwaysLeader,
    stopping: anyio.Event,
) -> None:
    pruner = Pruner(ecr, view.index, prune_options(settings))

    def blocked() -> Blocked | None:
        refusal = view.refusal(settings)
        if refusal is not None:
            return Blocked("untrusted-view", refusal)
        if not leader.is_leader:
            return Blocked("not-leader", leader.leading_lost_reason() or "not leader")
        return None

    def gate() -> str | None:
        """Checked before every delete call: the same conditions, plus shutdown."""
        if stopping.is_set():
            return "shutting down"
        block = blocked()
        return f"{block.reason}: {block.detail}" if block else None

    async def cycle() -> CycleReport:
        started = time.monotonic()
        report = await pruner.run_cycle(now=utcnow(), gate=gate, clock=utcnow)
        metrics.observe_cycle(report, time.monotonic() - started)
        print(render(report, settings.output), flush=True)
        return report

    await run_schedule(
        cycle,
        blocked=blocked,
        schedule=Schedule(settings.interval.total_seconds(), settings.interval_jitter),
        on_skip=metrics.cycle_skipped,
    )


def run(settings: Settings) -> int:
    """Entry from the CLI: run to completion and return the exit status."""
    main = run_once if settings.once else run_service
    try:
        return anyio.run(main, settings, backend="asyncio")
    except ClusterConfigError as exc:
        print(f"kube-ecr-cleanup-controller: error: {exc}", file=sys.stderr)
        return 2
