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

import yaml

from controller.kube import client, config
from controller.settings import ConfigError

log = logging.getLogger(__name__)

IN_CLUSTER = "in-cluster"


class ClusterConfigError(ConfigError):
    """The kubeconfig or a context cannot be used: `field` names the flag to fix."""


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
                config.load_incluster_config(client_configuration=cfg)
            except config.ConfigException as exc:
                raise ClusterConfigError("--in-cluster", f"no in-cluster config: {exc}") from exc
            api = await stack.enter_async_context(client.ApiClient(cfg))
            clusters.append(Cluster(IN_CLUSTER, api))
        else:
            path = _kubeconfig_path(kubeconfig)
            names = _context_names(path, contexts)
            for name in names:
                cfg = client.Configuration()
                try:
                    await config.load_kube_config(
                        config_file=path,
                        context=name,
                        client_configuration=cfg,
                        persist_config=False,
                    )
                except (OSError, config.ConfigException, ValueError, TypeError) as exc:
                    raise ClusterConfigError(
                        "--kube-context" if contexts else "-kubeconfig",
                        f"kubeconfig {path}, context {name!r}: {exc}",
                    ) from exc
                except (AssertionError, AttributeError) as exc:
                    # kubernetes_asyncio asserts that the entries it reads are there and calls
                    # mapping methods on them: a cluster without a server, a context that is a
                    # string. Its message says nothing a user can act on.
                    raise ClusterConfigError(
                        "--kube-context" if contexts else "-kubeconfig",
                        f"kubeconfig {path}, context {name!r}: a context, cluster or user entry "
                        "it uses is empty, incomplete (a cluster without a server) or not a "
                        f"mapping ({type(exc).__name__})",
                    ) from exc
                api = await stack.enter_async_context(client.ApiClient(cfg))
                clusters.append(Cluster(name, api))
        for cluster in clusters:
            log.info(
                "cluster %s at %s",
                cluster.name,
                cluster.api.configuration.host,
                extra={"cluster": cluster.name},
            )
        yield clusters


def _context_names(paths: str, contexts: Sequence[str]) -> list[str]:
    """The contexts to connect to, checked against the kubeconfig before any client is built.

    `paths` is one file or several joined by os.pathsep, as in KUBECONFIG: their contexts are
    merged and the first current-context wins, as kubectl and kubernetes_asyncio do.
    kubernetes_asyncio answers an empty file, a list or a scalar with a TypeError, and an
    unknown context with "Invalid kube-config file": here each is one line naming what to fix.
    """
    known: list[str] = []
    current: str | None = None
    files = [p for p in paths.split(os.pathsep) if p]
    for path in files:
        document = _kubeconfig_document(path)
        entries = document.get("contexts") or []
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and entry.get("name") and str(entry["name"]) not in known:
                known.append(str(entry["name"]))
        current = current or (
            str(document["current-context"]) if document.get("current-context") else None
        )
    listing = ", ".join(known) or "none"
    where = f"kubeconfig {paths}"
    if contexts:
        for name in contexts:
            if name not in known:
                raise ClusterConfigError(
                    "--kube-context", f"no context {name!r} in {paths} (contexts: {listing})"
                )
        return list(contexts)
    if current is None:
        raise ClusterConfigError(
            "--kube-context",
            f"{where} has no current-context: name one with --kube-context (contexts: {listing})",
        )
    if current not in known:
        raise ClusterConfigError(
            "-kubeconfig",
            f"{where}: current-context {current!r} is not among its contexts ({listing})",
        )
    return [current]


def _kubeconfig_document(path: str) -> dict[str, Any]:
    where = f"kubeconfig {path}"
    try:
        with open(os.path.expanduser(path), encoding="utf-8") as handle:
            document = yaml.safe_load(handle)
    except OSError as exc:
        raise ClusterConfigError("-kubeconfig", f"{where}: cannot read: {exc.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ClusterConfigError("-kubeconfig", f"{where}: not valid YAML{at}") from None
    if not isinstance(document, dict):
        kinds = {list: "a list", str: "a string", int: "a number", float: "a number"}
        got = "an empty file" if document is None else kinds.get(type(document), "a scalar")
        raise ClusterConfigError(
            "-kubeconfig",
            f"{where}: expected a kubeconfig (a mapping with clusters, contexts and users), "
            f"got {got}",
        )
    return document
