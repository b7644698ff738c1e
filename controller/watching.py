"""The Kubernetes sources of "in use": one generic list+watch loop per (cluster, kind, namespace).

A `Watcher` is the `sources.Source` of one Kubernetes kind (built-in, or a custom resource)
in one cluster and one namespace (or all, or none for a cluster-scoped kind).

LIST (paginated) and replace the source's entries atomically, then WATCH from the list's
resourceVersion with bookmarks and a server-side timeout. A stream that ends normally is
resumed from the last resourceVersion seen (bookmarks included) without a re-list; a 410
Gone (HTTP 410, or an ERROR event with code 410) means the version was compacted, so the
source LISTs again and replaces its entries in one step: objects deleted while disconnected
disappear, and the index is never partly empty. Errors back off exponentially with jitter;
a stream that stays silent longer than the inactivity timeout is dropped and resumed.
Unknown event types and malformed lines are logged, counted and skipped. A 404 (the resource
is not served: a CRD not installed) and a 403 (RBAC) are reported to the tracker with what to
fix, and the source stays untrusted until a request succeeds.

The event path parses raw JSON and keeps only image fields: a pod event through the pods'
typed wire schema (`podwire`), anything else (and whatever that schema does not read) with
orjson. An event that changes no reference costs one comparison.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import anyio
import orjson

from controller.clusters import Cluster
from controller.identifiers import SourceKey
from controller.inventory import Extraction, InUseIndex
from controller.kinds import Kind
from controller.kubeapi import REQUEST_FAILURES, Expired, KubeError, SourceError, http_error
from controller.sources import list_kind, request, uid_of
from controller.trust import NOT_SERVED_FIX, SourceStatus, View

log = logging.getLogger(__name__)


VERY_SHORT_WATCH = 1.0  # seconds: a stream shorter than this with no event is an error
STABLE_WATCH = 60.0
# seconds: a stream that stayed up this long, or delivered an event, resets the back-off


@dataclass(frozen=True, slots=True)
class WatchOptions:
    timeout_seconds: int = 300
    # server-side end of each watch stream; the stream is then resumed from the last version
    inactivity: float = 120.0
    # client-side: no byte (event or bookmark) for this long means a dead connection
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    list_timeout: float = 60.0


class Backoff:
    """Exponential backoff with full jitter."""

    def __init__(self, initial: float, maximum: float, rnd: random.Random | None = None) -> None:
        self.initial, self.maximum = initial, maximum
        self.attempt = 0
        self._random = rnd or random.Random()

    def next(self) -> float:
        ceiling = min(self.maximum, self.initial * 2**self.attempt)
        self.attempt += 1
        return self._random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


@dataclass(slots=True)
class EventCounts:
    applied: int = 0
    unchanged: int = 0
    bookmarks: int = 0
    unknown: int = 0
    malformed: int = 0


class EventSink:
    """Applies one source's watch events to the index. No I/O: the benchmark drives it directly."""

    def __init__(self, source: SourceKey, kind: Kind, index: InUseIndex) -> None:
        self.source = source
        self.kind = kind
        self.index = index
        self.counts = EventCounts()

    def apply_line(self, line: bytes) -> str | None:
        """Apply one JSON line; returns the resourceVersion it carries, if any.

        Raises `Expired` for a 410 ERROR event and `SourceError` for any other ERROR event.
        A kind with a typed wire schema (pods) is read through it first; what it does not
        read (an ERROR event, anything malformed) takes the general path below.
        """
        wire = self.kind.wire
        if wire is not None:
            decoded = wire.event(line)
            if decoded is not None:
                kind, obj = decoded
                version = wire.version(obj)
                if kind == "BOOKMARK":
                    self.counts.bookmarks += 1
                    return version
                return self._change(kind, wire.uid(obj), version, obj, wire.extract)
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            self.counts.malformed += 1
            log.warning("%s: skipping a watch line that is not JSON: %.120r", self.source, line)
            return None
        if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
            self.counts.malformed += 1
            log.warning("%s: skipping a malformed watch event: %.120r", self.source, line)
            return None
        return self.apply(
            event["type"] if isinstance(event.get("type"), str) else "", event["object"]
        )

    def apply(self, kind: str, obj: dict[str, Any]) -> str | None:
        meta = obj.get("metadata")
        version = meta.get("resourceVersion") if isinstance(meta, dict) else None
        version = version if isinstance(version, str) and version else None
        if kind == "BOOKMARK":
            self.counts.bookmarks += 1
            return version
        if kind == "ERROR":
            code = obj.get("code")
            if code == 410:
                raise Expired(str(obj.get("message", "Gone")))
            raise SourceError(
                f"watch {self.source}: ERROR event: {obj.get('message', obj)!r}",
                status=code if isinstance(code, int) else None,
            )
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            self.counts.unknown += 1
            log.warning("%s: skipping unknown watch event type %r", self.source, kind)
            return version
        return self._change(kind, uid_of(obj), version, obj, self.kind.extract)

    def _change(
        self,
        kind: str,
        uid: str | None,
        version: str | None,
        obj: Any,
        extract: Callable[[Any], Extraction],
    ) -> str | None:
        """Apply an ADDED, MODIFIED or DELETED event of the object `uid`."""
        if uid is None:
            self.counts.malformed += 1
            log.warning("%s: skipping a %s event without metadata.uid", self.source, kind)
            return version
        if kind == "DELETED":
            changed = self.index.delete(self.source, uid)
        else:
            found = extract(obj)
            if found.malformed:
                self.counts.malformed += len(found.malformed)
                log.warning(
                    "%s: %s: skipped malformed image references %s",
                    self.source,
                    uid,
                    found.malformed,
                )
            changed = self.index.upsert(self.source, uid, found.references)
        if changed:
            self.counts.applied += 1
        else:
            self.counts.unchanged += 1
        return version


