"""The composition root: builds the clusters, the in-use index, the ECR gateway and the pruner,
and runs them in one anyio task group until done (`--once`) or until SIGTERM/SIGINT.

Shutdown, in order: a signal sets `stopping`; no delete call starts after that (the gate says
"shutting down"), a delete call in flight finishes within its bound, and the cycle ends with
a partial report. Only then do the watchers stop and the leader release its Lease, so that a
standby can never start deleting while this replica's last delete call is still in flight.
"""

from __future__ import annotations

import gc
import logging
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import TextIO

import anyio
import anyio.abc
from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

from controller.awssources import aws_sources
from controller.clusters import Cluster, connect
from controller.ecr import AioEcr, CallStats, check_profile, known_region, open_ecr
from controller.kinds import KINDS, PODS, Kind
from controller.leadership import AlwaysLeader, ElectionConfig, LeaderElector, Leadership
from controller.metrics import Metrics
from controller.pruning import ARCHIVE, DELETE, Catalog, CycleReport, PruneOptions, Pruner
from controller.report import render
from controller.restoring import Restorer
from controller.scheduling import NOT_LEADER, UNTRUSTED_VIEW, Blocked, Schedule, run_schedule
from controller.serving import listen, serve
from controller.settings import ConfigError, Settings
from controller.sources import Source
from controller.trust import View
from controller.watching import Watcher

log = logging.getLogger(__name__)

GO_DEFAULT_REGION = "us-east-1"  # the Go controller's default, kept for unchanged Deployments
SHUTTING_DOWN = "shutting down"
DELETION_SAMPLE = 20
"""Deletion records a report keeps per repository, besides the counts (see PruneOptions)."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def resolve_region(settings: Settings) -> str:
    return (
        settings.region
        or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
        or GO_DEFAULT_REGION
    )


def watched_kinds(settings: Settings) -> list[Kind]:
    """Pods always; workload templates unless opted out; the custom resources of
    --protect-resources, each extracting what its declared paths reach."""
    kinds = sorted(k for k in settings.protect_workloads if k in KINDS and k != PODS)
    custom = [
        Kind.custom(
            entry.group,
            entry.version,
            entry.resource,
            namespaced=entry.namespaced,
            extract=entry.extract,
        )
        for entry in settings.protect_resources
    ]
    return [KINDS[PODS], *(KINDS[k] for k in kinds), *custom]


def scopes(kind: Kind, namespaces: Sequence[str]) -> Sequence[str]:
    """The namespaces one kind is watched in: each of `namespaces`, or all ("") when none is
    given; a cluster-scoped kind once per cluster (""), whatever the namespaces."""
    return (namespaces or ("",)) if kind.namespaced else ("",)


def build_sources(
    settings: Settings,
    clusters: Sequence[Cluster],
    view: View,
    *,
    aws_stats: CallStats | None = None,
) -> list[Source]:
    """Every source of "in use" these settings ask for, each registered once in `view`.

    The one place both modes get their sources from: the service runs each (`Source.run`),
    `--once` lists each once (`Source.once`). A new kind of source is one module with a class
    that implements `sources.Source`, and one line in the list below, as the ECS and Lambda
    pollers of `awssources` are (`aws_stats` counts their calls); a new Kubernetes kind is one line in `kinds.KINDS` (or a runtime `Kind.custom`
    from the settings, in `watched_kinds`), and needs nothing here.
    """
    return [
        *(
            Watcher(cluster, kind, namespace, view=view)
            for cluster in clusters
            for kind in watched_kinds(settings)
            for namespace in scopes(kind, settings.namespaces)
        ),
        *aws_sources(
            settings, view, region=resolve_region(settings), stats=aws_stats or CallStats()
        ),
        # a new kind of source: one line here
    ]


def refusal(view: View, settings: Settings) -> str | None:
    """Why deleting must not happen now, by the trust rules with the user's settings, or None."""
    return view.refusal(
        time.monotonic(),
        max_staleness=settings.max_staleness.total_seconds(),
        may_be_empty=settings.may_be_empty,
    )


async def list_everything(sources: Sequence[Source], *, concurrency: int = 8) -> None:
    """LIST every source once (for --once); a failure leaves its source unsynced."""
    limiter = anyio.CapacityLimiter(concurrency)

    async def one(source: Source) -> None:
        async with limiter:
            await source.once()

    async with anyio.create_task_group() as tg:
        for source in sources:
            tg.start_soon(one, source)


def prune_options(settings: Settings, view: View, catalog: Catalog | None = None) -> PruneOptions:
    def unused_overrides(names: Sequence[str]) -> list[str]:
        return [f"repositories[{i}] {o.pattern!r}" for i, o in settings.unused_overrides(names)]

    return PruneOptions(
        selection=settings.repositories,
        rules_for=settings.rules_for,
        dry_run=settings.dry_run,
        concurrency=settings.concurrency,
        unused_overrides=unused_overrides,
        # `--once --output json` prints every deletion; otherwise counts and a sample suffice
        deletion_records=None if settings.once and settings.output == "json" else DELETION_SAMPLE,
        lagging=view.tracker.lagging,
        disposal=ARCHIVE if settings.disposal == "archive" else DELETE,
        catalog=catalog,
    )


