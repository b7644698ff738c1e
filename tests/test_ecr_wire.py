"""DescribeImages answers read by the typed decode give the general path's images.

`ecr.typed_images` decodes an answer straight into the fields `_image` reads and answers None
for anything not of a well-formed answer's shape, which the general path (orjson, `_image`)
then reads and reports. The property feeds both the same bytes, well-formed and malformed,
and demands: the typed path answers None, or exactly the general path's images and token;
and whenever the general path reports a malformed answer, the typed path answers None.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiobotocore.config import AioConfig
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.ecr import (
    MalformedResponse,
    PlainJsonBodies,
    _image,
    _list,
    new_session,
    open_ecr,
    typed_images,
)
from sandbox.ecrsim import EcrRegistry as Simulator
from tests.profiles import examples

DIGESTS = ["sha256:" + c * 64 for c in "0123456789"]

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6),
)
odd = st.one_of(json_scalars, st.lists(json_scalars, max_size=2))


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`good` nine times in ten, else `bad` (one_of would draw each branch alike)."""
    return st.sampled_from([False] * 9 + [True]).flatmap(lambda odd: bad if odd else good)


seconds = mostly(st.one_of(st.integers(0, 2_000_000_000), st.floats(0, 2e9)), st.just(1e300))
digests = mostly(st.sampled_from(DIGESTS), st.just("sha256:bad"))
tags = st.one_of(st.lists(st.sampled_from(["v1", "latest", "a.b"]), max_size=3), st.none())


