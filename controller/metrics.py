"""The Prometheus metrics: what each cycle did, why cycles were skipped, and the watch and ECR health.

Everything lives in the `CollectorRegistry` handed to `Metrics` (tests use a fresh one each).
Cycle metrics are updated from the `CycleReport` when a cycle ends; the watch and ECR
metrics are read from the live objects at scrape time by custom collectors, so they are
never stale and cost nothing between scrapes. Label values stay bounded: `repository` by
the configured selection, `reason` and `result` by the code, `operation` and `code` by the
ECR API, `source_cluster`/`kind`/`source_namespace` by the watched sources (not `cluster` and
`namespace`: those are the target labels a Prometheus in Kubernetes attaches, and a scraped label
of the same name would be renamed `exported_*` or, worse, pass for the target's). No digests,
tags or free text.

Series that dashboards and alerts need in a healthy run exist from the start at 0: every cycle
result and skip reason, the ECR operations, and, from the first cycle that lists a repository,
its deleted, reclaimed and vetoed counters and one `errors_total` and one
`image_delete_failures_total` series with empty `operation` and `code` (Prometheus stores an
empty label as no label: the series reads as the repository's zero line; errors add series per
operation and code next to it). A counter series that appears with a value (an error code seen
for the first time, the first cycle's deletions before any scrape saw 0) is counted whole by the
queries in grafana/ and the alert rules: `(increase(x[w]) and x offset w) or x`.

Two replicas: only the leader runs cycles, so only it exports the per-repository gauges; a
replica that stops leading forgets them (its counters stay: sums over replicas stay right), and
a cycle that ends after leadership was lost updates counters only. The standby exports the
configuration (`interval_seconds`, `dry_run`) like the leader, and `last_success` 0 until it
has led: dashboards and alerts take the newest success over the job (`max without (instance,
pod)`), never per replica.

Every metric, its labels and its meaning: the README's metric table, which
tests/test_readme.py keeps equal to this registry (the one list; no copy here to drift).
Configuration is set once by `configure`, cycle metrics by `observe_cycle`, watch metrics by
`watch_sources` and ECR call metrics by `watch_ecr`, both at scrape time.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from controller import __version__
from controller.awsuse import ECS_ACTIONS, LAMBDA_ACTIONS
from controller.ecr import CallStats
from controller.inventory import InUseIndex
from controller.pruning import CycleReport, RepositoryReport
from controller.scheduling import SKIP_REASONS, Blocked
from controller.trust import SourceTracker

PREFIX = "ecr_cleanup_"

CYCLE_RESULTS = ("ok", "failed", "refused", "stopped")

ECR_OPERATIONS = (
    "DescribeRepositories",
    "DescribeImages",
    "BatchGetImage",
    "BatchDeleteImage",
    "UpdateImageStorageClass",
)
"""The ECR operations the controller calls: their call and throttle counters start at 0."""

AWS_SOURCE_OPERATIONS = tuple(
    action.split(":")[1] for action in (*ECS_ACTIONS, *LAMBDA_ACTIONS, "sts:AssumeRole")
)
"""The ECS, Lambda and STS operations the AWS sources call (--protect-ecs, --protect-lambda)."""

DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800)
"""Seconds: from a cycle over a few small repositories to one over a large registry (30 min)."""

_SOURCE_LABELS = ("source_cluster", "kind", "source_namespace")


class Metrics:
    """Every metric of the controller, registered in one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._repositories: set[str] = set()
        # repositories whose gauges are exported
        self._counted: set[str] = set()
        # repositories whose zero counter series exist
        self._protected_reasons: dict[str, set[str]] = {}
        self._leading: bool | None = None
        # None until leader election said; False: the gauges of the repositories are not ours
        self._limit_of: Callable[[str], int] | None = None
        # the effective max-images of a repository (from `configure`)

        def counter(name: str, doc: str, labels: Iterable[str] = ()) -> Counter:
            return Counter(PREFIX + name, doc, labelnames=tuple(labels), registry=registry)

        def gauge(name: str, doc: str, labels: Iterable[str] = ()) -> Gauge:
            return Gauge(PREFIX + name, doc, labelnames=tuple(labels), registry=registry)

        repo = ("repository",)
        self._cycles = counter(
            "cycles_total",
            "Prune cycles run, by result: ok, failed (some repository or the listing failed), "
            "refused (the in-use view was not trusted when the cycle started; nothing deleted), "
            "stopped (cut short by shutdown).",
            ["result"],
        )
        for result in CYCLE_RESULTS:
            self._cycles.labels(result)
        self._cycle_duration = Histogram(
            PREFIX + "cycle_duration_seconds",
            "Wall-clock duration of prune cycles that ran (refused cycles are not observed).",
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self._last_success = gauge(
            "last_success_timestamp_seconds",
            "Unix time at which the last prune cycle without any error ended.",
        )
        self._dry_run = gauge(
            "dry_run",
            "1 if this process runs in dry-run mode (its cycles delete nothing), 0 if it deletes.",
        )
        self._interval = gauge(
            "interval_seconds",
            "The configured time between prune cycles (-interval), in seconds.",
        )
        self._skipped = counter(
            "cycles_skipped_total",
            "Scheduled prune cycles skipped, by reason: untrusted-view, not-leader (a standby "
            "counts one per interval). Counted from the first interval on.",
            ["reason"],
        )
        for reason in SKIP_REASONS:
            self._skipped.labels(reason)
        self._deleted = counter(
            "images_deleted_total", "Images deleted from ECR, per repository.", repo
        )
        self._reclaimed = counter(
            "reclaimed_bytes_total",
            "Sum of the ECR sizes of the images deleted, per repository.",
            repo,
        )
        self._would_delete = gauge(
            "dry_run_would_delete_images",
            "Images the last cycle, a dry run, would have deleted (0 after a real cycle), per "
            "repository: what turning dry-run off would delete now.",
            repo,
        )
        self._would_reclaim = gauge(
            "dry_run_would_reclaim_bytes",
            "Sum of the ECR sizes of the images the last cycle, a dry run, would have deleted "
            "(0 after a real cycle), per repository.",
            repo,
        )
        self._vetoed = counter(
            "images_vetoed_total",
            "Images planned for deletion but kept because they came into use before the delete "
            "call, per repository.",
            repo,
        )
        self._archived = counter(
            "images_archived_total",
            "Images moved to ECR's archive storage class (--disposal=archive), per repository.",
            repo,
        )
        self._expired = counter(
            "archived_images_deleted_total",
            "Archived images deleted because they were archived longer ago than "
            "--delete-archived-after, per repository.",
            repo,
        )
        self._repository_archived = gauge(
            "repository_archived_images",
            "Images in ECR's archive storage class after the last cycle, per repository (only "
            "where --delete-archived-after applies: the archive is listed for it).",
            repo,
        )
        self._restores = counter(
            "restores_requested_total",
            "Archived images asked back to the standard storage class because they came into "
            "use (--disposal=archive), per repository.",
            repo,
        )
        self._already_gone = counter(
            "images_already_gone_total",
            "Images a delete call found already gone (ImageNotFound: deleted by someone else "
            "since the listing), counted as done, per repository.",
            repo,
        )
        self._delete_failures = counter(
            "image_delete_failures_total",
            "Images ECR did not delete when asked (BatchDeleteImage failures), per repository "
            "and ECR failure code.",
            ["repository", "code"],
        )
        self._errors = counter(
            "errors_total",
            "Repository prunes that failed or were stopped, per repository, failing operation (ECR "
            "API operation, or prune) and error code (ECR error code, exception type, or Stopped: "
            "deletions stopped by the trust gate, leadership lost or shutdown).",
            ["repository", "operation", "code"],
        )
        self._repository_images = gauge(
            "repository_images",
            "Images in the repository as the last cycle left it (a dry run deletes nothing).",
            repo,
        )
        self._repository_artifacts = gauge(
            "repository_artifacts",
            "Attached artifacts (signatures, attestations, SBOMs) in the repository as the last "
            "cycle left it: among repository_images, but not counted toward max-images nor in "
            "protected_images.",
            repo,
        )
        self._repository_bytes = gauge(
            "repository_size_bytes",
            "Sum of the ECR sizes of the repository's images as the last cycle left it "
            "(layers shared by several images count once per image).",
            repo,
        )
        self._repository_limit = gauge(
            "repository_max_images",
            "The repository's effective max-images (the --config override that applies, else "
            "-max-images): the image count the cycles prune it down to.",
            repo,
        )
        self._protected = gauge(
            "protected_images",
            "Images the last cycle could not delete whatever the count, per repository and "
            "protecting reason (in-use, in-use-tag, keep-tag, keep-regex, young, ...).",
            ["repository", "reason"],
        )
        self._held_back = gauge(
            "held_back_images",
            "Images the last cycle would have deleted but for the per-cycle deletion cap or a "
            "stop, per repository.",
            repo,
        )
        self._leader = gauge(
            "leader",
            "1 while this replica holds the leader Lease (or leader election is off), else 0.",
        )
        self._build_info = gauge(
            "build_info",
            "Always 1; the labels name the controller version and the Python version.",
            ["version", "python"],
        )
        self._build_info.labels(__version__, platform.python_version()).set(1)

    # -- configuration ------------------------------------------------------------------------

    def configure(
        self,
        *,
        interval_seconds: float,
        dry_run: bool,
        max_images: Callable[[str], int],
    ) -> None:
        """What this process was started with: known to a standby too, before any cycle.

        `max_images` gives a repository's effective limit (after the --config overrides)."""
        self._interval.set(interval_seconds)
        self._dry_run.set(1 if dry_run else 0)
        self._limit_of = max_images

    # -- cycles -------------------------------------------------------------------------------

    def observe_cycle(self, report: CycleReport, duration_seconds: float) -> None:
        """Record what one cycle did."""
        if report.refused is not None:
            self._cycles.labels("refused").inc()
            return
        result = "stopped" if report.stopped is not None else "ok" if report.ok else "failed"
        self._cycles.labels(result).inc()
        self._cycle_duration.observe(duration_seconds)
        self._dry_run.set(1 if report.dry_run else 0)
        if report.ok:
            ended = report.finished_at.timestamp() if report.finished_at else time.time()
            self._last_success.set(ended)
        # a cycle that ends after this replica stopped leading: what it did is counted, but the
        # repositories' state is the new leader's to tell
        gauges = self._leading is not False
        for repository in report.repositories:
            self._observe_repository(
                repository, dry_run=report.dry_run, gauges=gauges, disposal=report.disposal
            )
        if gauges and report.listed:
            # the cycle saw every selected repository: forget the gauges of the others
            for gone in self._repositories - {r.name for r in report.repositories}:
                self._forget(gone)

    def _observe_repository(
        self, report: RepositoryReport, *, dry_run: bool, gauges: bool, disposal: str = "delete"
    ) -> None:
        name = report.name
        self._zero_counters(name)
        deleted_bytes = report.bytes_reclaimed
        if not dry_run and disposal == "archive":
            self._archived.labels(name).inc(report.deleted_count)
        elif not dry_run:
            self._deleted.labels(name).inc(report.deleted_count)
            self._reclaimed.labels(name).inc(deleted_bytes)
        expired = report.expired
        if expired is not None and not dry_run:
            self._expired.labels(name).inc(expired.deleted_count)
        for part in (report,) if expired is None else (report, expired):
            self._vetoed.labels(name).inc(part.vetoed)
            self._already_gone.labels(name).inc(part.already_gone)
            for failure in part.failed:
                self._delete_failures.labels(name, failure.code).inc()
        for error in report.errors:
            self._errors.labels(name, error.operation, error.code).inc()
        if not gauges or not report.listed:
            return  # its images were not listed (failed, or cut off): the gauges keep their value
        self._repositories.add(name)
        if dry_run:
            images, size = report.images_before, report.bytes_total
        else:
            images, size = report.images_after, max(0, report.bytes_total - deleted_bytes)
        self._repository_images.labels(name).set(images)
        artifacts = report.artifacts - (0 if dry_run else report.artifacts_deleted)
        self._repository_artifacts.labels(name).set(artifacts)
        self._repository_bytes.labels(name).set(size)
        if self._limit_of is not None:
            self._repository_limit.labels(name).set(self._limit_of(name))
        self._would_delete.labels(name).set(report.deleted_count if dry_run else 0)
        self._would_reclaim.labels(name).set(deleted_bytes if dry_run else 0)
        self._held_back.labels(name).set(report.held_back)
        if expired is not None:
            archive = expired.images_before if dry_run else expired.images_after
            self._repository_archived.labels(name).set(archive)
        else:
            self._repository_archived.remove(name)
        for stale in self._protected_reasons.get(name, set()) - set(report.protected):
            self._protected.remove(name, stale)
        for reason, count in report.protected.items():
            self._protected.labels(name, reason).set(count)
        self._protected_reasons[name] = set(report.protected)

    def _zero_counters(self, repository: str) -> None:
        """The repository's counter series, at 0, the first time it is seen (see the module doc)."""
        if repository in self._counted:
            return
        self._counted.add(repository)
        counters = (self._deleted, self._reclaimed, self._vetoed, self._already_gone)
        for metric in (*counters, self._archived, self._expired, self._restores):
            metric.labels(repository)
        self._errors.labels(repository, "", "")
        self._delete_failures.labels(repository, "")

    def _forget(self, repository: str) -> None:
        """Drop the gauges of a repository no longer selected, or no longer ours (counters stay)."""
        gauges = (
            self._repository_images,
            self._repository_artifacts,
            self._repository_bytes,
            self._repository_limit,
            self._held_back,
            self._would_delete,
            self._would_reclaim,
            self._repository_archived,
        )
        for metric in gauges:
            metric.remove(repository)  # a label set never set is ignored
        for reason in self._protected_reasons.pop(repository, set()):
            self._protected.remove(repository, reason)
        self._repositories.discard(repository)

    def restore_requested(self, repository: str) -> None:
        """A restore of an archived image was requested (controller.restoring)."""
        self._zero_counters(repository)
        self._restores.labels(repository).inc()

    def cycle_skipped(self, block: Blocked) -> None:
        """A scheduled cycle did not run; `block.reason` is a short fixed label."""
        self._skipped.labels(block.reason).inc()

    def set_leader(self, leading: bool) -> None:
        """Leadership changed. A replica that stops leading forgets the repositories' gauges:
        the new leader's cycles tell their state from now on."""
        self._leader.set(1 if leading else 0)
        self._leading = leading
        if not leading:
            for repository in list(self._repositories):
                self._forget(repository)

    # -- read at scrape time ------------------------------------------------------------------

    def watch_sources(
        self,
        tracker: SourceTracker,
        index: InUseIndex,
        clock: Callable[[], float],
        *,
        refusal: Callable[[], str | None],
    ) -> None:
        """Expose the watched sources and the in-use view, read at each scrape.

        `clock` is the monotonic clock the tracker's times come from; `refusal` says why
        deleting must not happen now (the same gate the pruner asks), or None.
        """
        self._registry.register(_SourceCollector(tracker, index, clock, refusal))

    def watch_ecr(self, stats: CallStats) -> None:
        """Expose the ECR call and throttle counts, read at each scrape."""
        self._registry.register(_CallCollector(stats, "ecr_api", "ECR API", ECR_OPERATIONS))

    def watch_aws_sources(self, stats: CallStats) -> None:
        """Expose the ECS, Lambda and STS call counts of the AWS sources, read at each scrape."""
        self._registry.register(
            _CallCollector(
                stats, "aws_source_api", "ECS, Lambda and STS API", AWS_SOURCE_OPERATIONS
            )
        )


class _SourceFamilies(NamedTuple):
    events: CounterMetricFamily
    restarts: CounterMetricFamily
    relists: CounterMetricFamily
    malformed: CounterMetricFamily
    synced: GaugeMetricFamily
    connected: GaugeMetricFamily
    denied: GaugeMetricFamily
    not_served: GaugeMetricFamily
    staleness: GaugeMetricFamily
    objects: GaugeMetricFamily
    in_use: GaugeMetricFamily
    trusted: GaugeMetricFamily

    @classmethod
    def empty(cls) -> _SourceFamilies:
        def counter(name: str, doc: str) -> CounterMetricFamily:
            return CounterMetricFamily(PREFIX + name, doc, labels=_SOURCE_LABELS)

        def gauge(name: str, doc: str, labels: Sequence[str] = _SOURCE_LABELS) -> GaugeMetricFamily:
            return GaugeMetricFamily(PREFIX + name, doc, labels=labels)

        return cls(
            events=counter("watch_events_total", "Watch events received, per watched source."),
            restarts=counter(
                "watch_restarts_total", "Watch streams opened or reopened, per watched source."
            ),
            relists=counter(
                "watch_relists_total",
                "LISTs after the first (410 Gone or a lost view), per watched source.",
            ),
            malformed=counter(
                "watch_malformed_total",
                "Objects, image references and watch lines skipped as malformed (missing "
                "fields, wrong types, unparsable images, lines that are not JSON), per watched "
                "source.",
            ),
            synced=gauge(
                "watch_synced",
                "1 once the source completed a LIST and has not lost its view since, else 0.",
            ),
            connected=gauge(
                "watch_connected", "1 while the source's watch stream is current, else 0."
            ),
            denied=gauge(
                "watch_denied",
                "1 while the source's API server answers 401 or 403 (check RBAC), else 0.",
            ),
            not_served=gauge(
                "watch_not_served",
                "1 while the source's API server answers 404: its resource is not served (the "
                "CRD of a --protect-resources entry not installed), else 0.",
            ),
            staleness=gauge(
                "watch_staleness_seconds",
                "Seconds since the source's view was last known current: 0 while connected, "
                "+Inf if it never was.",
            ),
            objects=gauge(
                "watched_objects",
                "Objects (pods, workloads) in the in-use view, per kind, over all clusters.",
                ["kind"],
            ),
            in_use=gauge(
                "images_in_use",
                "Distinct image digests referenced by the watched objects (never deleted).",
                [],
            ),
            trusted=gauge(
                "view_trusted",
                "1 when the in-use view can be trusted for deleting (every source synced, none "
                "denied or too stale, pods in scope), else 0.",
                [],
            ),
        )


class _SourceCollector:
    """Reads the source tracker and the in-use index when scraped."""

    def __init__(
        self,
        tracker: SourceTracker,
        index: InUseIndex,
        clock: Callable[[], float],
        refusal: Callable[[], str | None],
    ) -> None:
        self._tracker = tracker
        self._index = index
        self._clock = clock
        self._refusal = refusal

    def describe(self) -> list[Metric]:
        return list(_SourceFamilies.empty())

    def collect(self) -> list[Metric]:
        f = _SourceFamilies.empty()
        now = self._clock()
        for source, status in sorted(self._tracker.sources.items(), key=lambda s: str(s[0])):
            labels = [source.cluster, source.kind, source.namespace]
            f.events.add_metric(labels, status.events)
            f.restarts.add_metric(labels, status.restarts)
            f.relists.add_metric(labels, status.relists)
            f.malformed.add_metric(labels, status.malformed)
            f.synced.add_metric(labels, 1 if self._index.is_synced(source) else 0)
            f.connected.add_metric(labels, 1 if status.connected else 0)
            f.denied.add_metric(labels, 1 if status.denied is not None else 0)
            f.not_served.add_metric(labels, 1 if status.not_served else 0)
            f.staleness.add_metric(labels, self._tracker.staleness(source, now))
        kinds = {s.kind for s in self._tracker.sources} | {s.kind for s in self._index.sources}
        for kind in sorted(kinds):
            f.objects.add_metric([kind], self._index.object_count(kind=kind))
        f.in_use.add_metric([], self._index.digests_in_use())
        f.trusted.add_metric([], 1 if self._refusal() is None else 0)
        return list(f)


class _CallCollector:
    """Reads an AWS gateway's call statistics when scraped: `NAME_calls_total`,
    `NAME_throttles_total`, `NAME_server_errors_total` by operation, each known operation at 0
    from the start."""

    def __init__(self, stats: CallStats, name: str, api: str, operations: Sequence[str]) -> None:
        self._stats = stats
        self._name, self._api, self._operations = name, api, tuple(operations)

    def describe(self) -> list[Metric]:
        return list(self._families())

    def collect(self) -> list[Metric]:
        calls, throttles, server_errors = self._families()
        stats = self._stats
        operations = sorted(
            {*self._operations, *stats.calls, *stats.throttles, *stats.server_errors}
        )
        for operation in operations:
            calls.add_metric([operation], stats.calls[operation])
            throttles.add_metric([operation], stats.throttles[operation])
            server_errors.add_metric([operation], stats.server_errors[operation])
        return [calls, throttles, server_errors]

    def _families(self) -> tuple[CounterMetricFamily, CounterMetricFamily, CounterMetricFamily]:
        name, api = PREFIX + self._name, self._api
        return (
            CounterMetricFamily(
                name + "_calls_total",
                f"{api} calls made (one per call, retries not counted), per operation.",
                labels=["operation"],
            ),
            CounterMetricFamily(
                name + "_throttles_total",
                f"{api} attempts answered with throttling (HTTP 429 or a throttling error code), "
                "per operation.",
                labels=["operation"],
            ),
            CounterMetricFamily(
                name + "_server_errors_total",
                f"{api} attempts answered with a 5xx server error, retried or not, per operation.",
                labels=["operation"],
            ),
        )
