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
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from typing import Final, Protocol

import anyio
import anyio.lowlevel

from controller.ecr import (
    ID_BATCH,
    DeleteOutcome,
    EcrError,
    EcrPort,
    Repository,
    RetryPolicy,
    chunks,
    with_children_of,
)
from controller.images import Digest
from controller.policy import (
    PROTECTING,
    Decision,
    Image,
    InUse,
    Plan,
    Reason,
    Rules,
    expiry,
    in_use_reason,
    plan,
)
from controller.settings import RepositorySelection, format_duration, is_glob

log = logging.getLogger(__name__)

CATCH_UP_POLL = 0.05
"""Seconds between two looks at a lagging view while a delete call waits for it."""

_ARTIFACT_DELETIONS = frozenset({Reason.ARTIFACT_OF_DELETED, Reason.ORPHANED_ARTIFACT})

Gate = Callable[[], str | None]
"""Returns why deleting must stop now (view untrusted, leadership lost, shutting down), or None."""


@dataclass(frozen=True, slots=True)
class Deletion:
    digest: Digest
    tags: tuple[str, ...]
    reason: Reason
    size_bytes: int


@dataclass(frozen=True, slots=True)
class FailedDeletion:
    digest: Digest
    code: str
    message: str


STOPPED = "Stopped"
"""The code of the error a repository reports when the gate stopped its deletions."""
NOT_FOUND = "RepositoryNotFoundException"
"""The code of a selected repository the registry does not have (ECR's own code for it)."""
NOTHING_SELECTED = "NothingSelected"
"""The code of a cycle whose selection matched none of the registry's repositories."""
PRUNE = "prune"
"""The operation of an error that is not an ECR call's: the controller's own prune step."""


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    """One error a report carries: where it happened, its bounded code, and what to read.

    `operation` is the ECR API operation that failed, or `prune` for the controller's own step;
    `code` is the ECR error code, an exception type, or one of the codes above. Both are metric
    labels; `message` is free text for people, never a label."""

    operation: str
    code: str
    message: str

    @classmethod
    def of(cls, exc: EcrError) -> ErrorRecord:
        return cls(exc.operation, exc.code, str(exc))

    def __str__(self) -> str:
        return self.message


@dataclass
class RepositoryReport:
    """What one cycle did to one repository."""

    name: str
    listed: bool = False
    # its images were listed and planned (False: it failed or was stopped before that)
    finished: bool = False
    # its prune task returned, whatever the outcome (False: cut off by shutdown, or not started)
    images_before: int = 0
    images_after: int = 0
    protected: dict[Reason, int] = field(default_factory=dict)
    # protected images by reason (attached artifacts apart: they do not count toward the limit)
    artifacts: int = 0
    # attached artifacts listed (signatures, attestations, SBOMs: policy.subjects_of)
    artifacts_deleted: int = 0
    # of `deleted_count`, the attached artifacts (or, in dry-run, that would have been)
    deleted_count: int = 0
    # images deleted, or, in dry-run, that would have been
    deleted: list[Deletion] = field(default_factory=list)
    # the first of them, at most PruneOptions.deletion_records (every one when that is None)
    already_gone: int = 0
    failed: list[FailedDeletion] = field(default_factory=list)
    vetoed: int = 0
    # dropped from a batch because they became in use after the plan
    held_back: int = 0
    # would be deleted but for the cap or a stopped cycle, or (an attached artifact) because
    # its subject's delete failed
    bytes_reclaimed: int = 0
    # the summed sizes of all `deleted_count` images: counted, since `deleted` may be a sample
    errors: list[ErrorRecord] = field(default_factory=list)
    # each error with its operation and code (the errors metric counts every one)
    bytes_total: int = 0
    # bytes in the repository before the cycle
    stopped_by: str | None = None
    # why the trust gate stopped its deletions (view untrusted, leadership lost, shutdown)
    expired: RepositoryReport | None = None
    # with --delete-archived-after: the archived images, and those it deleted (their counts
    # are the archive's, never the active images' above)

    @property
    def ok(self) -> bool:
        return not self.errors and not self.failed and (self.expired is None or self.expired.ok)

    @property
    def stopped(self) -> bool:
        """Cut short: by shutdown before its task returned, or by the gate between batches."""
        return not self.finished or self.stopped_by is not None


