"""The pruner against the in-memory ECR: concurrency, isolation, re-checks, the gate, dry-run."""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.ecr import EcrError
from controller.identifiers import SourceKey
from controller.images import Digest
from controller.inventory import InUseIndex, References
from controller.policy import Image, Rules
from controller.pruning import CycleReport, PruneOptions, Pruner
from controller.settings import RepositorySelection
from controller.trust import SourceTracker
from tests.digests import repo_digest as dg
from tests.fake_ecr import FakeEcr

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
PODS = SourceKey("test", "pods")


def images(repo: int, count: int, *, tagged: dict[int, str] | None = None) -> list[Image]:
    tagged = tagged or {}
    return [
        Image(
            digest=dg(repo, n),
            pushed_at=NOW - timedelta(hours=n),
            tags=(tagged[n],) if n in tagged else (f"build-{n}",),
            size_bytes=100,
        )
        for n in range(count)
    ]


def pruner(
    ecr: FakeEcr,
    index: InUseIndex,
    *,
    repos: Sequence[str] = ("*",),
    dry_run: bool = False,
    concurrency: int = 4,
    rules: Rules | None = None,
    tracker: SourceTracker | None = None,
    catch_up: float = 30.0,
) -> Pruner:
    return Pruner(
        ecr,
        index,
        PruneOptions(
            selection=RepositorySelection(tuple(repos)),
            rules_for=lambda _name: rules or Rules(max_images=10),
            dry_run=dry_run,
            concurrency=concurrency,
            lagging=tracker.lagging if tracker is not None else lambda: None,
            catch_up=catch_up,
        ),
    )


async def cycle(p: Pruner, gate: object = None) -> CycleReport:
    return await p.run_cycle(now=NOW, gate=(gate or (lambda: None)), clock=lambda: NOW)  # type: ignore[arg-type]


async def test_prunes_every_repository_concurrently_to_its_target() -> None:
    ecr = FakeEcr()
    for r, count in enumerate((250, 30, 5)):
        ecr.add(f"repo-{r}", *images(r, count))
    index = InUseIndex()
    index.upsert(PODS, "p", References(frozenset({dg(0, 249)})))  # the oldest image of repo-0
    report = await cycle(pruner(ecr, index, concurrency=2))
    assert report.ok
    by_name = {r.name: r for r in report.repositories}
    assert [len(by_name[f"repo-{r}"].deleted) for r in range(3)] == [240, 20, 0]
    assert by_name["repo-0"].images_after == 10
    assert by_name["repo-0"].protected == {"in-use": 1}
    assert dg(0, 249) in ecr.repos["repo-0"]
    assert len(ecr.repos["repo-0"]) == 10
    assert by_name["repo-0"].bytes_reclaimed == 240 * 100
    # no cap of 100 per cycle, but at most 100 ids per call: ⌈240/100⌉ + ⌈20/100⌉ calls
    assert ecr.calls["BatchDeleteImage"] == 3 + 1
    assert all(len(batch) <= 100 for _, batch in ecr.batches)
    assert ecr.max_in_flight == 2


async def test_one_repository_failing_does_not_stop_the_others() -> None:
    ecr = FakeEcr()
    ecr.add("bad", *images(1, 20))
    ecr.add("good", *images(2, 20))
    ecr.failing["bad"] = EcrError("DescribeImages", "AccessDeniedException", "no")
    report = await cycle(pruner(ecr, InUseIndex()))
    assert not report.ok
    bad, good = report.repositories
    assert [str(e) for e in bad.errors] == ["DescribeImages: AccessDeniedException: no"]
    assert len(good.deleted) == 10
    assert len(ecr.repos["bad"]) == 20


async def test_missing_repository_is_reported() -> None:
    ecr = FakeEcr()
    ecr.add("there", *images(1, 3))
    report = await cycle(pruner(ecr, InUseIndex(), repos=("there", "not-there")))
    assert [str(e) for e in report.errors] == ["repositories not found: not-there"]
    assert [r.name for r in report.repositories] == ["there"]


