"""The in-use index and the reference extractors."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.identifiers import RepositoryId, SourceKey, TagRef
from controller.images import Digest, EcrRegistry
from controller.inventory import (
    NO_REFERENCES,
    InUseIndex,
    References,
    extract_parts,
    extract_pod,
    extract_pod_template,
)
from tests.profiles import examples

HOST = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
REG = EcrRegistry("123456789012", "us-east-1")
D1 = Digest("sha256:" + "1" * 64)
D2 = Digest("sha256:" + "2" * 64)
D3 = Digest("sha256:" + "3" * 64)
D4 = Digest("sha256:" + "4" * 64)
PODS = SourceKey("prod", "pods")
DEPLOYMENTS = SourceKey("prod", "deployments")


def tag(repo: str, t: str) -> TagRef:
    return TagRef(RepositoryId(REG, repo), t)


def test_extract_pod_reads_every_container_kind_and_status() -> None:
    pod: dict[str, Any] = {
        "spec": {
            "initContainers": [{"name": "init", "image": f"{HOST}/init:v1"}],
            "containers": [
                {"name": "app", "image": f"{HOST}/app:v2"},
                {"name": "side", "image": f"{HOST}/side@{D1}"},
                {"name": "hub", "image": "nginx:1.25"},
            ],
            "ephemeralContainers": [{"name": "debug", "image": f"{HOST}/tools:dbg"}],
        },
        "status": {
            "initContainerStatuses": [{"imageID": f"{HOST}/init@{D2}"}],
            "containerStatuses": [
                {"imageID": f"docker-pullable://{HOST}/app@{D3}"},
                {"imageID": "sha256:" + "f" * 64},  # a bare config id: unusable
                {"imageID": ""},  # not started yet
            ],
            "ephemeralContainerStatuses": [{"imageID": f"{HOST}/other-repo@{D4}"}],
        },
    }
    found = extract_pod(pod)
    assert found.malformed == ()
    assert found.references == References(
        digests=frozenset({D1, D2, D3, D4}),
        tags=frozenset({tag("init", "v1"), tag("app", "v2"), tag("tools", "dbg")}),
    )


def test_extract_pod_implicit_latest_and_pull_through_names() -> None:
    pod = {"spec": {"containers": [{"image": f"{HOST}/docker-hub/library/nginx"}]}}
    assert extract_pod(pod).references.tags == {tag("docker-hub/library/nginx", "latest")}


def test_extract_pod_skips_and_reports_malformed_strings() -> None:
    pod = {
        "spec": {
            "containers": [
                {"image": "Upper:tag"},
                {"image": 42},
                {"image": f"{HOST}/ok:v1"},
                "not-a-container",
            ]
        },
        "status": {"containerStatuses": [{"imageID": "docker-pullable://bad@sha256:xyz"}]},
    }
    found = extract_pod(pod)
    assert found.references.tags == {tag("ok", "v1")}
    assert found.malformed == ("Upper:tag", "42", "docker-pullable://bad@sha256:xyz")


def test_extract_pod_tolerates_missing_and_wrongly_typed_fields() -> None:
    for pod in ({}, {"spec": None}, {"spec": {"containers": None}}, {"status": "x"}):
        assert extract_pod(pod).references is NO_REFERENCES


def test_extract_pod_template_for_workloads() -> None:
    deployment = {"spec": {"template": {"spec": {"containers": [{"image": f"{HOST}/app:v9"}]}}}}
    cronjob = {
        "spec": {
            "jobTemplate": {
                "spec": {"template": {"spec": {"containers": [{"image": f"{HOST}/job@{D1}"}]}}}
            }
        }
    }
    assert extract_pod_template(deployment, "spec", "template", "spec").references.tags == {
        tag("app", "v9")
    }
    found = extract_pod_template(cronjob, "spec", "jobTemplate", "spec", "template", "spec")
    assert found.references.digests == {D1}


def test_extract_parts_reads_pod_specs_containers_and_images_found_anywhere() -> None:
    found = extract_parts(
        pod_specs=[{"initContainers": [{"image": f"{HOST}/init:v1"}]}, "not a spec"],
        containers=[{"name": "step", "image": f"{HOST}/step@{D1}"}, ["not", "a", "container"]],
        images=[f"{HOST}/tool:v2", "nginx:1.25", None, 42, "Not A Reference"],
    )
    assert found.references == References(
        frozenset({D1}), frozenset({tag("init", "v1"), tag("tool", "v2")})
    )
    assert found.malformed == ("42", "Not A Reference")
    assert extract_parts().references is NO_REFERENCES


def test_extract_parts_reads_strings_as_pod_specs_and_bare_digests() -> None:
    found = extract_parts(
        images=[f"{HOST}/app:v1", f"{HOST}/job@{D1}", "nginx", None, f"{HOST}/App:v1", 3],
        digests=[D2, None, "sha256:nope"],
    )
    assert found.references == References(frozenset({D1, D2}), frozenset({tag("app", "v1")}))
    assert found.malformed == (f"{HOST}/App:v1", "3", "sha256:nope")
    assert extract_parts(images=[]) == extract_pod({})


def test_index_counts_references_across_objects() -> None:
    index = InUseIndex()
    index.register(PODS)
    a = References(frozenset({D1}), frozenset({tag("app", "v1")}))
    b = References(frozenset({D1, D2}))
    assert index.upsert(PODS, "a", a)
    assert index.upsert(PODS, "b", b)
    assert index.digest_in_use(D1)
    assert index.digest_in_use(D2)
    assert index.tag_in_use(RepositoryId(REG, "app"), "v1")
    assert index.delete(PODS, "b")
    assert index.digest_in_use(D1)  # still held by a
    assert not index.digest_in_use(D2)
    assert index.delete(PODS, "a")
    assert not index.digest_in_use(D1)
    assert not index.delete(PODS, "a")
    assert index.digests_in_use() == 0


def test_an_update_that_changes_no_reference_costs_nothing() -> None:
    index = InUseIndex()
    refs = References(frozenset({D1}))
    index.upsert(PODS, "a", refs)
    assert not index.upsert(PODS, "a", References(frozenset({D1})))
    assert index.digest_in_use(D1)


def test_update_moves_references() -> None:
    index = InUseIndex()
    index.upsert(PODS, "a", References(frozenset({D1})))
    assert index.upsert(PODS, "a", References(frozenset({D2})))
    assert not index.digest_in_use(D1)
    assert index.digest_in_use(D2)


def test_replace_is_atomic_and_drops_objects_missing_from_the_new_list() -> None:
    index = InUseIndex()
    index.register(PODS)
    index.upsert(DEPLOYMENTS, "d", References(frozenset({D3})))
    index.upsert(PODS, "gone", References(frozenset({D1})))
    index.upsert(PODS, "stays", References(frozenset({D2})))
    assert index.unsynced() == (PODS, DEPLOYMENTS)
    index.replace(PODS, {"stays": References(frozenset({D2})), "new": References(frozenset({D4}))})
    assert index.is_synced(PODS)
    assert not index.digest_in_use(D1)
    assert index.digest_in_use(D2)
    assert index.digest_in_use(D4)
    assert index.digest_in_use(D3)  # another source is untouched
    assert index.object_count(kind="pods") == 2
    assert index.object_count() == 3
    index.mark_unsynced(PODS)
    assert index.unsynced() == (PODS, DEPLOYMENTS)


def test_clusters_are_tracked_separately_and_the_union_protects() -> None:
    index = InUseIndex()
    staging, prod = SourceKey("staging", "pods"), SourceKey("prod", "pods")
    index.upsert(staging, "same-uid", References(frozenset({D1})))
    index.upsert(prod, "same-uid", References(frozenset({D2})))
    assert index.digest_in_use(D1)
    assert index.digest_in_use(D2)
    index.replace(prod, {})
    assert index.digest_in_use(D1)
    assert not index.digest_in_use(D2)


def test_snapshot_is_frozen() -> None:
    index = InUseIndex()
    index.upsert(PODS, "a", References(frozenset({D1}), frozenset({tag("app", "v1")})))
    snap = index.snapshot()
    index.delete(PODS, "a")
    assert snap.digest_in_use(D1)
    assert snap.tag_in_use(RepositoryId(REG, "app"), "v1")
    assert not index.digest_in_use(D1)


operations = st.lists(
    st.tuples(
        st.sampled_from(["upsert", "delete", "replace"]),
        st.sampled_from(["a", "b", "c"]),
        st.frozensets(st.sampled_from([D1, D2, D3, D4]), max_size=3),
    ),
    max_size=40,
)


@settings(max_examples=examples(200))
@given(operations)
def test_property_index_equals_a_naive_recomputation(
    ops: list[tuple[str, str, frozenset[Digest]]],
) -> None:
    index = InUseIndex()
    model: dict[str, frozenset[Digest]] = {}
    for op, uid, digests in ops:
        if op == "upsert":
            index.upsert(PODS, uid, References(digests))
            model[uid] = digests
        elif op == "delete":
            index.delete(PODS, uid)
            model.pop(uid, None)
        else:
            index.replace(PODS, {uid: References(digests)})
            model = {uid: digests}
        expected = set().union(*model.values()) if model else set()
        assert {d for d in (D1, D2, D3, D4) if index.digest_in_use(d)} == expected
        assert index.digests_in_use() == len(expected)
