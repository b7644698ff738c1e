"""A second opinion on the client side: LIST and WATCH through kubernetes_asyncio against kmock.

kmock (PyPI, by the Kopf author) is an independent, scriptable fake Kubernetes API server. These
tests point the same code as production (`connect`, `list_kind`, `Watcher`) at it over real HTTP
and script what it answers, so the client's reading of pages, streams and errors is checked
against a server this project did not write. `test_watching.py` covers the same ground (and more)
against our own simulator.

What kmock cannot express honestly, and so is only tested against `sandbox.kubesim`:

* resourceVersions: its emulator answers every LIST with ``resourceVersion: "..."``. Here the
  versions are scripted strings: they show which version the client sends, not what a server
  would do with it.
* bookmarks, history, compaction: there is none, so a 410 only happens where a test scripts it;
  resuming from a bookmark and the inactivity timeout are not tested here.
* ``limit``/``continue``: its emulator returns everything on one page; paging is scripted.
* ``watch=True``: its built-in WATCH only recognises a lowercase ``watch=true`` while
  kubernetes_asyncio sends ``watch=True`` (see the last test). So its stateful emulator cannot
  serve our watches; the WATCH reaction here is routed on the raw ``watch`` parameter, any case,
  and streams exactly what the test feeds.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import kmock
import orjson
import pytest

from controller.clusters import Cluster, connect
from controller.identifiers import SourceKey
from controller.inventory import InUseIndex
from controller.kinds import KINDS
from controller.sources import LIST_PAGE, list_kind, request
from controller.trust import SourceTracker, View
from controller.watching import EventSink, Watcher, WatchOptions
from sandbox.kubesim import pod, write_kubeconfig
from tests.digests import digest
from tests.waiting import eventually

HOST = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
TOKEN = "kmock-token"
FAST = WatchOptions(timeout_seconds=30, inactivity=2.0, backoff_initial=0.02, backoff_max=0.1)
PODS = SourceKey("kmock", "pods")
GET_PODS = "get /api/v1/pods"
# kubernetes_asyncio sends `watch=True`; kmock's own WATCH action wants exactly `watch=true`
IS_WATCH = kmock.params(watch=re.compile("true", re.IGNORECASE))

Json = dict[str, Any]


def running(name: str, n: int, version: str = "1") -> Json:
    """A running pod with tag `v{n}` in its spec and digest(n) as its status imageID."""
    obj = pod(name, "ns", {"c": f"{HOST}/app:v{n}"}, image_ids={"c": f"{HOST}/app@{digest(n)}"})
    obj["metadata"] |= {"uid": f"uid-{name}", "resourceVersion": version}
    return obj


def event(kind: str, obj: Json) -> Json:
    return {"type": kind, "object": obj}


def status(code: int, reason: str, message: str) -> Json:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


@dataclass
class PodList:
    """What the scripted LIST answers; tests change it to play a cluster that moved on."""

    version: str = "100"
    pods: list[Json] = field(default_factory=list)
    next_page: str = ""

    def render(self) -> Json:
        meta: Json = {"resourceVersion": self.version}
        if self.next_page:
            meta["continue"] = self.next_page
        return {"kind": "PodList", "apiVersion": "v1", "metadata": meta, "items": self.pods}


@dataclass
class Harness:
    km: kmock.KubernetesScaffold
    cluster: Cluster
    index: InUseIndex
    tracker: SourceTracker
    tg: anyio.abc.TaskGroup
    listing: PodList
    lists: kmock.View
    # GET /api/v1/pods without `watch` (and without `continue`: pages are scripted per test)
    watches: kmock.View
    # GET /api/v1/pods?watch=True

    def watch(self) -> Watcher:
        watcher = Watcher(
            self.cluster, KINDS["pods"], "", view=View(self.index, self.tracker), options=FAST
        )
        self.tg.start_soon(watcher.run)
        return watcher

    def requests(self, view: kmock.View) -> list[kmock.Request]:
        return list(view)

    async def streaming(self) -> None:
        """Wait until one watch stream is open and kmock's handler waits for what to send."""
        with anyio.fail_after(2):
            while len(self.watches[...]) != 1:  # noqa: ASYNC110 - kmock offers no event for it
                await anyio.sleep(0.002)

    async def stream(self, *items: kmock.Payload, keep_open: bool = True) -> None:
        """Send items down the open watch stream, then keep it open (or end it normally).

        kmock feeds a live stream only if its handler is waiting for the next batch at the
        moment of feeding, so wait for that; the check and the feed happen with no await
        between them. Dicts go as JSON lines, bytes as they are.
        """
        await self.streaming()
        self.watches[...] << ((*items, ...) if keep_open else items)
        await anyio.lowlevel.checkpoint()


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Every server, client, stream and watcher a test starts is gone when it ends."""
    before = asyncio.all_tasks()
    yield
    # setup and teardown run in different tasks of anyio's runner: only ours count
    leaked = [
        task
        for task in asyncio.all_tasks() - before - {asyncio.current_task()}
        if "TestRunner" not in getattr(task.get_coro(), "__qualname__", "")
    ]
    assert not leaked


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    # The scaffold is kmock's stateless Kubernetes API (discovery, 404 Status for what is not
    # scripted); its stateful emulator would answer our watch as a LIST (see the last test).
    async with kmock.KubernetesScaffold() as km, kmock.Server(km):
        listing = PodList()
        pods = km[GET_PODS]
        lists = pods[lambda req: "watch" not in req.params and "continue" not in req.params]
        lists << (lambda: listing.render())
        watches = pods[IS_WATCH]
        watches << (b"", ...)  # send the headers at once, then stream whatever is fed
        path = write_kubeconfig(tmp_path / "config", {"kmock": str(km.url)}, token=TOKEN)
        async with (
            connect(kubeconfig=str(path), contexts=(), in_cluster=False) as (cluster,),
            anyio.create_task_group() as tg,
        ):
            yield Harness(km, cluster, InUseIndex(), SourceTracker(), tg, listing, lists, watches)
            tg.cancel_scope.cancel()
        assert km.errors == []  # kmock collects its own handler failures here


async def test_list_reads_digests_from_status_and_tags_from_spec(harness: Harness) -> None:
    harness.listing.pods = [running("a", 1), running("b", 2)]
    listed = await list_kind(harness.cluster, KINDS["pods"], None)
    assert listed.pages == 1
    assert listed.resource_version == "100"
    assert set(listed.objects) == {"uid-a", "uid-b"}
    assert listed.objects["uid-a"].digests == {digest(1)}
    assert {t.tag for t in listed.objects["uid-a"].tags} == {"v1"}
    assert {t.repository.name for t in listed.objects["uid-b"].tags} == {"app"}
    (sent,) = harness.requests(harness.lists)
    assert sent.params == {"limit": str(LIST_PAGE)}
    assert sent.headers["Authorization"] == f"Bearer {TOKEN}"


async def test_list_follows_continue_to_a_second_page(harness: Harness) -> None:
    # kmock does not page by itself: the second page is a reaction keyed on the token
    harness.listing.pods = [running("a", 1), running("b", 2)]
    harness.listing.next_page = "page-2"
    second = PodList(version="101", pods=[running("c", 3)])  # a different version on purpose
    page_two = harness.km[GET_PODS][kmock.params({"continue": "page-2"})]
    page_two << (lambda: second.render())

    listed = await list_kind(harness.cluster, KINDS["pods"], None, page_size=2)

    assert listed.pages == 2
    assert set(listed.objects) == {"uid-a", "uid-b", "uid-c"}
    assert listed.objects["uid-c"].digests == {digest(3)}
    assert listed.resource_version == "100"  # the snapshot is the first page's
    (first,) = harness.requests(harness.lists)
    (then,) = harness.requests(page_two)
    assert first.params == {"limit": "2"}
    assert then.params == {"limit": "2", "continue": "page-2"}


async def test_watch_starts_from_the_list_version_and_applies_events(harness: Harness) -> None:
    harness.listing.pods = [running("a", 1)]
    watcher = harness.watch()
    await harness.streaming()
    assert harness.tracker.sources[PODS].connected
    assert harness.index.digest_in_use(digest(1))
    (sent,) = harness.requests(harness.watches)
    assert sent.params["resourceVersion"] == "100"
    assert sent.params["watch"].lower() == "true"
    assert sent.params["allowWatchBookmarks"].lower() == "true"
    assert sent.params["timeoutSeconds"] == "30"

    await harness.stream(event("ADDED", running("b", 2, "101")))
    await eventually(lambda: harness.index.digest_in_use(digest(2)))
    await harness.stream(event("MODIFIED", running("b", 3, "102")))
    await eventually(lambda: harness.index.digest_in_use(digest(3)))
    assert not harness.index.digest_in_use(digest(2))
    await harness.stream(event("DELETED", running("b", 3, "103")))
    await eventually(lambda: not harness.index.digest_in_use(digest(3)))
    assert harness.index.digest_in_use(digest(1))
    assert watcher.sink.counts.applied == 3
    assert watcher.version == "103"

    # a normal end of the stream resumes from the last event's version, without a LIST
    await harness.stream(keep_open=False)
    await eventually(lambda: len(harness.requests(harness.watches)) == 2)
    assert harness.requests(harness.watches)[-1].params["resourceVersion"] == "103"
    assert len(harness.requests(harness.lists)) == 1
    await harness.stream(event("ADDED", running("c", 4, "104")))
    await eventually(lambda: harness.index.digest_in_use(digest(4)))


async def test_unknown_and_malformed_lines_are_skipped_and_counted(harness: Harness) -> None:
    watcher = harness.watch()
    await harness.stream(
        event("FUTURE", {"metadata": {"resourceVersion": "101"}}),
        b"{not json\n",
        event("ADDED", {"metadata": {"name": "no-uid", "resourceVersion": "102"}}),
        event("ADDED", running("after", 7, "103")),
    )
    await eventually(lambda: harness.index.digest_in_use(digest(7)))
    assert watcher.sink.counts.unknown == 1
    assert watcher.sink.counts.malformed == 2
    assert watcher.sink.counts.applied == 1
    assert watcher.version == "103"
    # nothing broke: still the first stream and the first LIST
    assert len(harness.requests(harness.watches)) == 1
    assert len(harness.requests(harness.lists)) == 1


@pytest.mark.parametrize("how", ["ERROR event", "HTTP 410"])
async def test_410_gone_lists_again_and_replaces_the_view(harness: Harness, how: str) -> None:
    # kmock has no history to compact: the test plays it. Pod "a" is deleted while the
    # server forgets version 100, so only a fresh LIST can learn it is gone.
    harness.listing.pods = [running("a", 1)]
    watcher = harness.watch()
    await harness.streaming()
    harness.listing.version, harness.listing.pods = "200", [running("b", 2, "150")]
    gone = status(410, "Expired", "too old resource version: 100 (150)")
    expired = harness.watches[kmock.params(resourceVersion="100")].override << 410 << gone
    if how == "ERROR event":
        await harness.stream(event("ERROR", gone))  # in the open stream
    else:
        await harness.stream(keep_open=False)  # the stream ends; resuming from 100 gets 410
    await eventually(lambda: len(harness.requests(harness.lists)) == 2)
    await eventually(lambda: harness.index.digest_in_use(digest(2)))
    assert not harness.index.digest_in_use(digest(1))
    assert harness.tracker.sources[PODS].relists == 1
    await harness.streaming()
    assert harness.requests(harness.watches)[-1].params["resourceVersion"] == "200"
    assert watcher.version == "200"
    assert len(harness.requests(expired)) == (1 if how == "HTTP 410" else 0)


@pytest.mark.parametrize("verb", ["list", "watch"])
async def test_403_marks_the_source_denied_until_permission_returns(
    harness: Harness, verb: str
) -> None:
    # "watch" is RBAC granting list but not watch: the LIST works, the WATCH is forbidden
    harness.listing.pods = [running("a", 1)]
    denied = [True]
    target = harness.lists if verb == "list" else harness.watches
    (
        target.override[lambda: denied[0]]
        << 403
        << status(403, "Forbidden", f'pods is forbidden: cannot {verb} resource "pods"')
    )
    watcher = harness.watch()
    await eventually(lambda: harness.tracker.sources[PODS].denied == 403)
    refusal = harness.tracker.refusal(
        harness.index, time.monotonic(), max_staleness=300, may_be_empty=lambda _source: False
    )
    assert refusal is not None
    assert "kmock/pods: answers 403" in refusal
    assert harness.index.is_synced(PODS) == (verb == "watch")

    denied[0] = False  # permission fixed: the source recovers by itself
    await eventually(
        lambda: harness.tracker.sources[PODS].connected and watcher.status.denied is None
    )
    assert harness.index.digest_in_use(digest(1))
    assert (
        harness.tracker.refusal(
            harness.index, time.monotonic(), max_staleness=300, may_be_empty=lambda _source: False
        )
        is None
    )


async def test_kubernetes_asyncio_sends_watch_True_which_kmock_serves_as_a_list(
    tmp_path: Path,
) -> None:
    """A compatibility finding, not a controller rule.

    kubernetes_asyncio url-encodes Python booleans as ``True``. The real API server parses
    query booleans leniently (anything but "0"/"false", any case, is true), but kmock's
    request parser only recognises ``watch == "true"``: with ``True`` its stateful emulator
    classifies the request as a LIST and answers one complete PodList instead of a stream.
    Our watcher counts that body as one malformed event and, as the "stream" ended normally,
    reopens it at once with no backoff: against this emulator a `Watcher` would spin, hundreds
    of requests a second while reporting itself connected. That gap is the watcher's, so it is
    described here rather than asserted.
    """
    async with kmock.KubernetesEmulator() as km, kmock.Server(km):
        km.objects[kmock.resource("v1/pods"), "ns", "a"] = running("a", 1)
        path = write_kubeconfig(tmp_path / "config", {"kmock": str(km.url)}, token=TOKEN)
        async with connect(kubeconfig=str(path), contexts=(), in_cluster=False) as (cluster,):
            call = request(cluster, KINDS["pods"], None)
            # the same call as Watcher._watch
            response = await call(
                watch=True,
                resource_version="100",
                allow_watch_bookmarks=True,
                timeout_seconds=5,
                _preload_content=False,
            )
            async with response:
                assert response.status == 200
                body = await response.read()
        (sent,) = list(km)
        assert sent.params["watch"] == "True"
        assert sent.params["allowWatchBookmarks"] == "True"
        assert sent.action == kmock.action.LIST
        answered = orjson.loads(body)
        assert answered["metadata"] == {"resourceVersion": "..."}
        assert [item["metadata"]["uid"] for item in answered["items"]] == ["uid-a"]
        sink = EventSink(SourceKey("kmock", "pods"), KINDS["pods"], InUseIndex())
        assert sink.apply_line(body) is None
        assert sink.counts.malformed == 1

        # the same emulator does stream for a lowercase `watch=true`: the case is the difference
        async with km.get("/api/v1/pods?watch=true") as streamed:
            first = orjson.loads(await streamed.content.readline())
        assert list(km)[-1].action == kmock.action.WATCH
        assert first["type"] == "ADDED"
        assert first["object"]["metadata"]["uid"] == "uid-a"
        assert km.errors == []


@pytest.mark.parametrize("answer", ["410 to every watch", "an empty 200 to every watch"])
async def test_a_server_ending_every_watch_at_once_is_not_hammered(
    tmp_path: Path, answer: str
) -> None:
    # Found with kmock: without backoff here the watcher spun at ~135 LISTs/s (410) or
    # ~255 WATCHes/s (empty 200, while reporting itself connected).
    async with kmock.KubernetesScaffold() as km, kmock.Server(km):
        pods = km[GET_PODS]
        pods[lambda req: "watch" not in req.params] << PodList().render()
        watches = pods[IS_WATCH]
        if answer.startswith("410"):
            watches << 410 << status(410, "Expired", "too old resource version")
        else:
            watches << 200
        path = write_kubeconfig(tmp_path / "config", {"kmock": str(km.url)}, token=TOKEN)
        index, tracker = InUseIndex(), SourceTracker()
        options = WatchOptions(
            timeout_seconds=30, inactivity=2.0, backoff_initial=0.2, backoff_max=1.0
        )
        async with connect(kubeconfig=str(path), contexts=(), in_cluster=False) as (cluster,):
            watcher = Watcher(
                cluster, KINDS["pods"], "", view=View(index, tracker), options=options
            )
            with anyio.move_on_after(1.0):
                await watcher.run()
        requests = len(list(pods))
        assert requests <= 12, requests  # backoff 0.2 s doubling: a handful in one second
        if not answer.startswith("410"):
            assert not tracker.sources[PODS].connected