async def test_unselected_repositories_are_untouched() -> None:
    ecr = FakeEcr()
    ecr.add("team-a", *images(1, 20))
    ecr.add("other", *images(2, 20))
    report = await cycle(pruner(ecr, InUseIndex(), repos=("team-*",)))
    assert [r.name for r in report.repositories] == ["team-a"]
    assert len(ecr.repos["other"]) == 20


async def test_refused_cycle_deletes_nothing() -> None:
    ecr = FakeEcr()
    ecr.add("app", *images(1, 20))
    report = await cycle(pruner(ecr, InUseIndex()), gate=lambda: "not synced: test/pods")
    assert report.refused == "not synced: test/pods"
    assert not report.ok
    assert ecr.calls == {}


async def test_a_pod_appearing_mid_cycle_protects_its_image_from_later_batches() -> None:
    ecr = FakeEcr()
    ecr.add("app", *images(1, 310))
    index = InUseIndex()
    victim = dg(1, 10)  # deleted in the last batch: the oldest go first

    async def pod_starts(repo: str, batch: Sequence[Digest]) -> None:
        if len(ecr.batches) == 0:
            index.upsert(PODS, "new-pod", References(frozenset({victim})))

    ecr.before_delete = pod_starts
    report = await cycle(pruner(ecr, index))
    (repo,) = report.repositories
    assert victim in ecr.repos["app"]
    assert repo.vetoed == 1
    assert len(repo.deleted) == 299
    assert all(victim not in batch for _, batch in ecr.batches)


async def test_nothing_runs_between_the_veto_and_the_delete_call() -> None:
    """An event the watcher applies after the batch was checked and before the call is made
    would go unseen: the pruner yields to other tasks before the gate and the veto, never
    between them and the call (the window the safety properties pointed at)."""
    ecr = FakeEcr()
    ecr.add("app", *images(1, 20))
    index = InUseIndex()
    victim = dg(1, 19)  # the oldest: in the first (and only) batch
    checked = anyio.Event()
    gate_calls = 0
    in_use_when_sent: list[bool] = []

    def gate() -> str | None:
        nonlocal gate_calls
        gate_calls += 1
        if gate_calls == 2:  # the first batch's check (the first call is the cycle's)
            checked.set()
        return None

    async def rollback() -> None:  # a watch event, applied as soon as its task is scheduled
        await checked.wait()
        index.upsert(PODS, "rollback", References(frozenset({victim})))

    async def record(repo: str, batch: Sequence[Digest]) -> None:
        in_use_when_sent.append(any(index.digest_in_use(d) for d in batch))

    ecr.before_delete = record
    async with anyio.create_task_group() as tg:
        tg.start_soon(rollback)
        await anyio.wait_all_tasks_blocked()
        await cycle(pruner(ecr, index), gate)
    assert in_use_when_sent == [False]  # the batch sent was in use by none when it was sent


async def test_a_delete_call_waits_while_a_source_re_lists_and_sees_the_gap_s_pods() -> None:
    """The soak's finding: after a 410 the watcher re-lists, and a pod created before that LIST
    lands is in no view; within --max-staleness the view is still trusted, so the batch used to
    go out without it. A delete call now waits for the re-list, and the veto sees the pod."""
    ecr = FakeEcr()
    ecr.add("app", *images(1, 20))
    index = InUseIndex()
    tracker = SourceTracker()
    tracker.listed(PODS, 0.0)
    index.replace(PODS, {})
    victim = dg(1, 19)  # the oldest: in the first batch
    tracker.disconnected(PODS, 1.0, "410 Gone: too old resource version")  # as the watcher does

    async def re_list() -> None:  # what Watcher.list_once does, a moment later
        await anyio.sleep(0.3)
        index.replace(PODS, {"rollback": References(frozenset({victim}))})
        tracker.listed(PODS, 2.0)

    async with anyio.create_task_group() as tg:
        tg.start_soon(re_list)
        report = await cycle(pruner(ecr, index, tracker=tracker))
    (repo,) = report.repositories
    assert victim in ecr.repos["app"]
    assert repo.vetoed == 1
    assert repo.deleted_count == 9
    assert repo.ok


