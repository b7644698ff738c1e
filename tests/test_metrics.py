"""The metrics: values after synthetic cycles, scrape-time collectors, and a clean `promtool` lint."""

from __future__ import annotations

import platform
import shutil
import subprocess
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from controller import __version__
from controller.ecr import CallStats
from controller.identifiers import SourceKey
from controller.inventory import InUseIndex, References
from controller.metrics import ECR_OPERATIONS, Metrics
from controller.policy import Reason
from controller.pruning import (
    CycleReport,
    Deletion,
    ErrorRecord,
    FailedDeletion,
    RepositoryReport,
)
from controller.scheduling import Blocked
from controller.trust import SourceTracker
from tests.digests import digest as dg

STARTED = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
FINISHED = STARTED + timedelta(seconds=42)
PODS = SourceKey("prod", "pods")
DEPLOYMENTS = SourceKey("prod", "deployments", "team-a")


def deletions(count: int, *, size: int = 100) -> list[Deletion]:
    return [Deletion(dg(n), (f"build-{n}",), Reason.OVER_COUNT, size) for n in range(count)]


def repo(
    name: str = "app",
    *,
    before: int = 10,
    deleted: int = 3,
    size: int = 100,
    protected: dict[str, int] | None = None,
    **fields: object,
) -> RepositoryReport:
    gone = deletions(deleted, size=size)
    report = RepositoryReport(
        name,
        listed=True,
        images_before=before,
        images_after=before - deleted,
        protected={Reason(reason): n for reason, n in (protected or {}).items()},
        deleted=gone,
        deleted_count=len(gone),
        bytes_reclaimed=sum(d.size_bytes for d in gone),
        bytes_total=before * size,
    )
    for key, value in fields.items():
        setattr(report, key, value)
    return report


def cycle(*repos: RepositoryReport, dry_run: bool = False, **fields: object) -> CycleReport:
    report = CycleReport(
        started_at=STARTED,
        dry_run=dry_run,
        listed=True,
        repositories=list(repos),
        finished_at=FINISHED,
    )
    for key, value in fields.items():
        setattr(report, key, value)
    return report


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> Metrics:
    return Metrics(registry)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


# -- cycles -----------------------------------------------------------------------------------


def test_build_info_names_version_and_python(registry: CollectorRegistry, metrics: Metrics) -> None:
    assert (
        value(
            registry,
            "ecr_cleanup_build_info",
            version=__version__,
            python=platform.python_version(),
        )
        == 1
    )


def test_every_cycle_result_starts_at_zero(registry: CollectorRegistry, metrics: Metrics) -> None:
    for result in ("ok", "failed", "refused", "stopped"):
        assert value(registry, "ecr_cleanup_cycles_total", result=result) == 0


