"""Connections to the watched clusters: one kubernetes_asyncio ApiClient per kubeconfig context.

With no context named, the kubeconfig's current context is used; with no kubeconfig at
all (or `--in-cluster`), the pod's service account. Several `--kube-context`s give one
client each: every cluster's references are tracked apart, and their union protects.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client, config

log = logging.getLogger(__name__)

IN_CLUSTER = "in-cluster"


class ClusterConfigError(Exception):
    """The kubeconfig or context cannot be used."""


@dataclass(frozen=True, slots=True)
class Cluster:
    name: str
    # the kubeconfig context name, or "in-cluster"
    api: Any
    # a kubernetes_asyncio ApiClient


def _kubeconfig_path(explicit: str | None) -> str:
    if explicit:
        return explicit
    env = os.environ.get("KUBECONFIG", "")
    return env.split(os.pathsep)[0] if env else os.path.expanduser("~/.kube/config")


def use_in_cluster(kubeconfig: str | None, in_cluster: bool) -> bool:
    """In-cluster when asked for, or when no kubeconfig exists and the pod env is there."""
    if in_cluster:
        return True
    if kubeconfig or os.environ.get("KUBECONFIG"):
        return False
    return not os.path.exists(_kubeconfig_path(None)) and bool(
        os.environ.get("KUBERNETES_SERVICE_HOST")
    )


@asynccontextmanager
async def connect(
    *, kubeconfig: str | None, contexts: Sequence[str], in_cluster: bool
) -> AsyncIterator[list[Cluster]]:
    """Open one ApiClient per cluster; all are closed on exit."""
    async with AsyncExitStack() as stack:
        clusters: list[Cluster] = []
        if use_in_cluster(kubeconfig, in_cluster):
            cfg = client.Configuration()
            try:
                config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            except config.ConfigException as exc:
                raise ClusterConfigError(f"in-cluster config: {exc}") from exc
            api = await stack.enter_async_context(client.ApiClient(cfg))
            clusters.append(Cluster(IN_CLUSTER, api))
        else:
            path = _kubeconfig_path(kubeconfig)
            try:
                _, current = config.list_kube_config_contexts(path)
            except (OSError, config.ConfigException) as exc:
                raise ClusterConfigError(f"kubeconfig {path}: {exc}") from exc
            names = list(contexts) or [current["name"] if current else ""]
            for name in names:
                cfg = client.Configuration()
                try:
                    await config.load_kube_config(
                        config_file=path,
                        context=name or None,
                        client_configuration=cfg,
                        persist_config=False,
                    )
                except (OSError, config.ConfigException, ValueError) as exc:
                    raise ClusterConfigError(f"kubeconfig {path}, context {name!r}: {exc}") from exc
                api = await stack.enter_async_context(client.ApiClient(cfg))
                clusters.append(Cluster(name or "default", api))
        for cluster in clusters:
            log.info(
                "cluster %s at %s",
                cluster.name,
                cluster.api.configuration.host,
                extra={"cluster": cluster.name},
            )
        yield clusters