async def test_a_view_that_stays_behind_stops_the_repository_s_deletions() -> None:
    ecr = FakeEcr()
    ecr.add("app", *images(1, 20))
    tracker = SourceTracker()
    tracker.listed(PODS, 0.0)
    tracker.disconnected(PODS, 1.0, "ConnectionResetError")
    index = InUseIndex()
    index.replace(PODS, {})
    report = await cycle(pruner(ecr, index, tracker=tracker, catch_up=0.2))
    (repo,) = report.repositories
    assert ecr.calls["BatchDeleteImage"] == 0
    assert repo.held_back == 10
    assert repo.stopped_by == (
        "view behind for 0.2s: test/pods: reconnecting (ConnectionResetError)"
    )


async def test_a_child_coming_into_use_mid_cycle_keeps_its_whole_index_group() -> None:
    """The veto drops a batch's image with its whole index group (Plan.groups): a child that a
    rollback starts running keeps its index and its siblings, as the plan would have."""
    ecr = FakeEcr()
    old = NOW - timedelta(days=30)
    index_digest, child, sibling = dg(2, 1), dg(2, 2), dg(2, 3)
    ecr.add(
        "app",
        *images(1, 12),
        Image(digest=child, pushed_at=old, size_bytes=100),
        Image(digest=sibling, pushed_at=old, size_bytes=100),
        Image(digest=index_digest, pushed_at=old, size_bytes=1, children=(child, sibling)),
    )
    in_use = InUseIndex()
    checks = 0

    def gate() -> str | None:
        nonlocal checks
        checks += 1
        if checks == 2:  # the first batch's check: the rollback lands just before it
            in_use.upsert(PODS, "rollback", References(frozenset({child})))
        return None

    report = await cycle(pruner(ecr, in_use), gate)
    (repo,) = report.repositories
    assert {index_digest, child, sibling} <= set(ecr.repos["app"])
    assert repo.vetoed == 3


async def test_a_tag_coming_into_use_mid_cycle_protects_too() -> None:
    ecr = FakeEcr()
    ecr.add("app", *images(1, 210, tagged={15: "hotfix"}))
    index = InUseIndex()

    async def pod_starts(repo: str, batch: Sequence[Digest]) -> None:
        from tests.test_inventory import tag  # a tag ref for this registry and repository

        index.upsert(PODS, "p", References(tags=frozenset({tag("app", "hotfix")})))

    ecr.before_delete = pod_starts
    await cycle(pruner(ecr, index))
    assert dg(1, 15) in ecr.repos["app"]


async def test_the_gate_stops_deletions_between_batches() -> None:
    ecr = FakeEcr()
    ecr.add("app", *images(1, 310))
    calls = 0

    def gate() -> str | None:
        nonlocal calls
        calls += 1
        return None if calls <= 2 else "leadership lost"  # cycle start + first batch pass

    report = await cycle(pruner(ecr, InUseIndex()), gate=gate)
    (repo,) = report.repositories
    assert len(repo.deleted) == 100
    assert repo.held_back == 200
    assert [str(e) for e in repo.errors] == [
        "stopped before deleting 200 image(s): leadership lost"
    ]
    assert len(ecr.repos["app"]) == 210


