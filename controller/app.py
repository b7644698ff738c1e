"""The composition root: builds the clusters, the in-use index, the ECR gateway and the pruner,
and runs them in one anyio task group until done (`--once`) or until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import TextIO

import anyio

from controller.clusters import Cluster, ClusterConfigError, connect
from controller.ecr import open_ecr
from controller.inventory import InUseIndex, SourceKey, refusal
from controller.pruning import CycleReport, PruneOptions, Pruner
from controller.report import render
from controller.settings import Settings
from controller.sources import KINDS, SourceError, list_kind

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


async def list_everything(
    index: InUseIndex, clusters: list[Cluster], keys: list[SourceKey], *, concurrency: int = 8
) -> list[str]:
    """LIST every source into the index (replacing each atomically); returns the failures."""
    by_name = {c.name: c for c in clusters}
    problems: list[str] = []
    limiter = anyio.CapacityLimiter(concurrency)

    async def one(key: SourceKey) -> None:
        async with limiter:
            try:
                listed = await list_kind(
                    by_name[key.cluster], KINDS[key.kind], key.namespace or None
                )
            except SourceError as exc:
                index.mark_unsynced(key)
                problems.append(f"{key}: {exc}")
                log.error("cannot list %s: %s", key, exc, extra={"source": str(key)})
                return
            index.replace(key, listed.objects)
            log.info(
                "listed %s: %d objects in %d page(s)",
                key,
                len(listed.objects),
                listed.pages,
                extra={"source": str(key)},
            )

    for key in keys:
        index.register(key)
    async with anyio.create_task_group() as tg:
        for key in keys:
            tg.start_soon(one, key)
    return problems


def prune_options(settings: Settings) -> PruneOptions:
    return PruneOptions(
        selection=settings.repositories,
        rules_for=settings.rules_for,
        dry_run=settings.dry_run,
        concurrency=settings.concurrency,
    )


async def run_once(
    settings: Settings, *, out: TextIO = sys.stdout, clock: Callable[[], datetime] = utcnow
) -> int:
    """LIST the clusters, prune once, print the report. 0 when all went well, 1 otherwise."""
    index = InUseIndex()
    region = resolve_region(settings)
    async with connect(
        kubeconfig=settings.kubeconfig,
        contexts=settings.kube_contexts,
        in_cluster=settings.in_cluster,
    ) as clusters:
        problems = await list_everything(index, clusters, source_keys(settings, clusters))
    log.info("in use: %d digests across %d objects", index.digests_in_use(), index.object_count())
    async with open_ecr(
        region=region, registry_id=settings.registry_id, concurrency=settings.concurrency
    ) as ecr:
        pruner = Pruner(ecr, index, prune_options(settings))
        report = await pruner.run_cycle(
            now=clock(), gate=lambda: refusal(index, allow_empty=settings.allow_empty), clock=clock
        )
    report.errors.extend(problems)
    print(render(report, settings.output), file=out, flush=True)
    return 0 if report.ok else 1


async def run_service(settings: Settings) -> int:
    """Re-list and prune every interval until a signal asks us to stop.

    The live watch (no re-list per cycle) replaces the LIST here when it lands.
    """
    region = resolve_region(settings)
    async with (
        connect(
            kubeconfig=settings.kubeconfig,
            contexts=settings.kube_contexts,
            in_cluster=settings.in_cluster,
        ) as clusters,
        open_ecr(
            region=region, registry_id=settings.registry_id, concurrency=settings.concurrency
        ) as ecr,
        anyio.create_task_group() as tg,
    ):

        async def cycles() -> None:
            while True:
                index = InUseIndex()
                problems = await list_everything(index, clusters, source_keys(settings, clusters))
                report: CycleReport = await Pruner(ecr, index, prune_options(settings)).run_cycle(
                    now=utcnow(),
                    gate=partial(refusal, index, allow_empty=settings.allow_empty),
                    clock=utcnow,
                )
                report.errors.extend(problems)
                print(render(report, settings.output), flush=True)
                await anyio.sleep(settings.interval.total_seconds())

        async def signals() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as received:
                async for signum in received:
                    log.info("received %s, shutting down", signal.Signals(signum).name)
                    tg.cancel_scope.cancel()
                    return

        tg.start_soon(cycles)
        tg.start_soon(signals)
    return 0


def run(settings: Settings) -> int:
    """Entry from the CLI: run to completion and return the exit status."""
    main = run_once if settings.once else run_service
    try:
        return anyio.run(main, settings, backend="asyncio")
    except ClusterConfigError as exc:
        print(f"kube-ecr-cleanup-controller: error: {exc}", file=sys.stderr)
        return 2
