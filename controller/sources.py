"""What a source of "in use" is (the `Source` protocol), and the generic LIST of a Kubernetes kind.

Every source (a Kubernetes kind in a cluster and namespace; later a custom resource, an ECS
or Lambda poller) implements `Source`: its key, a one-shot LIST for `--once`, a run loop for
the service, and its trust state in the tracker. `app.build_sources` builds all of them, for
both modes, and registers each once in the view; the trust rules judge each alike.

The kinds are the table in `controller.kinds`; a single generic LIST (and, for the live
view, a single generic watch in `watching`) serves them all, built-in kinds through their
typed kubernetes_asyncio API and custom resources through `CustomObjectsApi`. Responses are
read as raw JSON (`_preload_content=False`) and only the image fields are kept: pods through
their typed wire schema (`podwire`), anything else with orjson; building client models for
every pod would cost far more. Answers are read, and their
failures raised, by `kubeapi` (its docstring draws the error hierarchy).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from controller.clusters import Cluster
from controller.identifiers import SourceKey
from controller.inventory import Extraction, References
from controller.kinds import Kind
from controller.kube import client
from controller.kubeapi import SourceError, json_object, read_ok
from controller.trust import SourceStatus

log = logging.getLogger(__name__)

LIST_PAGE = 500


class Source(Protocol):
    """One source of "in use", registered once in the view (index and tracker) when built.

    It reports what happens to it to the tracker (listed, connected, disconnected with the
    HTTP status); the trust rules decide from that alone, so a new kind of source is judged
    exactly like the others: not trusted before its first complete LIST, nor while denied,
    not served, or disconnected longer than --max-staleness.
    """

    @property
    def key(self) -> SourceKey:
        """Its key in the index and the tracker."""
        ...

    @property
    def status(self) -> SourceStatus:
        """Its trust state, as registered in the tracker."""
        ...

    async def once(self) -> None:
        """LIST it once into the index (`--once`). A failure leaves it unsynced, recorded in
        the tracker and logged; only a bug raises."""
        ...

    async def run(self) -> None:
        """Keep its part of the index current until cancelled (the service)."""
        ...


@dataclass(frozen=True, slots=True)
class Listed:
    """A complete LIST of one kind in one scope."""

    objects: dict[str, References]
    resource_version: str
    malformed: int = 0
    pages: int = 0


def request(cluster: Cluster, kind: Kind, namespace: str | None) -> Callable[..., Any]:
    """The kubernetes_asyncio method that lists or watches `kind` in `namespace` (None = all).

    A cluster-scoped kind has no namespace to narrow to: it is always asked cluster-wide."""
    namespace = namespace if kind.namespaced else None
    if kind.typed is None:
        custom = client.CustomObjectsApi(cluster.api)
        if namespace:
            return partial(
                custom.list_namespaced_custom_object,
                kind.group,
                kind.version,
                namespace,
                kind.plural,
            )
        return partial(custom.list_cluster_custom_object, kind.group, kind.version, kind.plural)
    api = getattr(client, kind.typed.api)(cluster.api)
    if namespace:
        return partial(getattr(api, kind.typed.list_namespaced), namespace)
    return getattr(api, kind.typed.list_all)  # type: ignore[no-any-return]


def uid_of(obj: object) -> str | None:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    uid = meta.get("uid") if isinstance(meta, dict) else None
    return uid if isinstance(uid, str) and uid else None


@dataclass(frozen=True, slots=True)
class _Page:
    """One LIST page: its version and continue token, its items, and how to read an item."""

    resource_version: str
    token: str | None
    items: Sequence[Any]
    uid: Callable[[Any], str | None]
    extract: Callable[[Any], Extraction]


def _page(kind: Kind, body: bytes, what: str) -> _Page:
    """A LIST page's body, read through the kind's typed wire schema when it has one and the
    page fits it, else as JSON (raising `SourceError` for a page that is not a JSON object
    with an `items` list)."""
    if kind.wire is not None:
        typed = kind.wire.page(body)
        if typed is not None:
            return _Page(
                typed.resource_version, typed.token, typed.items, kind.wire.uid, kind.wire.extract
            )
    page = json_object(body, what, error=SourceError)
    raw_meta = page.get("metadata")
    meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
    items = page.get("items")
    if not isinstance(items, list):
        raise SourceError(f"{what}: `items` is not a list")
    version = meta.get("resourceVersion")
    return _Page(
        "" if version is None else str(version),
        meta.get("continue") or None,
        items,
        uid_of,
        kind.extract,
    )


async def list_kind(
    cluster: Cluster, kind: Kind, namespace: str | None, *, page_size: int = LIST_PAGE
) -> Listed:
    """LIST every object of `kind`, following `continue` until it is empty.

    A server may answer fewer items than `limit` (even none) and still continue: only an
    empty continue token ends the list.
    """
    call = request(cluster, kind, namespace)
    what = f"{cluster.name}/{kind.name}" + (f" in {namespace}" if namespace else "")
    objects: dict[str, References] = {}
    malformed = pages = 0
    token: str | None = None
    resource_version = ""
    while True:
        kwargs: dict[str, Any] = {"limit": page_size, "_preload_content": False}
        if token:
            kwargs["_continue"] = token
        try:
            response = await call(**kwargs)
        except client.exceptions.ApiException as exc:
            raise SourceError(f"LIST {what}: {exc.reason}", status=exc.status) from exc
        page = _page(kind, await read_ok(response, f"LIST {what}"), f"LIST {what}")
        pages += 1
        for item in page.items:
            uid = page.uid(item)
            if uid is None:
                malformed += 1
                continue
            found = page.extract(item)
            malformed += len(found.malformed)
            objects[uid] = found.references
        if not resource_version:
            # every page of one LIST is a snapshot at the first page's version
            resource_version = page.resource_version
        token = page.token
        if not token:
            break
    if malformed:
        log.warning("LIST %s: skipped %d malformed image references or objects", what, malformed)
    return Listed(objects, resource_version, malformed, pages)
