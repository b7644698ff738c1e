"""The simulator's custom resources, driven through kubernetes_asyncio's CustomObjectsApi.

As the controller will read them: raw JSON (`_preload_content=False`), paged LISTs, and WATCH
streams from a LIST's resourceVersion; plus what a CRD's life does to them (404 before it is
created and after it is deleted), RBAC denials, and a cluster-scoped resource.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from controller.images import Digest
from controller.resources import resolve
from sandbox.kubesim import (
    JsonObj,
    KubeSimError,
    KubeSimulator,
    ResourceType,
    ThreadedKubeSimulator,
    custom_object,
)
from tests.digests import digest
from tests.test_kubesim import api_client, next_event, raw, read_json, read_until_eof

SCALED_JOBS = ResourceType("scaledjobs", "ScaledJob", "keda.sh", "v1alpha1")
CLUSTER_TEMPLATES = ResourceType(
    "clusterworkflowtemplates", "ClusterWorkflowTemplate", "argoproj.io", "v1alpha1", False
)
KEDA = ("keda.sh", "v1alpha1")
ARGO = ("argoproj.io", "v1alpha1")
NOT_FOUND = "the server could not find the requested resource"


def scaled_job(name: str, namespace: str = "default", image: str = "repo/worker:1") -> JsonObj:
    template = {"spec": {"containers": [{"name": "worker", "image": image}]}}
    return custom_object(
        "keda.sh/v1alpha1",
        "ScaledJob",
        name,
        namespace,
        {"jobTargetRef": {"template": template}, "triggers": [{"type": "cron"}]},
    )


def cluster_template(name: str, image: str = "repo/step:1") -> JsonObj:
    templates = [{"name": "main", "container": {"image": image}}]
    return custom_object(
        "argoproj.io/v1alpha1", "ClusterWorkflowTemplate", name, None, {"templates": templates}
    )


def names(items: list[JsonObj]) -> list[str]:
    return [f"{i['metadata'].get('namespace', '')}/{i['metadata']['name']}" for i in items]


async def list_pages(custom: Any, limit: int, namespace: str | None = None) -> list[JsonObj]:
    """Every page of a LIST of scaledjobs, following continue tokens."""
    pages: list[JsonObj] = []
    token = ""
    for _ in range(50):
        kwargs: dict[str, Any] = {"limit": limit, "_continue": token, "_preload_content": False}
        if namespace is None:
            resp = await custom.list_cluster_custom_object(*KEDA, "scaledjobs", **kwargs)
        else:
            resp = await custom.list_namespaced_custom_object(
                *KEDA, namespace, "scaledjobs", **kwargs
            )
        pages.append(await read_json(raw(resp)))
        token = pages[-1]["metadata"].get("continue", "")
        if not token:
            return pages
    raise AssertionError("pagination did not terminate")


async def test_custom_resources_list_in_pages_of_one_snapshot(tmp_path: Path) -> None:
    async with (
        KubeSimulator(custom_resources=[SCALED_JOBS]) as sim,
        api_client(tmp_path, sim) as api,
    ):
        for i in range(7):
            sim.create("scaledjobs", scaled_job(f"job-{i}", ("jobs", "batch")[i % 2]))
        custom = client.CustomObjectsApi(api)
        first = await read_json(
            raw(
                await custom.list_cluster_custom_object(
                    *KEDA, "scaledjobs", limit=3, _preload_content=False
                )
            )
        )
        sim.create("scaledjobs", scaled_job("job-late", "jobs"))  # after the snapshot
        rest = await read_json(
            raw(
                await custom.list_cluster_custom_object(
                    *KEDA,
                    "scaledjobs",
                    limit=10,
                    _continue=first["metadata"]["continue"],
                    _preload_content=False,
                )
            )
        )
        pages = await list_pages(custom, 2, namespace="jobs")

    items = first["items"] + rest["items"]
    assert len(first["items"]) == 3
    assert first["metadata"]["remainingItemCount"] == 4
    assert names(items) == sorted(f"{('jobs', 'batch')[i % 2]}/job-{i}" for i in range(7))
    assert rest["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    assert (first["kind"], first["apiVersion"]) == ("ScaledJobList", "keda.sh/v1alpha1")
    # a custom resource's list is unstructured: its items keep kind and apiVersion
    assert {(i["kind"], i["apiVersion"]) for i in items} == {("ScaledJob", "keda.sh/v1alpha1")}
    assert items[0]["spec"]["jobTargetRef"]["template"]["spec"]["containers"][0]["image"]
    assert [len(p["items"]) for p in pages] == [2, 2, 1]
    assert names([i for p in pages for i in p["items"]]) == [
        "jobs/job-0",
        "jobs/job-2",
        "jobs/job-4",
        "jobs/job-6",
        "jobs/job-late",
    ]


async def test_custom_resources_watch_like_built_in_kinds(tmp_path: Path) -> None:
    async with (
        KubeSimulator(custom_resources=[SCALED_JOBS]) as sim,
        api_client(tmp_path, sim) as api,
    ):
        custom = client.CustomObjectsApi(api)
        sim.create("scaledjobs", scaled_job("a"))
        listed = await read_json(
            raw(
                await custom.list_cluster_custom_object(*KEDA, "scaledjobs", _preload_content=False)
            )
        )
        start = listed["metadata"]["resourceVersion"]
        sim.create("scaledjobs", scaled_job("b"))  # between the LIST and the WATCH: replayed
        sim.create("pods", {"metadata": {"name": "not-a-scaledjob"}})
        resp = raw(
            await custom.list_namespaced_custom_object(
                *KEDA,
                "default",
                "scaledjobs",
                watch=True,
                resource_version=start,
                allow_watch_bookmarks=True,
                _preload_content=False,
            )
        )
        replayed = await next_event(resp)
        changed = sim.get("scaledjobs", "default", "a")
        assert changed is not None
        changed["spec"]["pollingInterval"] = 10
        sim.update("scaledjobs", changed)
        modified = await next_event(resp)
        sim.delete("scaledjobs", "default", "b")
        deleted = await next_event(resp)
        assert sim.watch_count("scaledjobs") == sim.watch_count("scaledjobs.keda.sh") == 1
        assert sim.send_bookmarks("scaledjobs") == 1
        bookmark = await next_event(resp)
        resp.close()

        logged = {e.resource for e in sim.events()}
        old = sim.resource_version
        sim.create("scaledjobs", scaled_job("c"))
        sim.compact()
        expired = raw(
            await custom.list_cluster_custom_object(
                *KEDA, "scaledjobs", watch=True, resource_version=str(old), _preload_content=False
            )
        )
        errors = await read_until_eof(expired)
        expired.release()
        timed = raw(
            await custom.list_cluster_custom_object(
                *KEDA, "scaledjobs", watch=True, timeout_seconds=1, _preload_content=False
            )
        )
        initial = await read_until_eof(timed)  # ADDED for each object, then a clean end
        timed.release()

    assert (replayed["type"], replayed["object"]["metadata"]["name"]) == ("ADDED", "b")
    assert replayed["object"]["kind"] == "ScaledJob"
    assert (modified["type"], modified["object"]["spec"]["pollingInterval"]) == ("MODIFIED", 10)
    assert (deleted["type"], deleted["object"]["metadata"]["name"]) == ("DELETED", "b")
    assert bookmark["type"] == "BOOKMARK"
    assert bookmark["object"]["apiVersion"] == "keda.sh/v1alpha1"
    assert [e["type"] for e in errors] == ["ERROR"]
    assert errors[0]["object"]["code"] == 410
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in initial] == [
        ("ADDED", "a"),
        ("ADDED", "c"),
    ]
    assert logged == {"scaledjobs.keda.sh", "pods"}


async def test_a_custom_resource_is_404_until_installed_and_after_uninstalled(
    tmp_path: Path,
) -> None:
    async with KubeSimulator() as sim, api_client(tmp_path, sim) as api:
        custom = client.CustomObjectsApi(api)
        before = raw(
            await custom.list_cluster_custom_object(*KEDA, "scaledjobs", _preload_content=False)
        )
        before_body = await read_json(before)
        with pytest.raises(ValueError, match="unknown resource 'scaledjobs'"):
            sim.create("scaledjobs", scaled_job("early"))

        sim.install(SCALED_JOBS)
        created = await custom.create_namespaced_custom_object(
            *KEDA, "jobs", "scaledjobs", scaled_job("worker", "jobs")
        )
        fetched = await custom.get_namespaced_custom_object(*KEDA, "jobs", "scaledjobs", "worker")
        groups = {g.name for g in (await client.ApisApi(api).get_api_versions()).groups}
        watch = raw(
            await custom.list_cluster_custom_object(
                *KEDA, "scaledjobs", watch=True, _preload_content=False
            )
        )
        added = await next_event(watch)

        assert sim.uninstall("scaledjobs.keda.sh") == 1
        after_watch = await read_until_eof(watch)  # the DELETED event, then the stream ends
        watch.release()
        after = raw(
            await custom.list_namespaced_custom_object(
                *KEDA, "jobs", "scaledjobs", _preload_content=False
            )
        )
        after_body = await read_json(after)
        groups_after = {g.name for g in (await client.ApisApi(api).get_api_versions()).groups}
        with pytest.raises(ApiException) as gone:
            await custom.get_namespaced_custom_object(*KEDA, "jobs", "scaledjobs", "worker")
        history = sim.events("scaledjobs.keda.sh")

    not_found = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": NOT_FOUND,
        "reason": "NotFound",
        "code": 404,
    }
    assert before.status == 404
    assert before_body == not_found
    assert created["metadata"]["namespace"] == "jobs"
    assert fetched["metadata"]["uid"] == created["metadata"]["uid"]
    assert "keda.sh" in groups
    assert (added["type"], added["object"]["metadata"]["name"]) == ("ADDED", "worker")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in after_watch] == [
        ("DELETED", "worker")
    ]
    assert after.status == 404
    assert after_body == not_found
    assert "keda.sh" not in groups_after
    assert gone.value.status == 404
    assert [e.type for e in history] == ["ADDED", "DELETED"]


async def test_a_denied_custom_resource_answers_403(tmp_path: Path) -> None:
    async with (
        KubeSimulator(custom_resources=[SCALED_JOBS]) as sim,
        api_client(tmp_path, sim) as api,
    ):
        custom = client.CustomObjectsApi(api)
        sim.create("scaledjobs", scaled_job("a", "jobs"))
        sim.deny("scaledjobs", "jobs")
        in_namespace = raw(
            await custom.list_namespaced_custom_object(
                *KEDA, "jobs", "scaledjobs", _preload_content=False
            )
        )
        in_namespace_body = await read_json(in_namespace)
        other = raw(
            await custom.list_namespaced_custom_object(
                *KEDA, "other", "scaledjobs", _preload_content=False
            )
        )
        await read_json(other)
        cluster_watch = raw(
            await custom.list_cluster_custom_object(
                *KEDA, "scaledjobs", watch=True, _preload_content=False
            )
        )
        cluster_watch_body = await read_json(cluster_watch)
        sim.allow("scaledjobs.keda.sh")
        allowed = raw(
            await custom.list_cluster_custom_object(*KEDA, "scaledjobs", _preload_content=False)
        )
        allowed_body = await read_json(allowed)

        sim.fail_next(1, 503, path_prefix="/apis/keda.sh/")
        faulted = raw(
            await custom.list_cluster_custom_object(*KEDA, "scaledjobs", _preload_content=False)
        )
        await read_json(faulted)

    assert in_namespace.status == 403
    assert in_namespace_body["reason"] == "Forbidden"
    assert in_namespace_body["details"] == {"group": "keda.sh", "kind": "scaledjobs"}
    assert (
        'cannot list resource "scaledjobs" in API group "keda.sh" in the namespace "jobs"'
        in in_namespace_body["message"]
    )
    assert other.status == 200
    assert cluster_watch.status == 403  # a namespace denial means no cluster-wide permission
    assert "cannot watch" in cluster_watch_body["message"]
    assert allowed.status == 200
    assert names(allowed_body["items"]) == ["jobs/a"]
    assert faulted.status == 503


async def test_a_cluster_scoped_custom_resource_has_no_namespaces(tmp_path: Path) -> None:
    async with (
        KubeSimulator(custom_resources=[CLUSTER_TEMPLATES]) as sim,
        api_client(tmp_path, sim) as api,
    ):
        custom = client.CustomObjectsApi(api)
        plural = "clusterworkflowtemplates"
        sim.create(plural, cluster_template("in-process"))
        posted = await custom.create_cluster_custom_object(
            *ARGO, plural, {**cluster_template("over-http"), "metadata": {"name": "over-http"}}
        )
        watch = raw(
            await custom.list_cluster_custom_object(
                *ARGO,
                plural,
                watch=True,
                resource_version=posted["metadata"]["resourceVersion"],
                _preload_content=False,
            )
        )
        posted["spec"]["templates"][0]["container"]["image"] = "repo/step:2"
        replaced = await custom.replace_cluster_custom_object(*ARGO, plural, "over-http", posted)
        modified = await next_event(watch)
        await custom.delete_cluster_custom_object(*ARGO, plural, "in-process")
        deleted = await next_event(watch)
        watch.close()
        listed = await read_json(
            raw(await custom.list_cluster_custom_object(*ARGO, plural, _preload_content=False))
        )
        namespaced = raw(
            await custom.list_namespaced_custom_object(
                *ARGO, "default", plural, _preload_content=False
            )
        )
        namespaced_body = await read_json(namespaced)
        fetched = await custom.get_cluster_custom_object(*ARGO, plural, "over-http")
        sim.deny(plural)
        with pytest.raises(ApiException) as denied:
            await custom.get_cluster_custom_object(*ARGO, plural, "over-http")
        stored = sim.get(plural, "", "over-http")

    assert "namespace" not in posted["metadata"]
    assert replaced["metadata"]["resourceVersion"] != posted["metadata"]["resourceVersion"]
    assert (modified["type"], modified["object"]["metadata"]["name"]) == ("MODIFIED", "over-http")
    assert (deleted["type"], deleted["object"]["metadata"]["name"]) == ("DELETED", "in-process")
    assert names(listed["items"]) == ["/over-http"]
    assert namespaced.status == 404
    assert namespaced_body["message"] == NOT_FOUND
    assert fetched["spec"]["templates"][0]["container"]["image"] == "repo/step:2"
    assert denied.value.status == 403
    assert denied.value.body is not None
    assert "at the cluster scope" in json.loads(denied.value.body)["message"]
    assert stored is not None
    assert "namespace" not in stored["metadata"]


async def test_discovery_lists_installed_custom_resources_with_their_scope(
    tmp_path: Path,
) -> None:
    pipelines = ResourceType("pipelines", "Pipeline", "tekton.dev", "v1")
    step_actions = ResourceType("stepactions", "StepAction", "tekton.dev", "v1beta1")
    async with KubeSimulator(custom_resources=[SCALED_JOBS, CLUSTER_TEMPLATES]) as sim:
        sim.install(pipelines)
        sim.install(step_actions)
        async with aiohttp.ClientSession() as session:

            async def get(path: str) -> Any:
                async with session.get(f"{sim.url}{path}") as resp:
                    return await resp.json()

            groups = await get("/apis")
            argo = await get("/apis/argoproj.io/v1alpha1")
            keda = await get("/apis/keda.sh/v1alpha1")

    listed = {g["name"]: [v["version"] for v in g["versions"]] for g in groups["groups"]}
    assert listed["tekton.dev"] == ["v1", "v1beta1"]  # one group, both versions
    assert listed["argoproj.io"] == ["v1alpha1"]
    assert {(r["name"], r["kind"], r["namespaced"]) for r in argo["resources"]} == {
        ("clusterworkflowtemplates", "ClusterWorkflowTemplate", False)
    }
    assert [(r["name"], r["namespaced"]) for r in keda["resources"]] == [("scaledjobs", True)]


def test_installing_and_naming_custom_resources() -> None:
    sim = KubeSimulator(custom_resources=[SCALED_JOBS])
    assert sim.install(SCALED_JOBS) == SCALED_JOBS  # again: no change
    assert SCALED_JOBS.key == "scaledjobs.keda.sh"
    assert sim.resource_type("scaledjobs") == sim.resource_type("scaledjobs.keda.sh")
    assert sim.resource_type("pods").key == "pods"
    with pytest.raises(ValueError, match="already served in version v1alpha1"):
        sim.install(ResourceType("scaledjobs", "ScaledJob", "keda.sh", "v1"))
    with pytest.raises(ValueError, match="built-in"):
        sim.install(ResourceType("jobs", "Job", "batch", "v1"))
    with pytest.raises(ValueError, match="needs an API group"):
        sim.install(ResourceType("things", "Thing", "", "v1"))
    with pytest.raises(ValueError, match="built-in"):
        sim.uninstall("pods")

    other = ResourceType("scaledjobs", "ScaledJob", "example.com", "v1")
    sim.install(other)
    with pytest.raises(ValueError, match="unknown resource 'scaledjobs'"):
        sim.resource_type("scaledjobs")  # two groups have it: name it in full
    created = sim.create(
        "scaledjobs.example.com", scaled_job("x") | {"apiVersion": "example.com/v1"}
    )
    assert created["apiVersion"] == "example.com/v1"
    assert sim.list("scaledjobs.keda.sh") == []
    with pytest.raises(KubeSimError) as wrong_kind:
        sim.create("scaledjobs.keda.sh", {"kind": "Pod", "metadata": {"name": "p"}})
    assert wrong_kind.value.code == 400
    assert [rt.key for rt in sim.resource_types][-2:] == [
        "scaledjobs.keda.sh",
        "scaledjobs.example.com",
    ]


def test_the_threaded_simulator_installs_from_other_threads() -> None:
    with ThreadedKubeSimulator(custom_resources=[CLUSTER_TEMPLATES]) as sim:
        url = f"{sim.url}/apis/keda.sh/v1alpha1/namespaces/jobs/scaledjobs"
        with pytest.raises(urllib.error.HTTPError) as before:
            urllib.request.urlopen(url, timeout=5)
        before.value.close()
        errors: list[BaseException] = []

        def install() -> None:
            try:
                sim.install(SCALED_JOBS)
                sim.create("scaledjobs", scaled_job("a", "jobs"))
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                errors.append(exc)

        thread = threading.Thread(target=install)
        thread.start()
        thread.join(timeout=10)
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = json.loads(resp.read())
        served = [rt.key for rt in sim.resource_types]
        removed = sim.uninstall("scaledjobs")
        with pytest.raises(urllib.error.HTTPError) as after:
            urllib.request.urlopen(url, timeout=5)
        after.value.close()

    assert errors == []
    assert before.value.code == after.value.code == 404
    assert names(body["items"]) == ["jobs/a"]
    assert served[-2:] == ["clusterworkflowtemplates.argoproj.io", "scaledjobs.keda.sh"]
    assert removed == 1


async def test_preset_entries_extract_what_the_simulator_lists(tmp_path: Path) -> None:
    """The two halves meet: objects LISTed raw through CustomObjectsApi, read by a preset."""
    host = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
    async with (
        KubeSimulator(custom_resources=[SCALED_JOBS, CLUSTER_TEMPLATES]) as sim,
        api_client(tmp_path, sim) as api,
    ):
        sim.create("scaledjobs", scaled_job("a", "jobs", f"{host}/worker@{digest(1)}"))
        sim.create("clusterworkflowtemplates", cluster_template("t", f"{host}/step@{digest(2)}"))
        custom = client.CustomObjectsApi(api)
        found: dict[str, list[frozenset[Digest]]] = {}
        missing: set[str] = set()
        for entry in resolve(["keda-scaledjobs", "argo-workflows"]):
            resp = raw(
                await custom.list_cluster_custom_object(
                    entry.group, entry.version, entry.resource, _preload_content=False
                )
            )
            body = await read_json(resp)
            if resp.status == 404:  # not installed: the simulator has no such CRD
                assert body["reason"] == "NotFound"
                missing.add(entry.resource)
                continue
            found[entry.resource] = [
                entry.extract(item).references.digests for item in body["items"]
            ]

    assert found == {
        "scaledjobs": [{digest(1)}],
        "clusterworkflowtemplates": [{digest(2)}],
    }
    assert missing == {"workflows", "cronworkflows", "workflowtemplates"}