def test_configuration_is_known_before_any_cycle(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    limits = {"app": 50}
    metrics.configure(
        interval_seconds=1800, dry_run=True, max_images=lambda name: limits.get(name, 900)
    )
    assert value(registry, "ecr_cleanup_interval_seconds") == 1800
    assert value(registry, "ecr_cleanup_dry_run") == 1
    # the limits are exported for the repositories a cycle saw, with their overrides
    assert value(registry, "ecr_cleanup_repository_max_images", repository="app") is None
    metrics.observe_cycle(cycle(repo("app"), repo("web"), dry_run=True), 1.0)
    assert value(registry, "ecr_cleanup_repository_max_images", repository="app") == 50
    assert value(registry, "ecr_cleanup_repository_max_images", repository="web") == 900


def test_a_clean_cycle_leaves_zero_error_failure_and_veto_series_per_repository(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    metrics.observe_cycle(cycle(repo("app", deleted=0), dry_run=True), 1.0)

    for name in (
        "ecr_cleanup_images_deleted_total",
        "ecr_cleanup_reclaimed_bytes_total",
        "ecr_cleanup_images_vetoed_total",
        "ecr_cleanup_images_already_gone_total",
    ):
        assert value(registry, name, repository="app") == 0, name
    # the repository's zero line: no operation, no code (Prometheus stores it without them)
    errors = "ecr_cleanup_errors_total"
    assert value(registry, errors, repository="app", operation="", code="") == 0
    failures = "ecr_cleanup_image_delete_failures_total"
    assert value(registry, failures, repository="app", code="") == 0
    exposition = generate_latest(registry).decode()
    assert 'ecr_cleanup_errors_total{code="",operation="",repository="app"} 0.0' in exposition

    # a real error adds its own series; the zero line stays 0
    failing = repo(
        "app",
        errors=[ErrorRecord("DescribeImages", "ThrottlingException", "DescribeImages: x")],
        failed=[FailedDeletion(dg(1), "KmsError", "key")],
    )
    metrics.observe_cycle(cycle(failing), 1.0)
    assert value(registry, errors, repository="app", operation="", code="") == 0
    labels = {"repository": "app", "operation": "DescribeImages", "code": "ThrottlingException"}
    assert value(registry, errors, **labels) == 1
    assert value(registry, failures, repository="app", code="") == 0
    assert value(registry, failures, repository="app", code="KmsError") == 1


def test_a_cycle_stopped_by_shutdown_is_counted_as_stopped(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    metrics.observe_cycle(cycle(repo("app", deleted=2), stopped="shutting down"), 3.0)

    assert value(registry, "ecr_cleanup_cycles_total", result="stopped") == 1
    assert value(registry, "ecr_cleanup_cycles_total", result="failed") == 0
    assert value(registry, "ecr_cleanup_cycles_total", result="ok") == 0
    assert value(registry, "ecr_cleanup_cycle_duration_seconds_count") == 1
    assert value(registry, "ecr_cleanup_last_success_timestamp_seconds") == 0
    # what it deleted before the stop is counted
    assert value(registry, "ecr_cleanup_images_deleted_total", repository="app") == 2


def test_a_replica_that_stops_leading_forgets_the_repository_gauges_and_keeps_counters(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    metrics.configure(interval_seconds=60, dry_run=False, max_images=lambda _name: 5)
    metrics.set_leader(True)
    metrics.observe_cycle(cycle(repo("app", before=10, deleted=3, protected={"in-use": 1})), 1.0)
    gauges = (
        "ecr_cleanup_repository_images",
        "ecr_cleanup_repository_size_bytes",
        "ecr_cleanup_repository_max_images",
        "ecr_cleanup_held_back_images",
        "ecr_cleanup_dry_run_would_delete_images",
        "ecr_cleanup_dry_run_would_reclaim_bytes",
    )
    for name in gauges:
        assert value(registry, name, repository="app") is not None, name

    metrics.set_leader(False)
    for name in gauges:
        assert value(registry, name, repository="app") is None, name
    protected = "ecr_cleanup_protected_images"
    assert value(registry, protected, repository="app", reason="in-use") is None
    assert value(registry, "ecr_cleanup_images_deleted_total", repository="app") == 3
    assert value(registry, "ecr_cleanup_last_success_timestamp_seconds") == FINISHED.timestamp()

    # the cycle that was in flight when leadership went ends now: counted, gauges not restored
    metrics.observe_cycle(cycle(repo("app", before=7, deleted=1)), 1.0)
    assert value(registry, "ecr_cleanup_images_deleted_total", repository="app") == 4
    for name in gauges:
        assert value(registry, name, repository="app") is None, name

    # leading again: the next cycle exports the state again
    metrics.set_leader(True)
    metrics.observe_cycle(cycle(repo("app", before=6, deleted=1)), 1.0)
    assert value(registry, "ecr_cleanup_repository_images", repository="app") == 5
    assert value(registry, "ecr_cleanup_repository_max_images", repository="app") == 5


def test_real_deletions_count_images_bytes_and_sizes(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    metrics.observe_cycle(cycle(repo("app", before=10, deleted=3, size=100)), 12.5)

    assert value(registry, "ecr_cleanup_images_deleted_total", repository="app") == 3
    assert value(registry, "ecr_cleanup_reclaimed_bytes_total", repository="app") == 300
    assert value(registry, "ecr_cleanup_dry_run_would_delete_images", repository="app") == 0
    assert value(registry, "ecr_cleanup_dry_run_would_reclaim_bytes", repository="app") == 0
    assert value(registry, "ecr_cleanup_repository_images", repository="app") == 7
    assert value(registry, "ecr_cleanup_repository_size_bytes", repository="app") == 700
    assert value(registry, "ecr_cleanup_dry_run") == 0
    assert value(registry, "ecr_cleanup_cycles_total", result="ok") == 1
    assert value(registry, "ecr_cleanup_cycle_duration_seconds_count") == 1
    assert value(registry, "ecr_cleanup_cycle_duration_seconds_sum") == 12.5
    assert value(registry, "ecr_cleanup_cycle_duration_seconds_bucket", le="10.0") == 0
    assert value(registry, "ecr_cleanup_cycle_duration_seconds_bucket", le="30.0") == 1
    assert value(registry, "ecr_cleanup_last_success_timestamp_seconds") == FINISHED.timestamp()


def test_dry_run_shows_what_it_would_delete_now_and_sizes_stay(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    metrics.observe_cycle(cycle(repo("app", before=10, deleted=4, size=50), dry_run=True), 1.0)

    assert value(registry, "ecr_cleanup_dry_run_would_delete_images", repository="app") == 4
    assert value(registry, "ecr_cleanup_dry_run_would_reclaim_bytes", repository="app") == 200
    # the counters exist from the repository's first cycle on, and a dry run leaves them at 0
    assert value(registry, "ecr_cleanup_images_deleted_total", repository="app") == 0
    assert value(registry, "ecr_cleanup_reclaimed_bytes_total", repository="app") == 0
    # a dry run deletes nothing: the repository keeps its size
    assert value(registry, "ecr_cleanup_repository_images", repository="app") == 10
    assert value(registry, "ecr_cleanup_repository_size_bytes", repository="app") == 500
    assert value(registry, "ecr_cleanup_dry_run") == 1
    assert value(registry, "ecr_cleanup_cycles_total", result="ok") == 1


def test_would_delete_is_a_gauge_not_a_sum_over_dry_run_cycles(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    # the same plan on every cycle: the figure stays, it does not grow with the cycle count
    for _ in range(3):
        metrics.observe_cycle(cycle(repo("app", before=10, deleted=4, size=50), dry_run=True), 1)
    assert value(registry, "ecr_cleanup_dry_run_would_delete_images", repository="app") == 4
    metrics.observe_cycle(cycle(repo("app", before=10, deleted=1, size=50), dry_run=True), 1)
    assert value(registry, "ecr_cleanup_dry_run_would_delete_images", repository="app") == 1
    assert value(registry, "ecr_cleanup_dry_run_would_reclaim_bytes", repository="app") == 50
    # dry-run turned off: the real cycle deletes, nothing is left pending
    metrics.observe_cycle(cycle(repo("app", before=10, deleted=1, size=50)), 1)
    assert value(registry, "ecr_cleanup_dry_run_would_delete_images", repository="app") == 0


def test_counters_add_up_over_cycles(registry: CollectorRegistry, metrics: Metrics) -> None:
    metrics.observe_cycle(cycle(repo("app", deleted=3), repo("web", deleted=1)), 1.0)
    metrics.observe_cycle(cycle(repo("app", deleted=2), repo("web", deleted=0)), 2.0)

    assert value(registry, "ecr_cleanup_images_deleted_total", repository="app") == 5
    assert value(registry, "ecr_cleanup_images_deleted_total", repository="web") == 1
    assert value(registry, "ecr_cleanup_cycles_total", result="ok") == 2
    assert value(registry, "ecr_cleanup_cycle_duration_seconds_sum") == 3.0


def test_protected_reasons_are_reset_per_repository_each_cycle(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    metrics.observe_cycle(
        cycle(
            repo("app", protected={"in-use": 3, "keep-tag": 1}),
            repo("web", protected={"young": 2}),
        ),
        1.0,
    )
    assert value(registry, "ecr_cleanup_protected_images", repository="app", reason="in-use") == 3
    assert value(registry, "ecr_cleanup_protected_images", repository="app", reason="keep-tag") == 1

    metrics.observe_cycle(
        cycle(repo("app", protected={"in-use": 2}), repo("web", protected={"young": 2})), 1.0
    )
    assert value(registry, "ecr_cleanup_protected_images", repository="app", reason="in-use") == 2
    assert (
        value(registry, "ecr_cleanup_protected_images", repository="app", reason="keep-tag") is None
    )
    assert value(registry, "ecr_cleanup_protected_images", repository="web", reason="young") == 2


def test_errors_and_delete_failures_are_counted_by_code(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    failing = repo(
        "app",
        failed=[
            FailedDeletion(dg(7), "ImageReferencedByManifestList", "in an index"),
            FailedDeletion(dg(8), "ImageReferencedByManifestList", "in an index"),
            FailedDeletion(dg(9), "KmsError", "key"),
        ],
        errors=[ErrorRecord("DescribeImages", "ThrottlingException", "slow down")],
    )
    metrics.observe_cycle(cycle(failing, repo("web")), 3.0)

    failures = "ecr_cleanup_image_delete_failures_total"
    assert value(registry, failures, repository="app", code="ImageReferencedByManifestList") == 2
    assert value(registry, failures, repository="app", code="KmsError") == 1
    errors = "ecr_cleanup_errors_total"
    labels = {"repository": "app", "operation": "DescribeImages", "code": "ThrottlingException"}
    assert value(registry, errors, **labels) == 1
    assert value(registry, "ecr_cleanup_cycles_total", result="failed") == 1
    assert value(registry, "ecr_cleanup_cycles_total", result="ok") == 0
    # never a successful cycle: the timestamp stays at its initial 0
    assert value(registry, "ecr_cleanup_last_success_timestamp_seconds") == 0


def test_last_success_only_moves_on_an_ok_cycle(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    metrics.observe_cycle(cycle(repo("app")), 1.0)
    later = FINISHED + timedelta(hours=1)
    metrics.observe_cycle(
        cycle(
            repo("app"),
            errors=[ErrorRecord("DescribeRepositories", "RepositoryNotFoundException", "x")],
            finished_at=later,
        ),
        1.0,
    )
    assert value(registry, "ecr_cleanup_last_success_timestamp_seconds") == FINISHED.timestamp()


def test_a_repository_that_failed_before_listing_keeps_its_gauges(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    metrics.observe_cycle(cycle(repo("app", before=10, deleted=0, protected={"in-use": 4})), 1.0)
    broken = RepositoryReport(
        "app",
        errors=[ErrorRecord("DescribeImages", "AccessDeniedException", "no")],
    )
    metrics.observe_cycle(cycle(broken), 1.0)

    assert value(registry, "ecr_cleanup_repository_images", repository="app") == 10
    assert value(registry, "ecr_cleanup_protected_images", repository="app", reason="in-use") == 4


def test_repositories_no_longer_selected_lose_their_gauges(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    metrics.observe_cycle(cycle(repo("app", protected={"in-use": 1}), repo("old")), 1.0)
    # the listing itself failed: nothing is known about the repositories, nothing is dropped
    metrics.observe_cycle(
        cycle(
            listed=False,
            errors=[ErrorRecord("DescribeRepositories", "AccessDeniedException", "denied")],
        ),
        1.0,
    )
    assert value(registry, "ecr_cleanup_repository_images", repository="old") == 7

    metrics.observe_cycle(cycle(repo("app", protected={"in-use": 1})), 1.0)
    assert value(registry, "ecr_cleanup_repository_images", repository="app") == 7
    assert value(registry, "ecr_cleanup_repository_images", repository="old") is None
    assert value(registry, "ecr_cleanup_repository_size_bytes", repository="old") is None
    # counters keep their history
    assert value(registry, "ecr_cleanup_images_deleted_total", repository="old") == 3


def test_a_repository_cut_off_before_its_listing_keeps_its_gauges(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    """Before: the metrics guessed from the report's shape (errors and no images), and a
    repository that shutdown cut off before its listing, which has no error, had its gauges set
    to 0, as if it were empty. The report now says it was not listed."""
    metrics.observe_cycle(cycle(repo("app", before=10, deleted=0, protected={"in-use": 4})), 1.0)
    cut_off = RepositoryReport("app")  # not listed, not finished, no error
    metrics.observe_cycle(cycle(cut_off, stopped="shutting down"), 1.0)

    assert value(registry, "ecr_cleanup_repository_images", repository="app") == 10
    assert value(registry, "ecr_cleanup_repository_size_bytes", repository="app") == 1000
    assert value(registry, "ecr_cleanup_protected_images", repository="app", reason="in-use") == 4


def test_a_cycle_stopped_before_the_listing_forgets_no_repository(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    """Before: no repositories and no error read as "the listing succeeded and selected none",
    and every repository's gauges were dropped."""
    metrics.observe_cycle(cycle(repo("app")), 1.0)
    metrics.observe_cycle(cycle(listed=False, stopped="shutting down"), 1.0)
    assert value(registry, "ecr_cleanup_repository_images", repository="app") == 7


def test_a_listing_that_selects_none_of_the_repositories_forgets_their_gauges(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    """The registry was listed and none of the selected repositories is in it any more: their
    gauges go, as when some of them are gone (before: kept, since no repositories and an error
    looked like a failed listing)."""
    metrics.observe_cycle(cycle(repo("app")), 1.0)
    gone = ErrorRecord("DescribeRepositories", "RepositoryNotFoundException", "not found: app")
    metrics.observe_cycle(cycle(errors=[gone]), 1.0)
    assert value(registry, "ecr_cleanup_repository_images", repository="app") is None
    assert value(registry, "ecr_cleanup_images_deleted_total", repository="app") == 3


def test_a_refused_cycle_is_counted_but_not_timed(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    metrics.observe_cycle(cycle(refused="prod/pods: initial LIST not complete"), 0.001)

    assert value(registry, "ecr_cleanup_cycles_total", result="refused") == 1
    assert value(registry, "ecr_cleanup_cycles_total", result="ok") == 0
    assert value(registry, "ecr_cleanup_cycle_duration_seconds_count") == 0
    assert value(registry, "ecr_cleanup_last_success_timestamp_seconds") == 0


def test_vetoed_and_held_back_images(registry: CollectorRegistry, metrics: Metrics) -> None:
    metrics.observe_cycle(cycle(repo("app", vetoed=2, held_back=5, already_gone=1)), 1.0)
    metrics.observe_cycle(cycle(repo("app", vetoed=1, held_back=0, already_gone=3)), 1.0)

    assert value(registry, "ecr_cleanup_images_vetoed_total", repository="app") == 3
    assert value(registry, "ecr_cleanup_images_already_gone_total", repository="app") == 4
    assert value(registry, "ecr_cleanup_held_back_images", repository="app") == 0


def test_skipped_cycles_are_counted_per_reason(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    metrics.cycle_skipped(Blocked("untrusted-view", "prod/pods: disconnected for 400s"))
    metrics.cycle_skipped(Blocked("untrusted-view", "prod/pods: disconnected for 700s"))
    metrics.cycle_skipped(Blocked("not-leader", "held by pod-b"))

    skipped = "ecr_cleanup_cycles_skipped_total"
    assert value(registry, skipped, reason="untrusted-view") == 2
    assert value(registry, skipped, reason="not-leader") == 1


def test_leader(registry: CollectorRegistry, metrics: Metrics) -> None:
    assert value(registry, "ecr_cleanup_leader") == 0
    metrics.set_leader(True)
    assert value(registry, "ecr_cleanup_leader") == 1
    metrics.set_leader(False)
    assert value(registry, "ecr_cleanup_leader") == 0


# -- read at scrape time ----------------------------------------------------------------------


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def watched_view() -> tuple[SourceTracker, InUseIndex]:
    tracker = SourceTracker([PODS, DEPLOYMENTS])
    index = InUseIndex()
    index.register(PODS)
    index.register(DEPLOYMENTS)
    index.replace(
        PODS,
        {
            "pod-1": References(digests=frozenset({dg(1), dg(2)})),
            "pod-2": References(digests=frozenset({dg(2)})),
        },
    )
    tracker.listed(PODS, 900.0)
    return tracker, index


def test_watch_sources_are_read_at_scrape_time(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    tracker, index = watched_view()
    clock = Clock()
    refusal: list[str | None] = ["prod/deployments@team-a: initial LIST not complete"]
    metrics.watch_sources(tracker, index, clock, refusal=lambda: refusal[0])

    pods = {"source_cluster": "prod", "kind": "pods", "source_namespace": ""}
    deployments = {"source_cluster": "prod", "kind": "deployments", "source_namespace": "team-a"}
    assert value(registry, "ecr_cleanup_watch_synced", **pods) == 1
    assert value(registry, "ecr_cleanup_watch_synced", **deployments) == 0
    assert value(registry, "ecr_cleanup_watch_connected", **pods) == 1
    assert value(registry, "ecr_cleanup_watch_staleness_seconds", **pods) == 0
    assert value(registry, "ecr_cleanup_watch_staleness_seconds", **deployments) == float("inf")
    assert value(registry, "ecr_cleanup_watched_objects", kind="pods") == 2
    assert value(registry, "ecr_cleanup_watched_objects", kind="deployments") == 0
    assert value(registry, "ecr_cleanup_images_in_use") == 2
    assert value(registry, "ecr_cleanup_view_trusted") == 0

    # the watchers move on; the next scrape sees it without any call into Metrics
    tracker.sources[PODS].events += 5
    tracker.sources[PODS].restarts += 2
    tracker.sources[PODS].malformed += 3
    tracker.listed(PODS, 950.0)  # a relist (after 410 Gone)
    tracker.disconnected(PODS, 960.0, "connection reset")
    tracker.disconnected(DEPLOYMENTS, 960.0, "forbidden", status_code=403)
    index.replace(DEPLOYMENTS, {"deploy-1": References(digests=frozenset({dg(3)}))})
    clock.now = 1000.0
    refusal[0] = None

    assert value(registry, "ecr_cleanup_watch_events_total", **pods) == 5
    assert value(registry, "ecr_cleanup_watch_restarts_total", **pods) == 2
    assert value(registry, "ecr_cleanup_watch_relists_total", **pods) == 1
    assert value(registry, "ecr_cleanup_watch_malformed_total", **pods) == 3
    assert value(registry, "ecr_cleanup_watch_connected", **pods) == 0
    assert value(registry, "ecr_cleanup_watch_staleness_seconds", **pods) == 40
    assert value(registry, "ecr_cleanup_watch_denied", **pods) == 0
    assert value(registry, "ecr_cleanup_watch_denied", **deployments) == 1
    assert value(registry, "ecr_cleanup_watched_objects", kind="deployments") == 1
    assert value(registry, "ecr_cleanup_images_in_use") == 3
    assert value(registry, "ecr_cleanup_view_trusted") == 1


def test_watching_the_same_names_twice_is_refused(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    tracker, index = watched_view()
    metrics.watch_sources(tracker, index, Clock(), refusal=lambda: None)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        metrics.watch_sources(tracker, index, Clock(), refusal=lambda: None)


def test_ecr_calls_and_throttles_are_read_at_scrape_time(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    stats = CallStats()
    metrics.watch_ecr(stats)
    # every operation the controller calls is there from the start, at 0
    for operation in ECR_OPERATIONS:
        assert value(registry, "ecr_cleanup_ecr_api_calls_total", operation=operation) == 0
        assert value(registry, "ecr_cleanup_ecr_api_throttles_total", operation=operation) == 0
        assert value(registry, "ecr_cleanup_ecr_api_server_errors_total", operation=operation) == 0

    stats.calls["DescribeImages"] += 3
    stats.server_errors["BatchDeleteImage"] += 4
    stats.calls["BatchDeleteImage"] += 1
    stats.throttles["DescribeImages"] += 2

    calls = "ecr_cleanup_ecr_api_calls_total"
    assert value(registry, calls, operation="DescribeImages") == 3
    assert value(registry, calls, operation="BatchDeleteImage") == 1
    assert value(registry, "ecr_cleanup_ecr_api_throttles_total", operation="DescribeImages") == 2
    errors = "ecr_cleanup_ecr_api_server_errors_total"
    assert value(registry, errors, operation="BatchDeleteImage") == 4


# -- the exposition as a whole ----------------------------------------------------------------

ALLOWED_LABELS = {
    "repository",
    "reason",
    "result",
    "operation",
    "code",
    "source_cluster",
    "kind",
    "source_namespace",
    "version",
    "python",
    "le",
}


def populated() -> CollectorRegistry:
    """A registry in which every metric has at least one sample."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.configure(interval_seconds=1800, dry_run=False, max_images=lambda _name: 900)
    metrics.observe_cycle(
        cycle(
            repo(
                "app",
                protected={"in-use": 3},
                vetoed=1,
                held_back=2,
                failed=[FailedDeletion(dg(9), "ImageReferencedByManifestList", "x")],
                errors=[ErrorRecord("BatchDeleteImage", "ServerException", "x")],
                expired=RepositoryReport(
                    "app", listed=True, images_before=3, images_after=1, deleted_count=2
                ),
            )
        ),
        5.0,
    )
    archive = RepositoryReport("app", listed=True, images_before=3, images_after=3)
    metrics.observe_cycle(
        cycle(repo("app", protected={"young": 1}, expired=archive), dry_run=True), 4.0
    )
    metrics.cycle_skipped(Blocked("not-leader", "held by pod-b"))
    metrics.set_leader(True)
    tracker, index = watched_view()
    metrics.watch_sources(tracker, index, Clock(), refusal=lambda: None)
    stats = CallStats()
    stats.calls["DescribeImages"] += 1
    stats.throttles["DescribeImages"] += 1
    metrics.watch_ecr(stats)
    aws = CallStats()
    aws.calls["ListTasks"] += 1
    metrics.watch_aws_sources(aws)
    return registry


def test_every_metric_is_prefixed_documented_and_low_cardinality() -> None:
    for family in populated().collect():
        assert family.name.startswith("ecr_cleanup_"), family.name
        assert family.documentation.strip(), f"{family.name} has no HELP"
        assert family.samples, f"{family.name} has no sample"
        for sample in family.samples:
            assert set(sample.labels) <= ALLOWED_LABELS, sample
            assert not any("sha256:" in v for v in sample.labels.values()), sample


def test_promtool_check_metrics_is_clean() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: run scripts/install-prometheus")
    exposition = generate_latest(populated())
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=exposition,
        capture_output=True,
        timeout=60,
        check=False,
    )
    lint = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, lint
    assert lint == "", lint
