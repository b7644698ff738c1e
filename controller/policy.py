"""The retention policy: a pure function from a repository's images, the in-use view, rules and `now` to a Plan."""

from __future__ import annotations

import re
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from operator import attrgetter
from typing import Final, Protocol

from controller.identifiers import RepositoryId
from controller.images import Digest

DEFAULT_MAX_IMAGES = 900


class InUse(Protocol):
    """What the policy asks of the in-use view (inventory.InUseIndex, or a frozen InUseSnapshot)."""

    def digest_in_use(self, digest: Digest) -> bool: ...

    def tag_in_use(self, repository: RepositoryId, tag: str) -> bool: ...

    def tags_in(self, repository: RepositoryId) -> Container[str]:
        """The tags of `repository` that watched specs name (one lookup for a whole listing)."""
        ...


@dataclass(frozen=True, slots=True)
class Rules:
    """What one repository keeps. Every field can be overridden per repository."""

    max_images: int = DEFAULT_MAX_IMAGES
    # at most this many images in the repository; protected ones count but are never deleted
    keep_tags: frozenset[str] = frozenset({"latest"})
    # an image carrying any of these tags is kept (exact match)
    keep_filters: tuple[re.Pattern[str], ...] = field(default=())
    # an image with a tag matched by any of these (unanchored search, as the Go controller) is kept
    keep_younger_than: timedelta | None = None
    # images pushed within this window are kept
    keep_pulled_within: timedelta | None = None
    # images whose lastRecordedPullTime is within this window are kept
    max_deletions_per_cycle: int | None = None
    # optional safety valve: at most this many deletions per repository per cycle
    delete_orphaned_artifacts: bool = False
    # delete an attached artifact whose subject is in none of the repository's images (off:
    # signatures may be stored apart from their images, cosign's COSIGN_REPOSITORY)
    delete_archived_after: timedelta | None = None
    # delete the archived images (ARCHIVE storage class) whose lastArchivedAt is older than
    # this, unless in use (`expiry`); None: archived images are never deleted


class Action(StrEnum):
    KEEP = "keep"
    DELETE = "delete"


class Reason(StrEnum):
    """Why an image is kept or deleted. The first group protects: such an image is never deleted."""

    IN_USE = "in-use"
    # a watched object runs this digest (status imageID) or names it by digest
    IN_USE_TAG = "in-use-tag"
    # a watched spec names one of its tags, and that tag points to it now
    KEEP_TAG = "keep-tag"
    # one of its tags is a keep tag (default `latest`)
    KEEP_REGEX = "keep-regex"
    # one of its tags matches a keep filter
    YOUNG = "young"
    # pushed within --keep-younger-than
    RECENTLY_PULLED = "recently-pulled"
    # lastRecordedPullTime within --keep-pulled-within
    INDEX_CHILD = "index-child"
    # a child manifest of an index that is kept
    INDEX_PARENT = "index-parent"
    # an index (or sibling) linked to a protected manifest: index and children go together
    ARTIFACT_OF_KEPT = "artifact-of-kept"
    # a signature, attestation or SBOM whose subject is kept, or in use
    SUBJECT_ELSEWHERE = "subject-not-here"
    # an attached artifact whose subject is not in this repository: left alone
    ARCHIVED_RECENTLY = "archived-recently"
    # an archived image whose lastArchivedAt is within --delete-archived-after (or unknown)
    ACTIVE = "active"
    # (expiry only) an image in the standard storage class: expiry deletes archived ones only
    # -- not protected: kept only because the repository is within its budget
    WITHIN_COUNT = "within-count"
    # among the newest `max-images`
    DELETION_CAP = "deletion-cap"
    # would be deleted, but --max-deletions-per-cycle was reached
    # -- deleted
    OVER_COUNT = "over-count"
    # oldest unprotected image beyond `max-images`
    CHILD_OF_DELETED = "child-of-deleted-index"
    # a child manifest referenced only by indexes being deleted
    ARTIFACT_OF_DELETED = "artifact-of-deleted"
    # an attached artifact whose subjects are all deleted in this cycle: it goes after them
    ORPHANED_ARTIFACT = "orphaned-artifact"
    # an attached artifact whose subject is not in the repository (--delete-orphaned-artifacts)
    ARCHIVE_EXPIRED = "archive-expired"
    # an archived image whose lastArchivedAt is older than --delete-archived-after


