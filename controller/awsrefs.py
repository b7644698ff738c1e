"""Which ECS and Lambda answers become in-use references: the decisions of `awsuse`'s polls.

Kept apart from the calls so they are table- and property-testable with plain data: which
task-definition revisions a rollback may start (the newest N ACTIVE per family), which task
definitions a service may start tasks from, what a task's containers name, and how image
strings become `References` (through `inventory.extract_parts`, exactly as a pod's).

Pure: no I/O; the answers are plain dicts as botocore parses them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from controller.inventory import Extraction, extract_parts

LIVE_DEPLOYMENTS: Final = frozenset({"PRIMARY", "ACTIVE"})
# a service deployment in one of these states runs, or may run, tasks; INACTIVE ones are history


@dataclass(frozen=True, slots=True)
class Revision:
    """One task-definition revision, from its ARN `…:task-definition/<family>:<revision>`."""

    family: str
    number: int
    arn: str


def parse_revision(arn: str) -> Revision | None:
    """The family and revision number an ECS task-definition ARN names; None if it names none."""
    _, marker, rest = arn.partition(":task-definition/")
    family, colon, number = rest.rpartition(":")
    if not marker or not colon or not family or not (number.isascii() and number.isdigit()):
        return None
    return Revision(family, int(number), arn)


def revisions_to_keep(
    arns: Iterable[str], *, newest: int
) -> tuple[frozenset[str], tuple[str, ...]]:
    """The newest `newest` revisions of each family among `arns` (ListTaskDefinitions' ACTIVE
    ones), whatever order they come in; and the ARNs that name no revision, kept too (a
    revision that cannot be ranked is not given up), to be reported as malformed."""
    families: dict[str, list[Revision]] = {}
    unranked: list[str] = []
    for arn in arns:
        revision = parse_revision(arn)
        if revision is None:
            unranked.append(arn)
        else:
            families.setdefault(revision.family, []).append(revision)
    kept = {
        r.arn
        for revisions in families.values()
        for r in sorted(revisions, key=lambda r: r.number, reverse=True)[: max(0, newest)]
    }
    return frozenset(kept) | frozenset(unranked), tuple(unranked)


def objects_in(value: object) -> list[Mapping[str, Any]]:
    """The objects of a JSON list; nothing for anything else (a field absent or of a wrong type)."""
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def service_task_definitions(service: Mapping[str, Any]) -> frozenset[str]:
    """The task definitions a DescribeServices entry may start tasks from: its own, its PRIMARY
    and ACTIVE deployments' (an ACTIVE one is still being replaced, and a failed rollout returns
    to it), and every task set's (EXTERNAL and CODE_DEPLOY controllers). None for a deleted
    (INACTIVE) service: it starts nothing again, and ECS lists it for a while after the delete
    (a DRAINING one is still listed here: its tasks may still be replaced)."""
    if service.get("status") == "INACTIVE":
        return frozenset()
    arns = [service.get("taskDefinition")]
    arns += [
        d.get("taskDefinition")
        for d in objects_in(service.get("deployments"))
        if d.get("status") in LIVE_DEPLOYMENTS
    ]
    arns += [t.get("taskDefinition") for t in objects_in(service.get("taskSets"))]
    return frozenset(a for a in arns if isinstance(a, str) and a)


def task_images(task: Mapping[str, Any]) -> tuple[list[object], list[object]]:
    """A DescribeTasks entry's containers: their image strings and the digests ECS reports once
    it has pulled (`imageDigest`, absent before)."""
    containers = objects_in(task.get("containers"))
    return [c.get("image") for c in containers], [c.get("imageDigest") for c in containers]


def usage_references(images: Iterable[object], digests: Iterable[object] = ()) -> Extraction:
    """The references what ECS and Lambda name hold: image strings as pods' (`extract_parts`),
    and bare digests (ECS `imageDigest`)."""
    return extract_parts(images=images, digests=digests)
