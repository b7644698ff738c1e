"""The prune cycle: every selected repository, concurrently, each planned by the policy and pruned.

Per repository: DescribeImages (pages of 1000), BatchGetImage for the indexes (to learn their
children), `policy.plan`, then BatchDeleteImage in waves (indexes before their children) of at
most 100 ids. Right before each delete call the batch is checked again against the live
in-use view and the trust gate: an image that became in use since the plan is dropped (with
its whole index group), and nothing more is sent once the view cannot be trusted. A
repository's failure is caught, logged and reported; the others go on.

Dry-run computes exactly the same plan and skips only the delete call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import anyio
import anyio.lowlevel

from controller.ecr import ID_BATCH, EcrError, EcrPort, Repository, chunks, with_children_of
from controller.images import Digest
from controller.inventory import InUse
from controller.policy import PROTECTING, Decision, Plan, Rules, plan
from controller.settings import RepositorySelection

log = logging.getLogger(__name__)

Gate = Callable[[], str | None]
"""Returns why deleting must stop now (view untrusted, leadership lost, shutting down), or None."""


@dataclass(frozen=True, slots=True)
class Deletion:
    digest: Digest
    tags: tuple[str, ...]
    reason: str
    size_bytes: int


@dataclass(frozen=True, slots=True)
class FailedDeletion:
    digest: Digest
    code: str
    message: str


@dataclass
class RepositoryReport:
    """What one cycle did to one repository."""

    name: str
    images_before: int = 0
    images_after: int = 0
    protected: dict[str, int] = field(default_factory=dict)
    # protected images by reason
    deleted: list[Deletion] = field(default_factory=list)
    # deleted, or, in dry-run, would have been deleted
    already_gone: int = 0
    failed: list[FailedDeletion] = field(default_factory=list)
    vetoed: int = 0
    # dropped from a batch because they became in use after the plan
    held_back: int = 0
    # would be deleted but for the cap or a stopped cycle
    bytes_reclaimed: int = 0
    errors: list[str] = field(default_factory=list)
    error_codes: list[tuple[str, str]] = field(default_factory=list)
    # (operation, code) of each error, for the errors metric
    bytes_total: int = 0
    # bytes in the repository before the cycle

    @property
    def ok(self) -> bool:
        return not self.errors and not self.failed


@dataclass
class CycleReport:
    started_at: datetime
    dry_run: bool
    repositories: list[RepositoryReport] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # cycle-level problems: listing repositories failed, missing repositories, refusal
    refused: str | None = None
    # why the cycle deleted nothing at all, if it was refused
    finished_at: datetime | None = None

    @property
    def ok(self) -> bool:
        return not self.errors and self.refused is None and all(r.ok for r in self.repositories)

    @property
    def deleted(self) -> int:
        return sum(len(r.deleted) for r in self.repositories)


@dataclass(frozen=True, slots=True)
class PruneOptions:
    selection: RepositorySelection
    rules_for: Callable[[str], Rules]
    dry_run: bool = True
    concurrency: int = 8
    delete_timeout: float = 20.0
    # bound on one BatchDeleteImage call; it is shielded from shutdown so it is never cut off


class Pruner:
    """Runs cycles against one ECR gateway and one live in-use view."""

    def __init__(self, ecr: EcrPort, in_use: InUse, options: PruneOptions) -> None:
        self._ecr = ecr
        self._in_use = in_use
        self._options = options

    async def run_cycle(
        self, *, now: datetime, gate: Gate, clock: Callable[[], datetime]
    ) -> CycleReport:
        """One cycle over every selected repository; never raises for a repository's failure."""
        report = CycleReport(started_at=now, dry_run=self._options.dry_run)
        refusal = gate()
        if refusal is not None:
            report.refused = refusal
            log.warning("cycle refused, deleting nothing: %s", refusal)
            report.finished_at = clock()
            return report
        try:
            repositories, missing = await self._select()
        except EcrError as exc:
            report.errors.append(f"listing repositories: {exc}")
            log.error("cannot list repositories: %s", exc)
            report.finished_at = clock()
            return report
        if missing:
            report.errors.append("repositories not found: " + ", ".join(missing))
            log.error("repositories not found: %s", ", ".join(missing))
        limiter = anyio.CapacityLimiter(self._options.concurrency)
        reports = [RepositoryReport(r.name) for r in repositories]
        async with anyio.create_task_group() as tg:
            for repository, repo_report in zip(repositories, reports, strict=True):
                tg.start_soon(self._guarded, repository, repo_report, limiter, now, gate)
        report.repositories = sorted(reports, key=lambda r: r.name)
        report.finished_at = clock()
        return report

    async def _select(self) -> tuple[list[Repository], tuple[str, ...]]:
        selection = self._options.selection
        listing = await self._ecr.repositories(selection.exact_names)
        chosen = sorted(
            (r for r in listing.repositories if selection.matches(r.name)), key=lambda r: r.name
        )
        return chosen, listing.missing

    async def _guarded(
        self,
        repository: Repository,
        report: RepositoryReport,
        limiter: anyio.CapacityLimiter,
        now: datetime,
        gate: Gate,
    ) -> None:
        async with limiter:
            try:
                await self._prune(repository, report, now, gate)
            except EcrError as exc:
                report.errors.append(str(exc))
                report.error_codes.append((exc.operation, exc.code))
                log.error(
                    "repository %s failed: %s",
                    repository.name,
                    exc,
                    extra={
                        "repository": repository.name,
                        "operation": exc.operation,
                        "code": exc.code,
                    },
                )
            except Exception as exc:  # one repository must never take the cycle down
                report.errors.append(f"{type(exc).__name__}: {exc}")
                report.error_codes.append(("prune", type(exc).__name__))
                log.exception(
                    "repository %s failed", repository.name, extra={"repository": repository.name}
                )
        _log_repository(report, dry_run=self._options.dry_run)

    async def _prune(
        self, repository: Repository, report: RepositoryReport, now: datetime, gate: Gate
    ) -> None:
        images = await with_children_of(self._ecr, repository, await self._ecr.images(repository))
        rules = self._options.rules_for(repository.name)
        the_plan = plan(images, repository=repository.id, in_use=self._in_use, rules=rules, now=now)
        report.images_before = report.images_after = len(the_plan.decisions)
        report.bytes_total = sum(d.image.size_bytes for d in the_plan.decisions)
        for decision in the_plan.decisions:
            if decision.reason in PROTECTING:
                report.protected[decision.reason.value] = (
                    report.protected.get(decision.reason.value, 0) + 1
                )
            elif decision.reason.value == "deletion-cap":
                report.held_back += 1
        await self._execute(repository, the_plan, report, gate)

    async def _execute(
        self, repository: Repository, the_plan: Plan, report: RepositoryReport, gate: Gate
    ) -> None:
        by_digest = {d.image.digest: d for d in the_plan.deletions}
        groups = _groups_of(the_plan)
        vetoed: set[Digest] = set()
        pending = len(by_digest)
        for wave in the_plan.delete_waves:
            for batch in chunks(wave, ID_BATCH):
                todo = [d for d in batch if d not in vetoed]
                if not self._options.dry_run:
                    stop = gate()
                    if stop is not None:
                        report.held_back += pending
                        report.errors.append(f"stopped before deleting {pending} image(s): {stop}")
                        log.warning(
                            "repository %s: stopping deletions: %s",
                            repository.name,
                            stop,
                            extra={"repository": repository.name},
                        )
                        return
                    # the live view may have changed since the plan: check again, group-wide
                    for digest in todo:
                        if any(
                            self._now_protected(repository, by_digest, m) for m in groups[digest]
                        ):
                            vetoed.update(groups[digest])
                    todo = [d for d in todo if d not in vetoed]
                pending -= len(batch)
                if todo:
                    await self._delete(repository, todo, by_digest, report)
        report.vetoed = len(vetoed)
        if vetoed:
            log.warning(
                "repository %s: %d image(s) became in use after planning and were kept",
                repository.name,
                len(vetoed),
                extra={"repository": repository.name},
            )

    def _now_protected(
        self, repository: Repository, by_digest: Mapping[Digest, Decision], digest: Digest
    ) -> bool:
        if self._in_use.digest_in_use(digest):
            return True
        decision = by_digest.get(digest)
        tags = decision.image.tags if decision else ()
        return any(self._in_use.tag_in_use(repository.id, t) for t in tags)

    async def _delete(
        self,
        repository: Repository,
        digests: Sequence[Digest],
        by_digest: Mapping[Digest, Decision],
        report: RepositoryReport,
    ) -> None:
        verb = "would delete" if self._options.dry_run else "deleting"
        for digest in digests:
            decision = by_digest[digest]
            log.info(
                "%s %s@%s tags=%s reason=%s",
                verb,
                repository.name,
                digest,
                ",".join(decision.image.tags) or "-",
                decision.reason.value,
                extra={
                    "repository": repository.name,
                    "digest": digest,
                    "tags": list(decision.image.tags),
                    "reason": decision.reason.value,
                    "dry_run": self._options.dry_run,
                },
            )
        if self._options.dry_run:
            done: Sequence[Digest] = digests
        else:
            # a delete call in flight finishes (bounded) even when shutdown cancels the cycle:
            # then we know what it did. No new call starts once cancelled: this checkpoint
            # is where the cancellation lands, outside the shield.
            await anyio.lowlevel.checkpoint()
            with anyio.CancelScope(shield=True), anyio.fail_after(self._options.delete_timeout):
                outcome = await self._ecr.delete(repository, digests)
            done = outcome.deleted
            report.already_gone += len(outcome.gone)
            report.images_after -= len(outcome.gone)
            for failure in outcome.failed:
                report.failed.append(FailedDeletion(failure.digest, failure.code, failure.reason))
                log.error(
                    "could not delete %s@%s: %s %s",
                    repository.name,
                    failure.digest,
                    failure.code,
                    failure.reason,
                    extra={
                        "repository": repository.name,
                        "digest": failure.digest,
                        "code": failure.code,
                    },
                )
        for digest in done:
            image = by_digest[digest].image
            report.deleted.append(
                Deletion(digest, image.tags, by_digest[digest].reason.value, image.size_bytes)
            )
            report.bytes_reclaimed += image.size_bytes
            report.images_after -= 1