PROTECTING = frozenset(
    {
        Reason.IN_USE,
        Reason.IN_USE_TAG,
        Reason.KEEP_TAG,
        Reason.KEEP_REGEX,
        Reason.YOUNG,
        Reason.RECENTLY_PULLED,
        Reason.INDEX_CHILD,
        Reason.INDEX_PARENT,
        Reason.ARTIFACT_OF_KEPT,
        Reason.SUBJECT_ELSEWHERE,
        Reason.ARCHIVED_RECENTLY,
        Reason.ACTIVE,
    }
)


@dataclass(slots=True)
class Image:
    """One image of a repository, as DescribeImages (and BatchGetImage for indexes) report it.

    Plain data, never changed once built (not `frozen`: a frozen dataclass costs three times
    as much to build, and a cycle builds one per image listed)."""

    digest: Digest
    pushed_at: datetime
    # timezone-aware UTC
    tags: tuple[str, ...] = ()
    size_bytes: int = 0
    last_pulled_at: datetime | None = None
    children: tuple[Digest, ...] = ()
    # for an image index (manifest list): the digests of the manifests it references
    media_type: str | None = None
    subject: Digest | None = None
    # OCI 1.1 subjectManifestDigest: the image this artifact (signature, SBOM, ...) belongs to
    archived_at: datetime | None = None
    # lastArchivedAt, for an image in the archive storage class (listed only when asked for)


_COSIGN_TAG = re.compile(r"sha256-([0-9a-f]{64})\.(?:sig|att|sbom)")


def subjects_of(image: Image) -> frozenset[Digest]:
    """The images `image` is attached to: its `subject`, and the digests its tags name when
    every tag is a cosign-scheme tag (`sha256-<hex>.sig`, `.att`, `.sbom`). Empty: not an
    attached artifact."""
    found: set[Digest] = set()
    if image.subject is not None:
        found.add(image.subject)
    tags = image.tags
    if tags and tags[0].startswith("sha256-"):  # the common case leaves on the prefix
        named = [_COSIGN_TAG.fullmatch(tag) for tag in tags]
        if all(named):
            found.update(Digest("sha256:" + match[1]) for match in named if match)
    found.discard(image.digest)
    return frozenset(found)


@dataclass(slots=True)
class Decision:
    """Keep or delete one image, and why (never changed once built; not `frozen`, as Image)."""

    image: Image
    action: Action
    reason: Reason
    detail: str = ""
    # which tag, filter or window decided it, for the log

    @property
    def protected(self) -> bool:
        return self.reason in PROTECTING


@dataclass(frozen=True, slots=True)
class Plan:
    """Keep or delete, with a reason, for every image of one repository."""

    decisions: tuple[Decision, ...]
    # newest first, digest as tie-breaker
    delete_waves: tuple[tuple[Digest, ...], ...]
    # the deletions in the order ECR accepts them: indexes in an earlier wave than their children
    groups: Mapping[Digest, frozenset[Digest]] = field(default_factory=dict)
    # each deletion linked by index edges or artifact-to-subject edges to others, mapped to its
    # whole group (itself included): the group goes as a whole or stays as a whole. A deletion
    # absent from it stands alone.
    after: Mapping[Digest, frozenset[Digest]] = field(default_factory=dict)
    # each attached artifact deleted with its subjects, mapped to them: it is sent only once
    # they are gone (a subject whose deletion failed keeps its signature)
    artifacts: frozenset[Digest] = frozenset()
    # the attached artifacts among the images: they do not count toward max-images

    @property
    def deletions(self) -> tuple[Decision, ...]:
        return tuple(d for d in self.decisions if d.action is Action.DELETE)

    @property
    def kept(self) -> tuple[Decision, ...]:
        return tuple(d for d in self.decisions if d.action is Action.KEEP)

    def count_by_reason(self, *, artifacts: bool = False) -> dict[Reason, int]:
        """Decisions by reason: of the images (counted toward max-images), or of the attached
        artifacts, which are counted apart."""
        counts: dict[Reason, int] = {}
        chosen = self.artifacts
        if not chosen:  # the common case: no artifact, one pass without a lookup
            if artifacts:
                return counts
            for decision in self.decisions:
                counts[decision.reason] = counts.get(decision.reason, 0) + 1
            return counts
        for decision in self.decisions:
            if (decision.image.digest in chosen) is artifacts:
                counts[decision.reason] = counts.get(decision.reason, 0) + 1
        return counts


