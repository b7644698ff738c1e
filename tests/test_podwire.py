"""The pods' typed wire schema gives the general path's answer on every input it reads.

`podwire` decodes a pod watch event or LIST page into only the fields that name images, and
defers to the general path (orjson, the dict extractor) on anything it does not read. The
properties here feed both paths the same bytes, well-formed and malformed alike, and demand
the same outcome: the resourceVersion returned, every count, the index afterwards, the
exception raised; for a LIST page, the same objects, references and malformed strings. The
tables check that real pods do take the typed path (else it would be dead weight) and pin
the one documented difference.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.event_path import Cluster
from controller import podwire
from controller.identifiers import SourceKey
from controller.inventory import InUseIndex, extract_pod
from controller.kinds import KINDS
from controller.kubeapi import KubeError
from controller.sources import _page, uid_of
from controller.watching import EventSink
from tests.profiles import examples

PODS = KINDS["pods"]
GENERAL = dataclasses.replace(PODS, wire=None)  # the same kind, read by the general path only
SOURCE = SourceKey("prod", "pods")
HOST = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
DIGEST = "sha256:" + "a" * 64

# -- what a pod may hold: realistic values, and every kind of wrong one ------------------------

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False,
    allow_infinity=False), st.text(max_size=8),
)  # fmt: skip
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)  # fmt: skip
image_strings = st.sampled_from(
    [
        f"{HOST}/app:v1",
        f"{HOST}/app:v2",
        f"{HOST}/app@{DIGEST}",
        f"{HOST}/side:1.0@{DIGEST}",
        "nginx:1.25",
        "",
        "UPPER/Case:x",
        "app:v1:extra",
        f"docker-pullable://{HOST}/app@{DIGEST}",
        "sha256:" + "f" * 64,
    ]
)
# well-formed most of the time, so that the typed path is taken (and checked) often; any one
# wrong value sends the whole line to the general path, so wrong values are rarer
image_values = st.one_of(image_strings, image_strings, image_strings, st.none(), json_values)
container_lists = st.lists(
    st.one_of(
        st.fixed_dictionaries({"name": st.just("c"), "image": image_values}),
        st.fixed_dictionaries({"name": st.just("c"), "image": image_strings}),
        st.fixed_dictionaries({"name": st.just("c")}),  # no image
    ),
    max_size=3,
)
containers = st.one_of(
    container_lists,
    container_lists,
    container_lists,
    st.lists(st.one_of(json_values, st.fixed_dictionaries({"image": image_strings})), max_size=3),
    st.none(),
    json_values,
)
status_lists = st.lists(
    st.one_of(
        st.fixed_dictionaries({"imageID": image_values, "ready": st.booleans()}),
        st.fixed_dictionaries({"imageID": image_strings}),
    ),
    max_size=3,
)
statuses = st.one_of(
    status_lists,
    status_lists,
    status_lists,
    st.lists(json_values, max_size=2),
    st.none(),
    json_values,
)


def _part(fields: tuple[str, ...], values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    part = st.fixed_dictionaries(
        {}, optional=dict.fromkeys(fields, values) | {"extra": json_values}
    )
    return st.one_of(part, part, part, json_values)


specs = _part(("initContainers", "containers", "ephemeralContainers"), containers)
pod_statuses = _part(("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses"), statuses)  # fmt: skip
meta = st.fixed_dictionaries(
    {},
    optional={
        "uid": st.one_of(st.sampled_from(["u1", "u2", ""]), json_scalars),
        "resourceVersion": st.one_of(st.sampled_from(["7", "8", ""]), json_scalars),
        "labels": json_values,
    },
)
metadata = st.one_of(meta, meta, meta, json_values)
pods = st.fixed_dictionaries(
    {}, optional={"metadata": metadata, "spec": specs, "status": pod_statuses, "kind": json_values}
)
event_types = st.one_of(
    st.sampled_from(["ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR", "SURPRISE"]), json_scalars
)
events = st.one_of(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["ADDED", "MODIFIED", "DELETED"]), "object": pods}
    ),
    st.fixed_dictionaries({"type": event_types, "object": pods}),
    st.fixed_dictionaries({"type": event_types}, optional={"object": json_values}),
    json_values,
)


def outcome(sink: EventSink, line: bytes) -> tuple[Any, ...]:
    try:
        returned: Any = sink.apply_line(line)
    except KubeError as exc:
        returned = (type(exc), str(exc), exc.status)
    return returned, dataclasses.astuple(sink.counts), sink.index._objects, sink.index.snapshot()


@given(st.lists(events, min_size=1, max_size=6))
@settings(max_examples=examples(500))
def test_an_event_stream_gives_the_same_outcome_through_either_path(stream: list[Any]) -> None:
    typed = EventSink(SOURCE, PODS, InUseIndex())
    general = EventSink(SOURCE, GENERAL, InUseIndex())
    for event in stream:
        line = orjson.dumps(event)
        assert outcome(typed, line) == outcome(general, line)


def test_the_property_sends_many_events_through_the_typed_path() -> None:
    # a property whose inputs all took the general path would compare that path with itself
    taken: list[bool] = []

    @settings(max_examples=examples(200), database=None)
    @given(events)
    def draw(event: Any) -> None:
        taken.append(podwire.event(orjson.dumps(event)) is not None)

    draw()
    assert sum(taken) >= len(taken) // 10, f"{sum(taken)} of {len(taken)}"


@given(
    st.one_of(
        st.fixed_dictionaries(
            {"items": st.lists(pods, max_size=4)},
            optional={
                "metadata": st.one_of(
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "resourceVersion": json_scalars,
                            "continue": st.one_of(st.sampled_from(["", "next"]), json_scalars),
                        },
                    ),
                    json_values,
                ),
                "kind": st.just("PodList"),
            },
        ),
        json_values,
    )
)
@settings(max_examples=examples(500))
def test_a_list_page_gives_the_same_answer_through_either_path(body: Any) -> None:
    data = orjson.dumps(body)

    def read(kind: Any) -> Any:
        try:
            page = _page(kind, data, "LIST x")
        except KubeError as exc:
            return type(exc), str(exc)
        return (
            page.resource_version,
            page.token,
            [(page.uid(item), page.extract(item)) for item in page.items],
        )

    assert read(PODS) == read(GENERAL)


# -- the typed path is the one real pods take ----------------------------------------------------


def test_realistic_pod_events_and_pages_take_the_typed_path() -> None:
    cluster = Cluster(20, random.Random(3))
    lines = cluster.populate(200) + cluster.churn(300)[0]
    for line in lines:
        decoded = podwire.event(line)
        assert decoded is not None, line[:200]
        _kind, pod = decoded
        obj = orjson.loads(line)["object"]
        assert podwire.uid(pod) == uid_of(obj)
        assert podwire.extract(pod) == extract_pod(obj)
    body = orjson.dumps(
        {
            "kind": "PodList",
            "metadata": {"resourceVersion": "99", "continue": "abc"},
            "items": [orjson.loads(line)["object"] for line in lines[:50]],
        }
    )
    page = podwire.page(body)
    assert page is not None
    assert (page.resource_version, page.token, len(page.items)) == ("99", "abc", 50)


@pytest.mark.parametrize(
    "line",
    [
        b'{"type":"ERROR","object":{"kind":"Status","code":410,"status":"Failure"}}',
        b'{"type":"SURPRISE","object":{"metadata":{"uid":"u1"}}}',
        b'{"type":"ADDED"}',
        b'{"type":"ADDED","object":{"spec":{"containers":[{"image":5}]}}}',
        b'{"type":"ADDED","object":{"spec":{"containers":["nginx"]}}}',
        b'{"type":"ADDED","object":{"spec":"nope"}}',
        b"not json",
    ],
)
def test_what_the_typed_path_does_not_read_it_leaves_to_the_general_path(line: bytes) -> None:
    assert podwire.event(line) is None


def test_a_duplicate_key_reads_as_its_last_value_on_both_paths() -> None:
    line = (
        b'{"type":"ADDED","object":{"metadata":{"uid":"u1"},"spec":{"containers":'
        b'[{"image":"' + HOST.encode() + b'/app:v1","image":"' + HOST.encode() + b'/app:v2"}]}}}'
    )
    typed = EventSink(SOURCE, PODS, InUseIndex())
    general = EventSink(SOURCE, GENERAL, InUseIndex())
    assert outcome(typed, line) == outcome(general, line)
    assert {t.tag for t in typed.index.snapshot().tags} == {"v2"}


def test_bytes_outside_the_fields_read_are_checked_as_json_syntax_only() -> None:
    # the documented difference: invalid UTF-8 in an annotation (an API server never sends it,
    # Go's encoding/json replaces it) is refused by orjson for the whole line; the typed path
    # reads the pod's images, which is the protective reading of the event
    line = (
        b'{"type":"ADDED","object":{"metadata":{"uid":"u1","annotations":{"a":"\xff"}},'
        b'"spec":{"containers":[{"image":"' + HOST.encode() + b'/app:v1"}]}}}'
    )
    typed = EventSink(SOURCE, PODS, InUseIndex())
    general = EventSink(SOURCE, GENERAL, InUseIndex())
    typed.apply_line(line)
    general.apply_line(line)
    assert {t.tag for t in typed.index.snapshot().tags} == {"v1"}
    assert general.counts.malformed == 1
    assert general.index.snapshot().tags == frozenset()