def _groups_of(the_plan: Plan) -> dict[Digest, frozenset[Digest]]:
    """For each image to delete: the doomed images linked to it by index edges (itself included)."""
    doomed = {d.image.digest: d.image for d in the_plan.deletions}
    links: dict[Digest, set[Digest]] = {d: {d} for d in doomed}
    for digest, image in doomed.items():
        for child in image.children:
            if child in doomed:
                links[digest].add(child)
                links[child].add(digest)
    groups: dict[Digest, frozenset[Digest]] = {}
    for start in doomed:
        if start in groups:
            continue
        seen, stack = {start}, [start]
        while stack:
            for nxt in links[stack.pop()] - seen:
                seen.add(nxt)
                stack.append(nxt)
        frozen = frozenset(seen)
        for member in seen:
            groups[member] = frozen
    return groups


def _log_repository(report: RepositoryReport, *, dry_run: bool) -> None:
    log.info(
        "repository %s: %d images before, %d after, %d %s, %d protected, %d failed, %d errors",
        report.name,
        report.images_before,
        report.images_after,
        len(report.deleted),
        "would be deleted" if dry_run else "deleted",
        sum(report.protected.values()),
        len(report.failed),
        len(report.errors),
        extra={
            "repository": report.name,
            "images_before": report.images_before,
            "images_after": report.images_after,
            "deleted": len(report.deleted),
            "dry_run": dry_run,
        },
    )