async def test_a_stop_between_batches_is_an_error_record_with_a_code_the_metric_counts() -> None:
    """Before: the stop was an error without a code, so the cycle failed while
    ecr_cleanup_errors_total counted nothing for it."""
    from prometheus_client import CollectorRegistry

    from controller.metrics import Metrics
    from controller.pruning import PRUNE, STOPPED, ErrorRecord

    ecr = FakeEcr()
    ecr.add("app", *images(1, 310))
    calls = 0

    def gate() -> str | None:
        nonlocal calls
        calls += 1
        return None if calls <= 2 else "leadership lost"

    report = await cycle(pruner(ecr, InUseIndex()), gate=gate)
    (repo,) = report.repositories
    assert repo.errors == [
        ErrorRecord(PRUNE, STOPPED, "stopped before deleting 200 image(s): leadership lost")
    ]
    assert not report.ok
    registry = CollectorRegistry()
    Metrics(registry).observe_cycle(report, 1.0)
    errors = {"repository": "app", "operation": "prune", "code": "Stopped"}
    assert registry.get_sample_value("ecr_cleanup_errors_total", errors) == 1
    assert registry.get_sample_value("ecr_cleanup_cycles_total", {"result": "failed"}) == 1


async def test_reclaimed_bytes_count_every_deletion_not_only_the_records_kept() -> None:
    """`deleted` is a sample when deletion_records is set (a service keeps 20): the reclaimed
    bytes cannot be summed from it, so the report counts them."""
    ecr = FakeEcr()
    ecr.add("app", *images(1, 40))
    options = PruneOptions(
        selection=RepositorySelection(("app",)),
        rules_for=lambda _name: Rules(max_images=10),
        dry_run=False,
        deletion_records=3,
    )
    report = await cycle(Pruner(ecr, InUseIndex(), options))
    (repo,) = report.repositories
    assert len(repo.deleted) == 3
    assert repo.deleted_count == 30
    assert repo.bytes_reclaimed == 30 * 100
    assert report.bytes_reclaimed == 30 * 100


async def test_the_cycle_says_whether_the_repositories_were_listed() -> None:
    ecr = FakeEcr()
    ecr.add("app", *images(1, 3))
    listed = await cycle(pruner(ecr, InUseIndex(), repos=("nothing-*",)))
    assert listed.listed  # listed, though nothing was selected
    assert [(e.operation, e.code) for e in listed.errors] == [("prune", "NothingSelected")]
    missing = await cycle(pruner(ecr, InUseIndex(), repos=("app", "gone")))
    assert missing.listed
    assert [(e.operation, e.code) for e in missing.errors] == [
        ("DescribeRepositories", "RepositoryNotFoundException")
    ]
    ecr.failing_listing = EcrError("DescribeRepositories", "AccessDeniedException", "no")
    failed = await cycle(pruner(ecr, InUseIndex()))
    assert not failed.listed
    assert [(e.operation, e.code) for e in failed.errors] == [
        ("DescribeRepositories", "AccessDeniedException")
    ]
    assert [str(e) for e in failed.errors] == [
        "listing repositories: DescribeRepositories: AccessDeniedException: no"
    ]


async def test_index_deleted_before_its_children_and_failures_reported() -> None:
    ecr = FakeEcr()
    kids = [Image(dg(1, 100 + k), NOW - timedelta(days=30), (), 10) for k in range(2)]
    index_image = Image(
        dg(1, 99), NOW - timedelta(days=30), ("old",), 5, children=tuple(k.digest for k in kids)
    )
    ecr.add("app", *images(1, 3), index_image, *kids)
    ecr.add("kms", *images(2, 3))
    ecr.delete_failures[dg(2, 2)] = "KmsError"
    report = await cycle(pruner(ecr, InUseIndex(), rules=Rules(max_images=2)))
    app, kms = report.repositories
    assert app.ok
    app_batches = [batch for repo, batch in ecr.batches if repo == "app"]  # repositories interleave
    assert app_batches[0] == (dg(1, 99), dg(1, 2))
    assert set(app_batches[1]) == {k.digest for k in kids}
    assert app.images_after == 2
    assert [f.code for f in kms.failed] == ["KmsError"]
    assert dg(2, 2) in ecr.repos["kms"]
    assert kms.images_after == 3
    assert not kms.ok