@dataclass
class CycleReport:
    started_at: datetime
    dry_run: bool
    disposal: str = "delete"
    # what the cycle does to the images it lets go: delete or archive (Disposal.name)
    listed: bool = False
    # the registry's repositories were listed and the selection applied (False: the listing
    # failed, or the cycle was refused or stopped before): `repositories` is then every
    # selected repository the registry has
    repositories: list[RepositoryReport] = field(default_factory=list)
    errors: list[ErrorRecord] = field(default_factory=list)
    # cycle-level problems: listing repositories failed, missing repositories, nothing selected
    warnings: list[str] = field(default_factory=list)
    # cycle-level oddities that fail nothing: a -repos glob that matched no repository
    refused: str | None = None
    # why the cycle deleted nothing at all, if it was refused
    stopped: str | None = None
    # why the cycle was cut short (shutdown) after it started; what it did is in `repositories`
    finished_at: datetime | None = None

    @property
    def ok(self) -> bool:
        return (
            not self.errors
            and self.refused is None
            and self.stopped is None
            and all(r.ok for r in self.repositories)
        )

    @property
    def deleted(self) -> int:
        return sum(r.deleted_count for r in self.repositories)

    @property
    def expired(self) -> int:
        """Archived images deleted by --delete-archived-after (or that would be)."""
        return sum(r.expired.deleted_count for r in self.repositories if r.expired is not None)

    @property
    def bytes_reclaimed(self) -> int:
        return sum(r.bytes_reclaimed for r in self.repositories)


class Disposal(Protocol):
    """What the pruner does to the images a plan lets go, chosen once, in PruneOptions.

    The plan, the trust gate, the catch-up wait, the in-use veto before every attempt and the
    retries are the same whatever the disposal: only the call differs. With
    `PruneOptions.dry_run` nothing is called and the plan is reported in the disposal's words
    ("would archive ...")."""

    @property
    def name(self) -> str:
        """ "delete" or "archive": the report's and the metrics' word for it."""
        ...

    @property
    def operation(self) -> str:
        """The ECR operation one call is (the retry log names it)."""
        ...

    @property
    def batch(self) -> int:
        """Images per call."""
        ...

    @property
    def doing(self) -> str:
        """The log's verb for a call: "deleting"."""
        ...

    @property
    def done(self) -> str:
        """The report's word for what was done: "deleted"."""
        ...

    async def dispose(
        self, ecr: EcrPort, repository: Repository, digests: Sequence[Digest]
    ) -> DeleteOutcome:
        """One call for at most `batch` images; what it did (`deleted`: disposed of)."""
        ...


@dataclass(frozen=True, slots=True)
class Delete:
    """BatchDeleteImage, 100 images a call: the images are gone for good."""

    name: str = "delete"
    operation: str = "BatchDeleteImage"
    batch: int = ID_BATCH
    doing: str = "deleting"
    done: str = "deleted"

    async def dispose(
        self, ecr: EcrPort, repository: Repository, digests: Sequence[Digest]
    ) -> DeleteOutcome:
        return await ecr.delete(repository, digests)


@dataclass(frozen=True, slots=True)
class Archive:
    """UpdateImageStorageClass to ARCHIVE, one image a call (the API takes one): the images
    leave the standard storage class, cannot be pulled, and can be restored (`restoring`)."""

    name: str = "archive"
    operation: str = "UpdateImageStorageClass"
    batch: int = 1
    doing: str = "archiving"
    done: str = "archived"

    async def dispose(
        self, ecr: EcrPort, repository: Repository, digests: Sequence[Digest]
    ) -> DeleteOutcome:
        (digest,) = digests
        return await ecr.archive(repository, digest)


DELETE: Final = Delete()
ARCHIVE: Final = Archive()
DISPOSALS: Final = {d.name: d for d in (DELETE, ARCHIVE)}
"""Each disposal by its name (CycleReport.disposal)."""


class Catalog(Protocol):
    """Who keeps the archived images for restore on use (controller.restoring.Restorer)."""

    def listed(self, repository: Repository, images: Sequence[Image]) -> None:
        """A repository's ARCHIVED images as the cycle listed them (replacing the last list)."""
        ...

    def archived(self, repository: Repository, image: Image) -> None:
        """One image this cycle has just archived."""
        ...


