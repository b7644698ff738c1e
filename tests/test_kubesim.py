"""Tests for the kube-apiserver simulator, driven through kubernetes_asyncio as production is.

Every HTTP interaction goes through a kubeconfig written by ``write_kubeconfig`` and loaded with
``kubernetes_asyncio.config.load_kube_config``, using ``_preload_content=False`` to read the raw
JSON of lists and the raw lines of watch streams - the same wire-level view the controller has.
"""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import urllib.error
import urllib.request
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import aiohttp
import anyio
import orjson
import pytest
import yaml
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from sandbox.kubesim import (
    JsonObj,
    KubeSimError,
    KubeSimulator,
    ThreadedKubeSimulator,
    image_id_for,
    pod,
    resource_for,
    workload,
    write_kubeconfig,
)
from tests.waiting import eventually

TOKEN = "s3cr3t-token"

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


@asynccontextmanager
async def api_client(
    tmp_path: Path, sim: KubeSimulator, *, token: str | None = None
) -> AsyncIterator[Any]:
    """An ApiClient configured from a generated kubeconfig, closed on exit."""
    path = write_kubeconfig(tmp_path / "kubeconfig", {"sim": sim}, token=token)
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(path), client_configuration=cfg)
    async with client.ApiClient(configuration=cfg) as api:
        yield api


def raw(resp: object) -> aiohttp.ClientResponse:
    """With ``_preload_content=False`` kubernetes_asyncio hands back the aiohttp response."""
    assert isinstance(resp, aiohttp.ClientResponse)
    return resp


async def read_json(resp: aiohttp.ClientResponse) -> JsonObj:
    try:
        return cast(JsonObj, orjson.loads(await resp.read()))
    finally:
        resp.release()


async def next_event(resp: aiohttp.ClientResponse, deadline: float = 3.0) -> JsonObj:
    with anyio.fail_after(deadline):
        line = await resp.content.readline()
    assert line, "watch stream ended unexpectedly"
    return cast(JsonObj, orjson.loads(line))


async def read_until_eof(resp: aiohttp.ClientResponse, deadline: float = 3.0) -> list[JsonObj]:
    events: list[JsonObj] = []
    with anyio.fail_after(deadline):
        while line := await resp.content.readline():
            events.append(cast(JsonObj, orjson.loads(line)))
    return events


def names(items: list[JsonObj]) -> list[str]:
    return [f"{i['metadata']['namespace']}/{i['metadata']['name']}" for i in items]


def seed_pods(sim: KubeSimulator, count: int, namespaces: tuple[str, ...] = ("default",)) -> None:
    for i in range(count):
        ns = namespaces[i % len(namespaces)]
        sim.create("pods", pod(f"p{i:02d}", ns, images=[f"repo/app:{i}"]))


async def list_all_pages(
    core: Any, limit: int, *, namespace: str | None = None
) -> tuple[list[JsonObj], list[JsonObj]]:
    """Follow continue tokens; returns (pages' raw bodies, all items)."""
    pages: list[JsonObj] = []
    items: list[JsonObj] = []
    token = ""  # an empty continue is the same as none
    for _ in range(100):
        if namespace is None:
            resp = raw(
                await core.list_pod_for_all_namespaces(
                    limit=limit, _continue=token, _preload_content=False
                )
            )
        else:
            resp = raw(
                await core.list_namespaced_pod(
                    namespace, limit=limit, _continue=token, _preload_content=False
                )
            )
        assert resp.status == 200
        body = await read_json(resp)
        pages.append(body)
        items.extend(body["items"])
        token = body["metadata"].get("continue")
        if not token:
            return pages, items
    raise AssertionError("pagination did not terminate")


# --------------------------------------------------------------------------------------------
# LIST
# --------------------------------------------------------------------------------------------


async def test_list_paging_with_limit_and_continue(tmp_path: Path) -> None:
    async with KubeSimulator(token=TOKEN) as sim, api_client(tmp_path, sim) as api:
        seed_pods(sim, 7, ("beta", "alpha"))
        pages, items = await list_all_pages(client.CoreV1Api(api), 3)

    assert [len(p["items"]) for p in pages] == [3, 3, 1]
    assert names(items) == sorted(names(items))
    assert len(set(names(items))) == 7
    assert "continue" not in pages[-1]["metadata"]
    assert all(p["kind"] == "PodList" and p["apiVersion"] == "v1" for p in pages)
    assert {p["metadata"]["resourceVersion"] for p in pages} == {str(sim.resource_version)}
    # Items of a typed list carry no kind/apiVersion, as with a real kube-apiserver.
    assert all("kind" not in i and "apiVersion" not in i for i in items)
    assert pages[0]["metadata"]["remainingItemCount"] == 4


async def test_short_pages_include_empty_page_with_continue(tmp_path: Path) -> None:
    async with KubeSimulator(short_pages=True) as sim, api_client(tmp_path, sim) as api:
        seed_pods(sim, 10)
        pages, items = await list_all_pages(client.CoreV1Api(api), 4)

    sizes = [len(p["items"]) for p in pages]
    assert names(items) == [f"default/p{i:02d}" for i in range(10)]
    assert any(0 < s < 4 and "continue" in p["metadata"] for s, p in zip(sizes, pages, strict=True))
    assert any(s == 0 and "continue" in p["metadata"] for s, p in zip(sizes, pages, strict=True))
    assert "continue" not in pages[-1]["metadata"]


