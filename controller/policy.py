"""The retention policy: a pure function from a repository's images, the in-use view, rules and `now` to a Plan."""

from __future__ import annotations

import re
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from controller.images import Digest
from controller.inventory import InUse, RepositoryId

DEFAULT_MAX_IMAGES = 900


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
    # each deletion linked by index edges to others, mapped to its whole group (itself included):
    # the group goes as a whole or stays as a whole. A deletion absent from it stands alone.

    @property
    def deletions(self) -> tuple[Decision, ...]:
        return tuple(d for d in self.decisions if d.action is Action.DELETE)

    @property
    def kept(self) -> tuple[Decision, ...]:
        return tuple(d for d in self.decisions if d.action is Action.KEEP)

    def count_by_reason(self) -> dict[Reason, int]:
        counts: dict[Reason, int] = {}
        for decision in self.decisions:
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

    # newest first, digest as the tie-breaker: the order of the decisions, and reversed, the
    # order in which single images (the common case: no index) are considered for deletion
    newest_first = sorted(by_digest, key=lambda d: (by_digest[d].pushed_at, d), reverse=True)
    indexes = any(image.children for image in by_digest.values())
    if indexes:
        groups = _groups(by_digest)

        def age_key(group: tuple[Digest, ...]) -> tuple[datetime, Digest]:
            return max(by_digest[d].pushed_at for d in group), min(group)

        oldest_groups: Iterable[tuple[Digest, ...]] = sorted(groups, key=age_key)
    else:
        oldest_groups = ((d,) for d in reversed(newest_first))

    budget = len(by_digest) - rules.max_images
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
        protected = [d for d in group if d in direct]
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
        children = {c for d in group for c in by_digest[d].children}
        for digest in group:
            reason = Reason.CHILD_OF_DELETED if digest in children else Reason.OVER_COUNT
            decided[digest] = (Action.DELETE, reason, "")

    decisions = []
    doomed: list[Digest] = []
    delete = Action.DELETE
    for digest in newest_first:
        action, reason, detail = decided[digest]
        decisions.append(Decision(by_digest[digest], action, reason, detail))
        if action is delete:
            doomed.append(digest)
    if not indexes:  # one wave, oldest first: the reverse of the decisions' order
        doomed.reverse()
        return Plan(tuple(decisions), (tuple(doomed),) if doomed else ())
    return Plan(tuple(decisions), _waves(set(doomed), by_digest), linked_groups)


def _groups(by_digest: Mapping[Digest, Image]) -> list[tuple[Digest, ...]]:
    """Connected components of the index→child graph, restricted to present images."""
    parent: dict[Digest, Digest] = {d: d for d in by_digest}

    def find(d: Digest) -> Digest:
        while parent[d] != d:
            parent[d] = parent[parent[d]]
            d = parent[d]
        return d

    for digest, image in by_digest.items():
        for child in image.children:
            if child in parent:
                a, b = find(digest), find(child)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    members: dict[Digest, list[Digest]] = {}
    for digest in by_digest:
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
    doomed: set[Digest], by_digest: Mapping[Digest, Image]
) -> tuple[tuple[Digest, ...], ...]:
    """Order deletions so no manifest goes in the same call as, or before, an index naming it."""
    referenced_by: dict[Digest, set[Digest]] = {d: set() for d in doomed}
    for digest in doomed:
        for child in by_digest[digest].children:
            if child in referenced_by:
                referenced_by[child].add(digest)
    waves: list[tuple[Digest, ...]] = []
    remaining = set(doomed)
    while remaining:
        wave = sorted(
            (d for d in remaining if not (referenced_by[d] & remaining)),
            key=lambda d: (by_digest[d].pushed_at, d),
        )
        if not wave:  # a reference cycle cannot come from ECR; refuse rather than guess
            raise ValueError(f"index reference cycle among {sorted(remaining)}")
        waves.append(tuple(wave))
        remaining.difference_update(wave)
    return tuple(waves)