@dataclass(frozen=True, slots=True)
class PruneOptions:
    selection: RepositorySelection
    rules_for: Callable[[str], Rules]
    dry_run: bool = True
    concurrency: int = 8
    delete_timeout: float = 20.0
    # bound on one BatchDeleteImage attempt; it is shielded from shutdown so it is never cut off
    deletion_records: int | None = None
    # keep at most this many Deletion records per repository in the report (None: all): a
    # service needs the counts, and the records of a whole registry's cycle would make the
    # memory grow with the number of repositories
    unused_overrides: Callable[[Sequence[str]], Sequence[str]] = lambda _names: ()
    # the --config entries that apply to none of these repositories, described for a warning
    lagging: Callable[[], str | None] = lambda: None
    # which source's view is behind right now (reconnecting, re-listing), or None: a delete
    # call waits up to `catch_up` seconds for it, then the repository stops deleting
    catch_up: float = 30.0
    delete_retry: RetryPolicy = field(default_factory=RetryPolicy)
    # the controller's own retries of a throttled or failed delete or archive call (never the
    # SDK's): the trust gate and the in-use veto run again before every attempt
    disposal: Disposal = DELETE
    # what happens to the images the plans let go
    catalog: Catalog | None = None
    # with Archive: who is told of the archived images (restore on use); they are listed with
    # every cycle, one more DescribeImages (per 1000) per repository