def what_to_fix(kind: Kind, namespace: str, status: int | None) -> str:
    """What to fix when a source's API server answers `status`, when that is known; else ""."""
    if status == 403:
        scope = f"in namespace {namespace}" if namespace and kind.namespaced else "cluster-wide"
        return f"RBAC must allow the verbs list and watch on {kind.resource} {scope}"
    if status == 404:
        return f"{kind.resource} is not served ({NOT_SERVED_FIX})"
    return ""


class Watcher:
    """Keeps one source of the index current until cancelled: a `sources.Source`."""

    def __init__(
        self,
        cluster: Cluster,
        kind: Kind,
        namespace: str,
        *,
        view: View,
        options: WatchOptions = WatchOptions(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not kind.namespaced and namespace:
            raise ValueError(f"{kind.name} is cluster-scoped: it has no namespace {namespace!r}")
        self.key = SourceKey(cluster.name, kind.name, namespace)
        self.cluster = cluster
        self.kind = kind
        self.namespace = namespace
        self.index: InUseIndex = view.index
        self.tracker = view.tracker
        self.options = options
        self.clock = clock
        self.sink = EventSink(self.key, kind, view.index)
        self.version: str | None = None
        # the last resourceVersion seen (LIST, event or bookmark); None = LIST next
        self.backoff = Backoff(self.options.backoff_initial, self.options.backoff_max)
        # between failed attempts; reset by a stream that delivered events or stayed up
        self._opened: tuple[float, int] | None = None
        # when the current stream opened, and the event count then; None = no stream open
        self.status: SourceStatus = view.register(self.key)

    async def once(self) -> None:
        """LIST once (for --once); a failure is recorded and logged, the source stays unsynced."""
        try:
            await self.list_once()
        except REQUEST_FAILURES as exc:
            reason = str(exc) if isinstance(exc, KubeError) else f"{type(exc).__name__}: {exc}"
            reason, status, _ = self._failed(exc, reason)
            log.error(
                "cannot list %s: %s",
                self.key,
                reason,
                extra={"source": str(self.key), "status": status},
            )

    def _failed(self, exc: BaseException, reason: str) -> tuple[str, int | None, bool]:
        """Record a failed request in the tracker: the reason with what to fix, the status,
        and whether this failure is the first not served (404) since a request succeeded."""
        status = getattr(exc, "status", None)
        newly_not_served = status == 404 and not self.status.not_served
        fix = what_to_fix(self.kind, self.namespace, status)
        reason = f"{reason}; {fix}" if fix else reason
        self.tracker.disconnected(self.key, self.clock(), reason, status_code=status)
        return reason, status, newly_not_served

    async def run(self) -> None:
        backoff = self.backoff
        while True:
            self._opened = None
            try:
                if self.version is None:
                    self.version = await self.list_once()
                await self._watch()
                backoff.reset()
            except Expired as exc:
                # until the new LIST lands, the view ages like any disconnected one; back off
                # so that a server answering 410 to every watch is not hammered with LISTs
                self.tracker.disconnected(self.key, self.clock(), f"410 Gone: {exc}")
                if self._was_healthy():
                    backoff.reset()
                delay = backoff.next()
                log.info(
                    "%s: %s; listing again in %.1fs",
                    self.key,
                    exc,
                    delay,
                    extra={"source": str(self.key)},
                )
                self.version = None
                await anyio.sleep(delay)
            except REQUEST_FAILURES as exc:
                # the stream broke: resume from the last version seen (bookmarks included). An
                # Expired is a SourceError too: it is caught above, first
                if self._was_healthy():
                    backoff.reset()  # as client-go: a stream that worked is not a failing one
                reason, status, newly_not_served = self._failed(exc, f"{type(exc).__name__}: {exc}")
                delay = backoff.next()
                # not served is an installation to fix, not a hiccup: one ERROR saying so, and
                # the retries after it (a CRD may be installed any time) quietly
                level = logging.WARNING
                if status == 404:
                    level = logging.ERROR if newly_not_served else logging.DEBUG
                log.log(
                    level,
                    "%s: %s; retrying in %.1fs",
                    self.key,
                    reason if status in (403, 404) else exc,  # with what to fix
                    delay,
                    extra={"source": str(self.key), "status": status},
                )
                await anyio.sleep(delay)

    async def list_once(self) -> str:
        """LIST the source and replace its entries in the index; returns the list's version."""
        with anyio.fail_after(self.options.list_timeout):
            listed = await list_kind(self.cluster, self.kind, self.namespace or None)
        self.index.replace(self.key, listed.objects)
        self.status.malformed += listed.malformed
        self.tracker.listed(self.key, self.clock())
        log.info(
            "%s: listed %d objects at resourceVersion %s",
            self.key,
            len(listed.objects),
            listed.resource_version,
            extra={"source": str(self.key)},
        )
        return listed.resource_version

    async def _watch(self) -> None:
        """Stream events from `self.version` until the server ends the stream, advancing it."""
        call = request(self.cluster, self.kind, self.namespace or None)
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=10, sock_read=self.options.inactivity
        )
        response = await call(
            watch=True,
            resource_version=self.version,
            allow_watch_bookmarks=True,
            timeout_seconds=self.options.timeout_seconds,
            _preload_content=False,
            _request_timeout=timeout,
        )
        async with response:
            if response.status == 410:
                raise Expired(f"HTTP 410 on watch from {self.version}")
            if not 200 <= response.status < 300:
                body = await response.read()
                raise http_error(f"WATCH {self.key}", response.status, body, SourceError)
            self.tracker.connected(self.key, self.clock())
            self.status.restarts += 1
            opened, events_before = self.clock(), self.status.events
            self._opened = (opened, events_before)
            buffer = b""
            async for chunk in response.content.iter_any():
                buffer += chunk
                while (end := buffer.find(b"\n")) >= 0:
                    line, buffer = buffer[:end], buffer[end + 1 :]
                    if line.strip():
                        self._apply(line)
            if buffer.strip():
                self._apply(buffer)
        if self.status.events == events_before and self.clock() - opened < VERY_SHORT_WATCH:
            # as client-go: a stream that ends at once with nothing in it is an error (a proxy
            # closing it, a server answering a plain body), so backoff applies instead of a spin
            raise SourceError(f"WATCH {self.key}: stream ended at once with no event")
        # a normal end (timeoutSeconds): the caller resumes from self.version, no re-list

    def _was_healthy(self) -> bool:
        """Whether the stream that just broke delivered events or stayed up a while."""
        if self._opened is None:
            return False
        opened, events_before = self._opened
        return self.status.events > events_before or self.clock() - opened >= STABLE_WATCH

    def _apply(self, line: bytes) -> None:
        counts = self.sink.counts
        before = counts.malformed
        self.version = self.sink.apply_line(line) or self.version
        self.status.events += 1
        self.status.malformed += counts.malformed - before