def open_clusters(settings: Settings) -> AbstractAsyncContextManager[list[Cluster]]:
    return connect(
        kubeconfig=settings.kubeconfig,
        contexts=settings.kube_contexts,
        in_cluster=settings.in_cluster,
    )


def check_clusters(settings: Settings, clusters: list[Cluster]) -> None:
    """Settings that name clusters must name connected ones (known only once connected)."""
    names = {c.name for c in clusters}
    unknown = [c for c in settings.allow_empty_clusters if c not in names]
    if unknown:
        raise ConfigError(
            "--allow-empty-clusters",
            f"{', '.join(unknown)} is not a watched cluster (watched: {', '.join(sorted(names))})",
        )


def open_registry(settings: Settings) -> AbstractAsyncContextManager[AioEcr]:
    region = resolve_region(settings)
    if not known_region(region):
        log.warning(
            "region %s is not known to the installed botocore; using it anyway (new regions "
            "appear before the SDK knows them)",
            region,
        )
    return open_ecr(
        region=region,
        registry_id=settings.registry_id,
        concurrency=settings.concurrency,
    )


def gate_for(view: View, settings: Settings, stopping: anyio.Event) -> Callable[[], str | None]:
    def gate() -> str | None:
        if stopping.is_set():
            return SHUTTING_DOWN
        return refusal(view, settings)

    return gate


async def run_once(
    settings: Settings,
    stopping: anyio.Event,
    *,
    out: TextIO = sys.stdout,
    clock: Callable[[], datetime] = utcnow,
) -> int:
    """LIST the clusters, prune once, print the report. 0 when all went well, 1 otherwise.

    A signal stops it early: no delete call starts, one in flight finishes, and the partial
    report is printed (exit 1)."""
    view = View()
    gate = gate_for(view, settings, stopping)
    async with open_clusters(settings) as clusters:
        check_clusters(settings, clusters)
        sources = build_sources(settings, clusters, view)
        await until_stopped(stopping, partial(list_everything, sources))
    log.info(
        "in use: %d digests across %d objects",
        view.index.digests_in_use(),
        view.index.object_count(),
    )
    async with open_registry(settings) as ecr:
        report = await Pruner(ecr, view.index, prune_options(settings, view)).run_cycle(
            now=clock(), gate=gate, clock=clock, stop=stopping
        )
    print(render(report, settings.output), file=out, flush=True)
    return 0 if report.ok else 1


async def until_stopped(stopping: anyio.Event, fn: Callable[[], Awaitable[None]]) -> None:
    """Run `fn`, cancelled if `stopping` is set first."""
    async with anyio.create_task_group() as tg:

        async def stopper() -> None:
            await stopping.wait()
            tg.cancel_scope.cancel()

        tg.start_soon(stopper)
        await fn()
        tg.cancel_scope.cancel()


def lease_identity() -> str:
    return f"{os.environ.get('HOSTNAME') or socket.gethostname()}_{secrets.token_hex(4)}"


def elector(settings: Settings, clusters: list[Cluster], metrics: Metrics) -> Leadership:
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


def readiness(view: View) -> str | None:
    unsynced = view.index.unsynced()
    return "not synced: " + ", ".join(str(s) for s in unsynced) if unsynced else None


async def run_service(settings: Settings, stopping: anyio.Event) -> int:
    """Watch the clusters, serve /metrics, and (as leader) prune every interval, until stopped."""
    return await Service(settings, stopping).run()


