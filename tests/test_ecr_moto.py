"""The aioboto3 gateway against moto's ECR server: the real wire protocol, an independent implementation."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from controller.ecr import AioEcr, Repository, open_ecr
from controller.images import Digest
from controller.policy import Image
from sandbox.moto import ACCOUNT, CREDENTIALS, REGION, MotoEcr, moto_server

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, MotoEcr]]:
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    with moto_server() as url:
        yield url, MotoEcr(url)


@pytest.fixture
async def gateway(moto: tuple[str, MotoEcr]) -> AsyncIterator[AioEcr]:
    async with open_ecr(
        region=REGION, registry_id=None, concurrency=4, endpoint_url=moto[0]
    ) as ecr:
        yield ecr


async def test_repositories_by_name_and_all(moto: tuple[str, MotoEcr], gateway: AioEcr) -> None:
    _, seed = moto
    for name in ("app", "team-a/api", "docker-hub/library/nginx"):
        seed.create(name)
    listing = await gateway.repositories(["app", "docker-hub/library/nginx", "nope"])
    assert sorted(r.name for r in listing.repositories) == ["app", "docker-hub/library/nginx"]
    assert listing.missing == ("nope",)
    assert {r.id.registry.account for r in listing.repositories} == {ACCOUNT}
    assert {r.id.registry.region for r in listing.repositories} == {REGION}
    every = await gateway.repositories(None)
    assert sorted(r.name for r in every.repositories) == [
        "app",
        "docker-hub/library/nginx",
        "team-a/api",
    ]


async def test_repository_names_go_100_per_call(moto: tuple[str, MotoEcr], gateway: AioEcr) -> None:
    names = [f"repo-{n:03d}" for n in range(150)]
    for name in names:
        moto[1].create(name)
    listing = await gateway.repositories(names)
    assert len(listing.repositories) == 150
    assert gateway.stats.calls["DescribeRepositories"] == 2


async def test_images_carry_tags_dates_sizes_and_media_types(
    moto: tuple[str, MotoEcr], gateway: AioEcr
) -> None:
    _, seed = moto
    seed.create("app")
    a = seed.push("app", "a", "v1", "stable", pushed_at=T0)
    b = seed.push("app", "b", pushed_at=T0 + timedelta(hours=1))
    index = seed.push_index("app", [a, b], "multi", pushed_at=T0 + timedelta(hours=2))
    (repo,) = (await gateway.repositories(["app"])).repositories
    images: dict[str, Image] = {i.digest: i for i in await gateway.images(repo)}
    assert set(images) == {a, b, index}
    assert sorted(images[a].tags) == ["stable", "v1"]
    assert images[b].tags == ()
    assert images[a].pushed_at == T0
    assert images[a].size_bytes > 0
    assert images[index].media_type == "application/vnd.oci.image.index.v1+json"
    assert await gateway.index_children(repo, [Digest(index)]) == {index: (a, b)}
    assert gateway.stats.calls["DescribeImages"] == 1
    assert gateway.stats.calls["BatchGetImage"] == 1


async def test_delete_by_digest_removes_every_tag_and_reports_gone(
    moto: tuple[str, MotoEcr], gateway: AioEcr
) -> None:
    _, seed = moto
    seed.create("app")
    tagged = Digest(seed.push("app", "a", "v1", "v2"))
    untagged = Digest(seed.push("app", "b"))
    keep = seed.push("app", "c", "latest")
    missing = Digest("sha256:" + "e" * 64)
    repo = Repository((await gateway.repositories(["app"])).repositories[0].id)
    outcome = await gateway.delete(repo, [tagged, untagged, missing])
    # moto does not list a deleted untagged image in imageIds; the gateway does not rely on it
    assert set(outcome.deleted) == {tagged, untagged}
    assert outcome.gone == (missing,)
    assert outcome.failed == ()
    assert seed.digests("app") == {keep}
