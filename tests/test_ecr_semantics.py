"""The gateway and a whole prune cycle against the ECR-semantics simulator: what moto does not model.

Paging (maxResults/nextToken), ImageReferencedByManifestList, lastRecordedPullTime, throttling,
partial failures, malformed answers, and the exact number of calls a cycle makes.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from controller.ecr import AioEcr, EcrError, MalformedResponse, Repository, open_ecr
from controller.images import Digest
from controller.inventory import InUseIndex
from controller.policy import Rules
from controller.pruning import PruneOptions, Pruner
from controller.settings import ConfigError, RepositorySelection
from sandbox.ecrsim import EcrSimulator

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.fixture
async def sim(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[EcrSimulator]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    async with EcrSimulator() as simulator:
        yield simulator


@pytest.fixture
async def ecr(sim: EcrSimulator) -> AsyncIterator[AioEcr]:
    async with open_ecr(
        region="us-east-1", registry_id=None, concurrency=4, endpoint_url=sim.endpoint_url
    ) as gw:
        yield gw


async def repo(ecr: AioEcr, name: str) -> Repository:
    (found,) = (await ecr.repositories([name])).repositories
    return found


def seed(sim: EcrSimulator, name: str, count: int, *, start: int = 0) -> list[str]:
    sim.create_repository(name)
    return [
        sim.add_image(
            name,
            tags=(f"build-{n}",),
            pushed_at=NOW - timedelta(minutes=n),
            config_seed=f"{name}-{n}",
        )
        for n in range(start, start + count)
    ]


async def test_describe_images_pages_by_1000(sim: EcrSimulator, ecr: AioEcr) -> None:
    seed(sim, "big", 2500)
    sim.reset_calls()
    images = await ecr.images(await repo(ecr, "big"))
    assert len({i.digest for i in images}) == 2500
    assert sim.calls["DescribeImages"] == 3


async def test_every_repository_pages_too(sim: EcrSimulator, ecr: AioEcr) -> None:
    for n in range(1001):
        sim.create_repository(f"r/{n:04d}")
    sim.reset_calls()
    listing = await ecr.repositories(None)
    assert len(listing.repositories) == 1001
    assert sim.calls["DescribeRepositories"] == 2


async def test_pull_time_and_millisecond_push_dates(sim: EcrSimulator, ecr: AioEcr) -> None:
    sim.create_repository("app")
    pushed = NOW - timedelta(days=3, microseconds=123_000)
    digest = sim.add_image("app", tags=("v1",), pushed_at=pushed, config_seed="x")
    sim.set_last_pulled("app", digest, NOW - timedelta(hours=5))
    (image,) = await ecr.images(await repo(ecr, "app"))
    assert image.pushed_at == pushed
    assert image.last_pulled_at == NOW - timedelta(hours=5)


async def test_child_of_a_live_index_is_refused_and_reported(
    sim: EcrSimulator, ecr: AioEcr
) -> None:
    kids = seed(sim, "multi", 2)
    sim.add_index("multi", kids, tags=("v1",), pushed_at=NOW)
    outcome = await ecr.delete(await repo(ecr, "multi"), [Digest(kids[0])])
    assert outcome.deleted == ()
    assert [(f.digest, f.code) for f in outcome.failed] == [
        (kids[0], "ImageReferencedByManifestList")
    ]


async def test_partial_failures_and_already_gone(sim: EcrSimulator, ecr: AioEcr) -> None:
    digests = seed(sim, "app", 3)
    sim.fail_images("app", [digests[1]], code="KmsError")
    ghost = Digest("sha256:" + "0" * 64)
    outcome = await ecr.delete(await repo(ecr, "app"), [Digest(d) for d in digests] + [ghost])
    assert set(outcome.deleted) == {digests[0], digests[2]}
    assert outcome.gone == (ghost,)
    assert [(f.digest, f.code) for f in outcome.failed] == [(digests[1], "KmsError")]


@pytest.mark.parametrize("status", [400, 429])
async def test_throttling_is_retried_and_counted(
    sim: EcrSimulator, ecr: AioEcr, status: int
) -> None:
    seed(sim, "app", 5)
    target = await repo(ecr, "app")
    sim.reset_calls()
    sim.throttle("DescribeImages", times=2, status=status)
    assert len(await ecr.images(target)) == 5
    assert sim.calls["DescribeImages"] == 3  # two throttled attempts, then success
    assert ecr.stats.calls["DescribeImages"] == 1
    assert ecr.stats.throttles["DescribeImages"] == 2


async def test_server_errors_are_retried(sim: EcrSimulator, ecr: AioEcr) -> None:
    seed(sim, "app", 1)
    target = await repo(ecr, "app")
    sim.server_error("DescribeImages", times=1)
    assert len(await ecr.images(target)) == 1
    # retried to success by the SDK, yet counted: an ECR in trouble shows before a call fails
    assert ecr.stats.server_errors["DescribeImages"] == 1
    assert ecr.stats.throttles["DescribeImages"] == 0


@pytest.mark.parametrize("kind", ["missing-field", "bad-timestamp", "wrong-type"])
async def test_malformed_answers_raise_a_clear_error(
    sim: EcrSimulator, ecr: AioEcr, kind: str
) -> None:
    seed(sim, "app", 2)
    target = await repo(ecr, "app")
    sim.malform("DescribeImages", kind=kind)  # type: ignore[arg-type]
    if kind == "wrong-type":
        # a size that is not a number is tolerated (it only feeds the bytes figure)
        images = await ecr.images(target)
        assert len(images) == 2
        return
    with pytest.raises(MalformedResponse) as caught:
        await ecr.images(target)
    assert caught.value.operation == "DescribeImages"


async def test_unreadable_index_fails_closed(sim: EcrSimulator, ecr: AioEcr) -> None:
    kids = seed(sim, "multi", 2)
    index = sim.add_index("multi", kids, pushed_at=NOW)
    target = await repo(ecr, "multi")
    ghost = Digest("sha256:" + "0" * 64)
    with pytest.raises(EcrError):
        await ecr.index_children(target, [Digest(index), ghost])


async def test_a_malformed_answer_fails_one_repository_and_the_cycle_goes_on(
    sim: EcrSimulator, ecr: AioEcr
) -> None:
    seed(sim, "a-broken", 20)
    seed(sim, "b-fine", 20, start=100)
    sim.malform("DescribeImages", kind="missing-field")  # hits whichever repository asks first
    pruner = Pruner(
        ecr,
        InUseIndex(),
        PruneOptions(
            RepositorySelection(("a-broken", "b-fine")),
            lambda _n: Rules(max_images=5),
            dry_run=False,
            concurrency=1,
        ),
    )
    report = await pruner.run_cycle(now=NOW, gate=lambda: None, clock=lambda: NOW)
    broken, fine = report.repositories
    assert [(e.operation, e.code) for e in broken.errors] == [
        ("DescribeImages", "MalformedResponse")
    ]
    assert len(sim.digests("a-broken")) == 20
    assert fine.ok
    assert len(sim.digests("b-fine")) == 5


async def test_a_cycle_makes_exactly_the_minimum_number_of_calls(
    sim: EcrSimulator, ecr: AioEcr
) -> None:
    # big: 2,500 plain images, target 400      → ⌈2500/1000⌉ describe, ⌈2100/100⌉ delete
    seed(sim, "big", 2500)
    # multi: 150 indexes × 2 children + 30 plain → 1 describe, ⌈150/100⌉ get;
    #        deleting 100 old indexes (wave 1) then their 200 children (wave 2)
    sim.create_repository("multi")
    for n in range(150):
        kids = [
            sim.add_image(
                "multi", pushed_at=NOW - timedelta(hours=n, minutes=1), config_seed=f"k{n}-{arch}"
            )
            for arch in ("amd64", "arm64")
        ]
        sim.add_index("multi", kids, tags=(f"v{n}",), pushed_at=NOW - timedelta(hours=n))
    for n in range(30):
        sim.add_image(
            "multi", tags=(f"plain-{n}",), pushed_at=NOW + timedelta(minutes=n), config_seed=f"p{n}"
        )
    # small: under its target                 → 1 describe, nothing else
    seed(sim, "small", 10)
    sim.create_repository("not-selected")
    sim.reset_calls()

    def rules_for(name: str) -> Rules:
        return {"big": Rules(max_images=400), "multi": Rules(max_images=180)}.get(
            name, Rules(max_images=50)
        )

    pruner = Pruner(
        ecr,
        InUseIndex(),
        PruneOptions(RepositorySelection(("big", "multi", "small")), rules_for, dry_run=False),
    )
    report = await pruner.run_cycle(now=NOW, gate=lambda: None, clock=lambda: NOW)
    assert report.ok, report
    by_name = {r.name: r for r in report.repositories}
    assert len(by_name["big"].deleted) == 2100
    assert len(by_name["multi"].deleted) == 300  # 100 indexes, 200 children: 480 → 180
    assert len(sim.digests("multi")) == 180
    expected = {
        "DescribeRepositories": 1,
        "DescribeImages": math.ceil(2500 / 1000) + 1 + 1,
        "BatchGetImage": math.ceil(150 / 100),
        "BatchDeleteImage": math.ceil(2100 / 100) + math.ceil(100 / 100) + math.ceil(200 / 100),
    }
    assert dict(sim.calls) == expected
    assert dict(ecr.stats.calls) == expected


# -- the cheap paths: raw answers, and calls in flight adapted to throttling


def test_a_large_answer_is_parsed_raw_and_botocore_gets_an_empty_body() -> None:
    from controller.ecr import RAW, _answer_raw

    body = b'{"imageDetails": [{"imageDigest": "sha256:' + b"a" * 64 + b'", "imagePushedAt": 1.5}]}'
    response = {"status_code": 200, "body": body, "headers": {}}
    customized: dict[str, object] = {}
    _answer_raw(response_dict=response, customized_response_dict=customized)
    assert response["body"] == b"{}"
    assert customized[RAW] == {
        "imageDetails": [{"imageDigest": "sha256:" + "a" * 64, "imagePushedAt": 1.5}]
    }


@pytest.mark.parametrize(
    ("status", "body"),
    [(400, b'{"__type": "ThrottlingException"}'), (200, b"not json"), (200, b"[1, 2]")],
    ids=["an error answer", "not JSON", "not an object"],
)
def test_error_and_broken_answers_are_left_to_botocore(status: int, body: bytes) -> None:
    from controller.ecr import _answer_raw

    response = {"status_code": status, "body": body, "headers": {}}
    customized: dict[str, object] = {}
    _answer_raw(response_dict=response, customized_response_dict=customized)
    assert response["body"] == body
    assert customized == {}


async def test_a_raw_image_keeps_its_wire_timestamps_to_the_millisecond(
    sim: EcrSimulator, ecr: AioEcr
) -> None:
    sim.create_repository("app")
    pushed = NOW - timedelta(days=3, microseconds=456_000)
    digest = sim.add_image("app", tags=("v1",), pushed_at=pushed, config_seed="ts")
    sim.set_last_pulled("app", digest, NOW - timedelta(hours=1, microseconds=7_000))
    (image,) = await ecr.images(await repo(ecr, "app"))
    assert image.pushed_at == pushed
    assert image.pushed_at.tzinfo is not None
    assert image.last_pulled_at == NOW - timedelta(hours=1, microseconds=7_000)


def test_the_limit_halves_on_a_throttle_once_per_burst_and_grows_back_by_one() -> None:
    from controller.ecr import AdaptiveLimit

    now = [100.0]
    limit = AdaptiveLimit(32, clock=lambda: now[0])
    assert limit.limit == 32
    limit.throttled()
    limit.throttled()  # the same burst: the calls already in flight
    assert limit.limit == 16
    now[0] += 1.0
    limit.throttled()
    assert limit.limit == 8
    for _ in range(8):  # one window of successes: one more call in flight
        limit.succeeded(0.05)
    assert limit.limit == 9
    for _ in range(1000):
        limit.succeeded(0.05)
    assert limit.limit == 32  # never past --concurrency
    for _ in range(10):
        now[0] += 1.0
        limit.throttled()
    assert limit.limit == 1  # never below one


async def test_throttles_shrink_the_calls_in_flight(sim: EcrSimulator) -> None:
    seed(sim, "app", 5)
    async with open_ecr(
        region="us-east-1", registry_id=None, concurrency=16, endpoint_url=sim.endpoint_url
    ) as gateway:
        target = await repo(gateway, "app")
        assert gateway.limit.limit == 16
        sim.throttle("DescribeImages", times=1)
        assert len(await gateway.images(target)) == 5
        assert gateway.limit.limit == 8


@pytest.mark.usefixtures("no_back_off")
async def test_reads_are_paced_by_the_shared_limit_alone(
    sim: EcrSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A throttled read halves the gateway's AdaptiveLimit, the one reads and deletes share, and
    no token bucket of botocore's adaptive mode paces the reads too. That bucket learned a rate
    from the reads alone, a tenth of a cycle's calls: after a throttle it held a wave of
    repositories waiting to be listed while the limit went unused (bench/cycle.py, throttled)."""
    from aiobotocore.retries.adaptive import AsyncClientRateLimiter

    paced: list[object] = []
    original = AsyncClientRateLimiter.on_sending_request

    async def recorded(self: AsyncClientRateLimiter, request: object, **kwargs: object) -> None:
        paced.append(request)
        await original(self, request, **kwargs)

    monkeypatch.setattr(AsyncClientRateLimiter, "on_sending_request", recorded)
    seed(sim, "app", 5)
    async with open_ecr(
        region="us-east-1", registry_id=None, concurrency=16, endpoint_url=sim.endpoint_url
    ) as gateway:
        target = await repo(gateway, "app")
        sim.reset_calls()
        sim.throttle("DescribeImages", times=2)
        for _ in range(3):
            assert len(await gateway.images(target)) == 5
        assert sim.calls["DescribeImages"] == 2 + 3  # the throttled attempts were retried
        assert gateway.stats.throttles["DescribeImages"] == 2
        assert gateway.limit.limit < 16  # halved: twice if the retry answered after the quiet time
    assert paced == []


async def test_an_endpoint_botocore_refuses_is_a_config_error_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # aiobotocore makes the client when it is entered: a ValueError from there once escaped
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with pytest.raises(ConfigError, match="AWS_ENDPOINT_URL_ECR"):
        async with open_ecr(
            region="us-east-1", registry_id=None, concurrency=1, endpoint_url="not a url"
        ):
            pass
