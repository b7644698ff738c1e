"""An in-process kube-apiserver simulator that speaks the real HTTP wire protocol.

This module owns the fake Kubernetes API server used by the unit, end-to-end and sandbox
harnesses. No real kube-apiserver can be installed where the controller is tested, yet the
controller's one hard promise (never delete an image a cluster uses) depends on how it copes
with the API server's awkward corners: paged LISTs whose pages are snapshots of one
resourceVersion, short and empty pages, watches that replay from a resourceVersion, BOOKMARKs,
"410 Gone" after etcd compaction, RBAC denials, dropped streams and slow answers. The controller
is therefore driven through ``kubernetes_asyncio`` exactly as in production, against this server.

What it provides:

* :class:`KubeSimulator` - an ``aiohttp.web`` server on 127.0.0.1 (ephemeral port) holding an
  MVCC-like object store for pods, deployments, replicasets, statefulsets, daemonsets,
  controllerrevisions, jobs, cronjobs and leases, and for custom resources (namespaced or
  cluster-scoped, given at construction or installed and uninstalled at run time as CRDs are
  created and deleted), with a global integer resourceVersion, an event log, LIST with
  ``limit``/``continue``, WATCH with replay/bookmarks/timeouts, generic create/replace/delete
  with optimistic concurrency, bearer-token auth and fault injection, and the discovery
  documents (`/api`, `/apis`, ...) a client such as helm reads first.
  Its synchronous mutation methods must be called from the loop that runs it.
* :class:`ThreadedKubeSimulator` - the same server on a private event loop in a background
  thread, with thread-safe mutation methods, for synchronous callers (the sandbox and the
  end-to-end tests that run the controller as a subprocess).
* :func:`write_kubeconfig` and object builders (:func:`pod`, :func:`workload`,
  :func:`owner_reference`, :func:`custom_object`) producing realistic JSON.

It is harness code, not product code: it favours fidelity of the behaviours the controller
relies on over completeness (no PATCH, no label/field selectors - those answer 400 so a caller
relying on them notices - no protobuf, no admission).
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import builtins
import concurrent.futures
import contextlib
import copy
import hashlib
import logging
import secrets
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, NamedTuple, ParamSpec, Self, TypeVar

import orjson
import yaml
from aiohttp import web

from sandbox.ports import stop_runner

log = logging.getLogger(__name__)

JsonObj = dict[str, Any]
JsonList = list[JsonObj]
WatchExpiryMode = Literal["event", "http"]

_P = ParamSpec("_P")
_T = TypeVar("_T")

#: The identity RBAC denials are reported for (the controller's service account).
SIM_USER: Final = "system:serviceaccount:kube-system:kube-ecr-cleanup-controller"

_READ_VERBS: Final = ("get", "list", "watch")
_ALL_VERBS: Final = frozenset({"get", "list", "watch", "create", "update", "delete"})


# --------------------------------------------------------------------------------------------
# Resource catalogue
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResourceType:
    """One API resource the simulator serves: a built-in kind, or a custom resource installed."""

    plural: str
    kind: str
    group: str  # "" for the core group
    version: str
    namespaced: bool = True  # False for a cluster-scoped resource (served without namespaces/)

    @cached_property  # read on every write, replayed event and listed item
    def key(self) -> str:
        """How the in-process API names it: the plural of a built-in kind (``pods``), the
        qualified name of a custom resource (``scaledjobs.keda.sh``), so two groups' plurals
        never collide."""
        return self.qualified if self.custom else self.plural

    @cached_property
    def custom(self) -> bool:
        """Not one of the built-in kinds: a custom resource, installed in a simulator."""
        return RESOURCES.get(self.plural) != self

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def prefix(self) -> str:
        """The API path prefix, e.g. ``/api/v1`` or ``/apis/apps/v1``."""
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def qualified(self) -> str:
        """The name used in Status messages: ``pods``, ``leases.coordination.k8s.io``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


RESOURCES: Final[Mapping[str, ResourceType]] = {
    rt.plural: rt
    for rt in (
        ResourceType("pods", "Pod", "", "v1"),
        ResourceType("deployments", "Deployment", "apps", "v1"),
        ResourceType("replicasets", "ReplicaSet", "apps", "v1"),
        ResourceType("statefulsets", "StatefulSet", "apps", "v1"),
        ResourceType("daemonsets", "DaemonSet", "apps", "v1"),
        ResourceType("controllerrevisions", "ControllerRevision", "apps", "v1"),
        ResourceType("jobs", "Job", "batch", "v1"),
        ResourceType("cronjobs", "CronJob", "batch", "v1"),
        ResourceType("leases", "Lease", "coordination.k8s.io", "v1"),
    )
}
_BY_KIND: Final[Mapping[str, ResourceType]] = {rt.kind: rt for rt in RESOURCES.values()}


def resource_type(resource: str) -> ResourceType:
    """Look up a built-in resource by plural name (``"pods"``); ValueError if not one.

    A simulator serves these and the custom resources installed in it
    (:meth:`KubeSimulator.resource_type`)."""
    try:
        return RESOURCES[resource]
    except KeyError:
        raise ValueError(
            f"unknown resource {resource!r}; served: {', '.join(sorted(RESOURCES))}"
        ) from None


def resource_for(kind_or_obj: str | Mapping[str, Any]) -> str:
    """The plural resource name for a kind (``"Deployment"``) or an object carrying ``kind``."""
    kind = kind_or_obj if isinstance(kind_or_obj, str) else str(kind_or_obj.get("kind", ""))
    try:
        return _BY_KIND[kind].plural
    except KeyError:
        raise ValueError(f"no served resource for kind {kind!r}") from None


# --------------------------------------------------------------------------------------------
# Status errors
# --------------------------------------------------------------------------------------------

_REASONS: Final[Mapping[int, str]] = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def status_object(
    code: int,
    reason: str,
    message: str,
    *,
    details: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> JsonObj:
    """A ``metav1.Status`` failure object, as kube-apiserver renders it."""
    obj: JsonObj = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": dict(metadata or {}),
        "status": "Failure",
        "message": message,
        "reason": reason,
    }
    if details:
        obj["details"] = dict(details)
    obj["code"] = code
    return obj


class KubeSimError(Exception):
    """An API failure: raised by the in-process API and rendered as a Status over HTTP."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        details: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.details = dict(details or {})
        self.metadata = dict(metadata or {})
        self.headers = dict(headers or {})

    def status(self) -> JsonObj:
        return status_object(
            self.code, self.reason, self.message, details=self.details, metadata=self.metadata
        )


def _not_found(rt: ResourceType, name: str) -> KubeSimError:
    return KubeSimError(
        404,
        "NotFound",
        f'{rt.qualified} "{name}" not found',
        details={"name": name, "group": rt.group, "kind": rt.plural},
    )


def _already_exists(rt: ResourceType, name: str) -> KubeSimError:
    return KubeSimError(
        409,
        "AlreadyExists",
        f'{rt.qualified} "{name}" already exists',
        details={"name": name, "group": rt.group, "kind": rt.plural},
    )


def _conflict(rt: ResourceType, name: str, why: str) -> KubeSimError:
    return KubeSimError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {rt.qualified} "{name}": {why}',
        details={"name": name, "group": rt.group, "kind": rt.plural},
    )


def _bad_request(message: str) -> KubeSimError:
    return KubeSimError(400, "BadRequest", message)


def _too_old(requested: int, oldest: int) -> KubeSimError:
    return KubeSimError(410, "Expired", f"too old resource version: {requested} ({oldest})")


_CONTINUE_EXPIRED_MESSAGE: Final = (
    "The provided continue parameter is too old to display a consistent list result. "
    "You can start a new list without the continue parameter, or use the continue token in "
    "this response to retrieve the remainder of the results. Continuing with the provided "
    "token results in an inconsistent list - objects that were created, modified, or deleted "
    "between the time the first chunk was returned and now may show up in the list."
)


# --------------------------------------------------------------------------------------------
# Small parsing and formatting helpers
# --------------------------------------------------------------------------------------------

_GO_TRUE: Final = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE: Final = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def _parse_bool(value: str | None, param: str) -> bool:
    """Parse a query flag the way Go's ``strconv.ParseBool`` does (absent/empty is false)."""
    if value is None or value == "":
        return False
    if value in _GO_TRUE:
        return True
    if value in _GO_FALSE:
        return False
    raise _bad_request(f'invalid value for {param}: "{value}": invalid syntax')


