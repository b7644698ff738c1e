"""The identifiers the modules share: an ECR repository, an ECR tag reference, a watched source.

Pure plain data, so that naming a repository (the ECR gateway, the policy) or a source (the
settings, the trust rules) does not import the in-use index.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.images import EcrRegistry


@dataclass(frozen=True, slots=True)
class RepositoryId:
    """An ECR repository: the registry (account and region) and the repository name."""

    registry: EcrRegistry
    name: str


@dataclass(frozen=True, slots=True)
class TagRef:
    """A spec that names an ECR image by tag: protects whatever that tag points to."""

    repository: RepositoryId
    tag: str


@dataclass(frozen=True, slots=True)
class SourceKey:
    """One source of "in use": a resource kind in a cluster, in one namespace or all ("", also
    the only scope of a cluster-scoped kind)."""

    cluster: str
    kind: str
    namespace: str = ""

    def __str__(self) -> str:
        return f"{self.cluster}/{self.kind}" + (f"@{self.namespace}" if self.namespace else "")
