"""What the controller reads from a cluster: the kinds that hold image references, and their LIST.

One small table says, per kind, which kubernetes_asyncio method lists it and where its pod
spec lives; a single generic LIST (and, for the live view, a single generic watch) serves
them all. Responses are read as raw JSON (`_preload_content=False` + orjson) and only the
image fields are kept: building client models for every pod would cost far more. Answers are
read, and their failures raised, by `kubeapi` (its docstring draws the error hierarchy).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from controller.clusters import Cluster
from controller.inventory import Extraction, References, extract_pod, extract_pod_template
from controller.kube import client
from controller.kubeapi import SourceError, read_json

log = logging.getLogger(__name__)

LIST_PAGE = 500


@dataclass(frozen=True, slots=True)
class Kind:
    name: str
    # plural resource name, also the metric label
    api: Callable[[Any], Any]
    # kubernetes_asyncio API class
    list_all: str
    list_namespaced: str
    extract: Callable[[Mapping[str, Any]], Extraction] = field(repr=False)


def _bound(path: tuple[str, ...]) -> Callable[[Mapping[str, Any]], Extraction]:
    def extract(obj: Mapping[str, Any]) -> Extraction:
        return extract_pod_template(obj, *path)

    return extract


_POD_TEMPLATE = ("spec", "template", "spec")

KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind(
            "pods",
            client.CoreV1Api,
            "list_pod_for_all_namespaces",
            "list_namespaced_pod",
            extract_pod,
        ),
        Kind(
            "deployments",
            client.AppsV1Api,
            "list_deployment_for_all_namespaces",
            "list_namespaced_deployment",
            _bound(_POD_TEMPLATE),
        ),
        Kind(
            "replicasets",
            client.AppsV1Api,
            "list_replica_set_for_all_namespaces",
            "list_namespaced_replica_set",
            _bound(_POD_TEMPLATE),
        ),
        Kind(
            "statefulsets",
            client.AppsV1Api,
            "list_stateful_set_for_all_namespaces",
            "list_namespaced_stateful_set",
            _bound(_POD_TEMPLATE),
        ),
        Kind(
            "daemonsets",
            client.AppsV1Api,
            "list_daemon_set_for_all_namespaces",
            "list_namespaced_daemon_set",
            _bound(_POD_TEMPLATE),
        ),
        Kind(
            "jobs",
            client.BatchV1Api,
            "list_job_for_all_namespaces",
            "list_namespaced_job",
            _bound(_POD_TEMPLATE),
        ),
        Kind(
            "cronjobs",
            client.BatchV1Api,
            "list_cron_job_for_all_namespaces",
            "list_namespaced_cron_job",
            _bound(("spec", "jobTemplate", "spec", "template", "spec")),
        ),
        Kind(
            "controllerrevisions",
            client.AppsV1Api,
            "list_controller_revision_for_all_namespaces",
            "list_namespaced_controller_revision",
            _bound(("data", "spec", "template", "spec")),
        ),
    )
}


@dataclass(frozen=True, slots=True)
class Listed:
    """A complete LIST of one kind in one scope."""

    objects: dict[str, References]
    resource_version: str
    malformed: int = 0
    pages: int = 0


def request(cluster: Cluster, kind: Kind, namespace: str | None) -> Callable[..., Any]:
    """The kubernetes_asyncio method that lists or watches `kind` in `namespace` (None = all)."""
    api = kind.api(cluster.api)
    if namespace:
        return partial(getattr(api, kind.list_namespaced), namespace)
    return getattr(api, kind.list_all)  # type: ignore[no-any-return]


def uid_of(obj: object) -> str | None:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    uid = meta.get("uid") if isinstance(meta, dict) else None
    return uid if isinstance(uid, str) and uid else None


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
        page = await read_json(response, f"LIST {what}")
        pages += 1
        raw_meta = page.get("metadata")
        meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
        items = page.get("items")
        if not isinstance(items, list):
            raise SourceError(f"LIST {what}: `items` is not a list")
        for item in items:
            uid = uid_of(item)
            if uid is None:
                malformed += 1
                continue
            found = kind.extract(item)
            malformed += len(found.malformed)
            objects[uid] = found.references
        if not resource_version:
            # every page of one LIST is a snapshot at the first page's version
            resource_version = str(meta.get("resourceVersion", ""))
        token = meta.get("continue") or None
        if not token:
            break
    if malformed:
        log.warning("LIST %s: skipped %d malformed image references or objects", what, malformed)
    return Listed(objects, resource_version, malformed, pages)
