"""The ECR simulator, driven through aioboto3 exactly as the controller's gateway drives ECR.

Every test talks HTTP to ``sandbox.ecrsim`` through a standard-retry aioboto3 client,
so what is asserted here is what the gateway will see.  ``test_agrees_with_moto`` runs
one script against moto's server too, guarding the simulator against drifting from an
independent implementation on the fields both model.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import aioboto3
import aiohttp
import pytest
from aiobotocore.config import AioConfig
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer

from sandbox.ecrsim import (
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    EcrError,
    EcrSimulator,
    ManualClock,
    ThreadedEcrSimulator,
    build_image_manifest,
    manifest_digest,
)

if TYPE_CHECKING:
    from aiobotocore.session import ClientCreatorContext
    from types_aiobotocore_ecr import ECRClient

REPO = "team/app"
T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def ecr_client(
    endpoint_url: str, *, max_attempts: int = 5, validate: bool = True
) -> ClientCreatorContext[ECRClient]:
    session = aioboto3.Session(
        aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
    )
    return session.client(
        "ecr",
        endpoint_url=endpoint_url,
        config=AioConfig(
            retries={"mode": "standard", "max_attempts": max_attempts},
            parameter_validation=validate,
        ),
    )


def error_code(error: pytest.ExceptionInfo[ClientError]) -> str:
    code: str = error.value.response["Error"]["Code"]
    return code


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
async def sim(clock: ManualClock) -> AsyncIterator[EcrSimulator]:
    async with EcrSimulator(clock=clock) as simulator:
        simulator.create_repository(REPO)
        yield simulator


@pytest.fixture
async def ecr(sim: EcrSimulator) -> AsyncIterator[ECRClient]:
    async with ecr_client(sim.endpoint_url) as client:
        yield client


def ids(*digests: str) -> list[Any]:
    return [{"imageDigest": digest} for digest in digests]


# ----------------------------------------------------------------------- paging


async def test_describe_images_pages_2500_images_in_exactly_three_calls(
    sim: EcrSimulator, ecr: ECRClient
) -> None:
    pushed = [sim.add_image(REPO, pushed_at=T0 + timedelta(seconds=n), size=n) for n in range(2500)]
    sim.reset_calls()

    pages = [
        page
        async for page in ecr.get_paginator("describe_images").paginate(
            repositoryName=REPO, PaginationConfig={"PageSize": 1000}
        )
    ]

    assert [len(page["imageDetails"]) for page in pages] == [1000, 1000, 500]
    assert [d["imageDigest"] for page in pages for d in page["imageDetails"]] == pushed
    assert sim.calls == {"DescribeImages": 3}
    assert [r.params.get("maxResults") for r in sim.requests] == [1000, 1000, 1000]


async def test_paging_survives_deletions_between_pages(sim: EcrSimulator, ecr: ECRClient) -> None:
    digests = [sim.add_image(REPO) for _ in range(6)]
    first = await ecr.describe_images(repositoryName=REPO, maxResults=2)
    assert [d["imageDigest"] for d in first["imageDetails"]] == digests[:2]
    await ecr.batch_delete_image(repositoryName=REPO, imageIds=ids(*digests[1:4]))

    rest = await ecr.describe_images(
        repositoryName=REPO, maxResults=1000, nextToken=first["nextToken"]
    )

    assert [d["imageDigest"] for d in rest["imageDetails"]] == digests[4:]
    assert "nextToken" not in rest


async def test_describe_images_defaults_to_pages_of_100(sim: EcrSimulator, ecr: ECRClient) -> None:
    for _ in range(101):
        sim.add_image(REPO)
    first = await ecr.describe_images(repositoryName=REPO)
    assert len(first["imageDetails"]) == 100
    second = await ecr.describe_images(repositoryName=REPO, nextToken=first["nextToken"])
    assert len(second["imageDetails"]) == 1
    assert "nextToken" not in second


async def test_describe_images_rejects_max_results_out_of_range(sim: EcrSimulator) -> None:
    # botocore checks only the minimum client-side; the server must check both ends.
    async with ecr_client(sim.endpoint_url, validate=False) as client:
        for bad in (0, 1001):
            with pytest.raises(ClientError) as error:
                await client.describe_images(repositoryName=REPO, maxResults=bad)
            assert error_code(error) == "InvalidParameterException"
            assert "maxResults" in str(error.value)


async def test_describe_images_rejects_foreign_or_garbled_tokens(
    sim: EcrSimulator, ecr: ECRClient
) -> None:
    sim.create_repository("team/other")
    for _ in range(3):
        sim.add_image(REPO)
        sim.add_image("team/other")
    token = (await ecr.describe_images(repositoryName=REPO, maxResults=1))["nextToken"]
    for bad_request in (
        {"repositoryName": REPO, "nextToken": "not-a-token"},
        {"repositoryName": REPO, "nextToken": token[:-1] + ("0" if token[-1] != "0" else "1")},
        {"repositoryName": "team/other", "nextToken": token},
        {"repositoryName": REPO, "nextToken": token, "filter": {"tagStatus": "TAGGED"}},
        {"repositoryName": REPO, "maxResults": 5, "imageIds": [{"imageTag": "x"}]},
    ):
        with pytest.raises(ClientError) as error:
            await ecr.describe_images(**bad_request)
        assert error_code(error) == "InvalidParameterException"


async def test_describe_images_filters_by_tag_status(sim: EcrSimulator, ecr: ECRClient) -> None:
    tagged = sim.add_image(REPO, tags=["v1"])
    untagged = sim.add_image(REPO)

    async def digests(status: Any) -> list[str]:
        answer = await ecr.describe_images(repositoryName=REPO, filter={"tagStatus": status})
        return [d["imageDigest"] for d in answer["imageDetails"]]

    assert await digests("TAGGED") == [tagged]
    assert await digests("UNTAGGED") == [untagged]
    assert await digests("ANY") == [tagged, untagged]


async def test_describe_images_by_id_and_image_not_found(sim: EcrSimulator, ecr: ECRClient) -> None:
    digest = sim.add_image(REPO, tags=["v1", "stable"], size=4096)
    answer = await ecr.describe_images(
        repositoryName=REPO, imageIds=[{"imageTag": "v1"}, {"imageDigest": digest}]
    )
    (detail,) = answer["imageDetails"]
    assert detail["imageDigest"] == digest
    assert detail["imageTags"] == ["v1", "stable"]
    assert detail["imageSizeInBytes"] == 4096
    assert detail["imageManifestMediaType"] == OCI_MANIFEST
    assert detail["artifactMediaType"] == "application/vnd.oci.image.config.v1+json"
    assert detail["registryId"] == "123456789012"

    with pytest.raises(ClientError) as error:
        await ecr.describe_images(repositoryName=REPO, imageIds=[{"imageTag": "missing"}])
    assert error_code(error) == "ImageNotFoundException"
    with pytest.raises(ClientError) as error:
        await ecr.describe_images(repositoryName="team/nope")
    assert error_code(error) == "RepositoryNotFoundException"


async def test_describe_repositories_limits_and_pages_slash_names(
    sim: EcrSimulator, ecr: ECRClient
) -> None:
    names = [f"ecr-public/library/app-{n}" for n in range(4)]
    for name in names:
        sim.create_repository(name)

    with pytest.raises(ClientError) as error:
        await ecr.describe_repositories(repositoryNames=[f"r{n:03}" for n in range(101)])
    assert error_code(error) == "InvalidParameterException"
    with pytest.raises(ClientError) as error:
        await ecr.describe_repositories(repositoryNames=[names[0], "missing/repo"])
    assert error_code(error) == "RepositoryNotFoundException"

    sim.reset_calls()
    pages = [
        page
        async for page in ecr.get_paginator("describe_repositories").paginate(
            PaginationConfig={"PageSize": 2}
        )
    ]
    assert sim.calls == {"DescribeRepositories": 3}
    listed = [r["repositoryName"] for page in pages for r in page["repositories"]]
    assert listed == [REPO, *names]
    first = pages[0]["repositories"][1]
    assert first["repositoryArn"] == (
        "arn:aws:ecr:us-east-1:123456789012:repository/ecr-public/library/app-0"
    )
    assert first["repositoryUri"] == (
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/ecr-public/library/app-0"
    )
    assert first["createdAt"] == T0.replace(microsecond=123000)


# ----------------------------------------------------------------------- deletion


async def test_batch_delete_rejects_101_ids(sim: EcrSimulator, ecr: ECRClient) -> None:
    digests = [sim.add_image(REPO) for _ in range(101)]
    with pytest.raises(ClientError) as error:
        await ecr.batch_delete_image(repositoryName=REPO, imageIds=ids(*digests))
    assert error_code(error) == "InvalidParameterException"
    assert sim.digests(REPO) == set(digests)


async def test_child_of_a_live_index_is_refused(sim: EcrSimulator, ecr: ECRClient) -> None:
    amd64, arm64 = sim.add_image(REPO), sim.add_image(REPO)
    index = sim.add_index(REPO, [amd64, arm64], tags=["v1"])

    answer = await ecr.batch_delete_image(repositoryName=REPO, imageIds=ids(amd64))

    assert answer["imageIds"] == []
    (failure,) = answer["failures"]
    assert failure["failureCode"] == "ImageReferencedByManifestList"
    assert failure["imageId"] == {"imageDigest": amd64}
    assert index in failure["failureReason"]
    assert sim.digests(REPO) == {amd64, arm64, index}


async def test_a_child_can_lose_a_tag_but_not_its_last_one(
    sim: EcrSimulator, ecr: ECRClient
) -> None:
    child = sim.add_image(REPO, tags=["amd64", "amd64-v1"])
    sim.add_index(REPO, [child])

    answer = await ecr.batch_delete_image(
        repositoryName=REPO, imageIds=[{"imageTag": "amd64-v1"}, {"imageTag": "amd64"}]
    )

    assert answer["imageIds"] == [{"imageDigest": child, "imageTag": "amd64-v1"}]
    assert [(f["failureCode"], f["imageId"]) for f in answer["failures"]] == [
        ("ImageReferencedByManifestList", {"imageTag": "amd64"})
    ]
    assert sim.images(REPO)[0].tags == ("amd64",)


async def test_index_then_children_in_two_calls(sim: EcrSimulator, ecr: ECRClient) -> None:
    amd64, arm64 = sim.add_image(REPO), sim.add_image(REPO)
    index = sim.add_index(REPO, [amd64, arm64], tags=["v1", "latest"])

    first = await ecr.batch_delete_image(repositoryName=REPO, imageIds=ids(index))
    assert first["failures"] == []
    assert first["imageIds"] == [
        {"imageDigest": index, "imageTag": "v1"},
        {"imageDigest": index, "imageTag": "latest"},
    ]
    second = await ecr.batch_delete_image(repositoryName=REPO, imageIds=ids(amd64, arm64))
    assert second["failures"] == []
    assert second["imageIds"] == ids(amd64, arm64)
    assert sim.digests(REPO) == set()


async def test_index_and_children_in_one_call_fails_the_children(
    sim: EcrSimulator, ecr: ECRClient
) -> None:
    amd64, arm64 = sim.add_image(REPO), sim.add_image(REPO)
    index = sim.add_index(REPO, [amd64, arm64])

    answer = await ecr.batch_delete_image(repositoryName=REPO, imageIds=ids(index, amd64, arm64))

    assert answer["imageIds"] == ids(index)
    assert [f["imageId"]["imageDigest"] for f in answer["failures"]] == [amd64, arm64]
    assert {f["failureCode"] for f in answer["failures"]} == {"ImageReferencedByManifestList"}
    assert sim.digests(REPO) == {amd64, arm64}


async def test_batch_delete_per_image_failures(sim: EcrSimulator, ecr: ECRClient) -> None:
    kept = sim.add_image(REPO, tags=["v1"])
    absent = "sha256:" + "0" * 64
    answer = await ecr.batch_delete_image(
        repositoryName=REPO,
        imageIds=[
            {"imageDigest": absent},
            {"imageTag": "never-pushed"},
            {"imageDigest": "sha256:xyz"},
            {"imageDigest": kept, "imageTag": "other"},
        ],
    )
    assert answer["imageIds"] == []
    assert [(f["failureCode"], f["imageId"]) for f in answer["failures"]] == [
        ("ImageNotFound", {"imageDigest": absent}),
        ("ImageNotFound", {"imageTag": "never-pushed"}),
        ("InvalidImageDigest", {"imageDigest": "sha256:xyz"}),
        ("ImageNotFound", {"imageDigest": kept, "imageTag": "other"}),
    ]
    assert sim.digests(REPO) == {kept}


async def test_delete_by_tag_untags_and_the_last_tag_deletes(
    sim: EcrSimulator, ecr: ECRClient
) -> None:
    digest = sim.add_image(REPO, tags=["v1", "latest"])

    first = await ecr.batch_delete_image(repositoryName=REPO, imageIds=[{"imageTag": "latest"}])
    assert first["imageIds"] == [{"imageDigest": digest, "imageTag": "latest"}]
    assert [view.tags for view in sim.images(REPO)] == [("v1",)]

    second = await ecr.batch_delete_image(repositoryName=REPO, imageIds=[{"imageTag": "v1"}])
    assert second["imageIds"] == [{"imageDigest": digest, "imageTag": "v1"}]
    assert sim.digests(REPO) == set()


async def test_fail_images_injects_per_image_failures(sim: EcrSimulator, ecr: ECRClient) -> None:
    stuck, gone = sim.add_image(REPO, tags=["stuck"]), sim.add_image(REPO)
    sim.fail_images(REPO, [stuck])
    answer = await ecr.batch_delete_image(
        repositoryName=REPO, imageIds=[{"imageTag": "stuck"}, *ids(gone)]
    )
    assert answer["imageIds"] == ids(gone)
    assert [(f["failureCode"], f["imageId"]) for f in answer["failures"]] == [
        ("KmsError", {"imageTag": "stuck"})
    ]
    assert sim.digests(REPO) == {stuck}


# ----------------------------------------------------------------------- timestamps


async def test_last_recorded_pull_time_round_trips(sim: EcrSimulator, ecr: ECRClient) -> None:
    pulled = T0 - timedelta(days=3)
    digest = sim.add_image(REPO, last_pulled_at=pulled)
    never = sim.add_image(REPO)

    answer = await ecr.describe_images(repositoryName=REPO)
    by_digest = {d["imageDigest"]: d for d in answer["imageDetails"]}
    assert by_digest[digest]["lastRecordedPullTime"] == pulled.replace(microsecond=123000)
    assert "lastRecordedPullTime" not in by_digest[never]

    sim.set_last_pulled(REPO, never, T0)
    sim.set_last_pulled(REPO, digest, None)
    answer = await ecr.describe_images(repositoryName=REPO)
    by_digest = {d["imageDigest"]: d for d in answer["imageDetails"]}
    assert by_digest[never]["lastRecordedPullTime"] == T0.replace(microsecond=123000)
    assert "lastRecordedPullTime" not in by_digest[digest]


async def test_push_dates_have_millisecond_precision(
    sim: EcrSimulator, ecr: ECRClient, clock: ManualClock
) -> None:
    manifest = build_image_manifest(config_seed="ms", size=1)
    await ecr.put_image(repositoryName=REPO, imageManifest=manifest, imageTag="a")
    clock.advance(timedelta(milliseconds=1))
    seeded = sim.add_image(REPO)

    answer = await ecr.describe_images(repositoryName=REPO)
    pushed = [d["imagePushedAt"] for d in answer["imageDetails"]]
    assert pushed == [
        datetime(2025, 3, 1, 12, 0, 0, 123000, tzinfo=UTC),
        datetime(2025, 3, 1, 12, 0, 0, 124000, tzinfo=UTC),
    ]
    assert pushed[1] - pushed[0] == timedelta(milliseconds=1)
    assert [view.pushed_at for view in sim.images(REPO)] == pushed
    assert sim.images(REPO)[1].digest == seeded


# ----------------------------------------------------------------------- faults


@pytest.mark.usefixtures("no_back_off")
async def test_throttling_is_retried_transparently(sim: EcrSimulator, ecr: ECRClient) -> None:
    sim.add_image(REPO)
    sim.throttle("DescribeImages", 1)

    answer = await ecr.describe_images(repositoryName=REPO)

    assert len(answer["imageDetails"]) == 1
    assert answer["ResponseMetadata"]["RetryAttempts"] == 1
    assert sim.calls["DescribeImages"] == 2
    assert [r.status for r in sim.requests if r.operation == "DescribeImages"] == [400, 200]


@pytest.mark.usefixtures("no_back_off")
async def test_http_429_is_retried_transparently(sim: EcrSimulator, ecr: ECRClient) -> None:
    sim.throttle("DescribeRepositories", 1, status=429)
    answer = await ecr.describe_repositories()
    assert [r["repositoryName"] for r in answer["repositories"]] == [REPO]
    assert sim.calls["DescribeRepositories"] == 2


@pytest.mark.usefixtures("no_back_off")
async def test_server_error_is_retried_transparently(sim: EcrSimulator, ecr: ECRClient) -> None:
    digest = sim.add_image(REPO)
    sim.server_error("BatchDeleteImage", 1)
    answer = await ecr.batch_delete_image(repositoryName=REPO, imageIds=ids(digest))
    assert answer["imageIds"] == ids(digest)
    assert sim.calls["BatchDeleteImage"] == 2
    # each attempt is recorded with what it was answered: the first changed nothing
    assert [r.status for r in sim.requests] == [500, 200]


@pytest.mark.usefixtures("no_back_off")
async def test_throttling_beyond_max_attempts_surfaces(sim: EcrSimulator) -> None:
    # botocore reads retries["max_attempts"] as retries after the first attempt.
    sim.throttle("DescribeImages", 5)
    async with ecr_client(sim.endpoint_url, max_attempts=1) as client:
        with pytest.raises(ClientError) as error:
            await client.describe_images(repositoryName=REPO)
    assert error_code(error) == "ThrottlingException"
    assert sim.calls["DescribeImages"] == 2
    sim.clear_faults()


async def test_a_throttling_storm_throttles_about_its_fraction_with_both_codes(
    sim: EcrSimulator,
) -> None:
    sim.throttle_randomly(0.5, seed=7, operations=["DescribeImages"])
    codes: list[str] = []
    async with ecr_client(sim.endpoint_url, max_attempts=0) as client:
        for _ in range(200):
            try:
                await client.describe_images(repositoryName=REPO)
                codes.append("ok")
            except ClientError as exc:
                status = exc.response["ResponseMetadata"]["HTTPStatusCode"]
                codes.append(f"{exc.response['Error']['Code']}/{status}")
        await client.describe_repositories()  # not in `operations`: never throttled
    assert 70 <= codes.count("ok") <= 130
    assert codes.count("ThrottlingException/400") >= 30
    assert codes.count("TooManyRequestsException/429") >= 30
    assert set(codes) == {"ok", "ThrottlingException/400", "TooManyRequestsException/429"}
    sim.clear_faults()
    with pytest.raises(ValueError, match="fraction"):
        sim.throttle_randomly(0)


async def test_a_broken_repository_answers_500_and_the_others_answer(
    sim: EcrSimulator, ecr: ECRClient
) -> None:
    sim.create_repository("team/other")
    digest = sim.add_image(REPO)
    sim.break_repository(REPO)
    async with ecr_client(sim.endpoint_url, max_attempts=0) as client:
        for call in (
            client.describe_images(repositoryName=REPO),
            client.batch_delete_image(repositoryName=REPO, imageIds=ids(digest)),
        ):
            with pytest.raises(ClientError) as error:
                await call
            assert error_code(error) == "ServerException"
            assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert (await ecr.describe_images(repositoryName="team/other"))["imageDetails"] == []
    assert len((await ecr.describe_repositories())["repositories"]) == 2  # names no repository
    assert sim.digests(REPO) == {digest}
    sim.clear_faults()
    assert len((await ecr.describe_images(repositoryName=REPO))["imageDetails"]) == 1


async def test_expired_credentials_fail_only_their_access_key(sim: EcrSimulator) -> None:
    sim.expire_credentials("test")
    async with ecr_client(sim.endpoint_url) as client:
        with pytest.raises(ClientError) as error:
            await client.describe_repositories()
    assert error_code(error) == "ExpiredTokenException"
    assert sim.calls["DescribeRepositories"] == 1  # not retried: the SDK must not resend it
    session = aioboto3.Session(
        aws_access_key_id="fresh", aws_secret_access_key="x", region_name="us-east-1"
    )
    async with session.client("ecr", endpoint_url=sim.endpoint_url) as fresh:
        assert len((await fresh.describe_repositories())["repositories"]) == 1
    assert [r.caller for r in sim.requests] == ["test", "fresh"]
    sim.clear_faults()


async def test_a_deleted_repository_is_not_found(sim: EcrSimulator, ecr: ECRClient) -> None:
    digest = sim.add_image(REPO)
    sim.delete_repository(REPO)
    for call in (
        ecr.describe_images(repositoryName=REPO),
        ecr.batch_delete_image(repositoryName=REPO, imageIds=ids(digest)),
    ):
        with pytest.raises(ClientError) as error:
            await call
        assert error_code(error) == "RepositoryNotFoundException"
    assert sim.repositories() == []
    with pytest.raises(EcrError, match="RepositoryNotFoundException"):
        sim.delete_repository(REPO)
    sim.create_repository(REPO)  # created again: empty
    assert sim.digests(REPO) == set()


async def test_malformed_answers_reach_the_client(sim: EcrSimulator, ecr: ECRClient) -> None:
    first, second = sim.add_image(REPO), sim.add_image(REPO)

    sim.malform("DescribeImages")
    answer = await ecr.describe_images(repositoryName=REPO)
    assert "imageDigest" not in answer["imageDetails"][0]
    assert answer["imageDetails"][1]["imageDigest"] == second

    sim.malform("DescribeImages", kind="wrong-type")
    answer = await ecr.describe_images(repositoryName=REPO)
    size: object = answer["imageDetails"][0]["imageSizeInBytes"]
    assert isinstance(size, str)  # botocore passes the wrong type straight through

    sim.malform("DescribeImages", kind="bad-timestamp")
    with pytest.raises(ValueError, match="not-a-timestamp"):
        await ecr.describe_images(repositoryName=REPO)

    answer = await ecr.describe_images(repositoryName=REPO)  # faults are one-shot
    assert [d["imageDigest"] for d in answer["imageDetails"]] == [first, second]
    assert sim.calls["DescribeImages"] == 4


def test_fault_knobs_reject_unknown_operations() -> None:
    simulator = EcrSimulator()
    with pytest.raises(ValueError, match="unknown operation"):
        simulator.throttle("DescribeImage", 1)
    with pytest.raises(ValueError, match="does not apply"):
        simulator.malform("BatchDeleteImage", kind="bad-timestamp")


# ----------------------------------------------------------------------- manifests


async def test_batch_get_image_returns_the_index_manifest(
    sim: EcrSimulator, ecr: ECRClient
) -> None:
    amd64, arm64 = sim.add_image(REPO), sim.add_image(REPO)
    index = sim.add_index(REPO, [amd64, arm64], tags=["v1"])

    answer = await ecr.batch_get_image(
        repositoryName=REPO,
        imageIds=[{"imageTag": "v1"}],
        acceptedMediaTypes=[OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST],
    )

    (image,) = answer["images"]
    assert answer["failures"] == []
    assert image["imageId"] == {"imageTag": "v1", "imageDigest": index}
    assert image["imageManifestMediaType"] == OCI_INDEX
    assert image["imageManifest"] == sim.manifest(REPO, index)
    assert manifest_digest(image["imageManifest"]) == index
    document = json.loads(image["imageManifest"])
    assert [entry["digest"] for entry in document["manifests"]] == [amd64, arm64]
    assert [view.children for view in sim.images(REPO) if view.is_index] == [(amd64, arm64)]


async def test_batch_get_image_limits_and_failures(sim: EcrSimulator, ecr: ECRClient) -> None:
    amd64 = sim.add_image(REPO)
    index = sim.add_index(REPO, [amd64])
    with pytest.raises(ClientError) as error:
        await ecr.batch_get_image(repositoryName=REPO, imageIds=ids(*[amd64] * 101))
    assert error_code(error) == "InvalidParameterException"

    absent = "sha256:" + "f" * 64
    answer = await ecr.batch_get_image(
        repositoryName=REPO, imageIds=ids(amd64, index, absent), acceptedMediaTypes=[OCI_MANIFEST]
    )
    assert [image["imageId"]["imageDigest"] for image in answer["images"]] == [amd64]
    assert [(f["failureCode"], f["imageId"]) for f in answer["failures"]] == [
        ("UnsupportedImageType", {"imageDigest": index}),
        ("ImageNotFound", {"imageDigest": absent}),
    ]


async def test_index_size_is_its_largest_child(sim: EcrSimulator, ecr: ECRClient) -> None:
    small, large = sim.add_image(REPO, size=10), sim.add_image(REPO, size=30)
    index = sim.add_index(REPO, [small, large])
    listed = sim.add_index(REPO, [small], media_type=DOCKER_MANIFEST_LIST)
    answer = await ecr.describe_images(repositoryName=REPO, imageIds=ids(index, listed))
    assert [
        (d["imageSizeInBytes"], d["imageManifestMediaType"], "artifactMediaType" in d)
        for d in answer["imageDetails"]
    ] == [(30, OCI_INDEX, False), (10, DOCKER_MANIFEST_LIST, False)]


async def test_put_image_semantics(sim: EcrSimulator, ecr: ECRClient) -> None:
    manifest = build_image_manifest(config_seed="put", size=7)
    digest = "sha256:" + hashlib.sha256(manifest.encode()).hexdigest()

    pushed = await ecr.put_image(repositoryName=REPO, imageManifest=manifest, imageTag="v1")
    assert pushed["image"]["imageId"] == {"imageDigest": digest, "imageTag": "v1"}

    with pytest.raises(ClientError) as error:
        await ecr.put_image(repositoryName=REPO, imageManifest=manifest, imageTag="v1")
    assert error_code(error) == "ImageAlreadyExistsException"

    other = build_image_manifest(config_seed="other", size=8)
    with pytest.raises(ClientError) as error:
        await ecr.put_image(repositoryName=REPO, imageManifest=other, imageDigest=digest)
    assert error_code(error) == "ImageDigestDoesNotMatchException"

    # A tag held by another image moves to the new one; the old image stays, untagged.
    await ecr.put_image(repositoryName=REPO, imageManifest=other, imageTag="v1")
    assert {view.digest: view.tags for view in sim.images(REPO)} == {
        digest: (),
        manifest_digest(other): ("v1",),
    }

    absent = "sha256:" + "a" * 64
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(manifest)},
                {"mediaType": OCI_MANIFEST, "digest": absent, "size": 1},
            ],
        }
    )
    with pytest.raises(ClientError) as error:
        await ecr.put_image(repositoryName=REPO, imageManifest=index, imageTag="multi")
    assert error_code(error) == "ReferencedImagesNotFoundException"

    with pytest.raises(ClientError) as error:
        await ecr.put_image(repositoryName=REPO, imageManifest="{not json")
    assert error_code(error) == "InvalidParameterException"


def test_seeding_api_validates_its_input() -> None:
    simulator = EcrSimulator()
    simulator.create_repository("a/b")
    with pytest.raises(EcrError, match="RepositoryAlreadyExists"):
        simulator.create_repository("a/b")
    with pytest.raises(EcrError, match="InvalidParameter"):
        simulator.create_repository("Not_Valid")
    with pytest.raises(EcrError, match="ReferencedImagesNotFound"):
        simulator.add_index("a/b", ["sha256:" + "1" * 64])
    with pytest.raises(ValueError, match="naive"):
        simulator.add_image("a/b", pushed_at=datetime(2025, 1, 1))


# ----------------------------------------------------------------------- lifecycles


async def test_threaded_simulator_serves_from_its_own_thread() -> None:
    simulator = ThreadedEcrSimulator(account="210987654321", region="eu-west-1")
    simulator.start()
    try:
        seeded = threading.Event()

        def seed() -> None:
            simulator.create_repository("threaded/app")
            simulator.add_image("threaded/app", tags=["v1"])
            seeded.set()

        await asyncio.to_thread(seed)
        assert seeded.is_set()
        async with ecr_client(simulator.endpoint_url) as client:
            answer = await client.describe_images(repositoryName="threaded/app")
            repos = await client.describe_repositories()
        assert answer["imageDetails"][0]["imageTags"] == ["v1"]
        assert answer["imageDetails"][0]["registryId"] == "210987654321"
        assert repos["repositories"][0]["repositoryUri"] == (
            "210987654321.dkr.ecr.eu-west-1.amazonaws.com/threaded/app"
        )
        assert simulator.calls == {"DescribeImages": 1, "DescribeRepositories": 1}
    finally:
        simulator.stop()


# ----------------------------------------------------------------------- differential


async def _differential_script(endpoint_url: str) -> dict[str, Any]:
    """One scripted session; the answer keeps only fields both moto and the simulator model.

    Sizes: ECR reports the layer total, moto reports ``config.size``; the manifests
    here advertise a config size equal to their layer total so both models agree.
    """
    repo = "diff/app"
    manifests = {
        seed: build_image_manifest(config_seed=seed, size=size, config_size=size)
        for seed, size in (("one", 1000), ("two", 2000), ("three", 3000))
    }
    out: dict[str, Any] = {}

    def images(answer: Any) -> list[tuple[str, tuple[str, ...], int, str]]:
        return sorted(
            (
                d["imageDigest"],
                tuple(sorted(d.get("imageTags", []))),
                d["imageSizeInBytes"],
                d["imageManifestMediaType"],
            )
            for d in answer["imageDetails"]
        )

    async def code_of(call: Any) -> str:
        try:
            await call
        except ClientError as error:
            return str(error.response["Error"]["Code"])
        return "no error"

    async with ecr_client(endpoint_url) as ecr:
        repository = (await ecr.create_repository(repositoryName=repo))["repository"]
        keys = ("registryId", "repositoryName", "repositoryArn", "repositoryUri")
        out["created"] = {key: repository.get(key) for key in (*keys, "imageTagMutability")}
        described = await ecr.describe_repositories(repositoryNames=[repo])
        out["described"] = [{key: r.get(key) for key in keys} for r in described["repositories"]]

        pushes: list[Any] = []
        for seed, tag in (("one", "v1"), ("two", "v2"), ("two", "latest"), ("three", None)):
            manifest = manifests[seed]
            extra: Any = {"imageTag": tag} if tag else {}
            answer = await ecr.put_image(
                repositoryName=repo,
                imageManifest=manifest,
                imageDigest=manifest_digest(manifest),
                **extra,
            )
            pushes.append(answer["image"]["imageId"])
        out["pushes"] = pushes
        out["before"] = images(await ecr.describe_images(repositoryName=repo))

        fetched = await ecr.batch_get_image(repositoryName=repo, imageIds=[{"imageTag": "v2"}])
        out["fetched"] = [
            (i["imageId"]["imageDigest"], i["imageManifest"]) for i in fetched["images"]
        ]

        deleted = await ecr.batch_delete_image(
            repositoryName=repo,
            imageIds=[
                {"imageDigest": manifest_digest(manifests["two"])},
                {"imageDigest": "sha256:" + "0" * 64},
                {"imageDigest": "not-a-digest"},
            ],
        )
        out["deleted"] = sorted(
            (i["imageDigest"], i.get("imageTag", "")) for i in deleted["imageIds"]
        )
        out["failures"] = sorted(
            (f["failureCode"], f["imageId"].get("imageDigest", "")) for f in deleted["failures"]
        )
        untagged = await ecr.batch_delete_image(repositoryName=repo, imageIds=[{"imageTag": "v1"}])
        out["untagged"] = [(i["imageDigest"], i.get("imageTag")) for i in untagged["imageIds"]]
        out["after"] = images(await ecr.describe_images(repositoryName=repo))

        out["errors"] = [
            await code_of(ecr.create_repository(repositoryName=repo)),
            await code_of(ecr.describe_repositories(repositoryNames=["diff/missing"])),
            await code_of(
                ecr.describe_images(repositoryName=repo, imageIds=[{"imageTag": "gone"}])
            ),
            await code_of(
                ecr.put_image(repositoryName=repo, imageManifest=manifests["three"], imageTag="v3")
            ),
            await code_of(
                ecr.put_image(repositoryName=repo, imageManifest=manifests["three"], imageTag="v3")
            ),
        ]
    return out


async def test_agrees_with_moto_on_what_both_model() -> None:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        moto_answers = await _differential_script(f"http://{host}:{port}")
    finally:
        server.stop()
    async with EcrSimulator() as simulator:
        sim_answers = await _differential_script(simulator.endpoint_url)

    assert sim_answers == moto_answers
    # Sanity: the script exercised what it claims to.
    assert len(sim_answers["before"]) == 3
    assert len(sim_answers["deleted"]) == 2
    assert [code for code, _ in sim_answers["failures"]] == ["ImageNotFound", "InvalidImageDigest"]
    assert sim_answers["errors"] == [
        "RepositoryAlreadyExistsException",
        "RepositoryNotFoundException",
        "ImageNotFoundException",
        "no error",
        "ImageAlreadyExistsException",
    ]


# ------------------------------------------------------------------- latency


@pytest.mark.parametrize("on_arrival", [False, True])
async def test_a_call_is_carried_out_after_its_latency_or_on_arrival(
    sim: EcrSimulator, ecr: ECRClient, on_arrival: bool
) -> None:
    """By default a call is carried out once its latency has passed (a slow call in flight).
    With `answer_on_arrival` (the benchmarks' endpoint) it is carried out when it arrives and
    answered its latency later: the simulator's own work, one call at a time, then hides in
    the latency instead of adding to every call queued behind it (ECR serves calls in
    parallel)."""
    sim.answer_on_arrival = on_arrival
    digest = sim.add_image(REPO, pushed_at=T0)
    sim.set_latency("BatchDeleteImage", 2.0)
    call = asyncio.ensure_future(ecr.batch_delete_image(repositoryName=REPO, imageIds=ids(digest)))
    for _ in range(100):  # up to 1 s, half the latency
        await asyncio.sleep(0.01)
        if digest not in sim.digests(REPO):
            break
    assert (digest not in sim.digests(REPO)) is on_arrival
    assert not call.done()  # answered only after the latency, either way
    answer = await call
    assert [i["imageDigest"] for i in answer["imageIds"]] == [digest]
    assert digest not in sim.digests(REPO)


async def test_a_rollback_leaves_the_registry_out_of_the_garbage_collector(
    sim: EcrSimulator,
) -> None:
    """The benchmarks roll the registry back before each measured run. That allocates a tag
    list per image, and the full collection it brings on ran during the run's first calls
    (0.6 s of no answers with 600,000 images). The admin rollback collects at once and
    freezes what is left: no later collection traverses the registry's objects."""
    digests = [sim.add_image(REPO, tags=[f"t{n}"], pushed_at=T0) for n in range(20)]
    sim.checkpoint()
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{sim.endpoint_url}/_sim/rollback") as answer,
        ):
            assert answer.status == 200
        tags = sim._repositories[REPO].images[digests[0]].tags
        assert tags == ["t0"]
        assert gc.get_freeze_count() > 0
        assert not any(obj is tags for obj in gc.get_objects())  # in no generation
    finally:
        gc.unfreeze()


