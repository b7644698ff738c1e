"""Signatures, attestations and SBOMs follow their subject: the policy, the pruner, the real CLI.

An image is an attached artifact of S when its subjectManifestDigest is S, or when its only
tags are cosign-scheme tags naming S (`policy.subjects_of`). Deleting the signature of an image
that runs breaks the next pod an admission policy verifies, so: kept while S is kept, never
counted toward max-images, deleted with S and after it, left alone when S is elsewhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.identifiers import RepositoryId, SourceKey
from controller.images import Digest, EcrRegistry
from controller.inventory import InUseIndex, InUseSnapshot, References
from controller.policy import PROTECTING, Action, Image, Plan, Reason, Rules, plan, subjects_of
from controller.pruning import CycleReport, PruneOptions, Pruner
from controller.settings import RepositorySelection
from sandbox.ecrsim import ThreadedEcrSimulator
from sandbox.kubesim import ThreadedKubeSimulator, pod, write_kubeconfig
from sandbox.moto import CREDENTIALS
from tests.digests import digest as dg
from tests.fake_ecr import FakeEcr
from tests.profiles import examples

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
REPO = RepositoryId(EcrRegistry("123456789012", "us-east-1"), "app")
PODS = SourceKey("test", "pods")


def cosign(n: int, suffix: str = "sig") -> str:
    """The cosign-scheme tag naming image n."""
    return f"sha256-{n:064x}.{suffix}"


def img(n: int, *tags: str, days: float | None = None, subject: int | None = None) -> Image:
    """Image n, pushed n days ago unless told otherwise (higher n = older)."""
    return Image(
        digest=dg(n),
        pushed_at=NOW - timedelta(days=n if days is None else days),
        tags=tags,
        size_bytes=100,
        subject=None if subject is None else dg(subject),
    )


def index(n: int, *children: int, days: float | None = None) -> Image:
    return Image(
        digest=dg(n),
        pushed_at=NOW - timedelta(days=n if days is None else days),
        tags=(f"i{n}",),
        children=tuple(dg(c) for c in children),
    )


def run(images: list[Image], *in_use: int, **rules: object) -> Plan:
    return plan(
        images,
        repository=REPO,
        in_use=InUseSnapshot(frozenset(dg(d) for d in in_use)),
        rules=Rules(**rules),  # type: ignore[arg-type]
        now=NOW,
    )


def outcome(p: Plan) -> dict[int, tuple[str, str]]:
    return {int(d.image.digest[7:], 16): (d.action.value, d.reason.value) for d in p.decisions}


def wave_of(p: Plan) -> dict[Digest, int]:
    return {d: n for n, wave in enumerate(p.delete_waves) for d in wave}


# -- what an artifact is ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "subjects"),
    [
        pytest.param(img(9, subject=1), {1}, id="OCI 1.1 subject"),
        pytest.param(img(9, "v1", subject=1), {1}, id="a subject with an ordinary tag too"),
        pytest.param(img(9, cosign(1)), {1}, id="cosign .sig tag"),
        pytest.param(img(9, cosign(1, "att"), cosign(1, "sbom")), {1}, id=".att and .sbom"),
        pytest.param(img(9, cosign(1), cosign(2)), {1, 2}, id="cosign tags naming two"),
        pytest.param(img(9, cosign(1), "v1"), set(), id="a cosign tag beside an ordinary one"),
        pytest.param(img(9, "sha256-abc.sig"), set(), id="not a digest"),
        pytest.param(img(9, cosign(1, "sig2")), set(), id="not a cosign suffix"),
        pytest.param(img(9, cosign(1).upper()), set(), id="upper case is no digest"),
        pytest.param(img(9, "v1"), set(), id="an image"),
        pytest.param(img(9), set(), id="untagged"),
        pytest.param(img(9, cosign(9)), set(), id="naming itself"),
    ],
)
def test_subjects_of(image: Image, subjects: set[int]) -> None:
    assert subjects_of(image) == {dg(n) for n in subjects}


# -- the policy -------------------------------------------------------------------------------


def test_artifacts_of_kept_images_stay_and_do_not_count_toward_max_images() -> None:
    images = [img(1, "v1"), img(2, "v2"), img(11, cosign(1)), img(12, "x", subject=2)]
    p = run(images, max_images=2)
    assert outcome(p) == {
        1: ("keep", "within-count"),
        2: ("keep", "within-count"),
        11: ("keep", "artifact-of-kept"),
        12: ("keep", "artifact-of-kept"),
    }
    assert p.artifacts == {dg(11), dg(12)}
    assert p.count_by_reason() == {Reason.WITHIN_COUNT: 2}
    assert p.count_by_reason(artifacts=True) == {Reason.ARTIFACT_OF_KEPT: 2}


def test_an_artifact_goes_after_its_subject_in_the_subject_s_group() -> None:
    # a signature newer than its image: the image is over the count, the signature follows
    images = [img(1, "v1"), img(2, "v2"), img(3, "v3"), img(13, cosign(3), days=0.5)]
    p = run(images, max_images=2)
    assert outcome(p)[3] == ("delete", "over-count")
    assert outcome(p)[13] == ("delete", "artifact-of-deleted")
    waves = wave_of(p)
    assert waves[dg(3)] < waves[dg(13)]
    assert p.groups[dg(3)] == p.groups[dg(13)] == {dg(3), dg(13)}
    assert p.after == {dg(13): {dg(3)}}


def test_an_artifact_of_an_image_in_use_is_kept_even_when_the_image_is_young() -> None:
    images = [img(5, "v5"), img(15, cosign(5)), img(16, "sbom", subject=5)]
    p = run(images, 5, max_images=0)
    assert outcome(p) == {
        5: ("keep", "in-use"),
        15: ("keep", "artifact-of-kept"),
        16: ("keep", "artifact-of-kept"),
    }


def test_a_subject_held_back_by_the_cap_keeps_its_artifact() -> None:
    images = [img(1), img(2), img(3), img(12, cosign(2)), img(13, cosign(3))]
    p = run(images, max_images=0, max_deletions_per_cycle=1)
    assert outcome(p)[3] == ("delete", "over-count")  # the oldest goes first
    assert outcome(p)[13] == ("delete", "artifact-of-deleted")  # followers do not use the cap
    assert outcome(p)[2] == ("keep", "deletion-cap")
    assert outcome(p)[12] == ("keep", "artifact-of-kept")


def test_an_orphan_is_left_alone_unless_asked_and_never_while_its_subject_runs() -> None:
    images = [img(1, "v1"), img(20, cosign(7)), img(21, "sig", subject=8)]
    assert outcome(run(images, max_images=0))[20] == ("keep", "subject-not-here")
    assert outcome(run(images, max_images=0))[21] == ("keep", "subject-not-here")
    asked = run(images, max_images=0, delete_orphaned_artifacts=True)
    assert outcome(asked)[20] == ("delete", "orphaned-artifact")
    assert outcome(asked)[21] == ("delete", "orphaned-artifact")
    # the subject lives in another repository and runs: its signature here stays
    running = run(images, 7, max_images=0, delete_orphaned_artifacts=True)
    assert outcome(running)[20] == ("keep", "artifact-of-kept")
    assert outcome(running)[21] == ("delete", "orphaned-artifact")


def test_orphans_deleted_count_toward_the_cap() -> None:
    images = [img(20, cosign(7)), img(21, cosign(8)), img(22, cosign(9))]
    p = run(images, max_images=0, delete_orphaned_artifacts=True, max_deletions_per_cycle=2)
    assert sorted(outcome(p).values()) == [
        ("delete", "orphaned-artifact"),
        ("delete", "orphaned-artifact"),
        ("keep", "deletion-cap"),
    ]
    assert outcome(p)[22] == ("delete", "orphaned-artifact")  # the oldest first


def test_a_signature_of_an_attestation_follows_the_attestation() -> None:
    attestation = img(13, cosign(3, "att"), days=0.5)
    signature = img(14, cosign(13), days=0.4)
    kept = run([img(1), img(3), attestation, signature], max_images=2)
    assert outcome(kept)[13] == outcome(kept)[14] == ("keep", "artifact-of-kept")
    gone = run([img(1), img(3), attestation, signature], max_images=1)
    assert outcome(gone)[13] == outcome(gone)[14] == ("delete", "artifact-of-deleted")
    waves = wave_of(gone)
    assert waves[dg(3)] < waves[dg(13)] < waves[dg(14)]
    assert gone.groups[dg(14)] == {dg(3), dg(13), dg(14)}


def test_an_index_child_s_artifacts_go_with_the_child_and_after_it() -> None:
    images = [
        img(1, "v1"),
        index(10, 11, 12, days=10),
        img(11, days=10),
        img(12, days=10),
        img(21, cosign(11), days=9),
        img(22, "sbom", subject=12, days=9),
    ]
    p = run(images, max_images=1)
    assert outcome(p)[21] == outcome(p)[22] == ("delete", "artifact-of-deleted")
    waves = wave_of(p)
    assert waves[dg(10)] < waves[dg(11)] < waves[dg(21)]
    assert waves[dg(12)] < waves[dg(22)]
    assert p.groups[dg(21)] == {dg(10), dg(11), dg(12), dg(21), dg(22)}
    kept = run(images, 12, max_images=1)  # a pod runs one child: the index group stays
    assert outcome(kept)[21] == outcome(kept)[22] == ("keep", "artifact-of-kept")


def test_an_artifact_that_is_an_index_child_stays_in_the_index_graph() -> None:
    # buildx-style: the attestation is a child of the index; it goes or stays with the index
    images = [img(1, "v1"), index(10, 11, 12, days=10), img(11, days=10), img(12, subject=11)]
    p = run(images, max_images=1)
    assert dg(12) not in p.artifacts
    assert outcome(p)[12] == ("delete", "child-of-deleted-index")


# -- the property -----------------------------------------------------------------------------


@st.composite
def signed_repositories(draw: st.DrawFn) -> tuple[list[Image], frozenset[int], Rules]:
    """Images, indexes over some of them, and artifacts (OCI subject or cosign tags) of images,
    of index children, of other artifacts and of digests not in the repository."""
    count = draw(st.integers(1, 12))
    images = [img(n, f"v{n}", days=draw(st.floats(0, 60))) for n in range(1, count + 1)]
    plain = list(range(1, count + 1))
    next_n = 100
    for _ in range(draw(st.integers(0, 2))):
        members = draw(st.lists(st.sampled_from(plain), min_size=1, max_size=3, unique=True))
        images.append(index(next_n, *members, days=draw(st.floats(0, 60))))
        next_n += 1
    targets = [*plain, 999]  # 999: a subject stored elsewhere
    for _ in range(draw(st.integers(0, 10))):
        subject = draw(st.sampled_from(targets))
        days = draw(st.floats(0, 60))
        if draw(st.booleans()):
            images.append(
                img(next_n, cosign(subject, draw(st.sampled_from(["sig", "att"]))), days=days)
            )
        else:
            images.append(img(next_n, subject=subject, days=days))
        targets.append(next_n)  # the next artifact may sign this one
        next_n += 1
    in_use = frozenset(draw(st.lists(st.sampled_from(targets), max_size=3)))
    rules = Rules(
        max_images=draw(st.integers(0, 8)),
        keep_tags=frozenset(),
        max_deletions_per_cycle=draw(st.none() | st.integers(0, 6)),
        delete_orphaned_artifacts=draw(st.booleans()),
    )
    return images, in_use, rules


@settings(max_examples=examples(300))
@given(signed_repositories())
def test_property_no_artifact_of_a_kept_image_is_ever_deleted(
    case: tuple[list[Image], frozenset[int], Rules],
) -> None:
    images, in_use, rules = case
    p = plan(
        images,
        repository=REPO,
        in_use=InUseSnapshot(frozenset(dg(n) for n in in_use)),
        rules=rules,
        now=NOW,
    )
    action = {d.image.digest: d.action for d in p.decisions}
    waves = wave_of(p)
    for decision in p.deletions:
        digest = decision.image.digest
        assert decision.reason not in PROTECTING
        assert digest not in {dg(n) for n in in_use}
        for subject in subjects_of(decision.image) if digest in p.artifacts else ():
            if subject in action:  # its subject is here: deleted too, and before it
                assert action[subject] is Action.DELETE, (digest, subject)
                assert waves[subject] < waves[digest]
                assert p.groups[digest] == p.groups[subject]
            else:  # an orphan: only when asked, and never while its subject runs
                assert rules.delete_orphaned_artifacts
                assert subject not in {dg(n) for n in in_use}
    # the limit counts images, not artifacts
    kept = [d for d in p.kept if d.image.digest not in p.artifacts]
    protected = [d for d in kept if d.protected]
    capped = [d for d in kept if d.reason is Reason.DELETION_CAP]
    assert len(kept) <= max(rules.max_images, len(protected)) + len(capped)


# -- the pruner -------------------------------------------------------------------------------


def pruner(ecr: FakeEcr, index: InUseIndex, **rules: object) -> Pruner:
    return Pruner(
        ecr,
        index,
        PruneOptions(
            selection=RepositorySelection(("app",)),
            rules_for=lambda _name: Rules(**rules),  # type: ignore[arg-type]
            dry_run=False,
        ),
    )


async def cycle(p: Pruner) -> CycleReport:
    return await p.run_cycle(now=NOW, gate=lambda: None, clock=lambda: NOW)


async def test_a_subject_whose_delete_fails_keeps_its_signature() -> None:
    """ECR refuses nothing about a signature whose image still exists: the pruner itself must
    hold it back when the image's delete fails (KmsError, a stale index), or the image stays
    unsigned and the next verified pod of it is rejected."""
    ecr = FakeEcr()
    ecr.add("app", img(1, "v1"), img(2, "v2"), img(12, cosign(2), days=1))
    ecr.delete_failures[dg(2)] = "KmsError"
    report = await cycle(pruner(ecr, InUseIndex(), max_images=1))
    (repo,) = report.repositories
    assert set(ecr.repos["app"]) == {dg(1), dg(2), dg(12)}
    assert [b for _, b in ecr.batches] == [(dg(2),)]  # the signature was never sent
    assert repo.held_back == 1
    assert repo.artifacts == 1
    assert repo.artifacts_deleted == 0


async def test_signatures_are_deleted_after_their_images_and_counted_apart() -> None:
    ecr = FakeEcr()
    ecr.add(
        "app",
        img(1, "v1"),
        img(2, "v2"),
        img(3, "v3"),
        img(12, cosign(2), days=1),
        img(13, "sbom", subject=3, days=1),
        img(14, cosign(1), days=1),
    )
    report = await cycle(pruner(ecr, InUseIndex(), max_images=1))
    (repo,) = report.repositories
    assert set(ecr.repos["app"]) == {dg(1), dg(14)}
    assert [set(b) for _, b in ecr.batches] == [{dg(2), dg(3)}, {dg(12), dg(13)}]
    assert (repo.deleted_count, repo.artifacts, repo.artifacts_deleted) == (4, 3, 2)
    assert repo.protected == {}  # within-count is not protection; artifacts are apart


async def test_a_subject_coming_into_use_mid_cycle_keeps_its_artifacts() -> None:
    """The delete-time veto covers the subject's whole group: a rollback that starts running
    the image keeps the image and its signature, not just the image."""
    ecr = FakeEcr()
    ecr.add("app", img(1, "v1"), *(img(n) for n in range(2, 5)), img(13, cosign(3), days=1))
    in_use = InUseIndex()

    async def rollback(_repo: str, batch: Sequence[Digest]) -> None:
        in_use.upsert(PODS, "rollback", References(frozenset({dg(3)})))

    ecr.before_delete = rollback  # lands after the veto of the first call: dg(3) is in it
    report = await cycle(pruner(ecr, in_use, max_images=1))
    (repo,) = report.repositories
    # the first call carried the images, dg(3) among them (in flight: overtaken); the second
    # would have carried its signature: vetoed with the group, so it was never sent
    assert [set(b) for _, b in ecr.batches] == [{dg(2), dg(3), dg(4)}]
    assert dg(13) in ecr.repos["app"]
    assert repo.vetoed == 2  # the group: dg(3) and its signature


# -- end to end, the real CLI ---------------------------------------------------------------


HOST = "123456789012.dkr.ecr.us-east-1.amazonaws.com"


def cli(*args: str, endpoint: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controller", *args],
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
            **CREDENTIALS,
            "AWS_ENDPOINT_URL_ECR": endpoint,
        },
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def test_the_cli_keeps_the_signatures_of_images_in_use_and_deletes_the_others(
    tmp_path: Path,
) -> None:
    now = datetime.now(UTC)
    with ThreadedEcrSimulator() as ecr, ThreadedKubeSimulator(token="t") as kube:
        ecr.create_repository("app")
        old = [
            ecr.add_image("app", tags=[f"b{n}"], pushed_at=now - timedelta(days=30 - n))
            for n in range(6)
        ]
        running, doomed = old[0], old[1]
        for subject in (running, doomed):
            ecr.add_artifact("app", subject, pushed_at=now - timedelta(days=1))  # OCI 1.1
            ecr.add_image(  # cosign's tag scheme
                "app", tags=[f"sha256-{subject[7:]}.sig"], pushed_at=now - timedelta(days=1)
            )
        elsewhere = ecr.add_artifact("app", "sha256:" + "e" * 64, pushed_at=now)
        kube.create("pods", pod("p", "shop", {"c": f"{HOST}/app@{running}"}))
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"prod": kube}, token="t")
        args = ["-repos=app", "--once", "-dry-run=false", "-max-images=3", "--keep-tags="]
        args += [f"-kubeconfig={kubeconfig}", "--output=json"]
        result = cli(*args, endpoint=ecr.endpoint_url)
        assert result.returncode == 0, result.stderr
        left = {view.digest: view for view in ecr.images("app")}
        # asked to, a second run deletes the orphan, and nothing else: the count is met
        again = cli(*args, "--delete-orphaned-artifacts", endpoint=ecr.endpoint_url)
        assert again.returncode == 0, again.stderr
        after_orphans = set(ecr.digests("app"))
    # 6 images over max-images 3: three go, the oldest unprotected ones (running, the oldest,
    # is in use: it counts toward the 3 but stays)
    assert running in left
    assert set(old[4:]) <= set(left)
    assert not set(old[1:4]) & set(left)
    signatures_of = {
        subject: [
            d
            for d, v in left.items()
            if v.subject == subject or v.tags == (f"sha256-{subject[7:]}.sig",)
        ]
        for subject in (running, doomed)
    }
    assert len(signatures_of[running]) == 2  # both kinds stay with the running image
    assert signatures_of[doomed] == []  # and went with the deleted one
    assert elsewhere in left  # its subject is in another repository
    report = json.loads(result.stdout.splitlines()[-1])
    (repo,) = report["repositories"]
    assert (repo["artifacts"], repo["artifacts_deleted"]) == (5, 2)
    assert after_orphans == set(left) - {elsewhere}
    (repo,) = json.loads(again.stdout.splitlines()[-1])["repositories"]
    assert repo["deleted"][0]["reason"] == "orphaned-artifact"


@settings(max_examples=examples(150), deadline=None)
@given(signed_repositories(), st.lists(st.integers(0, 40), max_size=4), st.randoms())
async def test_property_the_pruner_never_deletes_an_artifact_before_or_beside_its_subject(
    case: tuple[list[Image], frozenset[int], Rules],
    rollbacks: list[int],
    rng: Any,
) -> None:
    """The real pruner, with rollbacks landing between delete calls and failing deletes: at the
    moment of every delete call, no artifact in it has a subject still in the repository or
    in use (the plan orders it after its subjects; the veto keeps the whole group; a subject
    whose delete failed holds it back)."""
    images, in_use, rules = case
    ecr = FakeEcr()
    ecr.add("app", *images)
    artifacts = {i.digest: subjects_of(i) for i in images if subjects_of(i)}
    for image in images:
        if rng.random() < 0.1:
            ecr.delete_failures[image.digest] = "KmsError"
    index = InUseIndex()
    index.upsert(PODS, "running", References(frozenset(dg(n) for n in in_use)))
    store = ecr.repos["app"]
    calls = 0

    async def check_then_roll_back(_repo: str, batch: Sequence[Digest]) -> None:
        nonlocal calls
        for digest in batch:
            subjects = artifacts.get(digest, frozenset())
            in_graph = any(digest in i.children for i in store.values()) or store[digest].children
            if subjects and not in_graph:
                assert not subjects & set(store), (digest, subjects)
                assert not any(index.digest_in_use(s) for s in subjects), (digest, subjects)
        if calls in rollbacks:  # a pod starts running an image still stored, after the veto
            index.upsert(
                PODS, f"rollback-{calls}", References(frozenset({rng.choice(list(store))}))
            )
        calls += 1

    ecr.before_delete = check_then_roll_back
    p = Pruner(
        ecr,
        index,
        PruneOptions(
            selection=RepositorySelection(("app",)), rules_for=lambda _name: rules, dry_run=False
        ),
    )
    report = await cycle(p)
    assert not report.repositories[0].errors
