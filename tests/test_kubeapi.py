"""Kubernetes API answers read once, the error hierarchy, and what each catcher survives.

The catchers are the watcher's loop, the --once LIST and leader election: every class in
`REQUEST_FAILURES` must be survived by each (logged, the source or the Lease attempt failed),
and anything else still propagates, as before."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import anyio
import pytest

from controller import app
from controller.clusters import Cluster
from controller.identifiers import SourceKey
from controller.inventory import InUseIndex
from controller.kinds import KINDS
from controller.kube import client
from controller.kubeapi import (
    REQUEST_FAILURES,
    Expired,
    KubeError,
    LeaseError,
    SourceError,
    json_object,
    read_answer,
    read_ok,
)
from controller.leadership import ElectionConfig, LeaderElector
from controller.sources import _page
from controller.trust import SourceTracker, View
from controller.watching import Watcher, WatchOptions


class Answer:
    """What kubernetes_asyncio returns with `_preload_content=False`: an aiohttp-like response."""

    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self.body = body
        self.released = False

    async def __aenter__(self) -> Answer:
        return self

    async def __aexit__(self, *_: object) -> None:
        self.released = True

    async def read(self) -> bytes:
        return self.body


# -- the hierarchy ------------------------------------------------------------------------------


def test_one_hierarchy() -> None:
    assert issubclass(SourceError, KubeError)
    assert issubclass(Expired, SourceError)  # before: a separate Exception
    assert issubclass(LeaseError, KubeError)  # before: a separate Exception
    assert Expired("too old").status == 410
    assert not Expired("too old").denied
    assert SourceError("no", status=403).denied
    assert KubeError in REQUEST_FAILURES


def test_the_cluster_config_error_is_a_start_up_error_not_a_request_failure() -> None:
    from controller.clusters import ClusterConfigError
    from controller.settings import ConfigError

    assert issubclass(ClusterConfigError, ConfigError)
    assert not issubclass(ClusterConfigError, KubeError)
    # a ConfigError is a ValueError, so the catchers would take one for a request failure; none
    # can reach them: the clusters are connected (and their config checked) before any runs


# -- reading answers ----------------------------------------------------------------------------


async def test_an_answer_is_read_whole_and_released() -> None:
    answer = Answer(409, b"")
    assert await read_answer(answer) == (409, b"")
    assert answer.released


async def test_read_ok_wants_a_2xx_answer() -> None:
    answer = Answer(200, b'{"items": []}')
    assert await read_ok(answer, "LIST x") == b'{"items": []}'
    assert answer.released
    status = b'{"kind":"Status","reason":"Forbidden","message":"pods is forbidden"}'
    with pytest.raises(SourceError) as denied:
        await read_ok(Answer(403, status), "LIST x")
    assert str(denied.value) == "LIST x: HTTP 403: Forbidden: pods is forbidden"
    assert denied.value.status == 403


async def test_a_list_page_that_is_not_a_json_object_with_items_is_a_source_error() -> None:
    # through the general path (a deployment) and the pods' typed wire schema alike
    for kind in (KINDS["deployments"], KINDS["pods"]):
        with pytest.raises(SourceError, match=r"^LIST x: the answer is not JSON: b'<html>'$"):
            _page(kind, b"<html>", "LIST x")
        with pytest.raises(SourceError, match=r"^LIST x: the answer is not a JSON object$"):
            _page(kind, b"[1]", "LIST x")
        with pytest.raises(SourceError, match=r"^LIST x: `items` is not a list$"):
            _page(kind, b'{"items": {}}', "LIST x")


def test_a_list_page_whose_resource_version_is_null_has_none() -> None:
    # it was read as the string "None", which the watch would then have resumed from
    for kind in (KINDS["deployments"], KINDS["pods"]):
        body = b'{"metadata": {"resourceVersion": null}, "items": []}'
        assert _page(kind, body, "LIST x").resource_version == ""


def test_json_object_raises_the_error_asked_for() -> None:
    with pytest.raises(LeaseError, match=r"^HTTP 200: the answer is not JSON: b'nope'$"):
        json_object(b"nope", "HTTP 200", error=LeaseError)


# -- every catcher survives every request failure ----------------------------------------------

FAILURES: list[Callable[[], BaseException]] = [
    lambda: KubeError("x"),
    lambda: SourceError("LIST: HTTP 500: boom", status=500),
    lambda: LeaseError("HTTP 200: the answer is not JSON"),
    lambda: aiohttp.ClientConnectionError("refused"),
    lambda: TimeoutError(),
    lambda: ConnectionResetError("reset"),
    lambda: ValueError("not a URL"),
    lambda: client.exceptions.ApiException(status=0, reason="no content type"),
]
FAILURE_IDS = [
    "KubeError",
    "SourceError",
    "LeaseError",
    "ClientError",
    "TimeoutError",
    "OSError",
    "ValueError",
    "ApiException",
]


def test_the_cases_cover_every_request_failure() -> None:
    for failure in REQUEST_FAILURES:
        assert any(isinstance(f(), failure) for f in FAILURES), failure


CLUSTER = Cluster("c", api=None)
PODS = SourceKey("c", "pods")


def watcher() -> tuple[Watcher, SourceTracker]:
    tracker = SourceTracker()
    options = WatchOptions(backoff_initial=0.001, backoff_max=0.002)
    w = Watcher(CLUSTER, KINDS["pods"], "", view=View(InUseIndex(), tracker), options=options)
    return w, tracker


@pytest.mark.parametrize("failure", FAILURES, ids=FAILURE_IDS)
async def test_the_watcher_survives_a_request_failure_and_tries_again(
    failure: Callable[[], BaseException],
) -> None:
    w, tracker = watcher()
    attempts = 0

    async def list_once() -> str:
        nonlocal attempts
        attempts += 1
        raise failure()

    w.list_once = list_once  # type: ignore[method-assign]
    with anyio.move_on_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(w.run)
            while attempts < 3:  # noqa: ASYNC110 - polling the stub's count is the point
                await anyio.sleep(0.001)
            tg.cancel_scope.cancel()
    assert attempts >= 3
    status = tracker.sources[PODS]
    assert not status.connected
    assert status.denied is None


async def test_the_watcher_still_lets_anything_else_through() -> None:
    w, _ = watcher()

    async def list_once() -> str:
        raise KeyError("a bug")

    w.list_once = list_once  # type: ignore[method-assign]
    with pytest.raises(KeyError):
        await w.run()


async def test_an_expired_watch_lists_again_not_resumes() -> None:
    """Expired is a SourceError now: the loop must still take it for a re-list."""
    w, _ = watcher()
    w.version = "100"
    lists = 0

    async def list_once() -> str:
        nonlocal lists
        lists += 1
        return "200"

    async def expired() -> None:
        raise Expired("HTTP 410 on watch from 100")

    w.list_once = list_once  # type: ignore[method-assign]
    w._watch = expired  # type: ignore[method-assign]
    with anyio.move_on_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(w.run)
            while lists < 2:  # noqa: ASYNC110 - polling the stub's count is the point
                await anyio.sleep(0.001)
            tg.cancel_scope.cancel()
    assert lists >= 2  # the watch from "100" failed with 410: the version was dropped, listed


@pytest.mark.parametrize("failure", FAILURES, ids=FAILURE_IDS)
async def test_the_once_list_survives_a_request_failure_and_leaves_the_source_unsynced(
    failure: Callable[[], BaseException], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: an ApiException (and a LeaseError, never raised there) escaped the --once LIST."""

    async def list_once(self: Watcher) -> str:
        raise failure()

    monkeypatch.setattr(Watcher, "list_once", list_once)
    view = View()
    await app.list_everything([Watcher(CLUSTER, KINDS["pods"], "", view=view)])
    assert not view.index.is_synced(PODS)
    assert not view.tracker.sources[PODS].connected


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class LeaseApi:
    """The elector's Lease port: answers a create, then fails every request with `failure`."""

    namespace, name = "ns", "lease"

    def __init__(self) -> None:
        self.failure: Callable[[], BaseException] | None = None
        self.lease: dict[str, Any] = {}

    def _check(self) -> None:
        if self.failure is not None:
            raise self.failure()

    async def read(self) -> tuple[int, dict[str, Any]]:
        self._check()
        return (200, self.lease) if self.lease else (404, {})

    async def create(self, spec: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self._check()
        self.lease = {"metadata": {"resourceVersion": "1"}, "spec": spec}
        return 201, self.lease

    async def replace(self, lease: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self._check()
        self.lease = lease
        return 200, lease


def elector() -> tuple[LeaderElector, LeaseApi, Clock, list[bool]]:
    clock = Clock()
    changes: list[bool] = []
    config = ElectionConfig("lease", "ns", "me", 1.0, 0.6, 0.1)
    # any object does for the ApiClient (None would make kubernetes_asyncio open a session)
    elect = LeaderElector(object(), config, clock=clock, on_change=changes.append)
    api = LeaseApi()
    elect._lease_api = api  # type: ignore[assignment]
    return elect, api, clock, changes


@pytest.mark.parametrize("failure", FAILURES, ids=FAILURE_IDS)
async def test_leader_election_survives_a_request_failure_and_steps_down_on_time(
    failure: Callable[[], BaseException],
) -> None:
    """Before: a ValueError escaped `_attempt` and took leader election, and the process, down."""
    elect, api, clock, changes = elector()
    assert await elect._attempt()
    assert elect.is_leader

    api.failure = failure
    clock.now += 0.3
    assert not await elect._attempt()  # failed, and survived
    assert elect.is_leader  # still within the renew deadline of the last write
    clock.now += 0.31
    assert not await elect._attempt()
    leads: bool = elect.is_leader  # (a fresh name: mypy would narrow the property above)
    assert not leads  # the deadline passed without a renewal: pruning stops
    assert changes == [True, False]
    assert elect.leading_lost_reason() is not None


@pytest.mark.parametrize("failure", FAILURES, ids=FAILURE_IDS)
async def test_releasing_the_lease_survives_a_request_failure(
    failure: Callable[[], BaseException], caplog: pytest.LogCaptureFixture
) -> None:
    """The release runs in `run`'s finally on shutdown: a failure there is logged, and the
    Lease then expires on its own. Before: a ValueError escaped into the shutdown."""
    elect, api, _, _ = elector()
    assert await elect._attempt()
    api.failure = failure
    await elect._release()
    assert any("could not release Lease ns/lease" in r.getMessage() for r in caplog.records)


async def test_leader_election_still_lets_anything_else_through() -> None:
    elect, api, _, _ = elector()
    api.failure = lambda: KeyError("a bug")
    with pytest.raises(KeyError):
        await elect._attempt()


async def test_a_lease_answer_that_is_not_json_is_a_lease_error() -> None:
    from controller.leadership import _LeaseApi

    lease_api = _LeaseApi.__new__(_LeaseApi)
    with pytest.raises(LeaseError, match=r"^HTTP 200: the answer is not JSON: b'<html>'$"):
        await lease_api._answer(Answer(200, b"<html>"))
    with pytest.raises(LeaseError, match=r"^HTTP 500: the answer is not a JSON object$"):
        await lease_api._answer(Answer(500, b'"text"'))
    assert await lease_api._answer(Answer(404, b"")) == (404, {})
    assert await lease_api._answer(Answer(409, b'{"reason": "Conflict"}')) == (
        409,
        {"reason": "Conflict"},
    )
