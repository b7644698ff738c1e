"""--delete-archived-after (issue 14 §3): archived images whose lastArchivedAt is older than the
window are deleted, unless in use or kept, with their index group and their signatures.

The policy (`policy.expiry`) is `plan` with the age counted from lastArchivedAt and the active
images protected; the pruner runs it after the cycle's own work through the same gate, in-use
veto and retries as any deletion; the real CLI deletes from the ECR simulator's archive.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.cli import safety_warnings
from controller.identifiers import RepositoryId, TagRef
from controller.images import Digest
from controller.inventory import InUseIndex, InUseSnapshot, References
from controller.policy import Action, Image, Plan, Reason, Rules, expiry
from controller.pruning import ARCHIVE, DELETE, CycleReport, PruneOptions, Pruner
from controller.report import to_json, to_table
from controller.settings import RepositoryOverride, RepositorySelection, Settings
from sandbox.ecrsim import ManualClock, ThreadedEcrSimulator
from sandbox.kubesim import ThreadedKubeSimulator, pod, write_kubeconfig
from tests.digests import digest as dg
from tests.fake_ecr import REGISTRY, FakeEcr
from tests.profiles import examples
from tests.test_archive import HOST, PODS, environment
from tests.test_artifacts import NOW

REPO = RepositoryId(REGISTRY, "app")
WINDOW = timedelta(days=180)
SELECTION = RepositorySelection(("app",))


def archived(
    n: int, *tags: str, days: float | None, subject: int | None = None, children: Sequence[int] = ()
) -> Image:
    """Image n, pushed a year and n days ago, archived `days` ago (None: lastArchivedAt unknown)."""
    return Image(
        digest=dg(n),
        pushed_at=NOW - timedelta(days=365 + n),
        tags=tags,
        size_bytes=100,
        subject=None if subject is None else dg(subject),
        children=tuple(dg(c) for c in children),
        archived_at=None if days is None else NOW - timedelta(days=days),
    )


def active(n: int, *, children: Sequence[int] = ()) -> Image:
    return Image(
        dg(n), NOW - timedelta(days=n), (f"v{n}",), children=tuple(dg(c) for c in children)
    )


def decide(
    images: list[Image],
    standard: Sequence[Image] = (),
    *,
    in_use: Sequence[int] = (),
    tags_in_use: Sequence[str] = (),
    **rules: object,
) -> Plan:
    return expiry(
        images,
        standard,
        repository=REPO,
        in_use=InUseSnapshot(
            frozenset(dg(d) for d in in_use), frozenset(TagRef(REPO, t) for t in tags_in_use)
        ),
        rules=Rules(**{"delete_archived_after": WINDOW, "keep_tags": frozenset(), **rules}),  # type: ignore[arg-type]
        now=NOW,
    )


def reasons(the_plan: Plan) -> dict[int, Reason]:
    return {int(d.image.digest.removeprefix("sha256:"), 16): d.reason for d in the_plan.decisions}


# -- the policy -------------------------------------------------------------------------------

CASES = [
    pytest.param([archived(1, "a", days=200)], {}, {1: Reason.ARCHIVE_EXPIRED}, id="expired"),
    pytest.param(
        [archived(1, "a", days=100)], {}, {1: Reason.ARCHIVED_RECENTLY}, id="within the window"
    ),
    pytest.param(
        [archived(1, "a", days=None)], {}, {1: Reason.ARCHIVED_RECENTLY}, id="archived when unknown"
    ),
    pytest.param([archived(1, "a", days=400)], {"in_use": [1]}, {1: Reason.IN_USE}, id="in use"),
    pytest.param(
        [archived(1, "a", days=400)],
        {"tags_in_use": ["a"]},
        {1: Reason.IN_USE_TAG},
        id="tag in use",
    ),
    pytest.param(
        [archived(1, "keep", days=400)],
        {"keep_tags": frozenset({"keep"})},
        {1: Reason.KEEP_TAG},
        id="keep tag",
    ),
    pytest.param(
        [archived(1, "i1", days=400, children=[2, 3]), archived(2, days=400), archived(3, days=10)],
        {},
        {1: Reason.INDEX_PARENT, 2: Reason.INDEX_CHILD, 3: Reason.ARCHIVED_RECENTLY},
        id="an index stays while a child is recent",
    ),
    pytest.param(
        [archived(1, "i1", days=400, children=[2]), archived(2, days=400)],
        {},
        {1: Reason.ARCHIVE_EXPIRED, 2: Reason.CHILD_OF_DELETED},
        id="an index goes with its children",
    ),
    pytest.param(
        [archived(1, f"sha256-{2:064x}.sig", days=400), archived(2, "v2", days=400)],
        {},
        {1: Reason.ARTIFACT_OF_DELETED, 2: Reason.ARCHIVE_EXPIRED},
        id="a signature goes after its subject",
    ),
    pytest.param(
        [archived(1, f"sha256-{2:064x}.sig", days=400), archived(2, "v2", days=10)],
        {},
        {1: Reason.ARTIFACT_OF_KEPT, 2: Reason.ARCHIVED_RECENTLY},
        id="a signature stays with its kept subject",
    ),
    pytest.param(
        [archived(1, days=400, subject=7)],
        {"delete_orphaned_artifacts": True},
        {1: Reason.ORPHANED_ARTIFACT},
        id="an orphaned archived signature, when asked",
    ),
    pytest.param(
        [archived(1, days=400, subject=7)],
        {},
        {1: Reason.SUBJECT_ELSEWHERE},
        id="an orphaned archived signature is left alone",
    ),
    pytest.param(
        [archived(3, "a", days=400), archived(4, "b", days=300), archived(5, "c", days=200)],
        {"max_deletions_per_cycle": 2},
        {3: Reason.ARCHIVE_EXPIRED, 4: Reason.ARCHIVE_EXPIRED, 5: Reason.DELETION_CAP},
        id="the cap, oldest archived first",
    ),
]


@pytest.mark.parametrize(("images", "options", "expected"), CASES)
def test_expiry(
    images: list[Image], options: dict[str, object], expected: dict[int, Reason]
) -> None:
    in_use = options.pop("in_use", ())
    tags = options.pop("tags_in_use", ())
    got = decide(images, in_use=in_use, tags_in_use=tags, **options)  # type: ignore[arg-type]
    assert reasons(got) == expected


def test_an_archived_child_of_an_active_index_and_a_signature_of_an_active_image_stay() -> None:
    the_plan = decide(
        [archived(2, days=400), archived(3, f"sha256-{5:064x}.sig", days=400)],
        [active(1, children=[2]), active(5)],
        delete_orphaned_artifacts=True,
    )
    assert reasons(the_plan) == {2: Reason.INDEX_CHILD, 3: Reason.ARTIFACT_OF_KEPT}
    assert not the_plan.deletions


def test_the_waves_send_an_archived_index_before_its_children_and_keep_the_original_dates() -> None:
    images = [archived(1, "i1", days=400, children=[2]), archived(2, days=400)]
    the_plan = decide(images)
    assert the_plan.delete_waves == ((dg(1),), (dg(2),))
    assert {d.image.digest: d.image for d in the_plan.decisions} == {i.digest: i for i in images}


def test_no_window_keeps_every_archived_image() -> None:
    the_plan = expiry(
        [archived(1, days=4000)],
        [],
        repository=REPO,
        in_use=InUseSnapshot(),
        rules=Rules(),
        now=NOW,
    )
    assert [d.action for d in the_plan.decisions] == [Action.KEEP]
    assert the_plan.delete_waves == ()


@st.composite
def repositories(draw: st.DrawFn) -> tuple[list[Image], list[Image], set[Digest], timedelta]:
    count = draw(st.integers(1, 14))
    images: list[Image] = []
    for n in range(1, count + 1):
        others = list(range(n + 1, count + 1))  # references point one way: ECR has no cycles
        children = (
            draw(st.lists(st.sampled_from(others), max_size=2, unique=True)) if others else []
        )
        subject = draw(st.none() | st.sampled_from(others)) if others and not children else None
        days = draw(st.none() | st.floats(0, 1000))
        images.append(archived(n, f"t{n}", days=days, subject=subject, children=children))
    split = draw(st.integers(0, count))
    standard = [replace(i, archived_at=None) for i in images[:split]]
    in_use = set(draw(st.lists(st.sampled_from([i.digest for i in images]), max_size=4)))
    window = timedelta(days=draw(st.floats(1, 900)))
    return images[split:], standard, in_use, window


@settings(max_examples=examples(400), deadline=None)
@given(repositories())
def test_expiry_never_deletes_an_active_image_one_in_use_or_one_archived_within_the_window(
    drawn: tuple[list[Image], list[Image], set[Digest], timedelta],
) -> None:
    images, standard, in_use, window = drawn
    the_plan = expiry(
        images,
        standard,
        repository=REPO,
        in_use=InUseSnapshot(frozenset(in_use)),
        rules=Rules(keep_tags=frozenset(), delete_archived_after=window),
        now=NOW,
    )
    doomed = {d.image.digest for d in the_plan.deletions}
    assert {d.image.digest for d in the_plan.decisions} == {i.digest for i in images}
    assert not doomed & {i.digest for i in standard}
    assert not doomed & in_use
    for decision in the_plan.deletions:
        at = decision.image.archived_at
        assert at is not None, decision
        assert NOW - at >= window, decision
    every = {i.digest: i for i in [*images, *standard]}
    for digest in doomed:  # index groups go whole: no kept index loses a child, no deleted
        for child in every[digest].children:  # index leaves a child behind
            assert child not in every or child in doomed, (digest, child)
        assert not any(digest in every[o].children for o in every if o not in doomed), digest
    assert {d for wave in the_plan.delete_waves for d in wave} == doomed


# -- the pruner -------------------------------------------------------------------------------


def expirer(ecr: FakeEcr, index: InUseIndex, *, dry_run: bool = False, **rules: object) -> Pruner:
    return Pruner(
        ecr,
        index,
        PruneOptions(
            selection=RepositorySelection(("app",)),
            rules_for=lambda _name: Rules(
                max_images=2,
                keep_tags=frozenset(),
                delete_archived_after=WINDOW,
                **rules,  # type: ignore[arg-type]
            ),
            dry_run=dry_run,
            disposal=ARCHIVE,
        ),
    )


def seeded_fake() -> FakeEcr:
    ecr = FakeEcr()
    ecr.add("app", active(1), active(2))
    ecr.archived["app"] = {
        i.digest: i
        for i in (
            archived(3, "old", days=400),
            archived(4, "older", days=500),
            archived(5, days=30),
        )
    }
    return ecr


async def cycle(p: Pruner) -> CycleReport:
    return await p.run_cycle(now=NOW, gate=lambda: None, clock=lambda: NOW)


async def test_the_pruner_deletes_expired_archived_images_in_one_batch_delete() -> None:
    ecr = seeded_fake()
    report = await cycle(expirer(ecr, InUseIndex()))
    (repo,) = report.repositories
    assert set(ecr.archived["app"]) == {dg(5)}
    assert set(ecr.repos["app"]) == {dg(1), dg(2)}
    assert ecr.batches == [("app", (dg(4), dg(3)))]  # oldest archived first, one call
    assert repo.deleted_count == 0
    assert repo.images_after == 2
    assert repo.expired is not None
    assert (repo.expired.images_before, repo.expired.deleted_count) == (3, 2)
    assert repo.expired.images_after == 1
    assert {d.reason for d in repo.expired.deleted} == {Reason.ARCHIVE_EXPIRED}
    assert report.expired == 2
    assert report.ok


async def test_an_archived_image_in_use_is_not_deleted() -> None:
    """A pod pinned to an archived digest (restore on use will bring it back) keeps it."""
    ecr = seeded_fake()
    index = InUseIndex()
    index.upsert(PODS, "pinned", References(frozenset({dg(3)})))
    report = await cycle(expirer(ecr, index))
    assert set(ecr.archived["app"]) == {dg(3), dg(5)}
    (repo,) = report.repositories
    assert repo.expired is not None
    assert repo.expired.deleted_count == 1
    assert repo.expired.protected == {Reason.IN_USE: 1, Reason.ARCHIVED_RECENTLY: 1}


async def test_a_pod_that_starts_between_plan_and_call_vetoes_the_archived_image() -> None:
    ecr = seeded_fake()
    ecr.archived["app"][dg(6)] = archived(6, "oldest", days=600)
    index = InUseIndex()
    index.register(PODS)
    pruner = expirer(ecr, index, max_deletions_per_cycle=None)
    calls: list[tuple[Digest, ...]] = []

    async def record(_repo: str, batch: Sequence[Digest]) -> None:
        calls.append(tuple(batch))

    ecr.before_delete = record
    real_plan_protected = pruner._protected_now

    def protected_now(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        index.upsert(PODS, "late", References(frozenset({dg(4)})))  # right before the veto
        return real_plan_protected(*args, **kwargs)  # type: ignore[arg-type]

    pruner._protected_now = protected_now  # type: ignore[method-assign]
    report = await cycle(pruner)
    assert calls == [(dg(6), dg(3))]  # 4 dropped from the batch by the veto
    assert dg(4) in ecr.archived["app"]
    (repo,) = report.repositories
    assert repo.expired is not None
    assert repo.expired.vetoed == 1


async def test_a_dry_run_lists_what_it_would_delete_from_the_archive_and_calls_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ecr = seeded_fake()
    caplog.set_level("INFO", logger="controller.pruning")
    report = await cycle(expirer(ecr, InUseIndex(), dry_run=True))
    assert "BatchDeleteImage" not in ecr.calls
    assert len(ecr.archived["app"]) == 3
    (repo,) = report.repositories
    assert repo.expired is not None
    assert repo.expired.deleted_count == 2
    assert "would delete 2 image(s) from app" in caplog.text
    assert "2 would be deleted (archived over 180d ago)" in caplog.text
    assert "would be deleted from the archive" in to_table(report)
    assert '"expired"' in to_json(report)


async def test_the_cap_is_shared_with_the_cycle_s_own_work() -> None:
    ecr = seeded_fake()
    ecr.add("app", active(7), active(8))  # two over max-images 2: archived first
    report = await cycle(expirer(ecr, InUseIndex(), max_deletions_per_cycle=3))
    (repo,) = report.repositories
    assert repo.deleted_count == 2  # archived this cycle
    assert repo.expired is not None
    assert repo.expired.deleted_count == 1
    assert repo.expired.held_back == 1
    assert dg(4) not in ecr.archived["app"]  # the oldest archived went


async def test_a_failed_expiry_delete_is_the_repository_s_failure() -> None:
    ecr = seeded_fake()
    ecr.delete_failures[dg(4)] = "InternalFailure"
    report = await cycle(expirer(ecr, InUseIndex()))
    (repo,) = report.repositories
    assert repo.expired is not None
    assert [f.digest for f in repo.expired.failed] == [dg(4)]
    assert not repo.ok
    assert not report.ok


async def test_in_delete_mode_archived_images_are_expired_too() -> None:
    ecr = seeded_fake()
    pruner = Pruner(
        ecr,
        InUseIndex(),
        PruneOptions(
            selection=RepositorySelection(("app",)),
            rules_for=lambda _name: Rules(keep_tags=frozenset(), delete_archived_after=WINDOW),
            dry_run=False,
            disposal=DELETE,
        ),
    )
    await cycle(pruner)
    assert set(ecr.archived["app"]) == {dg(5)}


async def test_without_the_window_archived_images_are_not_even_listed() -> None:
    ecr = seeded_fake()
    pruner = Pruner(
        ecr,
        InUseIndex(),
        PruneOptions(
            selection=RepositorySelection(("app",)),
            rules_for=lambda _name: Rules(keep_tags=frozenset()),
            dry_run=False,
        ),
    )
    report = await cycle(pruner)
    assert ecr.calls["DescribeImages"] == 1
    assert report.repositories[0].expired is None


# -- start-up ---------------------------------------------------------------------------------


def test_a_window_under_90_days_warns_that_ecr_bills_90_days() -> None:
    base = Settings(SELECTION, rules=Rules(delete_archived_after=timedelta(days=30)))
    override = Settings(
        SELECTION,
        overrides=(RepositoryOverride("x*", Rules(delete_archived_after=timedelta(days=7))),),
    )
    long = Settings(SELECTION, rules=Rules(delete_archived_after=timedelta(days=90)))
    assert [w for w in safety_warnings(base) if "90 days" in w] == [
        "--delete-archived-after 30d is under 90 days: ECR bills an archived image for 90 days "
        "of archive storage even when it is deleted sooner"
    ]
    assert any("7d is under 90 days" in w for w in safety_warnings(override))
    assert not [w for w in safety_warnings(long) if "90 days" in w]


# -- the real CLI against the ECR simulator ----------------------------------------------------


def test_the_cli_deletes_what_was_archived_long_ago_and_keeps_what_runs(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    clock = ManualClock(now - timedelta(days=200))
    with ThreadedEcrSimulator(clock=clock) as ecr, ThreadedKubeSimulator(token="t") as kube:
        ecr.create_repository("app")
        pushed = now - timedelta(days=400)
        old = [ecr.add_image("app", tags=[f"o{n}"], pushed_at=pushed) for n in range(3)]
        signatures = [ecr.add_artifact("app", d, pushed_at=pushed) for d in old]
        for digest in [*old, *signatures]:
            ecr.set_storage_class("app", digest, "ARCHIVE")  # 200 days ago, on its clock
        clock.advance(timedelta(days=190))
        recent = ecr.add_image("app", tags=["r"], pushed_at=pushed)
        ecr.set_storage_class("app", recent, "ARCHIVE")  # 10 days ago
        clock.advance(timedelta(days=10))
        current = ecr.add_image("app", tags=["v1"], pushed_at=now)
        kube.create("pods", pod("p", "shop", {"c": f"{HOST}/app@{old[0]}"}))
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"prod": kube}, token="t")
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "controller",
                "-repos=app",
                "--once",
                "-dry-run=false",
                "--disposal=archive",
                "--delete-archived-after=30d",
                "--keep-tags=",
                "--output=json",
                f"-kubeconfig={kubeconfig}",
            ],
            env=environment(ecr),
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        left = {v.digest: v.status for v in ecr.images("app")}
    # the running image and its signature stay archived (restore on use is the service's);
    # the other two and theirs are gone; the one archived 10 days ago and the active one stay
    assert left == {
        old[0]: "ARCHIVED",
        signatures[0]: "ARCHIVED",
        recent: "ARCHIVED",
        current: "ACTIVE",
    }
    assert "30d is under 90 days" in result.stderr
    assert '"expired"' in result.stdout


async def test_the_metrics_count_deletions_from_the_archive_apart_from_the_active_images() -> None:
    from prometheus_client import CollectorRegistry

    from controller.metrics import Metrics

    registry = CollectorRegistry()
    metrics = Metrics(registry)
    ecr = seeded_fake()
    metrics.observe_cycle(await cycle(expirer(ecr, InUseIndex())), 1.0)

    def value(name: str) -> float | None:
        return registry.get_sample_value(f"ecr_cleanup_{name}", {"repository": "app"})

    assert value("archived_images_deleted_total") == 2
    assert value("repository_archived_images") == 1
    assert value("images_deleted_total") == 0
    assert value("images_archived_total") == 0
    assert value("repository_images") == 2


async def test_a_repository_the_gate_stopped_deletes_nothing_from_the_archive_either() -> None:
    ecr = seeded_fake()
    ecr.add("app", active(7), active(8))  # two to archive first: the gate stops the first call
    pruner = expirer(ecr, InUseIndex())
    report = await pruner.run_cycle(now=NOW, gate=lambda: "leadership lost", clock=lambda: NOW)
    assert report.refused == "leadership lost"  # refused before anything
    calls: list[str] = []

    def gate() -> str | None:
        calls.append("asked")
        return None if len(calls) <= 1 else "leadership lost"  # the cycle starts, then stops

    report = await pruner.run_cycle(now=NOW, gate=gate, clock=lambda: NOW)
    (repo,) = report.repositories
    assert repo.stopped_by == "leadership lost"
    assert repo.expired is None
    assert "BatchDeleteImage" not in ecr.calls
    assert len(ecr.archived["app"]) == 3
    assert [e.code for e in repo.errors] == ["Stopped"]