def protection(
    image: Image, *, repository: RepositoryId, in_use: InUse, rules: Rules, now: datetime
) -> tuple[Reason, str] | None:
    """The first reason that protects this image on its own, or None."""
    return _protection(image, in_use, in_use.tags_in(repository), rules, now)


def in_use_reason(
    image: Image, view: InUse, tags_in_use: Container[str]
) -> tuple[Reason, str] | None:
    """The protection's first rules, the ones the live view can change between the plan and a
    delete call: the image is run by digest, or named by a tag that points to it now.
    `tags_in_use` is `view.tags_in(repository)`, looked up once per repository by the caller."""
    if view.digest_in_use(image.digest):
        return Reason.IN_USE, image.digest
    for tag in image.tags:
        if tag in tags_in_use:
            return Reason.IN_USE_TAG, tag
    return None


def _protection(
    image: Image, view: InUse, tags_in_use: Container[str], rules: Rules, now: datetime
) -> tuple[Reason, str] | None:
    found = in_use_reason(image, view, tags_in_use)
    if found is not None:
        return found
    tags = image.tags
    if tags:
        for tag in tags:
            if tag in rules.keep_tags:
                return Reason.KEEP_TAG, tag
        for pattern in rules.keep_filters:
            for tag in tags:
                if pattern.search(tag):
                    return Reason.KEEP_REGEX, f"{tag}~{pattern.pattern}"
    if rules.keep_younger_than is not None and now - image.pushed_at < rules.keep_younger_than:
        return Reason.YOUNG, image.pushed_at.isoformat()
    if (
        rules.keep_pulled_within is not None
        and image.last_pulled_at is not None
        and now - image.last_pulled_at < rules.keep_pulled_within
    ):
        return Reason.RECENTLY_PULLED, image.last_pulled_at.isoformat()
    return None


_AGE_AND_DIGEST: Final = attrgetter("pushed_at", "digest")


