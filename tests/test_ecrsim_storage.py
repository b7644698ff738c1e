"""The simulator's storage classes and referrers (issue 14 §4), through a real aioboto3 client.

moto 5.2.5 models neither. The client is the gateway's own session (controller.ecr.new_session),
the only one in the process whose model knows UpdateImageStorageClass and ListImageReferrers.
What ECR documents is asserted as documented (DescribeImages returns ACTIVE images unless the
filter asks; a restore goes through ACTIVATING; a push of an archived image restores it); where
it is silent the simulator's conservative reading is asserted, so that a controller correct
here does not count on more than ECR promises.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from controller.ecr import new_session
from sandbox.ecrsim import EcrRegistry, EcrSimulator, ManualClock, build_image_manifest

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
REFUSED = "ImageStorageClassUpdateNotSupportedException"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
async def sim(clock: ManualClock) -> AsyncIterator[EcrSimulator]:
    async with EcrSimulator(clock=clock) as simulator:
        simulator.create_repository("app")
        yield simulator


@pytest.fixture
async def ecr(sim: EcrSimulator) -> AsyncIterator[Any]:
    async with new_session().client(
        "ecr",
        region_name="us-east-1",
        endpoint_url=sim.endpoint_url,
        aws_access_key_id="t",
        aws_secret_access_key="t",
    ) as client:
        yield client


async def move(ecr: Any, digest: str, target: str) -> str:
    answer = await ecr.update_image_storage_class(
        repositoryName="app", imageId={"imageDigest": digest}, targetStorageClass=target
    )
    assert answer["imageId"]["imageDigest"] == digest
    status: str = answer["imageStatus"]
    return status


async def listed(ecr: Any, status: str | None = None) -> dict[str, dict[str, Any]]:
    kwargs: dict[str, Any] = {"filter": {"imageStatus": status}} if status else {}
    answer = await ecr.describe_images(repositoryName="app", **kwargs)
    return {d["imageDigest"]: d for d in answer["imageDetails"]}


async def refused(ecr: Any, digest: str, target: str) -> str:
    with pytest.raises(ClientError) as caught:
        await move(ecr, digest, target)
    code: str = caught.value.response["Error"]["Code"]
    return code


async def test_an_archived_image_is_listed_only_when_the_filter_asks(
    sim: EcrSimulator, ecr: Any, clock: ManualClock
) -> None:
    kept, archived = sim.add_image("app", tags=["v2"]), sim.add_image("app", tags=["v1"])
    clock.advance(timedelta(hours=1))
    assert await move(ecr, archived, "ARCHIVE") == "ARCHIVED"
    assert set(await listed(ecr)) == {kept}  # documented: ACTIVE only by default
    (detail,) = (await listed(ecr, "ARCHIVED")).values()
    assert detail["imageStatus"] == "ARCHIVED"
    assert detail["lastArchivedAt"] == T0 + timedelta(hours=1)
    assert set(await listed(ecr, "ANY")) == {kept, archived}


async def test_a_restore_goes_through_activating_and_is_requested_once(
    sim: EcrSimulator, ecr: Any, clock: ManualClock
) -> None:
    digest = sim.add_image("app", tags=["v1"])
    await move(ecr, digest, "ARCHIVE")
    assert await refused(ecr, digest, "ARCHIVE") == REFUSED  # no repeat
    assert await move(ecr, digest, "STANDARD") == "ACTIVATING"
    assert await refused(ecr, digest, "STANDARD") == REFUSED  # once per image while ACTIVATING
    assert set(await listed(ecr, "ACTIVATING")) == {digest}
    assert await listed(ecr) == {}
    clock.advance(sim.activation_delay)
    (detail,) = (await listed(ecr)).values()
    assert detail["imageStatus"] == "ACTIVE"
    assert detail["lastActivatedAt"] == T0 + sim.activation_delay
    assert await refused(ecr, digest, "STANDARD") == REFUSED  # an ACTIVE image


async def test_an_index_is_archived_before_its_children_and_restored_after_them(
    sim: EcrSimulator, ecr: Any
) -> None:
    sim.activation_delay = timedelta(0)
    child = sim.add_image("app")
    index = sim.add_index("app", [child], tags=["multi"])
    assert await refused(ecr, child, "ARCHIVE") == REFUSED  # an active index names it
    await move(ecr, index, "ARCHIVE")
    await move(ecr, child, "ARCHIVE")
    assert await refused(ecr, index, "STANDARD") == REFUSED  # its child is archived
    assert await move(ecr, child, "STANDARD") == "ACTIVE"  # a zero delay: at once
    assert await move(ecr, index, "STANDARD") == "ACTIVE"


async def test_pushing_an_archived_image_again_restores_it_at_once(
    sim: EcrSimulator, ecr: Any
) -> None:
    manifest = build_image_manifest(config_seed="same", size=10)
    first = await ecr.put_image(repositoryName="app", imageManifest=manifest, imageTag="v1")
    digest = first["image"]["imageId"]["imageDigest"]
    await move(ecr, digest, "ARCHIVE")
    await ecr.put_image(repositoryName="app", imageManifest=manifest, imageTag="v1")
    assert (await listed(ecr))[digest]["imageStatus"] == "ACTIVE"


async def test_unknown_images_and_classes_are_errors(sim: EcrSimulator, ecr: Any) -> None:
    digest = sim.add_image("app")
    with pytest.raises(ClientError, match="ImageNotFoundException"):
        await move(ecr, "sha256:" + "0" * 64, "ARCHIVE")
    with pytest.raises(ClientError, match="InvalidParameterException"):
        await ecr.describe_images(repositoryName="app", filter={"imageStatus": "GONE"})
    assert sim.set_storage_class("app", digest, "ARCHIVE") == "ARCHIVED"
    assert sim.images("app")[0].status == "ARCHIVED"


async def test_referrers_are_the_oci_subjects_paged_and_filtered(
    sim: EcrSimulator, ecr: Any
) -> None:
    image = sim.add_image("app", tags=["v1"])
    signature = sim.add_artifact("app", image)
    sbom = sim.add_artifact("app", image, artifact_type="application/spdx+json")
    sim.add_image("app", tags=[f"sha256-{image[7:]}.sig"])  # cosign's tag scheme: no referrer
    sim.add_artifact("app", sim.add_image("app"))  # another image's

    async def referrers(**kwargs: Any) -> list[dict[str, Any]]:
        answer = await ecr.list_image_referrers(
            repositoryName="app", subjectId={"imageDigest": image}, **kwargs
        )
        found: list[dict[str, Any]] = answer["referrers"]
        return found

    everything = await referrers()
    assert [r["digest"] for r in everything] == [signature, sbom]
    assert everything[0]["artifactType"] == "application/vnd.dev.cosign.artifact.sig.v1+json"
    assert everything[0]["artifactStatus"] == "ACTIVE"
    assert everything[0]["size"] == len(sim.manifest("app", signature).encode())
    spdx = await referrers(filter={"artifactTypes": ["application/spdx+json"]})
    assert [r["digest"] for r in spdx] == [sbom]
    first = await ecr.list_image_referrers(
        repositoryName="app", subjectId={"imageDigest": image}, maxResults=1
    )
    rest = await referrers(maxResults=1, nextToken=first["nextToken"])
    assert [r["digest"] for r in first["referrers"] + rest] == [signature, sbom]
    with pytest.raises(ClientError, match="InvalidParameterException"):
        await referrers(maxResults=51)
    sim.set_storage_class("app", sbom, "ARCHIVE")
    assert [r["digest"] for r in await referrers()] == [signature]
    archived = await referrers(filter={"artifactStatus": "ARCHIVED"})
    assert [r["digest"] for r in archived] == [sbom]


def test_a_rollback_restores_the_storage_classes() -> None:
    registry = EcrRegistry()
    registry.create_repository("app")
    digest = registry.add_image("app")
    registry.checkpoint()
    registry.set_storage_class("app", digest, "ARCHIVE")
    registry.rollback()
    assert registry.images("app")[0].status == "ACTIVE"
