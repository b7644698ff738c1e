"""The Kubernetes kinds whose objects hold image references: the one table of them.

A `Kind` says where the API server serves a resource (group, version, plural, namespaced or
not) and where its objects name images (`extract`). The built-in kinds are the `KINDS`
table below; the settings read their names from it (the `--protect-workloads` choices and
defaults), the sources list and watch them from it. A custom resource is a `Kind` built at
run time with `Kind.custom`, listed and watched through the same generic LIST and watch loop
(by kubernetes_asyncio's `CustomObjectsApi`).

Pure plain data: the kubernetes_asyncio classes and methods of the built-in kinds are named
here as strings and resolved by `sources`, so that `settings` can read this table without
importing an I/O library.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from controller.inventory import Extraction, extract_pod, extract_pod_template
from controller.podwire import POD_WIRE, Wire

PODS: Final = "pods"
"""The kind of running pods: always watched, and the kind the "no pods in scope" rule is about."""


@dataclass(frozen=True, slots=True)
class TypedApi:
    """A built-in kind's kubernetes_asyncio API class and list methods, by name."""

    api: str
    # the class, e.g. "AppsV1Api" (resolved on `controller.kube.client`)
    list_all: str
    # lists (and watches) every namespace, e.g. "list_deployment_for_all_namespaces"
    list_namespaced: str
    # lists (and watches) one namespace, e.g. "list_namespaced_deployment"


@dataclass(frozen=True, slots=True)
class Kind:
    """A resource whose objects name images, and how to reach it on an API server."""

    name: str
    # the source key's kind and the metric label: the plural for a built-in kind,
    # plural.group for a custom resource
    group: str
    # the API group; "" for the core group
    version: str
    plural: str
    # the resource name in the API path
    namespaced: bool
    # False: listed once per cluster (namespace ""), even when --namespaces narrows the scope
    extract: Callable[[Mapping[str, Any]], Extraction] = field(repr=False)
    # the image references one object holds
    typed: TypedApi | None = None
    # a built-in kind's typed API; None: a custom resource, reached by CustomObjectsApi
    by_default: bool = True
    # a workload kind protected unless --protect-workloads says otherwise
    wire: Wire | None = field(default=None, repr=False)
    # a typed decode of its events and LIST pages, tried before the general path (`podwire`)

    @classmethod
    def custom(
        cls,
        group: str,
        version: str,
        plural: str,
        *,
        namespaced: bool,
        extract: Callable[[Mapping[str, Any]], Extraction],
    ) -> Kind:
        """A custom resource (or any resource served under /apis) known only at run time."""
        return cls(f"{plural}.{group}", group, version, plural, namespaced, extract)

    @property
    def resource(self) -> str:
        """The resource as RBAC rules and API errors name it: `pods`, `cronjobs.batch`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


def pod_template_at(*path: str) -> Callable[[Mapping[str, Any]], Extraction]:
    """An extractor for objects that carry a pod spec at `path` (e.g. spec, template, spec)."""

    def extract(obj: Mapping[str, Any]) -> Extraction:
        return extract_pod_template(obj, *path)

    return extract


_POD_TEMPLATE = pod_template_at("spec", "template", "spec")


def _builtin(
    plural: str,
    group: str,
    api: str,
    singular: str,
    extract: Callable[[Mapping[str, Any]], Extraction] = _POD_TEMPLATE,
    *,
    by_default: bool = True,
    wire: Wire | None = None,
) -> Kind:
    typed = TypedApi(api, f"list_{singular}_for_all_namespaces", f"list_namespaced_{singular}")
    return Kind(plural, group, "v1", plural, True, extract, typed, by_default, wire)


KINDS: Final[Mapping[str, Kind]] = {
    kind.name: kind
    for kind in (
        _builtin(PODS, "", "CoreV1Api", "pod", extract_pod, wire=POD_WIRE),
        _builtin("deployments", "apps", "AppsV1Api", "deployment"),
        _builtin("replicasets", "apps", "AppsV1Api", "replica_set"),
        _builtin("statefulsets", "apps", "AppsV1Api", "stateful_set"),
        _builtin("daemonsets", "apps", "AppsV1Api", "daemon_set"),
        _builtin("jobs", "batch", "BatchV1Api", "job"),
        _builtin(
            "cronjobs",
            "batch",
            "BatchV1Api",
            "cron_job",
            pod_template_at("spec", "jobTemplate", "spec", "template", "spec"),
        ),
        # StatefulSet and DaemonSet rollback history: supported, off by default
        _builtin(
            "controllerrevisions",
            "apps",
            "AppsV1Api",
            "controller_revision",
            pod_template_at("data", "spec", "template", "spec"),
            by_default=False,
        ),
    )
}
"""The built-in kinds, in the order the help text and the effective configuration name them.
A new built-in kind is one line here (and its API class in `controller.kube`, if new)."""