async def test_the_loop_lag_says_how_late_the_serving_loop_ran_since_the_last_rollback(
    sim: EcrSimulator,
) -> None:
    """A benchmark tells a wait in the controller from one in the simulator: `GET /_sim/lag` is
    how late the loop that serves the calls ran (a call arriving then waits as long). A rollback
    starts it again, and the time the loop spent in the rollback itself is not counted."""

    async def lag() -> dict[str, float]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{sim.endpoint_url}/_sim/lag") as answer,
        ):
            assert answer.status == 200
            found: dict[str, float] = await answer.json()
            return found

    def work(seconds: float) -> None:
        """Keep the loop busy, as building a large answer does."""
        until = time.perf_counter() + seconds
        while time.perf_counter() < until:
            pass

    sim.checkpoint()
    monitor = asyncio.get_running_loop().create_task(sim.lag.run())
    try:
        await asyncio.sleep(0.05)
        work(0.12)
        await asyncio.sleep(0.05)
        busy = await lag()
        assert 100 <= busy["max_ms"] < 1000
        assert busy["p50_ms"] < busy["max_ms"]
        assert busy["samples"] >= 5
        work(0.12)  # busy again, then a reset in the same step, as a rollback does
        sim.lag.reset()
        await asyncio.sleep(0.05)
        assert (await lag())["max_ms"] < 100  # the sample across the reset is left out
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{sim.endpoint_url}/_sim/rollback") as answer,
        ):
            assert answer.status == 200
        after = await lag()
        assert after["samples"] < busy["samples"]  # the admin rollback resets it too
    finally:
        monitor.cancel()
        gc.unfreeze()


async def test_a_rollback_fills_the_rate_limit_s_bucket_again(
    sim: EcrSimulator, ecr: ECRClient
) -> None:
    """A benchmark's floor under a shared limit counts the burst a run may spend at once:
    every run starts with the bucket full, whatever the run before it left."""
    sim.checkpoint()
    sim.rate_limit(0.001, burst=2)  # no refill within the test
    async with ecr_client(sim.endpoint_url, max_attempts=0) as once:
        for _ in range(2):
            await once.describe_repositories()
        with pytest.raises(ClientError) as error:
            await once.describe_repositories()
        assert error_code(error) == "ThrottlingException"
        sim.rollback()
        for _ in range(2):
            await once.describe_repositories()
        with pytest.raises(ClientError):
            await once.describe_repositories()
    sim.clear_faults()