class Pruner:
    """Runs cycles against one ECR gateway and one live in-use view."""

    def __init__(self, ecr: EcrPort, in_use: InUse, options: PruneOptions) -> None:
        self._ecr = ecr
        self._in_use = in_use
        self._options = options
        self._announced: dict[str, frozenset[Digest]] = {}
        # dry-run: per repository, the would-be deletions already logged at INFO
        self._unused: list[str] = []
        # the unused --config entries last warned about

    async def run_cycle(
        self,
        *,
        now: datetime,
        gate: Gate,
        clock: Callable[[], datetime],
        stop: anyio.Event | None = None,
    ) -> CycleReport:
        """One cycle over every selected repository; never raises for a repository's failure.

        When `stop` is set the cycle ends early: an in-flight delete call finishes, no other
        starts, and the report says what was done and that the cycle was stopped.
        """
        report = CycleReport(
            started_at=now, dry_run=self._options.dry_run, disposal=self._options.disposal.name
        )
        refusal = gate()
        if refusal is not None:
            report.refused = refusal
            log.warning("cycle refused, deleting nothing: %s", refusal)
            report.finished_at = clock()
            return report
        with anyio.CancelScope() as work:
            async with anyio.create_task_group() as tg:
                if stop is not None:
                    tg.start_soon(_cancel_when_set, stop, work)
                await self._prune_all(report, now, gate)
                tg.cancel_scope.cancel()  # done: the stop watcher is no longer needed
        if work.cancelled_caught:
            report.stopped = "shutting down"
            unfinished = [r.name for r in report.repositories if not r.finished]
            log.warning(
                "cycle stopped by shutdown; %d repositories not finished: %s",
                len(unfinished),
                ", ".join(unfinished) or "-",
            )
        report.finished_at = clock()
        return report

    async def _prune_all(self, report: CycleReport, now: datetime, gate: Gate) -> None:
        try:
            repositories, missing = await self._select(report)
        except EcrError as exc:
            report.errors.append(
                ErrorRecord(exc.operation, exc.code, f"listing repositories: {exc}")
            )
            log.error("cannot list repositories: %s", exc)
            return
        report.listed = True
        if missing:
            report.errors.append(
                ErrorRecord(
                    "DescribeRepositories",
                    NOT_FOUND,
                    "repositories not found: " + ", ".join(missing),
                )
            )
            log.error("repositories not found: %s", ", ".join(missing))
        limiter = anyio.CapacityLimiter(self._options.concurrency)
        report.repositories = [RepositoryReport(r.name) for r in repositories]
        async with anyio.create_task_group() as tg:
            for repository, repo_report in zip(repositories, report.repositories, strict=True):
                tg.start_soon(self._guarded, repository, repo_report, limiter, now, gate)

    async def _select(self, report: CycleReport) -> tuple[list[Repository], tuple[str, ...]]:
        selection = self._options.selection
        listing = await self._ecr.repositories(selection.exact_names)
        chosen = sorted(
            (r for r in listing.repositories if selection.matches(r.name)), key=lambda r: r.name
        )
        names = [r.name for r in listing.repositories]
        for pattern in selection.include:
            if is_glob(pattern) and not any(fnmatchcase(n, pattern) for n in names):
                report.warnings.append(f"-repos pattern {pattern!r} matches no repository")
                log.warning("-repos pattern %r matches no repository in the registry", pattern)
        unused = list(self._options.unused_overrides([r.name for r in chosen]))
        if unused:
            report.warnings.append(
                "--config entries that apply to no repository: " + ", ".join(unused)
            )
            if unused != self._unused:
                log.warning("%s", report.warnings[-1])
        self._unused = unused
        if not chosen and not listing.missing:
            message = (
                "no repository selected: -repos "
                + ",".join(selection.include)
                + (
                    f" minus --exclude-repos {','.join(selection.exclude)}"
                    if selection.exclude
                    else ""
                )
                + " matches none of the registry's repositories"
            )
            report.errors.append(ErrorRecord(PRUNE, NOTHING_SELECTED, message))
            log.error("no repository selected: %s", message)
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
                report.errors.append(ErrorRecord.of(exc))
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
                name = type(exc).__name__
                report.errors.append(ErrorRecord(PRUNE, name, f"{name}: {exc}"))
                log.exception(
                    "repository %s failed", repository.name, extra={"repository": repository.name}
                )
        report.finished = True
        _log_repository(report, dry_run=self._options.dry_run, disposal=self._options.disposal)

    async def _prune(
        self, repository: Repository, report: RepositoryReport, now: datetime, gate: Gate
    ) -> None:
        images = await with_children_of(self._ecr, repository, await self._ecr.images(repository))
        catalog = self._options.catalog
        rules = self._options.rules_for(repository.name)
        archived: list[Image] | None = None
        if catalog is not None or rules.delete_archived_after is not None:
            # archive mode: what restore on use may have to bring back; expiry: what may go
            listed = await self._ecr.images(repository, archived=True)
            archived = await with_children_of(self._ecr, repository, listed)
            if catalog is not None:
                catalog.listed(repository, archived)
        the_plan = plan(images, repository=repository.id, in_use=self._in_use, rules=rules, now=now)
        report.listed = True
        report.images_before = report.images_after = len(the_plan.decisions)
        report.bytes_total = sum(d.image.size_bytes for d in the_plan.decisions)
        counts = the_plan.count_by_reason()
        report.protected = {r: n for r, n in counts.items() if r in PROTECTING}
        report.artifacts = len(the_plan.artifacts)
        capped_artifacts = the_plan.count_by_reason(artifacts=True).get(Reason.DELETION_CAP, 0)
        report.held_back += counts.get(Reason.DELETION_CAP, 0) + capped_artifacts
        if log.isEnabledFor(logging.DEBUG):  # -v=1: why each image stays
            for decision in the_plan.kept:
                log.debug(
                    "keep %s@%s tags=%s reason=%s %s",
                    repository.name,
                    decision.image.digest,
                    ",".join(decision.image.tags) or "-",
                    decision.reason.value,
                    decision.detail,
                    extra={"repository": repository.name, "reason": decision.reason.value},
                )
        disposal = self._options.disposal
        if self._options.dry_run:
            self._dry_run(repository, the_plan, report, disposal)
        else:
            await self._execute(repository, the_plan, report, gate, disposal)
        if report.stopped_by is not None:
            return  # the gate stopped this repository's deletions: none from the archive either
        if archived is not None and rules.delete_archived_after is not None:
            await self._expire(repository, archived, images, report, rules, now, gate)

    async def _expire(
        self,
        repository: Repository,
        archived: Sequence[Image],
        active: Sequence[Image],
        report: RepositoryReport,
        rules: Rules,
        now: datetime,
        gate: Gate,
    ) -> None:
        """--delete-archived-after: delete the archived images `policy.expiry` lets go, with
        the same gate, catch-up wait, in-use veto and retries as any deletion, after the
        cycle's own deletions or archiving (which share --max-deletions-per-cycle with it)."""
        cap = rules.max_deletions_per_cycle
        if cap is not None:
            rules = replace(rules, max_deletions_per_cycle=max(cap - report.deleted_count, 0))
        the_plan = expiry(
            archived, active, repository=repository.id, in_use=self._in_use, rules=rules, now=now
        )
        expired = report.expired = RepositoryReport(repository.name, listed=True)
        expired.images_before = expired.images_after = len(the_plan.decisions)
        expired.bytes_total = sum(d.image.size_bytes for d in the_plan.decisions)
        counts = the_plan.count_by_reason()
        expired.protected = {r: n for r, n in counts.items() if r in PROTECTING}
        expired.held_back = counts.get(Reason.DELETION_CAP, 0)
        if self._options.dry_run:
            self._dry_run(
                repository, the_plan, expired, DELETE, seen_as=f"{repository.name} archived"
            )
        else:
            try:
                await self._execute(repository, the_plan, expired, gate, DELETE)
            finally:
                report.stopped_by = report.stopped_by or expired.stopped_by
                report.errors.extend(expired.errors)
                expired.errors.clear()
        expired.finished = True
        if expired.deleted_count or expired.failed or log.isEnabledFor(logging.DEBUG):
            log.info(
                "repository %s: %d archived image(s), %d %s (archived over %s ago), %d failed",
                repository.name,
                expired.images_before,
                expired.deleted_count,
                "would be deleted" if self._options.dry_run else "deleted",
                format_duration(rules.delete_archived_after or timedelta()),
                len(expired.failed),
                extra={"repository": repository.name, "expired": expired.deleted_count},
            )

    def _dry_run(
        self,
        repository: Repository,
        the_plan: Plan,
        report: RepositoryReport,
        disposal: Disposal,
        *,
        seen_as: str | None = None,
    ) -> None:
        """Report the plan's deletions without a call. Logged at INFO the first time each
        would-be deletion appears, at DEBUG on later cycles while the plan stays the same
        (remembered per repository, or per `seen_as` for the archive's expiry)."""
        key = seen_as or repository.name
        seen = self._announced.get(key, frozenset())
        doomed = [d for wave in the_plan.delete_waves for d in wave]
        by_digest = {d.image.digest: d for d in the_plan.deletions}
        verb = f"would {disposal.name}"
        for batch in chunks(doomed, disposal.batch):  # as the real run would send them
            decisions = [by_digest[d] for d in batch]
            fresh = [d for d in decisions if d.image.digest not in seen]
            again = [d for d in decisions if d.image.digest in seen]
            if fresh:
                _log_batch(verb, repository, fresh, dry_run=True)
            if again and log.isEnabledFor(logging.DEBUG):
                _log_batch(verb, repository, again, dry_run=True, level=logging.DEBUG)
            self._record(report, decisions)
        unchanged = sum(1 for d in doomed if d in seen)
        if unchanged:
            log.info(
                "repository %s: %d would-be deletion(s) unchanged since the last cycle "
                "(listed at DEBUG, -v=1)",
                repository.name,
                unchanged,
                extra={"repository": repository.name},
            )
        self._announced[key] = frozenset(doomed)

    async def _execute(
        self,
        repository: Repository,
        the_plan: Plan,
        report: RepositoryReport,
        gate: Gate,
        disposal: Disposal,
    ) -> None:
        by_digest = {d.image.digest: d for d in the_plan.deletions}
        groups = the_plan.groups
        vetoed: set[Digest] = set()
        gone = _Gone(the_plan.after)
        pending = len(by_digest)
        try:
            for wave in the_plan.delete_waves:
                for batch in chunks(wave, disposal.batch):
                    sent = await self._send(
                        repository,
                        batch,
                        by_digest,
                        report,
                        gate,
                        disposal,
                        groups=groups,
                        vetoed=vetoed,
                        gone=gone,
                    )
                    if not sent:
                        report.held_back += pending
                        report.errors.append(
                            ErrorRecord(
                                PRUNE,
                                STOPPED,
                                f"stopped before {disposal.doing} "
                                f"{pending} image(s): {report.stopped_by}",
                            )
                        )
                        log.warning(
                            "repository %s: stopping deletions, %d left: %s",
                            repository.name,
                            pending,
                            report.stopped_by,
                            extra={"repository": repository.name},
                        )
                        return
                    pending -= len(batch)
        except anyio.get_cancelled_exc_class():
            report.held_back += pending  # shutdown: the batches not sent
            raise
        finally:
            report.vetoed = len(vetoed)
            if gone.stranded:
                report.held_back += len(gone.stranded)
                log.warning(
                    "repository %s: %d attached artifact(s) kept: their subject was not deleted",
                    repository.name,
                    len(gone.stranded),
                    extra={"repository": repository.name},
                )
            if vetoed:
                log.warning(
                    "repository %s: %d image(s) became in use after planning and were kept",
                    repository.name,
                    len(vetoed),
                    extra={"repository": repository.name},
                )

    async def _send(
        self,
        repository: Repository,
        batch: Sequence[Digest],
        by_digest: Mapping[Digest, Decision],
        report: RepositoryReport,
        gate: Gate,
        disposal: Disposal,
        *,
        groups: Mapping[Digest, frozenset[Digest]],
        vetoed: set[Digest],
        gone: _Gone,
    ) -> bool:
        """Delete one batch, retrying throttles and transient failures; False if the gate said stop.

        Before every attempt, the first and each retry, the gate is asked again and the batch is
        checked again against the live in-use view: a back-off of many seconds is time enough for
        a rollback to start using an image, or for this replica to lose the Lease.
        """
        retry = self._options.delete_retry
        waited = 0.0
        announced: set[Digest] = set()
        attempt = 0
        while True:
            # where a shutdown's cancellation lands: no new call starts once cancelled. It is
            # the last await before the call: between the gate and the veto below and the
            # call itself nothing else runs, so no event can slip in after the check
            await anyio.lowlevel.checkpoint()
            behind = await self._caught_up(repository)
            stop = gate() or behind
            if stop is not None:
                report.stopped_by = stop
                return False
            # the live view may have changed since the plan: check again, group-wide
            now_protected = self._protected_now(repository, by_digest)
            for digest in batch:
                if digest in vetoed:
                    continue
                members = groups.get(digest) or (digest,)
                if any(now_protected(m) for m in members):
                    vetoed.update(members)
            todo = [d for d in batch if d not in vetoed and gone.may_go(d)]
            if not todo:
                return True
            if any(d not in announced for d in todo):
                fresh = [by_digest[d] for d in todo if d not in announced]
                _log_batch(disposal.doing, repository, fresh, dry_run=False)
            announced.update(todo)
            try:
                # a delete call in flight finishes (bounded) even when shutdown cancels the
                # cycle: then we know what it did
                with anyio.CancelScope(shield=True), anyio.fail_after(self._options.delete_timeout):
                    outcome = await disposal.dispose(self._ecr, repository, todo)
            except EcrError as exc:
                attempt += 1
                delay = retry.delay(attempt)
                if not exc.retryable or attempt >= retry.attempts or waited + delay > retry.budget:
                    raise
                waited += delay
                log.warning(
                    "repository %s: %s of %d image(s) failed (%s: %s); "
                    "attempt %d of %d, checking the batch again and retrying in %.2fs",
                    repository.name,
                    disposal.operation,
                    len(todo),
                    exc.code,
                    exc.message,
                    attempt,
                    retry.attempts,
                    delay,
                    extra={"repository": repository.name, "code": exc.code},
                )
                await anyio.sleep(delay)
                continue
            gone.record(outcome)
            self._record_outcome(repository, outcome, by_digest, report)
            catalog = self._options.catalog
            if catalog is not None and disposal.name == ARCHIVE.name:
                for digest in outcome.deleted:
                    catalog.archived(repository, by_digest[digest].image)
            return True

    async def _caught_up(self, repository: Repository) -> str | None:
        """Wait, before a delete call, while a source's view is behind (a watch reconnecting,
        a re-list after 410): a pod created in that gap is not in the view yet, and the veto
        can only see what the view holds. None once every source is current; why not, after
        `catch_up` seconds. Ends on a checkpoint-free path when nothing lags."""
        behind = self._options.lagging()
        if behind is None:
            return None
        log.info(
            "repository %s: waiting up to %gs before deleting, until the view catches up: %s",
            repository.name,
            self._options.catch_up,
            behind,
            extra={"repository": repository.name},
        )
        with anyio.move_on_after(self._options.catch_up):
            while behind is not None:
                await anyio.sleep(CATCH_UP_POLL)
                behind = self._options.lagging()
        if behind is not None:
            return f"view behind for {self._options.catch_up:g}s: {behind}"
        return None

    def _protected_now(
        self, repository: Repository, by_digest: Mapping[Digest, Decision]
    ) -> Callable[[Digest], bool]:
        """Whether an image of the batch is in use in the live view: the policy's in-use rules
        (by digest, or by a tag it carries), with the view's tags of this repository looked up
        once per attempt."""
        view = self._in_use
        tags_in_use = view.tags_in(repository.id)

        def protected(digest: Digest) -> bool:
            return in_use_reason(by_digest[digest].image, view, tags_in_use) is not None

        return protected

    def _record_outcome(
        self,
        repository: Repository,
        outcome: DeleteOutcome,
        by_digest: Mapping[Digest, Decision],
        report: RepositoryReport,
    ) -> None:
        report.already_gone += len(outcome.gone)
        report.images_after -= len(outcome.gone)
        if outcome.gone:
            log.info(
                "repository %s: %d image(s) already gone (deleted by someone else since the "
                "listing), counted as done: %s",
                repository.name,
                len(outcome.gone),
                ", ".join(outcome.gone),
                extra={"repository": repository.name},
            )
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
        self._record(report, [by_digest[digest] for digest in outcome.deleted])

    def _record(self, report: RepositoryReport, decisions: Sequence[Decision]) -> None:
        """Count deletions done (or that a dry run would do) in `report`, and keep a record of
        each while `deletion_records` allows."""
        limit = self._options.deletion_records
        room = len(decisions) if limit is None else max(0, limit - len(report.deleted))
        report.deleted.extend(
            Deletion(d.image.digest, d.image.tags, d.reason, d.image.size_bytes)
            for d in decisions[:room]
        )
        report.deleted_count += len(decisions)
        report.artifacts_deleted += sum(d.reason in _ARTIFACT_DELETIONS for d in decisions)
        report.bytes_reclaimed += sum(d.image.size_bytes for d in decisions)
        report.images_after -= len(decisions)