def plan(
    images: Iterable[Image],
    *,
    repository: RepositoryId,
    in_use: InUse,
    rules: Rules,
    now: datetime,
) -> Plan:
    """Decide, for every image of one repository, whether it stays or goes, and why.

    Images linked by index→child edges form a group that is kept or deleted as a whole:
    a kept index keeps its children, a protected child keeps its index, and a child shared
    by several indexes goes only with all of them. Protected images count toward
    `max_images` but are never deleted. Unprotected groups are deleted oldest first (a
    group is as young as its youngest member; digest breaks ties) until the repository
    fits, or until `max_deletions_per_cycle` would be exceeded.

    Attached artifacts (signatures, attestations, SBOMs: `subjects_of`) follow their subject:
    they do not count toward `max_images`, they stay while any subject stays (or is in use),
    and they are deleted with their subjects, after them, in the same group. One whose
    subject is not in the repository is left alone unless `delete_orphaned_artifacts`. An
    artifact that is itself an index or an index's child stays in the index graph instead.
    """
    by_digest: dict[Digest, Image] = {}
    for image in images:
        by_digest.setdefault(image.digest, image)
    if not by_digest:
        return Plan((), ())

    tags_in_use = in_use.tags_in(repository)
    direct: dict[Digest, tuple[Reason, str]] = {}
    for digest, image in by_digest.items():
        found = _protection(image, in_use, tags_in_use, rules, now)
        if found is not None:
            direct[digest] = found

    artifacts = _artifacts(by_digest)
    primary = {d: i for d, i in by_digest.items() if d not in artifacts} if artifacts else by_digest
    # newest first, digest as the tie-breaker: the order of the decisions, and reversed, the
    # order in which single images (the common case: no index) are considered for deletion
    newest_first = [
        image.digest for image in sorted(by_digest.values(), key=_AGE_AND_DIGEST, reverse=True)
    ]
    indexes = any(image.children for image in primary.values())
    if indexes:
        groups = _groups(primary)

        def age_key(group: tuple[Digest, ...]) -> tuple[datetime, Digest]:
            return max(by_digest[d].pushed_at for d in group), min(group)

        oldest_groups: Iterable[tuple[Digest, ...]] = sorted(groups, key=age_key)
    else:
        oldest_groups = ((d,) for d in reversed(newest_first) if d not in artifacts)

    budget = len(primary) - rules.max_images
    cap = rules.max_deletions_per_cycle
    decided: dict[Digest, tuple[Action, Reason, str]] = {}
    keep_within = (Action.KEEP, Reason.WITHIN_COUNT, "")
    linked_groups: dict[Digest, frozenset[Digest]] = {}
    deleted = 0  # images deleted so far
    planned = 0  # images that must go to fit: deleted, or held back by the cap
    capped = False
    for group in oldest_groups:
        if len(group) == 1:
            digest = group[0]
            found = direct.get(digest)
            if found is not None:
                decided[digest] = (Action.KEEP, *found)
                continue
            if planned >= budget:
                decided[digest] = keep_within
                continue
        protected = [d for d in group if d in direct] if len(group) > 1 else ()
        # a single image was looked up in `direct` above
        if protected:
            linked = _linked_reason(group, protected, by_digest)
            for digest in group:
                reason, detail = direct.get(digest, linked[digest])
                decided[digest] = (Action.KEEP, reason, detail)
            continue
        if planned >= budget:
            for digest in group:
                decided[digest] = keep_within
            continue
        planned += len(group)
        if capped or (cap is not None and deleted + len(group) > cap):
            capped = True  # never skip an old group to delete a younger one
            for digest in group:
                decided[digest] = (Action.KEEP, Reason.DELETION_CAP, f"cap {cap}")
            continue
        deleted += len(group)
        if len(group) > 1:
            whole = frozenset(group)
            for digest in group:
                linked_groups[digest] = whole
        children = {c for d in group for c in by_digest[d].children} if indexes else ()
        for digest in group:
            reason = Reason.CHILD_OF_DELETED if digest in children else Reason.OVER_COUNT
            decided[digest] = (Action.DELETE, reason, "")

    after: dict[Digest, frozenset[Digest]] = {}
    if artifacts:
        _decide_artifacts(
            artifacts,
            by_digest,
            direct,
            decided,
            in_use,
            rules,
            room=None if cap is None else (0 if capped else cap - deleted),
        )
        for digest, subjects in artifacts.items():
            if decided[digest][0] is Action.DELETE:
                gone_first = frozenset(s for s in subjects if s in by_digest)
                if gone_first:
                    after[digest] = gone_first
        linked_groups = _merge_groups(linked_groups, after)

    decisions = []
    doomed: list[Digest] = []
    delete = Action.DELETE
    for digest in newest_first:
        action, reason, detail = decided[digest]
        decisions.append(Decision(by_digest[digest], action, reason, detail))
        if action is delete:
            doomed.append(digest)
    if not indexes and not artifacts:  # one wave, oldest first: the decisions' order reversed
        doomed.reverse()
        return Plan(tuple(decisions), (tuple(doomed),) if doomed else ())
    return Plan(
        tuple(decisions),
        _waves(set(doomed), by_digest, after),
        linked_groups,
        after,
        frozenset(artifacts),
    )


_EXPIRY_REASONS: Mapping[Reason, Reason] = {
    Reason.YOUNG: Reason.ARCHIVED_RECENTLY,
    Reason.OVER_COUNT: Reason.ARCHIVE_EXPIRED,
}
"""What `plan`'s reasons mean for an archived image when its age is its time in the archive."""