def _parse_int(value: str | None, param: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value, 10)
    except ValueError:
        raise _bad_request(f'invalid value for {param}: "{value}": invalid syntax') from None


def _parse_rv(value: str) -> int:
    if not value.isdigit():
        raise _bad_request(f'invalid resource version "{value}"')
    return int(value)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj["metadata"]
    # a cluster-scoped object has no namespace: it is stored under ""
    return (str(meta.get("namespace", "")), str(meta["name"]))


def _namespace_of(rt: ResourceType, meta: Mapping[str, Any]) -> str:
    """Where an object of ``rt`` is stored: its namespace ("default" if unset), or "" when
    the resource is cluster-scoped (the apiserver ignores a namespace given there)."""
    return str(meta.get("namespace") or "default") if rt.namespaced else ""


def _place(rt: ResourceType, meta: JsonObj, name: str, namespace: str) -> None:
    """Stamp an object's identity: name, and namespace for a namespaced resource only."""
    meta["name"] = name
    if rt.namespaced:
        meta["namespace"] = namespace
    else:
        meta.pop("namespace", None)


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def _event_line(event_type: str, obj: Mapping[str, Any]) -> bytes:
    return orjson.dumps({"type": event_type, "object": obj}) + b"\n"


def _encode_continue(payload: Mapping[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(payload)).rstrip(b"=").decode("ascii")


def _decode_continue(token: str) -> tuple[int, tuple[str, str] | None, int, str, str]:
    """Decode a continue token into (rv, start-after key, page index, resource, namespace)."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = orjson.loads(raw)
        rv, start, page = data["rv"], data["start"], data["p"]
        resource, namespace = data["r"], data["ns"]
        if not (isinstance(rv, int) and isinstance(page, int)):
            raise TypeError("rv and p must be integers")
        if not (isinstance(resource, str) and isinstance(namespace, str)):
            raise TypeError("r and ns must be strings")
        key: tuple[str, str] | None = None
        if start is not None:
            if not (isinstance(start, list) and len(start) == 2):
                raise TypeError("start must be a [namespace, name] pair")
            key = (str(start[0]), str(start[1]))
    except (ValueError, TypeError, KeyError, orjson.JSONDecodeError) as exc:
        raise _bad_request(f"continue key is not valid: {exc}") from None
    return rv, key, page, resource, namespace


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


class RequestRecord(NamedTuple):
    """One HTTP request the simulator received (recorded before auth and faults)."""

    method: str
    path: str
    query: dict[str, str]
    received_at: float = 0.0
    # time.monotonic() on arrival (the same clock in every process of the machine)

    @property
    def is_watch(self) -> bool:
        return self.query.get("watch", "") in _GO_TRUE


class WatchEvent(NamedTuple):
    """One logged write: the watch event type, the object snapshot and its resourceVersion."""

    type: str
    object: JsonObj
    rv: int
    resource: str


@dataclass(frozen=True)
class _Event:
    rv: int
    resource: str
    namespace: str
    name: str
    type: str
    obj: JsonObj  # state after the write (for DELETED: last state stamped with the delete rv)
    prev: JsonObj | None  # state before the write (None for ADDED); used to rebuild snapshots
    line: bytes  # the serialized watch event, newline-terminated


_WatchItem = tuple[Literal["line", "close", "drop"], bytes]


@dataclass(eq=False)
class _Watch:
    resource: str
    namespace: str | None
    bookmarks: bool
    after_rv: int = 0  # only events newer than this are delivered (a "future" start rv)
    queue: asyncio.Queue[_WatchItem] = field(default_factory=asyncio.Queue)


@dataclass
class _Fault:
    remaining: int
    status: int
    path_prefix: str | None


# --------------------------------------------------------------------------------------------
# The simulator
# --------------------------------------------------------------------------------------------


class KubeSimulator:
    """A kube-apiserver stand-in served over HTTP by aiohttp in the running event loop.

    Use as ``async with KubeSimulator(...) as sim:`` (or ``await sim.start()`` /
    ``await sim.stop()``). The synchronous state and fault methods are not thread-safe: call
    them from the loop running the server, or use :class:`ThreadedKubeSimulator`.
    """

    def __init__(
        self,
        *,
        token: str | None = None,
        short_pages: bool = False,
        bookmark_interval: float = 1.0,
        retain_events: int | None = None,
        default_watch_timeout: float | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        custom_resources: Iterable[ResourceType] = (),
    ) -> None:
        if bookmark_interval <= 0:
            raise ValueError("bookmark_interval must be positive")
        if retain_events is not None and retain_events < 0:
            raise ValueError("retain_events must be >= 0")
        self.token = token
        self.short_pages = short_pages
        self.bookmark_interval = bookmark_interval
        self.retain_events = retain_events
        self.default_watch_timeout = default_watch_timeout
        self.host = host
        self._bind_port = port
        #: Every request received, in order: (method, path, query).
        self.requests: list[RequestRecord] = []

        self._types: dict[str, ResourceType] = dict(RESOURCES)
        # what is served, by key: the built-in kinds, then the custom resources installed
        self._objects: dict[str, dict[tuple[str, str], JsonObj]] = {r: {} for r in RESOURCES}
        # A fresh etcd starts at revision 1; "0" means "any version" to the API, so the list
        # resourceVersion of an empty store must not be "0".
        self._rv = 1
        self._compacted_rv = 0  # a watch/continue from rv R is servable iff R >= this
        self._snapshots: dict[tuple[str, int, str | None], JsonList] = {}
        self._serialized: dict[tuple[str, str, str], bytes] = {}
        # (namespace, name, resourceVersion) -> the object as a list item, serialized once
        # (resource, rv, namespace) -> the sorted objects then: the state at an rv is fixed
        self._log: deque[_Event] = deque()
        self._watches: set[_Watch] = set()
        self._denials: set[tuple[str, str | None, str]] = set()
        self._faults: list[_Fault] = []
        self._latency = 0.0
        self._watch_expiry_mode: WatchExpiryMode = "event"

        self._runner: web.AppRunner | None = None
        self._sock: socket.socket | None = None
        self._port: int | None = None
        self._stopping: asyncio.Event | None = None
        for rt in custom_resources:
            self.install(rt)

    # ---------------------------------------------------------------- lifecycle

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("simulator is not started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self) -> Self:
        if self._runner is not None:
            raise RuntimeError("simulator already started")
        self._stopping = asyncio.Event()
        app = web.Application(client_max_size=8 * 2**20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a client that goes away cancels its handler, so idle watch
        # streams are unregistered immediately instead of at the next write.
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self._bind_port))
            site = web.SockSite(runner, sock)
            await site.start()
        except BaseException:
            sock.close()
            await runner.cleanup()
            raise
        self._port = int(sock.getsockname()[1])
        self._runner, self._sock = runner, sock
        log.info("kube simulator listening on %s", self.url)
        return self

    async def stop(self) -> None:
        """Stop serving; open watch streams are ended cleanly and promptly."""
        runner, sock, self._runner, self._sock = self._runner, self._sock, None, None
        if runner is None or sock is None:
            return
        if self._stopping is not None:
            self._stopping.set()
        for watch in builtins.list(self._watches):
            watch.queue.put_nowait(("close", b""))
        await stop_runner(runner, sock)
        log.info("kube simulator on port %s stopped", self._port)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ---------------------------------------------------------------- in-process state API

    @property
    def resource_version(self) -> int:
        """The current global resourceVersion (etcd revision)."""
        return self._rv

    @property
    def compacted_resource_version(self) -> int:
        """Watches and continue tokens from an rv below this answer 410 Expired."""
        return self._compacted_rv

    def resource_type(self, resource: str) -> ResourceType:
        """A served resource by key: a built-in plural (``pods``) or a custom resource's
        qualified name (``scaledjobs.keda.sh``), or its plural alone when no other served
        resource has it; ValueError if not served."""
        rt = self._types.get(resource)
        if rt is None:
            same = [t for t in self._types.values() if t.plural == resource]
            if len(same) == 1:
                rt = same[0]
        if rt is None:
            raise ValueError(
                f"unknown resource {resource!r}; served: {', '.join(sorted(self._types))}"
            )
        return rt

    @property
    def resource_types(self) -> tuple[ResourceType, ...]:
        """Every resource served now: the built-in kinds, then the custom resources installed."""
        return tuple(self._types.values())

    def install(self, rt: ResourceType) -> ResourceType:
        """Serve a custom resource from now on, as a CustomResourceDefinition does once created.

        Its objects live under ``/apis/GROUP/VERSION/[namespaces/NS/]PLURAL`` with the same
        LIST, WATCH, writes, denials and faults as the built-in kinds, and it appears in the
        discovery documents. Installing the same type again changes nothing; a type that
        clashes with a served one (same group, version and plural) is refused.
        """
        if not rt.group:
            raise ValueError(f"a custom resource needs an API group: {rt}")
        if not rt.custom:
            raise ValueError(f"{rt.qualified} is a built-in resource")
        for served in self._types.values():
            if served == rt:
                return rt
            if (served.group, served.version, served.plural) == (rt.group, rt.version, rt.plural):
                raise ValueError(f"{rt.qualified} is already served as {served}")
            if (served.group, served.plural) == (rt.group, rt.plural):
                raise ValueError(
                    f"{rt.qualified} is already served in version {served.version}; the "
                    "simulator serves one version of a resource"
                )
        self._types[rt.key] = rt
        self._objects[rt.key] = {}
        log.info("kube simulator serves %s/%s", rt.api_version, rt.plural)
        return rt

    def uninstall(self, resource: str) -> int:
        """Stop serving a custom resource, as when its CustomResourceDefinition is deleted.

        Like the apiserver, every object of it is deleted first (open watches see each
        DELETED event), then its watches end and its paths answer 404 again. Returns how
        many objects were deleted.
        """
        rt = self.resource_type(resource)
        if not rt.custom:
            raise ValueError(f"{rt.qualified} is a built-in resource")
        keys = sorted(self._objects[rt.key])
        for namespace, name in keys:
            self._delete(rt, namespace, name)
        for watch in self._matching_watches(rt.key):
            watch.queue.put_nowait(("close", b""))
        del self._types[rt.key]
        del self._objects[rt.key]
        self._snapshots = {k: v for k, v in self._snapshots.items() if k[0] != rt.key}
        log.info("kube simulator no longer serves %s/%s", rt.api_version, rt.plural)
        return len(keys)

    def create(self, resource: str, obj: Mapping[str, Any]) -> JsonObj:
        """Create an object (namespace defaults to "default", and a cluster-scoped object has
        none); KubeSimError 409 if it exists."""
        return self._create(self.resource_type(resource), obj)

    def update(self, resource: str, obj: Mapping[str, Any]) -> JsonObj:
        """Replace an object. If ``metadata.resourceVersion`` is set it must be current (409)."""
        return self._replace(self.resource_type(resource), obj)

    def apply(self, resource: str, obj: Mapping[str, Any]) -> JsonObj:
        """Create the object, or replace it unconditionally if it exists (test convenience)."""
        rt = self.resource_type(resource)
        meta = obj.get("metadata") or {}
        key = (_namespace_of(rt, meta), str(meta.get("name", "")))
        if key in self._objects[rt.key]:
            body = copy.deepcopy(dict(obj))
            body.setdefault("metadata", {}).pop("resourceVersion", None)
            return self._replace(rt, body)
        return self._create(rt, obj)

    def delete(self, resource: str, namespace: str, name: str) -> JsonObj:
        """Delete an object and return its last state (namespace "" for a cluster-scoped
        one); KubeSimError 404 if missing."""
        return self._delete(self.resource_type(resource), namespace, name)

    def get(self, resource: str, namespace: str, name: str) -> JsonObj | None:
        obj = self._objects[self.resource_type(resource).key].get((namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def list(self, resource: str, namespace: str | None = None) -> JsonList:
        """Current objects of a resource, sorted by namespace/name (deep copies)."""
        store = self._objects[self.resource_type(resource).key]
        return [
            copy.deepcopy(store[k]) for k in sorted(store) if namespace is None or k[0] == namespace
        ]

    def events(self, resource: str | None = None) -> builtins.list[WatchEvent]:
        """The retained event log (oldest first), optionally for one resource (deep copies).

        The events of an uninstalled custom resource stay: name it by its qualified name."""
        key = None if resource is None else self._key_of(resource)
        return [
            WatchEvent(e.type, copy.deepcopy(e.obj), e.rv, e.resource)
            for e in self._log
            if key is None or e.resource == key
        ]

    def compact(self) -> int:
        """Drop the event log up to the current rv, like etcd compaction; returns that rv.

        Afterwards a watch from an older rv gets a 410 (ERROR event, or HTTP 410 in "http"
        mode) and continue tokens of older list snapshots answer 410 Expired.
        """
        self._compacted_rv = self._rv
        self._log.clear()
        log.info("kube simulator compacted at rv %d", self._rv)
        return self._rv

    # ---------------------------------------------------------------- watch control

    def watch_count(self, resource: str | None = None) -> int:
        """How many watch streams are open (optionally for one resource)."""
        return len(self._matching_watches(resource))

    def send_bookmarks(self, resource: str | None = None) -> int:
        """Send a BOOKMARK at the current rv to every bookmark-enabled watch; returns count."""
        sent = 0
        for watch in self._matching_watches(resource):
            if watch.bookmarks:
                watch.queue.put_nowait(("line", self._bookmark_line(self._types[watch.resource])))
                sent += 1
        return sent

    def drop_watches(self, resource: str | None = None) -> int:
        """Cut open watch streams abruptly (no terminating chunk); returns how many.

        Events already queued for a stream are written first, then its TCP connection is
        aborted, so the client's read fails with a payload/connection error.
        """
        dropped = 0
        for watch in self._matching_watches(resource):
            watch.queue.put_nowait(("drop", b""))
            dropped += 1
        log.info("kube simulator dropping %d watch stream(s)", dropped)
        return dropped

    def inject_raw_event(self, resource: str, line: bytes) -> int:
        """Write ``line`` verbatim (newline added if missing) to open watches of a resource."""
        self.resource_type(resource)
        if not line.endswith(b"\n"):
            line += b"\n"
        watches = self._matching_watches(resource)
        for watch in watches:
            watch.queue.put_nowait(("line", line))
        return len(watches)

    def set_watch_expiry_mode(self, mode: WatchExpiryMode) -> None:
        """How a watch from a compacted rv fails: "event" (200 + ERROR 410 event, the
        kube-apiserver way) or "http" (the request itself answers HTTP 410 with a Status)."""
        if mode not in ("event", "http"):
            raise ValueError(f"unknown watch expiry mode {mode!r}")
        self._watch_expiry_mode = mode

    # ---------------------------------------------------------------- faults

    def deny(
        self, resource: str, namespace: str | None = None, verbs: Iterable[str] = _READ_VERBS
    ) -> None:
        """Answer 403 Forbidden for ``verbs`` on a resource, cluster-wide or in one namespace.

        Like RBAC, a denial in one namespace also forbids the all-namespaces LIST/WATCH (which
        needs cluster-wide permission).
        """
        key = self.resource_type(resource).key
        for verb in verbs:
            if verb not in _ALL_VERBS:
                raise ValueError(f"unknown verb {verb!r}")
            self._denials.add((key, namespace, verb))

    def allow(self, resource: str, namespace: str | None = None) -> None:
        """Lift denials: for one namespace, or (namespace None) every denial of the resource."""
        key = self._key_of(resource)
        self._denials = {
            d
            for d in self._denials
            if not (d[0] == key and (namespace is None or d[1] == namespace))
        }

    def set_latency(self, seconds: float) -> None:
        """Delay every response by ``seconds`` (0 disables)."""
        self._latency = max(0.0, seconds)

    def fail_next(self, count: int, status: int = 500, *, path_prefix: str | None = None) -> None:
        """Answer the next ``count`` requests (optionally only those whose path starts with
        ``path_prefix``) with ``status`` and a Status body, before auth and routing."""
        if count > 0:
            self._faults.append(_Fault(count, status, path_prefix))

    def count(
        self, method: str | None = None, path_prefix: str = "", *, watch: bool | None = None
    ) -> int:
        """Count recorded requests by method, path prefix and watch-ness."""
        return sum(
            1
            for r in self.requests
            if (method is None or r.method == method.upper())
            and r.path.startswith(path_prefix)
            and (watch is None or r.is_watch == watch)
        )

    # ---------------------------------------------------------------- store internals

    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def _record(
        self, rt: ResourceType, event_type: str, obj: JsonObj, prev: JsonObj | None, rv: int
    ) -> None:
        namespace, name = _key(obj)
        event = _Event(
            rv, rt.key, namespace, name, event_type, obj, prev, _event_line(event_type, obj)
        )
        self._log.append(event)
        if self.retain_events is not None:
            while len(self._log) > self.retain_events:
                self._compacted_rv = self._log.popleft().rv
        for watch in self._watches:
            if (
                watch.resource == rt.key
                and watch.namespace in (None, namespace)
                and rv > watch.after_rv
            ):
                watch.queue.put_nowait(("line", event.line))

    @staticmethod
    def _normalise(rt: ResourceType, obj: Mapping[str, Any]) -> JsonObj:
        if not isinstance(obj, Mapping):
            raise _bad_request("the request body must be a JSON object")
        kind = obj.get("kind")
        if kind not in (None, "", rt.kind):
            raise _bad_request(f"the kind {kind!r} does not match the resource {rt.plural!r}")
        body = copy.deepcopy(dict(obj))
        meta = body.get("metadata")
        if meta is None:
            meta = {}
        if not isinstance(meta, dict):
            raise _bad_request("metadata must be an object")
        body.pop("kind", None)
        body.pop("apiVersion", None)
        body.pop("metadata", None)
        return {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": meta, **body}

    def _create(self, rt: ResourceType, obj: Mapping[str, Any]) -> JsonObj:
        body = self._normalise(rt, obj)
        meta = body["metadata"]
        name = meta.get("name") or ""
        if not name and meta.get("generateName"):
            name = f"{meta['generateName']}{secrets.token_hex(3)[:5]}"
        if not name:
            raise KubeSimError(422, "Invalid", "name or generateName is required")
        namespace = _namespace_of(rt, meta)
        store = self._objects[rt.key]
        if (namespace, name) in store:
            raise _already_exists(rt, name)
        rv = self._next_rv()
        _place(rt, meta, name, namespace)
        meta["resourceVersion"] = str(rv)
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", _now())
        store[(namespace, name)] = body
        self._record(rt, "ADDED", body, None, rv)
        return copy.deepcopy(body)

    def _replace(self, rt: ResourceType, obj: Mapping[str, Any]) -> JsonObj:
        body = self._normalise(rt, obj)
        meta = body["metadata"]
        name = str(meta.get("name") or "")
        namespace = _namespace_of(rt, meta)
        store = self._objects[rt.key]
        current = store.get((namespace, name))
        if current is None:
            raise _not_found(rt, name)
        cur_meta = current["metadata"]
        wanted_rv = meta.get("resourceVersion")
        if wanted_rv not in (None, "") and str(wanted_rv) != cur_meta["resourceVersion"]:
            raise _conflict(
                rt,
                name,
                "the object has been modified; please apply your changes to the latest "
                "version and try again",
            )
        if meta.get("uid") not in (None, "", cur_meta["uid"]):
            raise _conflict(
                rt,
                name,
                f"Precondition failed: UID in precondition: {meta['uid']}, "
                f"UID in object meta: {cur_meta['uid']}",
            )
        rv = self._next_rv()
        _place(rt, meta, name, namespace)
        meta.update(
            uid=cur_meta["uid"],
            creationTimestamp=cur_meta["creationTimestamp"],
            resourceVersion=str(rv),
        )
        store[(namespace, name)] = body
        self._record(rt, "MODIFIED", body, current, rv)
        return copy.deepcopy(body)

    def _delete(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        preconditions: Mapping[str, Any] | None = None,
    ) -> JsonObj:
        store = self._objects[rt.key]
        current = store.get((namespace, name))
        if current is None:
            raise _not_found(rt, name)
        cur_meta = current["metadata"]
        pre = preconditions or {}
        if pre.get("resourceVersion") not in (None, "", cur_meta["resourceVersion"]):
            raise _conflict(
                rt,
                name,
                f"Precondition failed: ResourceVersion in precondition: "
                f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                f"{cur_meta['resourceVersion']}",
            )
        if pre.get("uid") not in (None, "", cur_meta["uid"]):
            raise _conflict(
                rt,
                name,
                f"Precondition failed: UID in precondition: {pre['uid']}, "
                f"UID in object meta: {cur_meta['uid']}",
            )
        rv = self._next_rv()
        del store[(namespace, name)]
        # The DELETED event carries the last state stamped with the deletion's revision.
        tombstone = {**current, "metadata": {**cur_meta, "resourceVersion": str(rv)}}
        self._record(rt, "DELETED", tombstone, current, rv)
        return copy.deepcopy(current)

    def _snapshot(self, rt: ResourceType, rv: int, namespace: str | None) -> JsonList:
        """The objects of a resource as of ``rv`` (shared, not copied), sorted by key.

        Rebuilt by undoing logged events newer than ``rv`` - possible exactly when ``rv`` has
        not been compacted, as with etcd. The state at an rv never changes, so the last few
        snapshots are kept: a paged LIST of 50,000 objects asks for the same one 100 times.
        """
        cached = self._snapshots.get((rt.key, rv, namespace))
        if cached is not None:
            return cached
        found = self._build_snapshot(rt, rv, namespace)
        if len(self._snapshots) >= 8:
            self._snapshots.pop(next(iter(self._snapshots)))
        self._snapshots[(rt.key, rv, namespace)] = found
        return found

    def _build_snapshot(self, rt: ResourceType, rv: int, namespace: str | None) -> JsonList:
        state = dict(self._objects[rt.key])
        for event in reversed(self._log):
            if event.rv <= rv:
                break
            if event.resource != rt.key:
                continue
            key = (event.namespace, event.name)
            if event.prev is None:
                state.pop(key, None)
            else:
                state[key] = event.prev
        return [state[k] for k in sorted(state) if namespace is None or k[0] == namespace]

    def _matching_watches(self, resource: str | None) -> builtins.list[_Watch]:
        key = None if resource is None else self._key_of(resource)
        return [w for w in self._watches if key is None or w.resource == key]

    def _key_of(self, resource: str) -> str:
        """The key of a served resource, or ``resource`` itself (an uninstalled one's key)."""
        try:
            return self.resource_type(resource).key
        except ValueError:
            return resource

    def _bookmark_line(
        self, rt: ResourceType, annotations: Mapping[str, str] | None = None
    ) -> bytes:
        meta: JsonObj = {"resourceVersion": str(self._rv)}
        if annotations:
            meta["annotations"] = dict(annotations)
        return _event_line(
            "BOOKMARK", {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": meta}
        )

    # ---------------------------------------------------------------- HTTP front

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        query = dict(request.query)
        self.requests.append(RequestRecord(request.method, request.path, query, time.monotonic()))
        log.debug("kube simulator %s %s %s", request.method, request.path, query)
        if self._latency > 0 and self._stopping is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._latency):
                    await self._stopping.wait()
        try:
            if self._stopping is not None and self._stopping.is_set():
                raise KubeSimError(503, "ServiceUnavailable", "apiserver is shutting down")
            self._inject_fault(request.path)
            self._authenticate(request)
            return await self._route(request, query)
        except KubeSimError as err:
            return _json_response(err.status(), err.code, err.headers)
        except Exception as exc:
            log.exception("kube simulator failed on %s %s", request.method, request.path)
            return _json_response(
                status_object(500, "InternalError", f"kube simulator: {exc}"), 500
            )

    def _inject_fault(self, path: str) -> None:
        for fault in self._faults:
            if fault.path_prefix is None or path.startswith(fault.path_prefix):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                code = fault.status
                reason = _REASONS.get(code, "InternalError" if code >= 500 else "Unknown")
                headers = {"Retry-After": "1"} if code in (429, 503) else None
                raise KubeSimError(
                    code, reason, f"injected fault: HTTP {code} for {path}", headers=headers
                )

    def _authenticate(self, request: web.Request) -> None:
        if self.token is None:
            return
        if request.headers.get("Authorization", "") != f"Bearer {self.token}":
            raise KubeSimError(401, "Unauthorized", "Unauthorized")

    def _authorize(
        self, rt: ResourceType, verb: str, namespace: str | None, name: str | None = None
    ) -> None:
        denied = (rt.key, None, verb) in self._denials
        if namespace is not None:
            denied = denied or (rt.key, namespace, verb) in self._denials
        else:
            denied = denied or any(d[0] == rt.key and d[2] == verb for d in self._denials)
        if not denied:
            return
        what = f'{rt.qualified} "{name}"' if name else rt.qualified
        scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
        details: JsonObj = {"group": rt.group, "kind": rt.plural}
        if name:
            details["name"] = name
        raise KubeSimError(
            403,
            "Forbidden",
            f'{what} is forbidden: User "{SIM_USER}" cannot {verb} resource "{rt.plural}" '
            f'in API group "{rt.group}" {scope}',
            details=details,
        )

    async def _route(self, request: web.Request, query: Mapping[str, str]) -> web.StreamResponse:
        path = request.path
        method = request.method
        if path == "/version":
            return _json_response(
                {
                    "major": "1",
                    "minor": "31",
                    "gitVersion": "v1.31.0-kubesim",
                    "platform": "linux/amd64",
                }
            )
        if path in ("/healthz", "/readyz", "/livez"):
            return web.Response(text="ok")
        parts = [p for p in path.split("/") if p]
        discovery = _discovery(parts, self._types.values())
        if discovery is not None:
            return _json_response(discovery)
        if len(parts) >= 2 and parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise _path_not_found()
        namespace: str | None = None
        name: str | None = None
        if len(rest) in (1, 2):
            plural = rest[0]
            name = rest[1] if len(rest) == 2 else None
        elif len(rest) in (3, 4) and rest[0] == "namespaces":
            namespace, plural = rest[1], rest[2]
            name = rest[3] if len(rest) == 4 else None
        else:
            raise _path_not_found()
        rt = next(
            (
                t
                for t in self._types.values()
                if (t.group, t.version, t.plural) == (group, version, plural)
            ),
            None,
        )
        # an object of a namespaced resource is named in its namespace, a cluster-scoped
        # resource has no namespaces: other paths are unknown to the apiserver
        if (
            rt is None
            or (namespace is not None and not rt.namespaced)
            or (name is not None and namespace is None and rt.namespaced)
        ):
            raise _path_not_found()

        if name is None:
            if method == "GET":
                if _parse_bool(query.get("watch"), "watch"):
                    self._authorize(rt, "watch", namespace)
                    return await self._serve_watch(request, rt, namespace, query)
                self._authorize(rt, "list", namespace)
                return web.Response(
                    body=self._list_body(rt, namespace, query), content_type="application/json"
                )
            if method == "POST" and (namespace is not None or not rt.namespaced):
                self._authorize(rt, "create", namespace)
                body = await _read_json(request)
                meta = body.setdefault("metadata", {})
                if not isinstance(meta, dict):
                    raise _bad_request("metadata must be an object")
                if rt.namespaced:
                    if meta.get("namespace") not in (None, "", namespace):
                        raise _bad_request(
                            "the namespace of the provided object does not match the namespace "
                            "sent on the request"
                        )
                    meta["namespace"] = namespace
                return _json_response(self._create(rt, body), 201)
            raise _method_not_allowed(method)

        if method == "GET":
            self._authorize(rt, "get", namespace, name)
            obj = self._objects[rt.key].get((namespace or "", name))
            if obj is None:
                raise _not_found(rt, name)
            return _json_response(obj)
        if method == "PUT":
            self._authorize(rt, "update", namespace, name)
            body = await _read_json(request)
            meta = body.setdefault("metadata", {})
            if not isinstance(meta, dict):
                raise _bad_request("metadata must be an object")
            if meta.get("name") not in (None, "", name):
                raise _bad_request(
                    f"the name of the object ({meta.get('name')}) does not match the name on "
                    f"the URL ({name})"
                )
            if rt.namespaced and meta.get("namespace") not in (None, "", namespace):
                raise _bad_request(
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request"
                )
            _place(rt, meta, name, namespace or "")
            return _json_response(self._replace(rt, body))
        if method == "DELETE":
            self._authorize(rt, "delete", namespace, name)
            raw = await request.read()
            options = _loads_object(raw) if raw.strip() else {}
            pre = options.get("preconditions") or {}
            if not isinstance(pre, dict):
                raise _bad_request("preconditions must be an object")
            return _json_response(self._delete(rt, namespace or "", name, pre))
        raise _method_not_allowed(method)

    # ---------------------------------------------------------------- LIST

    def _list_body(
        self, rt: ResourceType, namespace: str | None, query: Mapping[str, str]
    ) -> bytes:
        _reject_selectors(query)
        limit = _parse_int(query.get("limit"), "limit") or 0
        token = query.get("continue", "")
        rv_param = query.get("resourceVersion", "")
        start: tuple[str, str] | None = None
        page = 0
        if token:
            if rv_param not in ("", "0"):
                raise _bad_request("specifying resource version is not allowed when using continue")
            snap_rv, start, page, tok_resource, tok_ns = _decode_continue(token)
            if (tok_resource, tok_ns) != (rt.key, namespace or ""):
                raise _bad_request("continue key is not valid: it was issued for another list")
            if snap_rv < self._compacted_rv:
                fresh = _encode_continue(
                    {
                        "v": "meta.k8s.io/v1",
                        "rv": self._rv,
                        "p": page,
                        "r": rt.key,
                        "ns": namespace or "",
                        "start": start,
                    }
                )
                raise KubeSimError(
                    410, "Expired", _CONTINUE_EXPIRED_MESSAGE, metadata={"continue": fresh}
                )
        elif query.get("resourceVersionMatch") == "Exact":
            snap_rv = _parse_rv(rv_param)
            if snap_rv < self._compacted_rv:
                raise _too_old(snap_rv, self._compacted_rv)
            if snap_rv > self._rv:
                raise KubeSimError(
                    504, "Timeout", f"Too large resource version: {snap_rv}, current: {self._rv}"
                )
        else:
            if rv_param not in ("", "0"):
                _parse_rv(rv_param)  # validated; served from the latest state (>= it)
            snap_rv = self._rv

        items = self._snapshot(rt, snap_rv, namespace)
        if start is not None:
            items = items[bisect.bisect_right(items, start, key=_key) :]
        metadata: JsonObj = {"resourceVersion": str(snap_rv)}
        if limit > 0:
            size = self._page_size(limit, page)
            page_items = items[:size]
            remaining = len(items) - len(page_items)
            # Real servers may also hand out a continue token that leads to an empty last page.
            trailing = self.short_pages and len(page_items) == limit and remaining == 0
            if remaining > 0 or trailing:
                last = _key(page_items[-1]) if page_items else start
                metadata["continue"] = _encode_continue(
                    {
                        "v": "meta.k8s.io/v1",
                        "rv": snap_rv,
                        "p": page + 1,
                        "r": rt.key,
                        "ns": namespace or "",
                        "start": last,
                    }
                )
                if remaining > 0:
                    metadata["remainingItemCount"] = remaining
            items = page_items
        # Like kube-apiserver, items of a typed list carry no kind/apiVersion of their own (a
        # custom resource's list is unstructured: its items keep them); and like its watch
        # cache, each object is serialized once and the bytes reused by every list
        typed = not rt.custom
        return b"".join(
            (
                b'{"kind":',
                _dumps(rt.list_kind),
                b',"apiVersion":',
                _dumps(rt.api_version),
                b',"metadata":',
                _dumps(metadata),
                b',"items":[',
                b",".join(self._item_bytes(obj, typed=typed) for obj in items),
                b"]}\n",
            )
        )

    def _item_bytes(self, obj: JsonObj, *, typed: bool) -> bytes:
        meta = obj["metadata"]
        # the resourceVersion is unique across resources: it identifies one object's state
        key = (str(meta.get("namespace", "")), str(meta["name"]), str(meta["resourceVersion"]))
        cached = self._serialized.get(key)
        if cached is None:
            dropped = ("kind", "apiVersion") if typed else ()
            cached = _dumps({k: v for k, v in obj.items() if k not in dropped})
            if len(self._serialized) >= 500_000:
                self._serialized.clear()
            self._serialized[key] = cached
        return cached

    def _page_size(self, limit: int, page: int) -> int:
        if not self.short_pages:
            return limit
        # Deterministic cycle: a short page, an empty page (with a continue token), a full one.
        return (max(1, limit // 2), 0, limit)[page % 3]

    # ---------------------------------------------------------------- WATCH

    async def _serve_watch(
        self,
        request: web.Request,
        rt: ResourceType,
        namespace: str | None,
        query: Mapping[str, str],
    ) -> web.StreamResponse:
        _reject_selectors(query)
        bookmarks = _parse_bool(query.get("allowWatchBookmarks"), "allowWatchBookmarks")
        initial_events = _parse_bool(query.get("sendInitialEvents"), "sendInitialEvents")
        timeout = _parse_int(query.get("timeoutSeconds"), "timeoutSeconds")
        rv_param = query.get("resourceVersion", "")
        start_rv = None if rv_param in ("", "0") else _parse_rv(rv_param)
        expired = start_rv is not None and start_rv < self._compacted_rv and not initial_events
        if expired and self._watch_expiry_mode == "http":
            assert start_rv is not None
            raise _too_old(start_rv, self._compacted_rv)

        # Registration and replay happen synchronously, so no write can slip between them.
        watch = _Watch(rt.key, namespace, bookmarks)
        if start_rv is not None and not initial_events:
            # A resourceVersion from the future (kube-apiserver would wait for it) delivers
            # only events newer than it.
            watch.after_rv = start_rv
        if expired:
            assert start_rv is not None
            err = _too_old(start_rv, self._compacted_rv)
            watch.queue.put_nowait(("line", _event_line("ERROR", err.status())))
            watch.queue.put_nowait(("close", b""))
        else:
            if start_rv is None or initial_events:
                for obj in self._snapshot(rt, self._rv, namespace):
                    watch.queue.put_nowait(("line", _event_line("ADDED", obj)))
                if initial_events:
                    watch.queue.put_nowait(
                        ("line", self._bookmark_line(rt, {"k8s.io/initial-events-end": "true"}))
                    )
            else:
                for event in self._log:
                    if (
                        event.rv > start_rv
                        and event.resource == rt.key
                        and namespace in (None, event.namespace)
                    ):
                        watch.queue.put_nowait(("line", event.line))
            self._watches.add(watch)

        log.debug("kube simulator watch opened: %s ns=%s rv=%s", rt.key, namespace, rv_param)
        try:
            return await self._stream_watch(request, rt, watch, timeout)
        finally:
            self._watches.discard(watch)
            log.debug("kube simulator watch closed: %s ns=%s", rt.key, namespace)

    async def _stream_watch(
        self, request: web.Request, rt: ResourceType, watch: _Watch, timeout_seconds: int | None
    ) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        resp = web.StreamResponse(
            status=200,
            headers={"Content-Type": "application/json", "Cache-Control": "no-cache, private"},
        )
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        seconds: float | None = (
            timeout_seconds
            if timeout_seconds and timeout_seconds > 0
            else self.default_watch_timeout
        )
        deadline = loop.time() + seconds if seconds else None
        next_bookmark = loop.time() + self.bookmark_interval if watch.bookmarks else None
        try:
            while True:
                wakeups = [t for t in (deadline, next_bookmark) if t is not None]
                try:
                    async with asyncio.timeout_at(min(wakeups) if wakeups else None):
                        kind, data = await watch.queue.get()
                except TimeoutError:
                    now = loop.time()
                    if deadline is not None and now >= deadline:
                        break  # timeoutSeconds: end the stream cleanly
                    if next_bookmark is not None and now >= next_bookmark:
                        next_bookmark = now + self.bookmark_interval
                        # Only when nothing is pending, so a bookmark never overtakes an event.
                        if watch.queue.empty():
                            await resp.write(self._bookmark_line(rt))
                    continue
                if kind == "line":
                    await resp.write(data)
                elif kind == "close":
                    break
                else:  # "drop": abort the connection without the terminating chunk
                    transport = request.transport
                    if transport is not None:
                        transport.abort()
                    return resp
            await resp.write_eof()
        except ConnectionError:
            log.debug("kube simulator watch client went away")
        return resp


# --------------------------------------------------------------------------------------------
# HTTP helpers
# --------------------------------------------------------------------------------------------


def _json_response(
    obj: Mapping[str, Any], status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    # Like kube-apiserver's JSON encoder, every body ends with a newline.
    return web.Response(
        body=_dumps(obj) + b"\n", status=status, content_type="application/json", headers=headers
    )


# Kinds only listed in discovery, never served (their paths answer 404): what the project's Helm
# chart installs, so that helm's client-side dry run (`helm install --dry-run=client`) can map
# every object it renders. (plural, kind, group, version, namespaced)
_DISCOVERY_ONLY: Final = (
    ("serviceaccounts", "ServiceAccount", "", "v1", True),
    ("services", "Service", "", "v1", True),
    ("configmaps", "ConfigMap", "", "v1", True),
    ("secrets", "Secret", "", "v1", True),
    ("roles", "Role", "rbac.authorization.k8s.io", "v1", True),
    ("rolebindings", "RoleBinding", "rbac.authorization.k8s.io", "v1", True),
    ("clusterroles", "ClusterRole", "rbac.authorization.k8s.io", "v1", False),
    ("clusterrolebindings", "ClusterRoleBinding", "rbac.authorization.k8s.io", "v1", False),
    ("poddisruptionbudgets", "PodDisruptionBudget", "policy", "v1", True),
    ("networkpolicies", "NetworkPolicy", "networking.k8s.io", "v1", True),
    ("servicemonitors", "ServiceMonitor", "monitoring.coreos.com", "v1", True),
    ("prometheusrules", "PrometheusRule", "monitoring.coreos.com", "v1", True),
)


def _discovery(parts: Sequence[str], served: Iterable[ResourceType]) -> JsonObj | None:
    """The discovery documents (``/api``, ``/apis``, ``/api/v1``, ``/apis/GROUP/VERSION``), as
    clients such as helm read them first, for the ``served`` resources; None for other paths."""
    kinds = [(rt.plural, rt.kind, rt.group, rt.version, rt.namespaced) for rt in served]
    paths = {(group, version, plural) for plural, _, group, version, _ in kinds}
    kinds += [k for k in _DISCOVERY_ONLY if (k[2], k[3], k[0]) not in paths]
    groups: dict[str, list[tuple[str, str, str, str, bool]]] = {}
    for entry in kinds:
        groups.setdefault(f"{entry[2]}/{entry[3]}" if entry[2] else entry[3], []).append(entry)
    if parts == ["api"]:
        return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
    if parts == ["apis"]:
        versions: dict[str, list[str]] = {}
        for _, _, group, version, _ in kinds:
            if group and version not in versions.setdefault(group, []):
                versions[group].append(version)

        def listed(group: str, version: str) -> JsonObj:
            return {"groupVersion": f"{group}/{version}", "version": version}

        return {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [
                {
                    "name": group,
                    "versions": [listed(group, v) for v in versions[group]],
                    "preferredVersion": listed(group, versions[group][0]),
                }
                for group in sorted(versions)
            ],
        }
    if (len(parts) == 2 and parts[0] == "api") or (len(parts) == 3 and parts[0] == "apis"):
        group_version = "/".join(parts[1:])
        if group_version not in groups:
            return None
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version,
            "resources": [
                {
                    "name": plural,
                    "singularName": kind.lower(),
                    "namespaced": namespaced,
                    "kind": kind,
                    "verbs": sorted(_ALL_VERBS),
                }
                for plural, kind, _, _, namespaced in groups[group_version]
            ],
        }
    return None


def _path_not_found() -> KubeSimError:
    return KubeSimError(
        404, "NotFound", "the server could not find the requested resource", details={}
    )


def _method_not_allowed(method: str) -> KubeSimError:
    return KubeSimError(
        405,
        "MethodNotAllowed",
        f"the server does not allow this method on the requested resource ({method})",
    )


def _loads_object(raw: bytes) -> JsonObj:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _bad_request(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _bad_request("the request body must be a JSON object")
    return data


async def _read_json(request: web.Request) -> JsonObj:
    raw = await request.read()
    if not raw.strip():
        raise _bad_request("the request body is empty")
    return _loads_object(raw)


def _reject_selectors(query: Mapping[str, str]) -> None:
    for param in ("labelSelector", "fieldSelector"):
        if query.get(param):
            raise _bad_request(f"kube simulator: {param} is not supported ({query[param]!r})")


# --------------------------------------------------------------------------------------------
# Background-thread variant
# --------------------------------------------------------------------------------------------


class ThreadedKubeSimulator:
    """A :class:`KubeSimulator` on its own event loop in a daemon thread.

    For synchronous callers: ``with ThreadedKubeSimulator(...) as sim:`` or
    ``sim.start()`` / ``sim.stop()``. Every method is thread-safe: it runs on the server's loop
    and returns (or raises) the result there. Before ``start()`` the methods act directly.
    """

    def __init__(
        self,
        *,
        token: str | None = None,
        short_pages: bool = False,
        bookmark_interval: float = 1.0,
        retain_events: int | None = None,
        default_watch_timeout: float | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        call_timeout: float = 10.0,
        custom_resources: Iterable[ResourceType] = (),
    ) -> None:
        self.sim = KubeSimulator(
            token=token,
            short_pages=short_pages,
            bookmark_interval=bookmark_interval,
            retain_events=retain_events,
            default_watch_timeout=default_watch_timeout,
            host=host,
            port=port,
            custom_resources=custom_resources,
        )
        self.call_timeout = call_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("simulator already started")
        loop = asyncio.new_event_loop()
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        thread = threading.Thread(target=self._run, args=(loop, ready), name="kubesim", daemon=True)
        thread.start()
        try:
            ready.result(timeout=self.call_timeout)
        except BaseException:
            thread.join(timeout=self.call_timeout)
            raise
        self._loop, self._thread = loop, thread
        return self

    def _run(self, loop: asyncio.AbstractEventLoop, ready: concurrent.futures.Future[None]) -> None:
        asyncio.set_event_loop(loop)
        try:
            try:
                loop.run_until_complete(self.sim.start())
            except BaseException as exc:  # noqa: BLE001 - handed to the thread calling start()
                ready.set_exception(exc)
                return
            ready.set_result(None)
            loop.run_forever()
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self.sim.stop(), loop).result(self.call_timeout)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=self.call_timeout)
            self._loop = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _call(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        loop = self._loop
        if loop is None:
            return fn(*args, **kwargs)
        result: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def run() -> None:
            try:
                result.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
                result.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return result.result(timeout=self.call_timeout)

    # ---------------------------------------------------------------- delegation

    @property
    def url(self) -> str:
        return self.sim.url

    @property
    def port(self) -> int:
        return self.sim.port

    @property
    def token(self) -> str | None:
        return self.sim.token

    @property
    def requests(self) -> builtins.list[RequestRecord]:
        """A snapshot copy of the request log."""
        return self._call(lambda: builtins.list(self.sim.requests))

    @property
    def resource_version(self) -> int:
        return self._call(lambda: self.sim.resource_version)

    def clear_requests(self) -> None:
        self._call(self.sim.requests.clear)

    @property
    def resource_types(self) -> tuple[ResourceType, ...]:
        return self._call(lambda: self.sim.resource_types)

    def install(self, rt: ResourceType) -> ResourceType:
        return self._call(self.sim.install, rt)

    def uninstall(self, resource: str) -> int:
        return self._call(self.sim.uninstall, resource)

    def create(self, resource: str, obj: Mapping[str, Any]) -> JsonObj:
        return self._call(self.sim.create, resource, obj)

    def update(self, resource: str, obj: Mapping[str, Any]) -> JsonObj:
        return self._call(self.sim.update, resource, obj)

    def apply(self, resource: str, obj: Mapping[str, Any]) -> JsonObj:
        return self._call(self.sim.apply, resource, obj)

    def delete(self, resource: str, namespace: str, name: str) -> JsonObj:
        return self._call(self.sim.delete, resource, namespace, name)

    def get(self, resource: str, namespace: str, name: str) -> JsonObj | None:
        return self._call(self.sim.get, resource, namespace, name)

    def list(self, resource: str, namespace: str | None = None) -> JsonList:
        return self._call(self.sim.list, resource, namespace)

    def events(self, resource: str | None = None) -> builtins.list[WatchEvent]:
        return self._call(self.sim.events, resource)

    def compact(self) -> int:
        return self._call(self.sim.compact)

    def watch_count(self, resource: str | None = None) -> int:
        return self._call(self.sim.watch_count, resource)

    def send_bookmarks(self, resource: str | None = None) -> int:
        return self._call(self.sim.send_bookmarks, resource)

    def drop_watches(self, resource: str | None = None) -> int:
        return self._call(self.sim.drop_watches, resource)

    def inject_raw_event(self, resource: str, line: bytes) -> int:
        return self._call(self.sim.inject_raw_event, resource, line)

    def set_watch_expiry_mode(self, mode: WatchExpiryMode) -> None:
        self._call(self.sim.set_watch_expiry_mode, mode)

    def deny(
        self, resource: str, namespace: str | None = None, verbs: Iterable[str] = _READ_VERBS
    ) -> None:
        self._call(self.sim.deny, resource, namespace, tuple(verbs))

    def allow(self, resource: str, namespace: str | None = None) -> None:
        self._call(self.sim.allow, resource, namespace)

    def set_latency(self, seconds: float) -> None:
        self._call(self.sim.set_latency, seconds)

    def fail_next(self, count: int, status: int = 500, *, path_prefix: str | None = None) -> None:
        self._call(self.sim.fail_next, count, status, path_prefix=path_prefix)

    def count(
        self, method: str | None = None, path_prefix: str = "", *, watch: bool | None = None
    ) -> int:
        return self._call(self.sim.count, method, path_prefix, watch=watch)


# --------------------------------------------------------------------------------------------
# kubeconfig
# --------------------------------------------------------------------------------------------


def write_kubeconfig(
    path: str | Path,
    contexts: Mapping[str, KubeSimulator | ThreadedKubeSimulator | str],
    current: str | None = None,
    token: str | None = None,
    *,
    namespace: str = "default",
) -> Path:
    """Write a kubeconfig with one cluster/user/context per entry of ``contexts``.

    Each entry is a started simulator (or a base URL). ``token`` overrides every user's bearer
    token; otherwise a simulator's own token is used (a URL entry gets none). ``current``
    defaults to the first context. Returns the path written.
    """
    if not contexts:
        raise ValueError("at least one context is required")
    clusters: JsonList = []
    users: JsonList = []
    ctxs: JsonList = []
    for name, target in contexts.items():
        if isinstance(target, str):
            server, own_token = target.rstrip("/"), None
        else:
            server, own_token = target.url, target.token
        bearer = token if token is not None else own_token
        clusters.append({"name": name, "cluster": {"server": server}})
        users.append({"name": name, "user": {"token": bearer} if bearer else {}})
        ctxs.append(
            {"name": name, "context": {"cluster": name, "user": name, "namespace": namespace}}
        )
    if current is None:
        current = next(iter(contexts))
    elif current not in contexts:
        raise ValueError(f"current context {current!r} is not among {builtins.list(contexts)}")
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": clusters,
        "users": users,
        "contexts": ctxs,
        "current-context": current,
    }
    out = Path(path)
    out.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return out


# --------------------------------------------------------------------------------------------
# Object builders
# --------------------------------------------------------------------------------------------


def _strip_tag(image: str) -> str:
    """``repo:tag`` / ``repo:tag@sha256:…`` -> ``repo`` (a registry port is not a tag)."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def image_id_for(image: str) -> str:
    """A realistic containerd ``imageID`` for an image reference: ``repo@sha256:<digest>``.

    A reference that pins a digest keeps it; otherwise a deterministic fake digest is derived
    from the reference, so the same tag always "resolves" to the same digest.
    """
    if "@sha256:" in image:
        return f"{_strip_tag(image)}@{image.split('@', 1)[1]}"
    return f"{_strip_tag(image)}@sha256:{hashlib.sha256(image.encode()).hexdigest()}"


def _named(
    images: Sequence[str] | Mapping[str, str], prefix: str
) -> builtins.list[tuple[str, str]]:
    if isinstance(images, Mapping):
        return [(str(n), str(i)) for n, i in images.items()]
    if isinstance(images, str):
        raise TypeError("images must be a sequence of image references, not a string")
    return [(f"{prefix}-{i}", image) for i, image in enumerate(images)]


def owner_reference(owner: Mapping[str, Any], *, controller: bool = True) -> JsonObj:
    """An ``ownerReferences`` entry pointing at ``owner`` (which must have a uid)."""
    meta = owner["metadata"]
    return {
        "apiVersion": owner.get("apiVersion") or _BY_KIND[owner["kind"]].api_version,
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": controller,
        "blockOwnerDeletion": True,
    }


def _container_status(
    name: str, image: str, image_id: str, state: str, *, restart_count: int = 0
) -> JsonObj:
    started = "2024-01-01T00:00:00Z"
    if state == "running":
        st: JsonObj = {"running": {"startedAt": started}}
    elif state == "completed":
        st = {
            "terminated": {
                "exitCode": 0,
                "reason": "Completed",
                "startedAt": started,
                "finishedAt": started,
            }
        }
    elif state == "failed":
        st = {
            "terminated": {
                "exitCode": 1,
                "reason": "Error",
                "startedAt": started,
                "finishedAt": started,
            }
        }
    else:
        st = {"waiting": {"reason": "ContainerCreating"}}
    return {
        "name": name,
        "state": st,
        "lastState": {},
        "ready": state == "running",
        "restartCount": restart_count,
        "image": image,
        "imageID": image_id,
        "started": state == "running",
    }


def pod(
    name: str,
    namespace: str = "default",
    images: Sequence[str] | Mapping[str, str] = (),
    init_images: Sequence[str] | Mapping[str, str] = (),
    ephemeral_images: Sequence[str] | Mapping[str, str] = (),
    image_ids: Mapping[str, str] | None = None,
    phase: str = "Running",
    *,
    status_images: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    owner: Mapping[str, Any] | None = None,
    node_name: str = "node-1",
) -> JsonObj:
    """A realistic Pod: spec containers/initContainers/ephemeralContainers and the matching
    status.containerStatuses/initContainerStatuses/ephemeralContainerStatuses.

    Container names are ``container-N``, ``init-N`` and ``debug-N`` unless a mapping
    ``{name: image}`` is given. ``image_ids`` maps a container name to its ``imageID``; an
    empty string means "not pulled yet". Otherwise a Pending pod reports ``""`` and other
    phases :func:`image_id_for` the image. ``status_images`` overrides the kubelet-reported
    ``image`` (which may differ from the spec, e.g. normalised to ``docker.io/library/…``).
    """
    ids = dict(image_ids or {})
    shown = dict(status_images or {})
    main = _named(images, "container")
    inits = _named(init_images, "init")
    debug = _named(ephemeral_images, "debug")
    main_state = {"Running": "running", "Succeeded": "completed", "Failed": "failed"}.get(
        phase, "waiting"
    )
    init_state = "waiting" if phase in ("Pending", "Unknown") else "completed"

    def status(entries: builtins.list[tuple[str, str]], state: str) -> JsonList:
        default_id = state != "waiting"
        return [
            _container_status(
                cname,
                shown.get(cname, image),
                ids.get(cname, image_id_for(image) if default_id else ""),
                state,
            )
            for cname, image in entries
        ]

    def spec_containers(entries: builtins.list[tuple[str, str]]) -> JsonList:
        return [
            {
                "name": cname,
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "resources": {},
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
            }
            for cname, image in entries
        ]

    metadata: JsonObj = {"name": name, "namespace": namespace, "labels": dict(labels or {})}
    if owner is not None:
        metadata["ownerReferences"] = [owner_reference(owner)]
    spec: JsonObj = {
        "containers": spec_containers(main),
        "restartPolicy": "Always",
        "dnsPolicy": "ClusterFirst",
        "serviceAccountName": "default",
        "terminationGracePeriodSeconds": 30,
    }
    if inits:
        spec["initContainers"] = spec_containers(inits)
    if debug:
        spec["ephemeralContainers"] = [
            {
                "name": cname,
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "terminationMessagePolicy": "File",
            }
            for cname, image in debug
        ]
    pod_status: JsonObj = {"phase": phase, "qosClass": "BestEffort"}
    if phase != "Pending":
        spec["nodeName"] = node_name
        pod_status.update(hostIP="10.0.0.10", podIP="10.244.0.10", startTime="2024-01-01T00:00:00Z")
    if main:
        pod_status["containerStatuses"] = status(main, main_state)
    if inits:
        pod_status["initContainerStatuses"] = status(inits, init_state)
    if debug:
        pod_status["ephemeralContainerStatuses"] = status(
            debug, "waiting" if phase == "Pending" else "running"
        )
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": spec,
        "status": pod_status,
    }


def custom_object(
    api_version: str,
    kind: str,
    name: str,
    namespace: str | None = "default",
    spec: Mapping[str, Any] | None = None,
    *,
    status: Mapping[str, Any] | None = None,
    labels: Mapping[str, str] | None = None,
) -> JsonObj:
    """A custom resource's object: ``apiVersion`` ``GROUP/VERSION``, ``kind``, metadata (no
    namespace when ``namespace`` is None, for a cluster-scoped resource), ``spec`` and an
    optional ``status`` (deep copies of what is given)."""
    metadata: JsonObj = {"name": name, "labels": dict(labels or {})}
    if namespace is not None:
        metadata["namespace"] = namespace
    obj: JsonObj = {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": metadata,
        "spec": copy.deepcopy(dict(spec or {})),
    }
    if status is not None:
        obj["status"] = copy.deepcopy(dict(status))
    return obj


WorkloadKind = Literal["Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "CronJob"]


def workload(
    kind: WorkloadKind,
    name: str,
    namespace: str = "default",
    images: Sequence[str] | Mapping[str, str] = (),
    replicas: int = 1,
    *,
    init_images: Sequence[str] | Mapping[str, str] = (),
    labels: Mapping[str, str] | None = None,
    owner: Mapping[str, Any] | None = None,
    schedule: str = "*/5 * * * *",
) -> JsonObj:
    """A Deployment/ReplicaSet/StatefulSet/DaemonSet/Job (pod template at spec.template.spec)
    or CronJob (at spec.jobTemplate.spec.template.spec), containers named as in :func:`pod`."""
    if kind not in ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "CronJob"):
        raise ValueError(f"unsupported workload kind {kind!r}")
    rt = _BY_KIND[kind]
    selector = {"app": name}
    batch = kind in ("Job", "CronJob")
    pod_spec: JsonObj = {
        "containers": [
            {"name": c, "image": i, "imagePullPolicy": "IfNotPresent", "resources": {}}
            for c, i in _named(images, "container")
        ],
        "restartPolicy": "Never" if batch else "Always",
        "dnsPolicy": "ClusterFirst",
        "terminationGracePeriodSeconds": 30,
    }
    inits = _named(init_images, "init")
    if inits:
        pod_spec["initContainers"] = [
            {"name": c, "image": i, "imagePullPolicy": "IfNotPresent", "resources": {}}
            for c, i in inits
        ]
    template: JsonObj = {"metadata": {"labels": dict(selector)}, "spec": pod_spec}
    spec: JsonObj
    status: JsonObj
    if kind == "CronJob":
        spec = {
            "schedule": schedule,
            "concurrencyPolicy": "Allow",
            "suspend": False,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 1,
            "jobTemplate": {"metadata": {}, "spec": {"backoffLimit": 6, "template": template}},
        }
        status = {}
    elif kind == "Job":
        spec = {
            "parallelism": replicas,
            "completions": replicas,
            "backoffLimit": 6,
            "template": template,
        }
        status = {"active": replicas}
    else:
        spec = {"selector": {"matchLabels": dict(selector)}, "template": template}
        if kind != "DaemonSet":
            spec["replicas"] = replicas
        if kind == "StatefulSet":
            spec["serviceName"] = name
        if kind == "DaemonSet":
            status = {"desiredNumberScheduled": replicas, "numberReady": replicas}
        else:
            status = {"replicas": replicas, "readyReplicas": replicas}
    metadata: JsonObj = {
        "name": name,
        "namespace": namespace,
        "labels": {**selector, **dict(labels or {})},
        "generation": 1,
    }
    if owner is not None:
        metadata["ownerReferences"] = [owner_reference(owner)]
    return {
        "apiVersion": rt.api_version,
        "kind": kind,
        "metadata": metadata,
        "spec": spec,
        "status": status,
    }


__all__ = [
    "RESOURCES",
    "SIM_USER",
    "JsonList",
    "JsonObj",
    "KubeSimError",
    "KubeSimulator",
    "RequestRecord",
    "ResourceType",
    "ThreadedKubeSimulator",
    "WatchEvent",
    "WatchExpiryMode",
    "WorkloadKind",
    "custom_object",
    "image_id_for",
    "owner_reference",
    "pod",
    "resource_for",
    "resource_type",
    "status_object",
    "workload",
    "write_kubeconfig",
]