async def test_list_pages_are_one_snapshot_while_writes_happen(tmp_path: Path) -> None:
    async with KubeSimulator() as sim, api_client(tmp_path, sim) as api:
        seed_pods(sim, 6)
        before = {o["metadata"]["name"]: o["metadata"]["resourceVersion"] for o in sim.list("pods")}
        core = client.CoreV1Api(api)
        first = await read_json(
            raw(await core.list_pod_for_all_namespaces(limit=2, _preload_content=False))
        )
        snapshot_rv = first["metadata"]["resourceVersion"]

        sim.create("pods", pod("p02a", images=["repo/new:1"]))  # sorts into a later page
        sim.delete("pods", "default", "p05")  # on the last page
        changed = sim.get("pods", "default", "p03")
        assert changed is not None
        changed["metadata"]["labels"] = {"touched": "yes"}
        sim.update("pods", changed)
        sim.create("leases", {"metadata": {"name": "other-resource"}})

        items = list(first["items"])
        token = first["metadata"]["continue"]
        while token:
            page = await read_json(
                raw(
                    await core.list_pod_for_all_namespaces(
                        limit=2, _continue=token, _preload_content=False
                    )
                )
            )
            assert page["metadata"]["resourceVersion"] == snapshot_rv
            items.extend(page["items"])
            token = page["metadata"].get("continue")

        # A fresh list sees the new state.
        fresh = await read_json(raw(await core.list_pod_for_all_namespaces(_preload_content=False)))

    assert {i["metadata"]["name"]: i["metadata"]["resourceVersion"] for i in items} == before
    assert all(i["metadata"]["labels"] == {} for i in items)
    assert int(fresh["metadata"]["resourceVersion"]) > int(snapshot_rv)
    assert "default/p02a" in names(fresh["items"])
    assert "default/p05" not in names(fresh["items"])


async def test_continue_token_after_compaction_is_410_expired(tmp_path: Path) -> None:
    async with KubeSimulator() as sim, api_client(tmp_path, sim) as api:
        seed_pods(sim, 4)
        core = client.CoreV1Api(api)
        first = await read_json(
            raw(await core.list_pod_for_all_namespaces(limit=2, _preload_content=False))
        )
        sim.create("pods", pod("late", images=["repo/x:1"]))
        sim.compact()
        resp = raw(
            await core.list_pod_for_all_namespaces(
                limit=2, _continue=first["metadata"]["continue"], _preload_content=False
            )
        )
        status = resp.status
        body = await read_json(resp)

        # Through the normal (preloading) path the same answer is an ApiException.
        with pytest.raises(ApiException) as info:
            await core.list_pod_for_all_namespaces(limit=2, _continue=first["metadata"]["continue"])

    assert status == 410
    assert body["kind"] == "Status"
    assert body["reason"] == "Expired"
    assert body["code"] == 410
    assert body["metadata"]["continue"]  # the "inconsistent continuation" token
    assert info.value.status == 410


async def test_malformed_continue_token_is_400(tmp_path: Path) -> None:
    async with KubeSimulator() as sim, api_client(tmp_path, sim) as api:
        resp = raw(
            await client.CoreV1Api(api).list_pod_for_all_namespaces(
                limit=2, _continue="not-a-token", _preload_content=False
            )
        )
        body = await read_json(resp)
    assert resp.status == 400
    assert body["reason"] == "BadRequest"


# --------------------------------------------------------------------------------------------
# WATCH
# --------------------------------------------------------------------------------------------


async def test_watch_replays_from_resource_version_then_streams_live(tmp_path: Path) -> None:
    async with KubeSimulator() as sim, api_client(tmp_path, sim) as api:
        sim.create("pods", pod("a", images=["repo/a:1"]))
        start_rv = sim.resource_version
        sim.create("pods", pod("b", images=["repo/b:1"]))
        b = sim.get("pods", "default", "b")
        assert b is not None
        b["spec"]["containers"][0]["image"] = "repo/b:2"
        sim.update("pods", b)
        sim.create("deployments", workload("Deployment", "d", images=["repo/d:1"]))  # not pods

        resp = raw(
            await client.CoreV1Api(api).list_pod_for_all_namespaces(
                watch=True, resource_version=str(start_rv), _preload_content=False
            )
        )
        assert resp.status == 200
        assert resp.headers["Transfer-Encoding"] == "chunked"
        replayed = [await next_event(resp), await next_event(resp)]

        sim.delete("pods", "default", "a")
        deleted = await next_event(resp)
        sim.create("pods", pod("c", images=["repo/c:1"]))
        added = await next_event(resp)
        resp.close()

    assert [(e["type"], e["object"]["metadata"]["name"]) for e in replayed] == [
        ("ADDED", "b"),
        ("MODIFIED", "b"),
    ]
    assert replayed[1]["object"]["spec"]["containers"][0]["image"] == "repo/b:2"
    assert replayed[0]["object"]["kind"] == "Pod"
    assert replayed[0]["object"]["apiVersion"] == "v1"
    assert deleted["type"] == "DELETED"
    assert deleted["object"]["metadata"]["name"] == "a"
    assert added["type"] == "ADDED"
    assert added["object"]["metadata"]["name"] == "c"
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in [*replayed, deleted, added]]
    assert rvs == sorted(rvs)
    assert rvs[0] > start_rv


