"""Archive instead of delete, and restore on use (issue 14 §3): the pruner, the gateway against
the ECR simulator, the restorer, and the real CLI and service.

`--disposal archive` moves every image the policy would delete to ECR's archive storage class,
one UpdateImageStorageClass call per image, through the same trust gate, catch-up wait and
in-use veto as a delete. The service restores an archived image within seconds when the live
view shows it in use, with no cycle in between.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.ecr import AioEcr, Repository, open_ecr
from controller.identifiers import RepositoryId, SourceKey
from controller.images import Digest, EcrRegistry
from controller.inventory import InUseIndex, References
from controller.policy import Image, Rules
from controller.pruning import ARCHIVE, CycleReport, PruneOptions, Pruner
from controller.restoring import Restorer
from controller.settings import RepositorySelection
from sandbox.ecrsim import EcrSimulator, ThreadedEcrSimulator
from sandbox.kubesim import ThreadedKubeSimulator, pod, write_kubeconfig
from sandbox.moto import CREDENTIALS
from sandbox.ports import free_port
from tests.digests import digest as dg
from tests.fake_ecr import REGISTRY, FakeEcr
from tests.test_artifacts import NOW, img

PODS = SourceKey("test", "pods")
HOST = "123456789012.dkr.ecr.us-east-1.amazonaws.com"


class Catalog:
    """Records what the pruner tells restore on use."""

    def __init__(self) -> None:
        self.lists: list[tuple[str, list[Digest]]] = []
        self.archived_now: list[Digest] = []

    def listed(self, repository: Repository, images: Sequence[Image]) -> None:
        self.lists.append((repository.name, [i.digest for i in images]))

    def archived(self, repository: Repository, image: Image) -> None:
        self.archived_now.append(image.digest)


def archiver(ecr: FakeEcr, index: InUseIndex, catalog: Catalog | None = None) -> Pruner:
    return Pruner(
        ecr,
        index,
        PruneOptions(
            selection=RepositorySelection(("app",)),
            rules_for=lambda _name: Rules(max_images=2, keep_tags=frozenset()),
            dry_run=False,
            disposal=ARCHIVE,
            catalog=catalog,
        ),
    )


async def cycle(p: Pruner) -> CycleReport:
    return await p.run_cycle(now=NOW, gate=lambda: None, clock=lambda: NOW)


# -- the pruner -------------------------------------------------------------------------------


async def test_the_plan_s_images_are_archived_one_call_each_signatures_after_their_image() -> None:
    ecr = FakeEcr()
    ecr.add("app", img(1, "v1"), img(2, "v2"), img(3, "v3"), img(4, "v4"))
    ecr.add("app", img(13, f"sha256-{3:064x}.sig", days=0.5))  # the signature of image 3
    catalog = Catalog()
    report = await cycle(archiver(ecr, InUseIndex(), catalog))
    (repo,) = report.repositories
    assert report.disposal == "archive"
    assert set(ecr.repos["app"]) == {dg(1), dg(2)}  # what stays ACTIVE
    assert set(ecr.archived["app"]) == {dg(3), dg(4), dg(13)}
    sent = [batch for _, batch in ecr.batches]
    assert all(len(batch) == 1 for batch in sent)  # UpdateImageStorageClass takes one image
    assert sent.index((dg(3),)) < sent.index((dg(13),))  # the signature after its image
    assert ecr.calls["UpdateImageStorageClass"] == 3
    assert "BatchDeleteImage" not in ecr.calls
    assert repo.deleted_count == 3
    assert catalog.lists == [("app", [])]  # nothing was archived before this cycle
    assert sorted(catalog.archived_now) == sorted([dg(3), dg(4), dg(13)])


async def test_an_image_coming_into_use_before_its_call_is_not_archived() -> None:
    ecr = FakeEcr()
    ecr.add("app", *(img(n, f"v{n}") for n in range(1, 7)))
    index = InUseIndex()

    async def rollback(_repo: str, batch: Sequence[Digest]) -> None:
        if batch == (dg(6),):  # the oldest goes first; this lands before the next call
            index.upsert(PODS, "rollback", References(frozenset({dg(5)})))

    ecr.before_delete = rollback
    report = await cycle(archiver(ecr, index))
    (repo,) = report.repositories
    assert dg(5) in ecr.repos["app"]  # the veto before its own call kept it
    assert repo.vetoed == 1


async def test_a_dry_run_says_what_it_would_archive_and_calls_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ecr = FakeEcr()
    ecr.add("app", *(img(n, f"v{n}") for n in range(1, 5)))
    pruner = Pruner(
        ecr,
        InUseIndex(),
        PruneOptions(
            selection=RepositorySelection(("app",)),
            rules_for=lambda _name: Rules(max_images=2, keep_tags=frozenset()),
            dry_run=True,
            disposal=ARCHIVE,
        ),
    )
    with caplog.at_level("INFO", logger="controller.pruning"):
        report = await cycle(pruner)
    assert report.repositories[0].deleted_count == 2
    assert "UpdateImageStorageClass" not in ecr.calls
    assert len(ecr.repos["app"]) == 4
    assert any(
        r.getMessage().startswith("would archive 1 image(s) from app") for r in caplog.records
    )


# -- the gateway against the simulator --------------------------------------------------------


@pytest.fixture
async def sim() -> AsyncIterator[EcrSimulator]:
    async with EcrSimulator() as simulator:
        simulator.create_repository("app")
        yield simulator


@pytest.fixture
async def gateway(sim: EcrSimulator, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[AioEcr]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    async with open_ecr(
        region="us-east-1", registry_id=None, concurrency=2, endpoint_url=sim.endpoint_url
    ) as ecr:
        yield ecr


async def test_the_gateway_archives_lists_and_restores(sim: EcrSimulator, gateway: AioEcr) -> None:
    repo = Repository(RepositoryId(EcrRegistry("123456789012", "us-east-1"), "app"))
    image = Digest(sim.add_image("app", tags=["v1"]))
    assert (await gateway.archive(repo, image)).deleted == (image,)
    assert [i.digest for i in await gateway.images(repo)] == []  # ACTIVE only
    (archived,) = await gateway.images(repo, archived=True)
    assert archived.digest == image
    assert archived.archived_at is not None
    again = await gateway.archive(repo, image)  # ECR will not archive it twice
    assert [f.code for f in again.failed] == ["ImageStorageClassUpdateNotSupportedException"]
    assert (await gateway.archive(repo, dg(99))).gone == (dg(99),)
    assert await gateway.restore(repo, image) == "ACTIVATING"
    assert gateway.stats.calls["UpdateImageStorageClass"] == 4


# -- restore on use ---------------------------------------------------------------------------


async def test_the_restorer_asks_back_an_image_in_use_with_its_group_and_signature_once() -> None:
    ecr = FakeEcr()
    repo = Repository(RepositoryId(REGISTRY, "app"))
    index_image = Image(dg(10), NOW, ("multi",), 1, None, (dg(11), dg(12)))
    archived = [
        index_image,
        img(11),
        img(12),
        img(20, subject=10),  # the index's signature
        img(30, "old"),  # another archived image, in use by nobody
    ]
    view = InUseIndex()
    requests: list[str] = []
    restorer = Restorer(ecr, view, on_request=requests.append)
    restorer.listed(repo, archived)
    assert await restorer.check() == 0
    view.upsert(PODS, "rollback", References(frozenset({dg(10)})))  # a pod pinned to the index
    assert await restorer.check() == 4
    # the children before the index (ECR restores an index once its children are back), then
    # the signature an admission policy will check
    assert [d for _, d in ecr.restored] == [dg(11), dg(12), dg(10), dg(20)]
    assert requests == ["app"] * 4
    assert await restorer.check() == 0  # once per image while it is ACTIVATING
    restorer.listed(repo, [img(30, "old")])  # the next cycle's listing: they left the archive
    assert await restorer.check() == 0


async def test_an_image_just_archived_is_restored_when_a_tag_points_to_it() -> None:
    from tests.test_inventory import tag  # a tag ref for this registry and repository

    ecr = FakeEcr()
    repo = Repository(RepositoryId(REGISTRY, "app"))
    view = InUseIndex()
    restorer = Restorer(ecr, view)
    restorer.archived(repo, img(7, "release-7"))
    view.upsert(PODS, "p", References(tags=frozenset({tag("app", "release-7")})))
    assert await restorer.check() == 1
    assert ecr.restored == [("app", dg(7))]


# -- the real CLI and the service -------------------------------------------------------------


def environment(ecr: ThreadedEcrSimulator) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ECR_CLEANUP_"))},
        **CREDENTIALS,
        "AWS_ENDPOINT_URL_ECR": ecr.endpoint_url,
        "PYTHONUNBUFFERED": "1",
    }


def seeded(ecr: ThreadedEcrSimulator, kube: ThreadedKubeSimulator) -> tuple[list[str], str]:
    """Six images a day apart, the oldest in use by a pod, each signed (OCI 1.1 referrer)."""
    now = datetime.now(UTC)
    ecr.create_repository("app")
    old = [
        ecr.add_image("app", tags=[f"b{n}"], pushed_at=now - timedelta(days=30 - n))
        for n in range(6)
    ]
    for subject in old:
        ecr.add_artifact("app", subject, pushed_at=now - timedelta(days=1))
    kube.create("pods", pod("p", "shop", {"c": f"{HOST}/app@{old[0]}"}))
    return old, old[0]


def test_the_cli_archives_what_it_would_delete_and_keeps_what_runs_with_its_signature(
    tmp_path: Path,
) -> None:
    with ThreadedEcrSimulator() as ecr, ThreadedKubeSimulator(token="t") as kube:
        old, running = seeded(ecr, kube)
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
                "-max-images=3",
                "--keep-tags=",
                f"-kubeconfig={kubeconfig}",
            ],
            env=environment(ecr),
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        status = {v.digest: v.status for v in ecr.images("app")}
        subject = {v.digest: v.subject for v in ecr.images("app")}
        assert ecr.calls["BatchDeleteImage"] == 0
    # the three oldest but the running one go to the archive, with their signatures
    assert status[running] == "ACTIVE"
    assert [status[d] for d in old[1:4]] == ["ARCHIVED"] * 3
    assert [status[d] for d in old[4:]] == ["ACTIVE"] * 2
    for signature, signed in subject.items():
        if signed is not None:
            assert status[signature] == status[signed], (signature, signed)
    assert len(status) == 12  # nothing deleted
    assert "ARCHIVED" in result.stdout.splitlines()[1]  # the table's column
    assert "image(s) archived" in result.stdout
    assert "restore on use is a service feature" in result.stderr  # --once warns


def test_the_service_restores_an_archived_image_a_new_pod_needs_with_no_cycle_between(
    tmp_path: Path,
) -> None:
    with ThreadedEcrSimulator() as ecr, ThreadedKubeSimulator(token="t") as kube:
        old, _running = seeded(ecr, kube)
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"prod": kube}, token="t")
        port = free_port()
        args = [
            "-repos=app",
            "-dry-run=false",
            "--disposal=archive",
            "-max-images=3",
            "--keep-tags=",
            "--interval=1h",  # one cycle at start, then none for an hour
            f"-kubeconfig={kubeconfig}",
            f"--metrics-address=127.0.0.1:{port}",
            "--lease-namespace=default",
        ]
        service = subprocess.Popen(
            [sys.executable, "-m", "controller", *args],
            env=environment(ecr),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 60
            while not all(ecr.images("app")[i].status == "ARCHIVED" for i in (1, 2, 3)):
                assert service.poll() is None, service.stderr.read() if service.stderr else ""
                assert time.monotonic() < deadline, "the first cycle archived nothing"
                time.sleep(0.1)
            listings = ecr.calls["DescribeRepositories"]
            # a rollback: a pod pinned to an archived digest
            kube.create("pods", pod("rollback", "shop", {"c": f"{HOST}/app@{old[2]}"}))
            asked = time.monotonic()
            while not any(
                r.operation == "UpdateImageStorageClass"
                and r.params.get("targetStorageClass") == "STANDARD"
                and r.params.get("imageId", {}).get("imageDigest") == old[2]
                for r in ecr.requests
            ):
                assert time.monotonic() - asked < 15, "no restore within 15 s of the pod"
                time.sleep(0.05)
            restored_after = time.monotonic() - asked
            time.sleep(0.5)  # its signature's request follows on the same poll
            views = ecr.images("app")
            statuses = {v.digest: v.status for v in views}
            signature_of = {v.subject: v.digest for v in views if v.subject is not None}
            assert ecr.calls["DescribeRepositories"] == listings  # no cycle in between
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
                metrics = page.read().decode()
        finally:
            service.terminate()
            _, stderr = service.communicate(timeout=30)
    assert restored_after < 15
    assert statuses[old[2]] == "ACTIVATING"
    assert statuses[signature_of[old[2]]] == "ACTIVATING"  # its signature comes back with it
    assert statuses[old[1]] == statuses[old[3]] == "ARCHIVED"  # what nobody needs stays
    assert 'ecr_cleanup_restores_requested_total{repository="app"} 2.0' in metrics
    assert f"restoring app@{old[2]}" in stderr