def expiry(
    archived: Iterable[Image],
    active: Iterable[Image],
    *,
    repository: RepositoryId,
    in_use: InUse,
    rules: Rules,
    now: datetime,
) -> Plan:
    """Which archived images `rules.delete_archived_after` deletes, and why the others stay.

    It is `plan` over the whole repository with an image's age counted from its
    `archived_at` (lastArchivedAt), no count limit, and every ACTIVE image protected: so an
    archived image goes once it has been archived longer than the window, unless it is in use
    (by digest or by a tag), carries a keep tag or filter, was pulled within
    --keep-pulled-within, or is linked to a kept image: an index goes with its children, a
    child of a kept (or active) index stays, a signature goes after its subject. An image
    whose `archived_at` is unknown counts as archived now. `max_deletions_per_cycle` caps it
    as it caps `plan`. The decisions are the archived images' only; a plan with no
    `delete_archived_after` keeps them all."""
    originals = {image.digest: image for image in archived}
    window = rules.delete_archived_after
    if window is None or not originals:
        return Plan(
            tuple(
                Decision(image, Action.KEEP, Reason.ARCHIVED_RECENTLY, "no --delete-archived-after")
                for image in originals.values()
            ),
            (),
        )
    standard = {image.digest: image for image in active if image.digest not in originals}
    aged = [replace(image, pushed_at=image.archived_at or now) for image in originals.values()]
    whole = plan(
        [*aged, *standard.values()],
        repository=repository,
        in_use=_AlsoInUse(in_use, frozenset(standard)),
        rules=replace(rules, max_images=0, keep_younger_than=window),
        now=now,
    )
    decisions = tuple(
        Decision(
            originals[d.image.digest], d.action, _EXPIRY_REASONS.get(d.reason, d.reason), d.detail
        )
        for d in whole.decisions
        if d.image.digest in originals
    )
    return Plan(
        decisions,
        whole.delete_waves,
        whole.groups,
        whole.after,
        whole.artifacts & frozenset(originals),
    )


@dataclass(frozen=True, slots=True)
class _AlsoInUse:
    """The in-use view with the ACTIVE images added, for `expiry`: they must stay, and what
    links to them (a child of an active index) stays with them."""

    view: InUse
    active: frozenset[Digest]

    def digest_in_use(self, digest: Digest) -> bool:
        return digest in self.active or self.view.digest_in_use(digest)

    def tag_in_use(self, repository: RepositoryId, tag: str) -> bool:
        return self.view.tag_in_use(repository, tag)

    def tags_in(self, repository: RepositoryId) -> Container[str]:
        return self.view.tags_in(repository)


def _artifacts(by_digest: Mapping[Digest, Image]) -> dict[Digest, frozenset[Digest]]:
    """Each attached artifact outside the index graph, mapped to its subjects."""
    found = {
        d: subjects
        for d, image in by_digest.items()
        # the common case (no subject, no cosign-scheme first tag) costs two attribute reads
        if (image.subject is not None or (image.tags and image.tags[0].startswith("sha256-")))
        and (subjects := subjects_of(image))
    }
    if not found:
        return found
    in_graph = {c for image in by_digest.values() for c in image.children}
    return {
        d: subjects
        for d, subjects in found.items()
        if not by_digest[d].children and d not in in_graph
    }


def _decide_artifacts(
    artifacts: Mapping[Digest, frozenset[Digest]],
    by_digest: Mapping[Digest, Image],
    direct: Mapping[Digest, tuple[Reason, str]],
    decided: dict[Digest, tuple[Action, Reason, str]],
    in_use: InUse,
    rules: Rules,
    *,
    room: int | None,
) -> None:
    """Decide every artifact once its subjects are decided (a signature of an attestation
    waits for the attestation). Orphans deleted count toward the cap's `room`; artifacts that
    follow a deleted subject do not: they go with it."""
    orphans = 0
    resolving: set[Digest] = set()

    def decide(digest: Digest) -> tuple[Action, Reason, str]:
        nonlocal orphans
        if digest in decided:
            return decided[digest]
        if digest in resolving:  # content addressing makes a cycle impossible; never guess
            return (Action.KEEP, Reason.SUBJECT_ELSEWHERE, "subject cycle")
        resolving.add(digest)
        found = direct.get(digest)
        subjects = sorted(artifacts[digest])
        present = [s for s in subjects if s in by_digest]
        absent = [s for s in subjects if s not in by_digest]
        if found is not None:
            outcome = (Action.KEEP, *found)
        elif kept := next((s for s in present if decide(s)[0] is Action.KEEP), None):
            outcome = (Action.KEEP, Reason.ARTIFACT_OF_KEPT, kept)
        elif used := next((s for s in absent if in_use.digest_in_use(s)), None):
            outcome = (Action.KEEP, Reason.ARTIFACT_OF_KEPT, f"{used} in use")
        elif absent and not rules.delete_orphaned_artifacts:
            outcome = (Action.KEEP, Reason.SUBJECT_ELSEWHERE, absent[0])
        elif present:
            outcome = (Action.DELETE, Reason.ARTIFACT_OF_DELETED, present[0])
        elif room is not None and orphans >= room:
            outcome = (Action.KEEP, Reason.DELETION_CAP, f"cap {rules.max_deletions_per_cycle}")
        else:
            orphans += 1
            outcome = (Action.DELETE, Reason.ORPHANED_ARTIFACT, absent[0])
        resolving.discard(digest)
        decided[digest] = outcome
        return outcome

    for digest in sorted(artifacts, key=lambda d: (by_digest[d].pushed_at, d)):  # oldest first
        decide(digest)