async def test_watch_without_resource_version_starts_with_added_for_every_object(
    tmp_path: Path,
) -> None:
    async with KubeSimulator() as sim, api_client(tmp_path, sim) as api:
        seed_pods(sim, 3)
        sim.compact()  # initial state does not need the log
        apps = client.AppsV1Api(api)
        sim.create("deployments", workload("Deployment", "web", images=["repo/web:1"]))
        resp = raw(
            await apps.list_deployment_for_all_namespaces(watch=True, _preload_content=False)
        )
        first = await next_event(resp)
        resp.close()

        core = client.CoreV1Api(api)
        resp = raw(
            await core.list_pod_for_all_namespaces(
                watch=True, resource_version="0", _preload_content=False
            )
        )
        initial = [await next_event(resp) for _ in range(3)]
        sim.create("pods", pod("zz", images=["repo/z:1"]))
        live = await next_event(resp)
        resp.close()

    assert first["type"] == "ADDED"
    assert first["object"]["kind"] == "Deployment"
    assert [e["type"] for e in initial] == ["ADDED"] * 3
    assert [e["object"]["metadata"]["name"] for e in initial] == ["p00", "p01", "p02"]
    assert (live["type"], live["object"]["metadata"]["name"]) == ("ADDED", "zz")


async def test_watch_bookmarks_periodic_and_on_demand(tmp_path: Path) -> None:
    async with KubeSimulator(bookmark_interval=0.2) as sim, api_client(tmp_path, sim) as api:
        seed_pods(sim, 2)
        rv = str(sim.resource_version)
        resp = raw(
            await client.CoreV1Api(api).list_pod_for_all_namespaces(
                watch=True, resource_version=rv, allow_watch_bookmarks=True, _preload_content=False
            )
        )
        periodic = await next_event(resp, deadline=2.0)

        assert sim.send_bookmarks() == 1
        on_demand = await next_event(resp, deadline=0.15)  # well before the next periodic one
        sim.create("pods", pod("new", images=["repo/n:1"]))
        event = await next_event(resp)
        assert sim.send_bookmarks("deployments") == 0
        sim.send_bookmarks("pods")
        after = await next_event(resp, deadline=0.15)
        resp.close()

        # Without allowWatchBookmarks no BOOKMARK is sent.
        quiet = raw(await client.CoreV1Api(api).list_pod_for_all_namespaces(
            watch=True, resource_version=str(sim.resource_version), timeout_seconds=1,
            _preload_content=False,
        ))  # fmt: skip
        assert sim.send_bookmarks() == 0
        quiet_events = await read_until_eof(quiet)

    for bookmark in (periodic, on_demand, after):
        assert bookmark["type"] == "BOOKMARK"
        assert bookmark["object"]["kind"] == "Pod"
        assert bookmark["object"]["apiVersion"] == "v1"
    assert periodic["object"]["metadata"]["resourceVersion"] == rv
    assert on_demand["object"]["metadata"]["resourceVersion"] == rv
    assert event["type"] == "ADDED"
    assert (
        after["object"]["metadata"]["resourceVersion"]
        == event["object"]["metadata"]["resourceVersion"]
    )
    assert quiet_events == []


async def test_watch_timeout_seconds_ends_stream_cleanly(tmp_path: Path) -> None:
    async with KubeSimulator() as sim, api_client(tmp_path, sim) as api:
        resp = raw(
            await client.BatchV1Api(api).list_job_for_all_namespaces(
                watch=True,
                resource_version=str(sim.resource_version),
                timeout_seconds=1,
                _preload_content=False,
            )
        )
        sim.create("jobs", workload("Job", "migrate", images=["repo/migrate:1"]))
        started = anyio.current_time()
        events = await read_until_eof(resp, deadline=3.0)
        elapsed = anyio.current_time() - started
        resp.release()
        assert sim.watch_count() == 0

    assert [(e["type"], e["object"]["kind"]) for e in events] == [("ADDED", "Job")]
    assert resp.content.at_eof()
    assert elapsed < 2.0


async def test_watch_from_compacted_version_gets_410_error_event(tmp_path: Path) -> None:
    async with KubeSimulator() as sim, api_client(tmp_path, sim) as api:
        seed_pods(sim, 2)
        old_rv = sim.resource_version
        sim.create("pods", pod("newer", images=["repo/n:1"]))
        compacted = sim.compact()
        core = client.CoreV1Api(api)
        resp = raw(
            await core.list_pod_for_all_namespaces(
                watch=True, resource_version=str(old_rv), _preload_content=False
            )
        )
        status = resp.status
        events = await read_until_eof(resp)
        resp.release()

        # Watching from the compaction point itself is fine.
        ok = raw(
            await core.list_pod_for_all_namespaces(
                watch=True, resource_version=str(compacted), _preload_content=False
            )
        )
        sim.delete("pods", "default", "newer")
        deleted = await next_event(ok)
        ok.close()

    assert status == 200
    assert len(events) == 1
    error = events[0]
    assert error["type"] == "ERROR"
    assert error["object"]["kind"] == "Status"
    assert error["object"]["code"] == 410
    assert error["object"]["reason"] == "Expired"
    assert error["object"]["message"].startswith(f"too old resource version: {old_rv}")
    assert deleted["type"] == "DELETED"