def field(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a well-formed value, sometimes any JSON value: one bad field sends the whole
    answer to the general path, so the typed path is still taken often."""
    return mostly(good, odd)


details = st.fixed_dictionaries(
    {"imageDigest": field(digests), "imagePushedAt": field(seconds)},
    optional={
        "imageTags": field(tags),
        "imageSizeInBytes": field(st.integers(0, 2**40)),
        "imageManifestMediaType": field(
            st.sampled_from(["application/vnd.oci.image.index.v1+json"])
        ),
        "lastRecordedPullTime": field(seconds),
        "lastArchivedAt": field(seconds),
        "subjectManifestDigest": field(digests),
        "imageStatus": st.sampled_from(["ACTIVE", "ARCHIVED"]),
        "registryId": st.just("123456789012"),
    },
)
answers = mostly(
    st.fixed_dictionaries(
        {"imageDetails": st.lists(details, max_size=4)},
        optional={"nextToken": st.one_of(st.just("t"), json_scalars)},
    ),
    st.fixed_dictionaries({}, optional={"imageDetails": odd, "nextToken": json_scalars}),
)


def general(body: bytes) -> Any:
    page = orjson.loads(body)
    try:
        return [_image(raw) for raw in _list(page, "imageDetails", "DescribeImages")], page.get(
            "nextToken"
        )
    except MalformedResponse:
        return MalformedResponse


@given(answers)
@settings(max_examples=examples(600))
def test_a_typed_answer_is_the_general_paths_answer(answer: dict[str, Any]) -> None:
    body = orjson.dumps(answer)
    typed = typed_images(body)
    expected = general(body)
    if typed is None:
        return
    assert expected is not MalformedResponse
    assert typed == expected


def test_the_property_sends_many_answers_through_the_typed_path() -> None:
    # else the property would compare nothing
    taken: list[bool] = []

    @settings(max_examples=examples(200), database=None)
    @given(answers)
    def draw(answer: dict[str, Any]) -> None:
        typed = typed_images(orjson.dumps(answer))
        taken.append(typed is not None and len(typed[0]) > 0)

    draw()
    assert sum(taken) >= len(taken) // 5, f"{sum(taken)} of {len(taken)}"


def test_the_simulators_answers_take_the_typed_path() -> None:
    # the answers the benchmarks and the end-to-end tests read
    sim = Simulator()
    sim.create_repository("app")
    for n in range(30):
        sim.add_image("app", tags=[f"v{n}"], last_pulled_at=datetime(2026, 1, 1, tzinfo=UTC))
    signed = sim.add_image("app")
    sim.add_artifact("app", signed)
    status, body = sim.handle(
        "AmazonEC2ContainerRegistry_V20150921.DescribeImages",
        json.dumps({"repositoryName": "app", "maxResults": 1000}).encode(),
    )
    assert status == 200
    typed = typed_images(body)
    assert typed is not None
    assert typed == general(body)
    assert len(typed[0]) == 32
    assert any(image.subject == signed for image in typed[0])


def test_an_invalid_digest_or_a_timestamp_out_of_range_is_left_to_the_general_path() -> None:
    good = {"imageDigest": DIGESTS[1], "imagePushedAt": 1.7e9}
    for bad in (
        {**good, "imageDigest": "sha256:bad"},
        {**good, "imagePushedAt": 1e300},
        {**good, "imageTags": ["v1", 2]},
        {**good, "subjectManifestDigest": "nope"},
    ):
        body = orjson.dumps({"imageDetails": [good, bad]})
        assert typed_images(body) is None
        assert general(body) is MalformedResponse


# -- the requests: bodies of the large ones written by orjson -------------------------------------

image_ids = st.lists(
    st.fixed_dictionaries(
        {"imageDigest": st.sampled_from(DIGESTS)}, optional={"imageTag": st.text(max_size=8)}
    ),
    max_size=100,
)
requests = st.one_of(
    st.tuples(
        st.just("BatchDeleteImage"),
        st.fixed_dictionaries(
            {"repositoryName": st.text(min_size=1, max_size=12), "imageIds": image_ids},
            optional={"registryId": st.just("123456789012")},
        ),
    ),
    st.tuples(
        st.just("DescribeImages"),
        st.fixed_dictionaries(
            {"repositoryName": st.text(min_size=1, max_size=12)},
            optional={
                "registryId": st.just("123456789012"),
                "maxResults": st.integers(1, 1000),
                "nextToken": st.text(max_size=20),
                "filter": st.fixed_dictionaries(
                    {}, optional={"imageStatus": st.sampled_from(["ACTIVE", "ARCHIVED"])}
                ),
            },
        ),
    ),
)


@pytest.fixture(scope="module")
async def clients() -> AsyncIterator[tuple[Any, Any]]:
    """The gateway's reading client (its serializer wrapped) and a client as botocore makes it."""
    async with (
        open_ecr(
            region="us-east-1", registry_id=None, concurrency=2, endpoint_url="http://127.0.0.1:1"
        ) as ecr,
        new_session().client(
            "ecr",
            region_name="us-east-1",
            endpoint_url="http://127.0.0.1:1",
            config=AioConfig(parameter_validation=False),  # as the gateway's
        ) as plain,
    ):
        yield ecr._client, plain


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


async def test_the_gateways_clients_write_the_large_bodies_with_orjson(
    clients: tuple[Any, Any],
) -> None:
    ours, plain = clients
    assert isinstance(ours._serializer, PlainJsonBodies)
    assert not isinstance(plain._serializer, PlainJsonBodies)


@given(requests)
@settings(max_examples=examples(300), suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_large_requests_body_is_botocores_and_the_rest_is_unchanged(
    clients: tuple[Any, Any], request: tuple[str, dict[str, Any]]
) -> None:
    ours, plain = clients
    operation, params = request
    model = plain.meta.service_model.operation_model(operation)
    fast = ours._serializer.serialize_to_request(params, model)
    slow = plain._serializer.serialize_to_request(params, model)
    assert json.loads(fast.pop("body")) == json.loads(slow.pop("body")) == params
    assert fast == slow


def test_other_requests_go_to_botocores_serializer() -> None:
    calls: list[str] = []

    class Inner:
        def serialize_to_request(self, parameters: Any, model: Any) -> Any:
            calls.append(model.name)
            return {"body": b"botocore"}

    class Model:
        name = "DescribeRepositories"

    assert PlainJsonBodies(Inner()).serialize_to_request({"a": 1}, Model()) == {"body": b"botocore"}
    assert calls == ["DescribeRepositories"]