async def test_already_gone_counts_as_done(caplog: pytest.LogCaptureFixture) -> None:
    ecr = FakeEcr()
    ecr.add("app", *images(1, 12))

    async def racer(repo: str, batch: Sequence[Digest]) -> None:
        del ecr.repos["app"][batch[0]]  # another cleaner got there first

    ecr.before_delete = racer
    with caplog.at_level(logging.INFO, logger="controller.pruning"):
        report = await cycle(pruner(ecr, InUseIndex()))
    (repo,) = report.repositories
    assert repo.already_gone == 1
    (line,) = [r.getMessage() for r in caplog.records if "already gone" in r.getMessage()]
    assert line.startswith("repository app: 1 image(s) already gone (deleted by someone else")
    assert len(repo.deleted) == 1
    assert repo.ok
    assert repo.images_after == 10


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.integers(0, 260), min_size=1, max_size=3),
    st.sets(st.integers(0, 260), max_size=20),
    st.integers(1, 50),
)
async def test_property_dry_run_reports_exactly_what_a_real_run_deletes(
    sizes: list[int], in_use: set[int], max_images: int
) -> None:
    ecr = FakeEcr()
    for r, count in enumerate(sizes):
        ecr.add(f"repo-{r}", *images(r, count))
    twin = copy.deepcopy(ecr)
    index = InUseIndex()
    index.upsert(
        PODS, "p", References(frozenset(dg(r, n) for r in range(len(sizes)) for n in in_use))
    )
    rules = Rules(max_images=max_images)
    dry = await cycle(pruner(ecr, index, dry_run=True, rules=rules))
    real = await cycle(pruner(twin, index, dry_run=False, rules=rules))
    assert ecr.calls["BatchDeleteImage"] == 0
    assert [r.deleted for r in dry.repositories] == [r.deleted for r in real.repositories]
    assert [r.images_after for r in dry.repositories] == [r.images_after for r in real.repositories]
    for r, repo in enumerate(real.repositories):
        assert len(twin.repos[repo.name]) == repo.images_after
        assert all(dg(r, n) in twin.repos[repo.name] for n in in_use if n < sizes[r])


async def test_shutdown_lets_the_in_flight_delete_finish_and_starts_no_other() -> None:
    ecr = FakeEcr()
    ecr.add("app", *images(1, 310))
    started = anyio.Event()

    async def slow(repo: str, batch: Sequence[Digest]) -> None:
        started.set()
        await anyio.sleep(0.2)  # the call is in flight when the cancellation arrives

    ecr.before_delete = slow
    async with anyio.create_task_group() as tg:
        tg.start_soon(cycle, pruner(ecr, InUseIndex()))
        await started.wait()
        tg.cancel_scope.cancel()
    assert ecr.calls["BatchDeleteImage"] == 1  # the first call completed ...
    assert len(ecr.repos["app"]) == 210  # ... and did its work; no second call started


async def test_a_stop_ends_the_cycle_with_a_partial_report() -> None:
    ecr = FakeEcr()
    ecr.add("app", *images(1, 310))
    ecr.add("web", *images(2, 30))
    started = anyio.Event()
    stop = anyio.Event()

    async def slow(repo: str, batch: Sequence[Digest]) -> None:
        started.set()
        stop.set()  # SIGTERM arrives while this call is in flight
        await anyio.sleep(0.2)

    ecr.before_delete = slow
    p = pruner(ecr, InUseIndex(), concurrency=1)
    with anyio.fail_after(5):
        report = await p.run_cycle(now=NOW, gate=lambda: None, clock=lambda: NOW, stop=stop)
    assert report.stopped == "shutting down"
    assert not report.ok
    app, web = report.repositories
    assert ecr.calls["BatchDeleteImage"] == 1  # the call in flight finished, no other started
    assert len(app.deleted) == 100
    assert app.held_back == 200  # the planned deletions never sent
    assert not app.finished
    assert not web.finished  # never started: concurrency 1
    assert len(ecr.repos["app"]) == 210
    assert len(ecr.repos["web"]) == 30