def _merge_groups(
    linked: Mapping[Digest, frozenset[Digest]], after: Mapping[Digest, frozenset[Digest]]
) -> dict[Digest, frozenset[Digest]]:
    """The deletion groups with each artifact joined to its subjects' groups."""
    edges = [(d, m) for d, group in linked.items() for m in group]
    edges += [(a, s) for a, subjects in after.items() for s in subjects]
    groups = _components({d for edge in edges for d in edge}, edges)
    return {d: frozenset(group) for group in groups for d in group if len(group) > 1}


def _groups(by_digest: Mapping[Digest, Image]) -> list[tuple[Digest, ...]]:
    """Connected components of the index→child graph, restricted to present images."""
    edges = [(d, c) for d, image in by_digest.items() for c in image.children if c in by_digest]
    return _components(by_digest, edges)


def _components(
    nodes: Iterable[Digest], edges: Iterable[tuple[Digest, Digest]]
) -> list[tuple[Digest, ...]]:
    """Connected components (union-find), each sorted, in the order of their first node."""
    parent: dict[Digest, Digest] = {d: d for d in nodes}

    def find(d: Digest) -> Digest:
        while parent[d] != d:
            parent[d] = parent[parent[d]]
            d = parent[d]
        return d

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    members: dict[Digest, list[Digest]] = {}
    for digest in parent:
        members.setdefault(find(digest), []).append(digest)
    return [tuple(sorted(group)) for group in members.values()]


def _linked_reason(
    group: Sequence[Digest], protected: Sequence[Digest], by_digest: Mapping[Digest, Image]
) -> dict[Digest, tuple[Reason, str]]:
    """Why each unprotected member of a protected group is kept."""
    children = {c for d in group for c in by_digest[d].children}
    anchor = protected[0]
    return {
        d: (Reason.INDEX_CHILD if d in children else Reason.INDEX_PARENT, anchor) for d in group
    }


def _waves(
    doomed: set[Digest],
    by_digest: Mapping[Digest, Image],
    after: Mapping[Digest, frozenset[Digest]],
) -> tuple[tuple[Digest, ...], ...]:
    """Order deletions so no manifest goes in the same call as, or before, an index naming it,
    and no artifact in the same call as, or before, its subject."""
    first: dict[Digest, set[Digest]] = {d: set() for d in doomed}
    # each deletion, mapped to the deletions that must be done before it
    for digest in doomed:
        for child in by_digest[digest].children:
            if child in first:
                first[child].add(digest)
    for artifact, subjects in after.items():
        first[artifact].update(s for s in subjects if s in first)
    waves: list[tuple[Digest, ...]] = []
    remaining = set(doomed)
    while remaining:
        wave = sorted(
            (d for d in remaining if not (first[d] & remaining)),
            key=lambda d: (by_digest[d].pushed_at, d),
        )
        if not wave:  # a reference cycle cannot come from ECR; refuse rather than guess
            raise ValueError(f"index reference cycle among {sorted(remaining)}")
        waves.append(tuple(wave))
        remaining.difference_update(wave)
    return tuple(waves)