async def test_watch_expired_as_http_410_mode(tmp_path: Path) -> None:
    async with KubeSimulator() as sim, api_client(tmp_path, sim) as api:
        seed_pods(sim, 2)
        old_rv = sim.resource_version - 1
        sim.compact()
        sim.set_watch_expiry_mode("http")
        resp = raw(
            await client.CoreV1Api(api).list_pod_for_all_namespaces(
                watch=True, resource_version=str(old_rv), _preload_content=False
            )
        )
        body = await read_json(resp)

    assert resp.status == 410
    assert body["kind"] == "Status"
    assert body["reason"] == "Expired"
    assert body["code"] == 410


async def test_retain_events_compacts_automatically(tmp_path: Path) -> None:
    async with KubeSimulator(retain_events=2) as sim, api_client(tmp_path, sim) as api:
        seed_pods(sim, 5)  # rvs 2..6; only the events of rv 5 and 6 are kept
        assert sim.compacted_resource_version == 4
        core = client.CoreV1Api(api)
        expired = raw(
            await core.list_pod_for_all_namespaces(
                watch=True, resource_version="3", _preload_content=False
            )
        )
        expired_events = await read_until_eof(expired)
        expired.release()
        replay = raw(
            await core.list_pod_for_all_namespaces(
                watch=True, resource_version="4", _preload_content=False
            )
        )
        replayed = [await next_event(replay), await next_event(replay)]
        replay.close()

    assert [e["type"] for e in expired_events] == ["ERROR"]
    assert [e["object"]["metadata"]["name"] for e in replayed] == ["p03", "p04"]


async def test_namespaced_list_and_watch_see_only_their_namespace(tmp_path: Path) -> None:
    async with KubeSimulator() as sim, api_client(tmp_path, sim) as api:
        seed_pods(sim, 6, ("team-a", "team-b"))
        core = client.CoreV1Api(api)
        _, items = await list_all_pages(core, 2, namespace="team-a")
        resp = raw(
            await core.list_namespaced_pod(
                "team-b",
                watch=True,
                resource_version=str(sim.resource_version),
                _preload_content=False,
            )
        )
        sim.create("pods", pod("x", "team-a", images=["repo/x:1"]))
        sim.create("pods", pod("y", "team-b", images=["repo/y:1"]))
        event = await next_event(resp)
        resp.close()
        one = await read_json(
            raw(await core.read_namespaced_pod("p01", "team-b", _preload_content=False))
        )
        missing = raw(await core.read_namespaced_pod("p01", "team-a", _preload_content=False))
        missing_body = await read_json(missing)

    assert names(items) == ["team-a/p00", "team-a/p02", "team-a/p04"]
    assert event["object"]["metadata"]["name"] == "y"
    assert one["kind"] == "Pod"
    assert one["metadata"]["name"] == "p01"
    assert missing.status == 404
    assert missing_body["reason"] == "NotFound"


async def test_dropped_watch_breaks_the_client_stream(tmp_path: Path) -> None:
    async with KubeSimulator() as sim, api_client(tmp_path, sim) as api:
        resp = raw(
            await client.AppsV1Api(api).list_stateful_set_for_all_namespaces(
                watch=True, resource_version=str(sim.resource_version), _preload_content=False
            )
        )
        sim.create("statefulsets", workload("StatefulSet", "db", images=["repo/db:1"]))
        event = await next_event(resp)
        assert sim.drop_watches("pods") == 0
        assert sim.drop_watches() == 1
        with pytest.raises(aiohttp.ClientPayloadError), anyio.fail_after(3):
            await resp.content.readline()
        resp.close()

    assert event["object"]["kind"] == "StatefulSet"


async def test_stop_ends_open_watch_streams_promptly(tmp_path: Path) -> None:
    sim = KubeSimulator(bookmark_interval=10)
    await sim.start()
    async with api_client(tmp_path, sim) as api:
        resp = raw(
            await client.CoreV1Api(api).list_pod_for_all_namespaces(
                watch=True, allow_watch_bookmarks=True, _preload_content=False
            )
        )
        with anyio.fail_after(2):
            await sim.stop()
            events = await read_until_eof(resp)
        resp.release()
    assert events == []
    assert not sim.running


async def test_inject_raw_event_reaches_open_watches(tmp_path: Path) -> None:
    async with KubeSimulator() as sim, api_client(tmp_path, sim) as api:
        resp = raw(
            await client.CoreV1Api(api).list_pod_for_all_namespaces(
                watch=True, resource_version=str(sim.resource_version), _preload_content=False
            )
        )
        assert sim.inject_raw_event("pods", b'{"type":"SURPRISE","object":{}}') == 1
        assert sim.inject_raw_event("pods", b"{not json\n") == 1
        with anyio.fail_after(3):
            first = await resp.content.readline()
            second = await resp.content.readline()
        resp.close()

    assert json.loads(first) == {"type": "SURPRISE", "object": {}}
    assert second == b"{not json\n"


# --------------------------------------------------------------------------------------------
# Writes and optimistic concurrency
# --------------------------------------------------------------------------------------------


def lease_body(name: str, holder: str, rv: str | None = None) -> Any:
    meta = client.V1ObjectMeta(name=name, namespace="kube-system", resource_version=rv)
    return client.V1Lease(
        metadata=meta,
        spec=client.V1LeaseSpec(holder_identity=holder, lease_duration_seconds=15),
    )