async def test_dry_run_logs_each_would_be_deletion_at_info_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ecr = FakeEcr()
    ecr.add("app", *images(1, 13))
    p = pruner(ecr, InUseIndex(), dry_run=True)

    def would(level: int) -> list[str]:
        """The would-be deletions logged at `level`, one per image named in the batch lines."""
        return [
            image
            for r in caplog.records
            if r.levelno == level and r.getMessage().startswith("would delete ")
            for image in r.getMessage().split(": ", 1)[1].split("; ")
        ]

    with caplog.at_level(logging.DEBUG, logger="controller.pruning"):
        await cycle(p)
        assert len(would(logging.INFO)) == 3  # the first cycle says it all
        caplog.clear()
        await cycle(p)  # the same plan again: quiet at INFO, all still at DEBUG
        assert would(logging.INFO) == []
        assert len(would(logging.DEBUG)) == 3
        assert any("3 would-be deletion(s) unchanged" in r.getMessage() for r in caplog.records)
        caplog.clear()
        ecr.add("app", Image(dg(1, 99), NOW - timedelta(days=99), ("ancient",), 1))
        await cycle(p)  # the plan changed: the new would-be deletion is at INFO
        assert would(logging.INFO) == [f"app@{dg(1, 99)} tags=ancient reason=over-count"]


async def test_real_deletions_are_logged_at_info_one_line_per_delete_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ecr = FakeEcr()
    ecr.add("app", *images(1, 113))
    with caplog.at_level(logging.INFO, logger="controller.pruning"):
        await cycle(pruner(ecr, InUseIndex()))
    lines = [r for r in caplog.records if r.getMessage().startswith("deleting ")]
    assert [r.getMessage().split(":", 1)[0] for r in lines] == [
        "deleting 100 image(s) from app",
        "deleting 3 image(s) from app",
    ]
    assert {r.levelno for r in lines} == {logging.INFO}
    named = [image for r in lines for image in r.getMessage().split(": ", 1)[1].split("; ")]
    assert named[0] == f"app@{dg(1, 112)} tags=build-112 reason=over-count"  # the oldest first
    assert len(named) == 103
    # structured, for --log-format json: every image with its tags and reason
    assert lines[1].images == [  # type: ignore[attr-defined]
        {"digest": dg(1, n), "tags": [f"build-{n}"], "reason": "over-count"} for n in (12, 11, 10)
    ]


async def test_a_glob_that_matches_nothing_is_warned_about() -> None:
    ecr = FakeEcr()
    ecr.add("shop-api", *images(1, 3))
    report = await cycle(pruner(ecr, InUseIndex(), repos=("shop-*", "shpo-*")))
    assert report.warnings == ["-repos pattern 'shpo-*' matches no repository"]
    assert report.ok  # the other pattern selected something


async def test_nothing_selected_at_all_fails_the_cycle() -> None:
    ecr = FakeEcr()
    ecr.add("shop-api", *images(1, 3))
    report = await cycle(pruner(ecr, InUseIndex(), repos=("shpo-*",)))
    assert not report.ok
    assert [str(e) for e in report.errors] == [
        "no repository selected: -repos shpo-* matches none of the registry's repositories"
    ]
    assert report.repositories == []


async def test_unused_config_entries_are_warned_about_per_cycle() -> None:
    ecr = FakeEcr()
    ecr.add("shop-api", *images(1, 3))
    options = PruneOptions(
        selection=RepositorySelection(("shop-*",)),
        rules_for=lambda _name: Rules(max_images=10),
        unused_overrides=lambda names: (
            [] if "shop-web" in names else ["repositories[0] 'shop-web'"]
        ),
    )
    report = await cycle(Pruner(ecr, InUseIndex(), options))
    assert report.warnings == [
        "--config entries that apply to no repository: repositories[0] 'shop-web'"
    ]
    assert report.ok