class _Gone:
    """What one repository's deletions have removed so far, for the artifacts that may go only
    after their subjects: a subject whose deletion failed keeps its signature."""

    def __init__(self, after: Mapping[Digest, frozenset[Digest]]) -> None:
        self._after = after
        self._gone: set[Digest] = set()
        self.stranded: set[Digest] = set()
        # artifacts held back because a subject is still there

    def may_go(self, digest: Digest) -> bool:
        subjects = self._after.get(digest)
        if subjects is None or subjects <= self._gone:
            return True
        self.stranded.add(digest)
        return False

    def record(self, outcome: DeleteOutcome) -> None:
        if self._after:
            self._gone.update(outcome.deleted)
            self._gone.update(outcome.gone)


async def _cancel_when_set(event: anyio.Event, scope: anyio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


def _log_batch(
    verb: str,
    repository: Repository,
    decisions: Sequence[Decision],
    *,
    dry_run: bool,
    level: int = logging.INFO,
) -> None:
    """One line per delete call (at most 100 images), naming every image as `repo@digest`
    with its tags and reason: the audit trail, at a hundredth of the cost of a line each
    (110,000 log records were an eighth of a large cycle's CPU)."""
    if not log.isEnabledFor(level):
        return
    name = repository.name
    lines, images = [], []
    for decision in decisions:
        image, reason = decision.image, _REASON_TEXT[decision.reason]
        lines.append(f"{name}@{image.digest} tags={','.join(image.tags) or '-'} reason={reason}")
        images.append({"digest": image.digest, "tags": list(image.tags), "reason": reason})
    log.log(
        level,
        "%s %d image(s) from %s: %s",
        verb,
        len(decisions),
        name,
        "; ".join(lines),
        extra={"repository": name, "images": images, "dry_run": dry_run},
    )


_REASON_TEXT: Final = {reason: reason.value for reason in Reason}
"""Each reason's text, looked up: an enum member's `.value` is a descriptor call."""


def _log_repository(report: RepositoryReport, *, dry_run: bool, disposal: Disposal) -> None:
    done = disposal.done
    log.info(
        "repository %s: %d images before, %d after, %d %s, %d protected, %d failed, %d errors",
        report.name,
        report.images_before,
        report.images_after,
        report.deleted_count,
        f"would be {done}" if dry_run else done,
        sum(report.protected.values()),
        len(report.failed),
        len(report.errors),
        extra={
            "repository": report.name,
            "images_before": report.images_before,
            "images_after": report.images_after,
            "deleted": report.deleted_count,
            "dry_run": dry_run,
        },
    )