async def test_lease_create_replace_and_conflicts(tmp_path: Path) -> None:
    async with KubeSimulator(token=TOKEN) as sim, api_client(tmp_path, sim) as api:
        coord = client.CoordinationV1Api(api)
        created = await coord.create_namespaced_lease("kube-system", lease_body("leader", "pod-a"))
        with pytest.raises(ApiException) as exists:
            await coord.create_namespaced_lease("kube-system", lease_body("leader", "pod-b"))

        rv = created.metadata.resource_version
        renewed = await coord.replace_namespaced_lease(
            "leader", "kube-system", lease_body("leader", "pod-a", rv)
        )
        with pytest.raises(ApiException) as conflict:
            await coord.replace_namespaced_lease(
                "leader", "kube-system", lease_body("leader", "pod-b", rv)
            )
        read = await coord.read_namespaced_lease("leader", "kube-system")
        with pytest.raises(ApiException) as missing:
            await coord.replace_namespaced_lease(
                "ghost", "kube-system", lease_body("ghost", "pod-b", "1")
            )
        await coord.delete_namespaced_lease("leader", "kube-system")
        leases = sim.list("leases")

    assert created.metadata.uid
    assert created.metadata.creation_timestamp is not None
    assert exists.value.status == 409
    assert json.loads(exists.value.body or b"")["reason"] == "AlreadyExists"
    assert int(renewed.metadata.resource_version) > int(rv)
    assert renewed.metadata.uid == created.metadata.uid
    assert conflict.value.status == 409
    conflict_status = json.loads(conflict.value.body or b"")
    assert conflict_status["kind"] == "Status"
    assert conflict_status["status"] == "Failure"
    assert conflict_status["reason"] == "Conflict"
    assert conflict_status["code"] == 409
    assert read.spec.holder_identity == "pod-a"
    assert missing.value.status == 404
    assert leases == []


def test_in_process_api_errors_and_metadata() -> None:
    sim = KubeSimulator()
    created = sim.create("pods", pod("a", images=["repo/a:1"]))
    assert created["metadata"]["uid"]
    assert created["metadata"]["creationTimestamp"].endswith("Z")
    assert created["metadata"]["resourceVersion"] == str(sim.resource_version)
    with pytest.raises(KubeSimError) as exists:
        sim.create("pods", pod("a", images=["repo/a:1"]))
    assert (exists.value.code, exists.value.reason) == (409, "AlreadyExists")

    stale = dict(created)
    sim.update("pods", created)
    with pytest.raises(KubeSimError) as conflict:
        sim.update("pods", stale)
    assert conflict.value.reason == "Conflict"
    applied = sim.apply("pods", stale)  # unconditional upsert
    assert applied["metadata"]["uid"] == created["metadata"]["uid"]
    with pytest.raises(KubeSimError) as missing:
        sim.delete("pods", "default", "nope")
    assert missing.value.code == 404
    with pytest.raises(ValueError, match="unknown resource"):
        sim.list("services")


# --------------------------------------------------------------------------------------------
# Auth and faults
# --------------------------------------------------------------------------------------------


async def test_requests_without_the_token_get_401(tmp_path: Path) -> None:
    async with KubeSimulator(token=TOKEN) as sim:
        async with api_client(tmp_path, sim, token="wrong") as api:
            resp = raw(
                await client.CoreV1Api(api).list_pod_for_all_namespaces(_preload_content=False)
            )
            body = await read_json(resp)
            with pytest.raises(ApiException) as info:
                await client.AppsV1Api(api).list_deployment_for_all_namespaces()
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{sim.url}/api/v1/pods") as bare,
        ):
            bare_status = bare.status
        async with api_client(tmp_path, sim) as api:  # the simulator's own token
            ok = raw(
                await client.CoreV1Api(api).list_pod_for_all_namespaces(_preload_content=False)
            )
            await read_json(ok)

    assert resp.status == 401
    assert body == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "Unauthorized",
        "reason": "Unauthorized",
        "code": 401,
    }
    assert info.value.status == 401
    assert bare_status == 401
    assert ok.status == 200


async def test_deny_forbids_list_and_watch_until_allowed(tmp_path: Path) -> None:
    async with KubeSimulator() as sim, api_client(tmp_path, sim) as api:
        seed_pods(sim, 2, ("team-a", "team-b"))
        core = client.CoreV1Api(api)
        sim.deny("pods", "team-a")
        denied_ns = raw(await core.list_namespaced_pod("team-a", _preload_content=False))
        denied_body = await read_json(denied_ns)
        other_ns = raw(await core.list_namespaced_pod("team-b", _preload_content=False))
        await read_json(other_ns)
        cluster = raw(await core.list_pod_for_all_namespaces(_preload_content=False))
        await read_json(cluster)
        sim.allow("pods", "team-a")

        sim.deny("pods")
        watch = raw(await core.list_pod_for_all_namespaces(watch=True, _preload_content=False))
        watch_body = await read_json(watch)
        deployments = raw(
            await client.AppsV1Api(api).list_deployment_for_all_namespaces(_preload_content=False)
        )
        await read_json(deployments)
        sim.allow("pods")
        allowed = raw(await core.list_pod_for_all_namespaces(_preload_content=False))
        await read_json(allowed)

    assert denied_ns.status == 403
    assert denied_body["reason"] == "Forbidden"
    assert 'cannot list resource "pods"' in denied_body["message"]
    assert 'in the namespace "team-a"' in denied_body["message"]
    assert other_ns.status == 200
    assert cluster.status == 403  # a namespace denial means no cluster-wide permission
    assert watch.status == 403
    assert "cannot watch" in watch_body["message"]
    assert deployments.status == 200
    assert allowed.status == 200