@dataclass
class Service:
    """The long-running controller: watchers, scheduler, HTTP server and leader election."""

    settings: Settings
    stopping: anyio.Event
    view: View = field(default_factory=View)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` series
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=self.registry)
        self.metrics = Metrics(self.registry)
        self.metrics.configure(
            interval_seconds=self.settings.interval.total_seconds(),
            dry_run=self.settings.dry_run,
            max_images=lambda name: self.settings.rules_for(name).max_images,
        )
        self.metrics.watch_sources(
            self.view.tracker,
            self.view.index,
            time.monotonic,
            refusal=lambda: refusal(self.view, self.settings),
        )
        self.aws_stats = CallStats()  # the ECS, Lambda and STS calls of the AWS sources
        self.metrics.watch_aws_sources(self.aws_stats)

    async def run(self) -> int:
        address = self.settings.metrics_address
        try:
            sock = await listen(address)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise ConfigError(
                "--metrics-address", f"cannot listen on {address}: {reason}"
            ) from None
        with sock:
            async with (
                open_clusters(self.settings) as clusters,
                open_registry(self.settings) as ecr,
            ):
                check_clusters(self.settings, clusters)
                self.metrics.watch_ecr(ecr.stats)
                await self._serve_and_prune(clusters, ecr, sock)
        log.info("stopped")
        return 0

    async def _serve_and_prune(
        self, clusters: list[Cluster], ecr: AioEcr, sock: socket.socket
    ) -> None:
        settings, view = self.settings, self.view
        async with anyio.create_task_group() as outer:
            leader = elector(settings, clusters, self.metrics)
            port = await outer.start(
                partial(
                    serve,
                    sock,
                    registry=self.registry,
                    ready=lambda: readiness(view),
                )
            )
            log.info("serving /metrics, /healthz and /readyz on port %s", port)
            outer.start_soon(leader.run, name="leader election")
            async with anyio.create_task_group() as inner:
                for source in build_sources(settings, clusters, view, aws_stats=self.aws_stats):
                    inner.start_soon(source.run, name=f"watch {source.key}")

                restorer: Restorer | None = None
                if settings.disposal == "archive" and not settings.dry_run:
                    # restore on use: beside the scheduler, not waiting for a cycle
                    restorer = Restorer(ecr, view.index, on_request=self.metrics.restore_requested)
                    inner.start_soon(restorer.run, name="restore on use")

                async def scheduler() -> None:
                    await _cycles(
                        settings,
                        view,
                        ecr,
                        metrics=self.metrics,
                        leader=leader,
                        stopping=self.stopping,
                        catalog=restorer,
                    )
                    inner.cancel_scope.cancel()  # stopping: the watchers are no longer needed

                inner.start_soon(scheduler, name="scheduler")
            # the scheduler returned: no delete call is in flight any more, so the Lease can go
            log.info("no delete call in flight; stopping leader election and the HTTP server")
            outer.cancel_scope.cancel()


async def _cycles(
    settings: Settings,
    view: View,
    ecr: AioEcr,
    *,
    metrics: Metrics,
    leader: Leadership,
    stopping: anyio.Event,
    catalog: Catalog | None = None,
) -> None:
    pruner = Pruner(ecr, view.index, prune_options(settings, view, catalog))

    def blocked() -> Blocked | None:
        refused = refusal(view, settings)
        if refused is not None:
            return Blocked(UNTRUSTED_VIEW, refused)
        if not leader.is_leader:
            return Blocked(
                NOT_LEADER, leader.leading_lost_reason() or "not leader", expected=leader.standby
            )
        return None

    def gate() -> str | None:
        """Checked before every delete call: the same conditions, plus shutdown."""
        if stopping.is_set():
            return SHUTTING_DOWN
        block = blocked()
        return f"{block.reason}: {block.detail}" if block else None

    async def cycle() -> CycleReport:
        started = time.monotonic()
        report = await pruner.run_cycle(now=utcnow(), gate=gate, clock=utcnow, stop=stopping)
        metrics.observe_cycle(report, time.monotonic() - started)
        print(render(report, settings.output), flush=True)
        return report

    await run_schedule(
        cycle,
        blocked=blocked,
        schedule=Schedule(settings.interval.total_seconds(), settings.interval_jitter),
        on_skip=metrics.cycle_skipped,
        stopping=stopping,
    )


def tune_garbage_collector() -> None:
    """Freeze what start-up allocated (modules, the SDK's service models) and collect the young
    generation less often. A cycle allocates several objects per image listed; with the default
    thresholds the collector ran so often, each time walking every long-lived object, that it
    took about a third of the CPU of parsing and planning. Reference counting still frees almost
    everything at once; only reference cycles wait a little longer."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


GC_THRESHOLDS = (100_000, 50, 100)


async def _main(settings: Settings, early_signal: Callable[[], int | None]) -> int:
    check_profile()  # before connecting anywhere: a wrong AWS_PROFILE is a start-up error
    tune_garbage_collector()
    stopping = anyio.Event()
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        received = early_signal()
        if received is not None:  # arrived during start-up, before this receiver existed
            log.info("received %s during start-up, shutting down", signal.Signals(received).name)
            stopping.set()
        async with anyio.create_task_group() as tg:

            async def on_signals() -> None:
                async for signum in signals:
                    log.info(
                        "received %s: no new delete call; shutting down",
                        signal.Signals(signum).name,
                    )
                    stopping.set()

            tg.start_soon(on_signals, name="signals")
            main = run_once if settings.once else run_service
            status = await main(settings, stopping)
            tg.cancel_scope.cancel()
    return status


def run(settings: Settings, *, early_signal: Callable[[], int | None] = lambda: None) -> int:
    """Entry from the CLI: run to completion and return the exit status.

    `early_signal` tells which SIGTERM/SIGINT arrived before the event loop took signals over.
    A configuration problem found at start-up (a kubeconfig, a context, a profile, an address
    in use) is one line on stderr and exit status 2."""
    try:
        return anyio.run(_main, settings, early_signal, backend="asyncio")
    except (ConfigError, BaseExceptionGroup) as exc:
        error = _config_error(exc)
        if error is None:
            raise
        print(f"kube-ecr-cleanup-controller: error: {error}", file=sys.stderr)
        return 2


def _config_error(exc: BaseException) -> ConfigError | None:
    """The ConfigError in `exc`, also from inside the exception groups of task groups."""
    if isinstance(exc, ConfigError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _config_error(inner)
            if found is not None:
                return found
    return None
