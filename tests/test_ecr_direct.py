"""The gateway's direct path for its hot operations (`AioEcr._direct`: DescribeImages and
BatchDeleteImage on the client's serializer, signer and HTTP session) against the client's own
call path (`AioEcr._via_client`), on the ECR-semantics simulator: the same HTTP request, and the
same answer, error and counts for every kind of answer the simulator can give."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controller.ecr import PARSE_HOOKS, AioEcr, EcrError, open_ecr
from sandbox.ecrsim import EcrSimulator, build_image_manifest

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
MISSING = "sha256:" + "0" * 64
SIZE = 1_000_000


@pytest.fixture
async def sim(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[EcrSimulator]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    async with EcrSimulator() as simulator:
        simulator.create_repository("app")
        for n in range(3):
            push(simulator, n)
        yield simulator


def push(sim: EcrSimulator, n: int) -> str:
    """Image `n` of "app", pushed unless it is there (a test deleted it): its digest, which
    follows from its seed."""
    manifest = build_image_manifest(config_seed=str(n), size=SIZE)
    digest = "sha256:" + hashlib.sha256(manifest.encode()).hexdigest()
    if digest not in sim.digests("app"):
        pushed = sim.add_image(
            "app",
            tags=(f"build-{n}",),
            pushed_at=NOW - timedelta(minutes=n),
            config_seed=str(n),
            size=SIZE,
        )
        assert pushed == digest
    return digest


def gateway(sim: EcrSimulator) -> AbstractAsyncContextManager[AioEcr]:
    return open_ecr(
        region="us-east-1", registry_id=None, concurrency=2, endpoint_url=sim.endpoint_url
    )


@pytest.fixture
async def ecr(sim: EcrSimulator) -> AsyncIterator[AioEcr]:
    async with gateway(sim) as opened:
        yield opened


def calls(sim: EcrSimulator) -> dict[str, dict[str, Any]]:
    """A call of each hot operation; called again, it is answered alike (the image it deletes
    is pushed again first, and one that was never there fails alike)."""
    account = sim.account
    return {
        "DescribeImages": {"repositoryName": "app", "registryId": account, "maxResults": 1000},
        "BatchDeleteImage": {
            "repositoryName": "app",
            "registryId": account,
            "imageIds": [{"imageDigest": push(sim, 2)}, {"imageDigest": MISSING}],
        },
    }


def test_the_direct_path_serves_exactly_the_operations_whose_answers_a_hook_reads() -> None:
    assert set(PARSE_HOOKS) == {"DescribeImages", "BatchDeleteImage"}


async def outcome(ecr: AioEcr, operation: str, params: dict[str, Any]) -> tuple[Any, ...]:
    """What one attempt gives the gateway: its answer, or its error; and what it counted."""
    before = (sum(ecr.stats.throttles.values()), sum(ecr.stats.server_errors.values()))
    try:
        result: tuple[Any, ...] = ("answer", await ecr._call_once(operation, **params))
    except EcrError as exc:
        result = ("error", type(exc), exc.code, exc.retryable)
    after = (sum(ecr.stats.throttles.values()), sum(ecr.stats.server_errors.values()))
    return (*result, after[0] - before[0], after[1] - before[1], ecr.limit.limit)


FAULTS: dict[str, Callable[[EcrSimulator, str], None]] = {
    "none": lambda sim, op: None,
    "throttled (400)": lambda sim, op: sim.throttle(op, status=400),
    "throttled (429)": lambda sim, op: sim.throttle(op, status=429),
    "server error": lambda sim, op: sim.server_error(op),
    "missing field": lambda sim, op: sim.malform(op, kind="missing-field"),
    "wrong type": lambda sim, op: sim.malform(op, kind="wrong-type"),
    "not an object": lambda sim, op: sim.malform(op, mutate=lambda answer: {"x": [answer]}),
}


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("operation", sorted(PARSE_HOOKS))
async def test_a_direct_attempt_ends_as_the_clients_own_does(
    sim: EcrSimulator, fault: str, operation: str
) -> None:
    seen = []
    for path in ("direct", "client"):
        async with gateway(sim) as ecr:
            if path == "client":
                ecr._direct = ecr._via_client  # type: ignore[method-assign]
            params = calls(sim)[operation]
            FAULTS[fault](sim, operation)
            seen.append(await outcome(ecr, operation, params))
    assert seen[0] == seen[1]
    if fault.startswith("throttled"):
        assert seen[0][0] == "error"
        assert seen[0][-3:] == (1, 0, 1)  # counted, and the limit halved
    if fault == "server error":
        assert seen[0][-3:-1] == (0, 1)


async def test_a_direct_request_is_the_clients_request(sim: EcrSimulator, ecr: AioEcr) -> None:
    """Method, URL, body and headers, the signature's scope and signed headers included; only
    what differs from one request to the next (date, signature, invocation id) is left out."""
    sent: list[Any] = []
    transport = ecr._client._endpoint.http_session
    send: Callable[[Any], Awaitable[Any]] = transport.send

    async def recorded(request: Any) -> Any:
        sent.append(request)
        return await send(request)

    transport.send = recorded
    for operation in PARSE_HOOKS:
        await ecr._direct(operation, calls(sim)[operation])
        await ecr._via_client(operation, calls(sim)[operation])
    assert len(sent) == 4
    shown = [wire(request) for request in sent]
    assert shown[0] == shown[1]
    assert shown[2] == shown[3]
    assert (
        shown[0]["headers"]["x-amz-target"] == "AmazonEC2ContainerRegistry_V20150921.DescribeImages"
    )
    assert "SignedHeaders=" in shown[0]["headers"]["authorization"]


def wire(request: Any) -> dict[str, Any]:
    varying = {"x-amz-date", "amz-sdk-invocation-id"}
    headers = {
        name.lower(): value.decode() if isinstance(value, bytes) else value
        for name, value in request.headers.items()
        if name.lower() not in varying
    }
    scope, _, _signature = headers["authorization"].rpartition(", Signature=")
    headers["authorization"] = scope
    return {"method": request.method, "url": request.url, "body": request.body, "headers": headers}