async def test_fail_next_latency_and_request_log(tmp_path: Path) -> None:
    async with KubeSimulator() as sim, api_client(tmp_path, sim) as api:
        core = client.CoreV1Api(api)
        sim.fail_next(2, 503)
        first = raw(await core.list_pod_for_all_namespaces(_preload_content=False))
        first_body = await read_json(first)
        second = raw(await core.list_pod_for_all_namespaces(_preload_content=False))
        await read_json(second)
        third = raw(await core.list_pod_for_all_namespaces(_preload_content=False))
        await read_json(third)

        sim.fail_next(1, 500, path_prefix="/apis/apps/")
        pods = raw(await core.list_pod_for_all_namespaces(_preload_content=False))
        await read_json(pods)
        apps = raw(
            await client.AppsV1Api(api).list_deployment_for_all_namespaces(_preload_content=False)
        )
        await read_json(apps)

        sim.set_latency(0.3)
        started = anyio.current_time()
        slow = raw(await core.list_pod_for_all_namespaces(_preload_content=False))
        await read_json(slow)
        elapsed = anyio.current_time() - started
        sim.set_latency(0)

        watch = raw(
            await core.list_pod_for_all_namespaces(
                watch=True, timeout_seconds=1, _preload_content=False
            )
        )
        watch.close()

    assert (first.status, second.status, third.status) == (503, 503, 200)
    assert first_body["reason"] == "ServiceUnavailable"
    assert first.headers["Retry-After"] == "1"
    assert (pods.status, apps.status) == (200, 500)
    assert elapsed >= 0.3
    assert sim.count("GET", "/api/v1/pods") == 6
    assert sim.count("GET", "/api/v1/pods", watch=True) == 1
    assert sim.count("GET", "/apis/apps/v1/deployments", watch=False) == 1
    last = sim.requests[-1]
    assert (last.method, last.path) == ("GET", "/api/v1/pods")
    assert last.query["watch"] == "True"
    assert last.received_at > 0


# --------------------------------------------------------------------------------------------
# Other resources, kubeconfig, builders, threaded variant
# --------------------------------------------------------------------------------------------


async def test_apps_and_batch_resources_are_served(tmp_path: Path) -> None:
    async with KubeSimulator() as sim, api_client(tmp_path, sim) as api:
        for kind in ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "CronJob"):
            sim.create(resource_for(kind), workload(kind, kind.lower(), "prod", ["repo/x:1"]))
        sim.create("controllerrevisions", {"metadata": {"name": "rev-1", "namespace": "prod"},
                                           "revision": 1, "data": {}})  # fmt: skip
        apps = client.AppsV1Api(api)
        batch = client.BatchV1Api(api)
        bodies = [
            await read_json(raw(await call(_preload_content=False)))
            for call in (
                apps.list_deployment_for_all_namespaces,
                apps.list_replica_set_for_all_namespaces,
                apps.list_stateful_set_for_all_namespaces,
                apps.list_daemon_set_for_all_namespaces,
                apps.list_controller_revision_for_all_namespaces,
                batch.list_job_for_all_namespaces,
                batch.list_cron_job_for_all_namespaces,
            )
        ]
        cron = await batch.read_namespaced_cron_job("cronjob", "prod")
        deployments = await apps.list_namespaced_deployment("prod")

    assert [b["kind"] for b in bodies] == [
        "DeploymentList",
        "ReplicaSetList",
        "StatefulSetList",
        "DaemonSetList",
        "ControllerRevisionList",
        "JobList",
        "CronJobList",
    ]
    assert all(len(b["items"]) == 1 for b in bodies)
    assert {b["apiVersion"] for b in bodies} == {"apps/v1", "batch/v1"}
    assert cron.spec.job_template.spec.template.spec.containers[0].image == "repo/x:1"
    assert deployments.items[0].spec.template.spec.containers[0].image == "repo/x:1"


async def test_write_kubeconfig_with_several_contexts(tmp_path: Path) -> None:
    async with KubeSimulator(token="one") as first, KubeSimulator(token="two") as second:
        first.create("pods", pod("only-in-first", images=["repo/a:1"]))
        path = write_kubeconfig(
            tmp_path / "kubeconfig", {"east": first, "west": second}, current="west"
        )
        doc = yaml.safe_load(path.read_text())
        seen: dict[str, int] = {}
        for context in ("east", "west"):
            cfg = client.Configuration()
            await config.load_kube_config(
                config_file=str(path), context=context, client_configuration=cfg
            )
            async with client.ApiClient(configuration=cfg) as api:
                pods = await client.CoreV1Api(api).list_pod_for_all_namespaces()
                seen[context] = len(pods.items)

    assert doc["current-context"] == "west"
    assert [c["cluster"]["server"] for c in doc["clusters"]] == [first.url, second.url]
    assert [u["user"]["token"] for u in doc["users"]] == ["one", "two"]
    assert seen == {"east": 1, "west": 0}


def test_pod_builder_is_realistic() -> None:
    digest = "sha256:" + "ab" * 32
    p = pod(
        "web-1",
        "prod",
        images=["123.dkr.ecr.us-east-1.amazonaws.com/web:1.2", f"repo/side@{digest}"],
        init_images=["repo/init:3"],
        ephemeral_images=["busybox:1.36"],
        image_ids={"container-0": "docker-pullable://web@sha256:" + "cd" * 32},
    )
    spec, status = p["spec"], p["status"]
    assert [c["name"] for c in spec["containers"]] == ["container-0", "container-1"]
    assert spec["initContainers"][0]["image"] == "repo/init:3"
    assert spec["ephemeralContainers"][0]["image"] == "busybox:1.36"
    assert status["phase"] == "Running"
    assert status["containerStatuses"][0]["imageID"].startswith("docker-pullable://")
    assert status["containerStatuses"][1]["imageID"] == f"repo/side@{digest}"
    assert status["initContainerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    assert status["initContainerStatuses"][0]["imageID"] == image_id_for("repo/init:3")
    assert status["ephemeralContainerStatuses"][0]["image"] == "busybox:1.36"
    assert image_id_for("host:5000/team/app:v1").startswith("host:5000/team/app@sha256:")

    pending = pod("p", images={"app": "repo/app:1"}, phase="Pending")
    assert pending["status"]["containerStatuses"][0]["name"] == "app"
    assert pending["status"]["containerStatuses"][0]["imageID"] == ""
    assert "waiting" in pending["status"]["containerStatuses"][0]["state"]


def test_workload_builders_put_the_pod_template_where_kubernetes_does() -> None:
    for kind in ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job"):
        obj = workload(kind, "w", images=["repo/w:1"], replicas=2)
        assert obj["kind"] == kind
        assert obj["spec"]["template"]["spec"]["containers"][0]["image"] == "repo/w:1"
    cron = workload("CronJob", "c", images=["repo/c:1"], init_images=["repo/i:1"])
    template = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert template["containers"][0]["image"] == "repo/c:1"
    assert template["initContainers"][0]["image"] == "repo/i:1"
    assert workload("Deployment", "d", replicas=3)["spec"]["replicas"] == 3
    assert "replicas" not in workload("DaemonSet", "ds")["spec"]


def test_threaded_simulator_serves_synchronous_callers() -> None:
    with ThreadedKubeSimulator(token=TOKEN) as sim:
        sim.create("pods", pod("a", images=["repo/a:1"]))
        sim.deny("deployments")
        request = urllib.request.Request(
            f"{sim.url}/api/v1/pods?limit=10", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        with urllib.request.urlopen(request, timeout=5) as resp:
            body = json.loads(resp.read())
        with pytest.raises(urllib.error.HTTPError) as forbidden:
            urllib.request.urlopen(
                urllib.request.Request(
                    f"{sim.url}/apis/apps/v1/deployments",
                    headers={"Authorization": f"Bearer {TOKEN}"},
                ),
                timeout=5,
            )
        forbidden.value.close()
        with pytest.raises(KubeSimError):
            sim.create("pods", pod("a", images=["repo/a:1"]))
        count = sim.count("GET", "/api/v1/pods")
        names_now = [p["metadata"]["name"] for p in sim.list("pods")]
    assert [i["metadata"]["name"] for i in body["items"]] == ["a"]
    assert forbidden.value.code == 403
    assert count == 1
    assert names_now == ["a"]


async def test_watch_survives_concurrent_writers(tmp_path: Path) -> None:
    """Events interleaved with list pages and bookmarks arrive in rv order, none lost."""
    async with KubeSimulator(bookmark_interval=0.05) as sim, api_client(tmp_path, sim) as api:
        core = client.CoreV1Api(api)
        resp = raw(
            await core.list_pod_for_all_namespaces(
                watch=True,
                resource_version=str(sim.resource_version),
                allow_watch_bookmarks=True,
                _preload_content=False,
            )
        )

        async def writer() -> None:
            for i in range(30):
                sim.create("pods", pod(f"w{i:02d}", images=["repo/w:1"]))
                await asyncio.sleep(0.005)

        added: list[int] = []
        last_rv = 0
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer)
            while len(added) < 30:
                event = await next_event(resp)
                rv = int(event["object"]["metadata"]["resourceVersion"])
                assert rv >= last_rv  # bookmarks never overtake events
                last_rv = rv
                if event["type"] == "ADDED":
                    added.append(rv)
        resp.close()

    assert added == sorted(added)
    assert len(set(added)) == 30


async def test_kubernetes_asyncio_watch_helper_understands_the_stream(tmp_path: Path) -> None:
    """The library's own Watch helper parses events, bookmarks and the 410 ERROR event."""
    async with KubeSimulator(bookmark_interval=0.2) as sim, api_client(tmp_path, sim) as api:
        core = client.CoreV1Api(api)
        sim.create("pods", pod("a", images=["repo/a:1"]))
        start_rv = str(sim.resource_version)
        sim.create("pods", pod("b", images=["repo/b:1"]))
        seen: list[tuple[str, str]] = []
        async with watch.Watch() as w:
            async for event in w.stream(
                core.list_pod_for_all_namespaces,
                resource_version=start_rv,
                allow_watch_bookmarks=True,
                timeout_seconds=5,
            ):
                if event["type"] == "BOOKMARK":
                    seen.append(("BOOKMARK", event["raw_object"]["metadata"]["resourceVersion"]))
                    break
                seen.append((event["type"], event["object"].metadata.name))
            bookmark_rv: object = w.resource_version

        sim.compact()

        async def watch_from_start() -> None:
            async with watch.Watch() as w:
                async for _ in w.stream(
                    core.list_pod_for_all_namespaces, resource_version=start_rv, timeout_seconds=5
                ):
                    pass

        with pytest.raises(ApiException) as expired:
            await watch_from_start()
        events = sim.events("pods")

    assert seen == [("ADDED", "b"), ("BOOKMARK", str(sim.resource_version))]
    assert bookmark_rv == str(sim.resource_version)
    assert expired.value.status == 410
    assert events == []  # compacted


async def test_watch_from_a_future_resource_version_skips_older_events(tmp_path: Path) -> None:
    async with KubeSimulator() as sim, api_client(tmp_path, sim) as api:
        future = sim.resource_version + 2
        resp = raw(
            await client.CoreV1Api(api).list_pod_for_all_namespaces(
                watch=True, resource_version=str(future), _preload_content=False
            )
        )
        for name in ("r1", "r2", "r3"):
            sim.create("pods", pod(name, images=["repo/r:1"]))
        event = await next_event(resp)
        resp.close()
    assert event["object"]["metadata"]["name"] == "r3"
    assert int(event["object"]["metadata"]["resourceVersion"]) == future + 1


async def test_threaded_simulator_is_mutated_safely_from_other_threads(tmp_path: Path) -> None:
    sim = ThreadedKubeSimulator(bookmark_interval=0.2)
    await anyio.to_thread.run_sync(sim.start)
    try:
        path = write_kubeconfig(tmp_path / "kubeconfig", {"threaded": sim})
        cfg = client.Configuration()
        await config.load_kube_config(config_file=str(path), client_configuration=cfg)
        async with client.ApiClient(configuration=cfg) as api:
            resp = raw(
                await client.CoreV1Api(api).list_pod_for_all_namespaces(
                    watch=True, resource_version="1", _preload_content=False
                )
            )
            await anyio.to_thread.run_sync(sim.create, "pods", pod("t", images=["repo/t:1"]))
            event = await next_event(resp)
            assert await anyio.to_thread.run_sync(sim.watch_count) == 1
            assert await anyio.to_thread.run_sync(sim.drop_watches) == 1
            with pytest.raises(aiohttp.ClientPayloadError), anyio.fail_after(3):
                await resp.content.readline()
            resp.close()
    finally:
        await anyio.to_thread.run_sync(sim.stop)
    assert event["object"]["metadata"]["name"] == "t"
    assert [e.type for e in sim.events()] == ["ADDED"]  # direct access once stopped


async def test_discovery_lists_every_served_group_and_kind(tmp_path: Path) -> None:
    """The discovery documents a client such as helm reads first, through kubernetes_asyncio."""
    async with KubeSimulator() as sim, api_client(tmp_path, sim) as api:
        versions = await client.CoreApi(api).get_api_versions()
        assert versions.versions == ["v1"]
        groups = await client.ApisApi(api).get_api_versions()
        names = {g.name for g in groups.groups}
        assert {"apps", "batch", "coordination.k8s.io", "rbac.authorization.k8s.io"} <= names
        apps = await client.AppsV1Api(api).get_api_resources()
        served = {r.name: r for r in apps.resources}
        assert {"deployments", "replicasets", "statefulsets", "daemonsets"} <= set(served)
        assert served["deployments"].kind == "Deployment"
        assert served["deployments"].namespaced is True
        rbac = await client.RbacAuthorizationV1Api(api).get_api_resources()
        roles = {r.name: r.namespaced for r in rbac.resources}
        assert roles["clusterroles"] is False
        assert roles["roles"] is True
        # listed for helm's dry run only: not served
        with pytest.raises(ApiException) as error:
            await client.CoreV1Api(api).list_namespaced_service_account("default")
        assert error.value.status == 404


async def test_stopping_closes_a_connection_whose_client_stopped_reading() -> None:
    """A watch whose client no longer reads holds unsent events in the server's write buffer;
    asyncio completes that transport's close only once the buffer drains. Stopped, the threaded
    simulator must still close it for good, or its loop closes with the transport open and the
    garbage collector reports it later, in whichever test runs then."""
    sim = ThreadedKubeSimulator(token=TOKEN).start()
    host, port = sim.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port))) as reader:
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        reader.sendall(
            b"GET /api/v1/pods?watch=1 HTTP/1.1\r\nHost: kube\r\n"
            + f"Authorization: Bearer {TOKEN}\r\n\r\n".encode()
        )
        await eventually(lambda: sim.watch_count("pods") == 1, within=10)
        for n in range(2000):  # about 8 MB of events, never read
            obj = pod(f"p{n}", "shop", {"c": "nginx"})
            obj["metadata"]["annotations"] = {"note": "x" * 4000}
            sim.create("pods", obj)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sim.stop()
            gc.collect()
    assert [str(w.message) for w in caught if w.category is ResourceWarning] == []
