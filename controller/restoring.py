"""Restore on use: an archived image that comes into use is asked back within seconds.

In archive mode (`--disposal archive`) the pruner tells the `Restorer` which images of each
repository are archived: the ones each cycle lists (DescribeImages with `imageStatus`
ARCHIVED) and the ones it has just archived. Every `poll` seconds the restorer checks them
against the live in-use view with the policy's own in-use rules (run by digest, or named by a
tag that points to it): a rollback to an old ReplicaSet, a pod pinned to an old digest. For an
image in use it requests a restore (UpdateImageStorageClass to STANDARD) of the image and of
what must come back with it: its index group (the children first, then the indexes, as ECR
restores an index only once its children are back) and then the attached artifacts of any of
them (a signature an admission policy will check). One request per image: ECR keeps it
ACTIVATING for up to about 20 minutes and refuses another request meanwhile. Each request is
logged with the rule that found the image in use, and counted.

No cycle is needed: the poll runs beside the scheduler, in the service's task group.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Final

import anyio

from controller.ecr import STORAGE_CLASS_REFUSALS, EcrError, EcrPort, Repository
from controller.images import Digest
from controller.policy import Image, InUse, in_use_reason, subjects_of

log = logging.getLogger(__name__)

RESTORE_POLL: Final = 1.0
"""Seconds between two looks at the archived images: how soon a rollback gets its image back."""


class Restorer:
    """Keeps the archived images per repository and restores those that come into use."""

    def __init__(
        self,
        ecr: EcrPort,
        in_use: InUse,
        *,
        on_request: Callable[[str], None] = lambda _repository: None,
        poll: float = RESTORE_POLL,
    ) -> None:
        self._ecr = ecr
        self._in_use = in_use
        self._on_request = on_request
        self._poll = poll
        self._archived: dict[str, tuple[Repository, dict[Digest, Image]]] = {}
        self._requested: set[tuple[str, Digest]] = set()
        # restores asked for: not asked again while the image is still listed as archived

    # -- the catalog (pruning.Catalog) --------------------------------------------------------

    def listed(self, repository: Repository, images: Sequence[Image]) -> None:
        self._archived[repository.name] = (repository, {i.digest: i for i in images})
        listed = {(repository.name, i.digest) for i in images}
        self._requested = {
            key for key in self._requested if key[0] != repository.name or key in listed
        }

    def archived(self, repository: Repository, image: Image) -> None:
        entry = self._archived.setdefault(repository.name, (repository, {}))
        entry[1][image.digest] = image
        self._requested.discard((repository.name, image.digest))

    # -- the poll -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Check every `poll` seconds, until cancelled."""
        while True:
            await anyio.sleep(self._poll)
            await self.check()

    async def check(self) -> int:
        """Request the restores the live view asks for now; how many were requested."""
        requested = 0
        view = self._in_use
        for name, (repository, images) in list(self._archived.items()):
            tags = view.tags_in(repository.id)
            for image in list(images.values()):
                if (name, image.digest) in self._requested:
                    continue
                found = in_use_reason(image, view, tags)
                if found is not None:
                    reason, detail = found
                    requested += await self._restore(
                        repository, images, image, f"{reason.value} {detail}"
                    )
        return requested

    async def _restore(
        self, repository: Repository, images: dict[Digest, Image], image: Image, why: str
    ) -> int:
        requested = 0
        for member in _with_what_comes_back(image, images):
            key = (repository.name, member.digest)
            if key in self._requested:
                continue
            try:
                status = await self._ecr.restore(repository, member.digest)
            except EcrError as exc:
                if exc.code == "ImageNotFoundException":
                    images.pop(member.digest, None)
                    continue
                if exc.code not in STORAGE_CLASS_REFUSALS:
                    log.warning(
                        "could not ask for %s@%s back (%s: %s); trying again in %gs",
                        repository.name,
                        member.digest,
                        exc.code,
                        exc.message,
                        self._poll,
                        extra={"repository": repository.name, "digest": member.digest},
                    )
                    return requested
                status = "not archived any more"  # restoring already, or back: asked before
            self._requested.add(key)
            requested += 1
            self._on_request(repository.name)
            log.warning(
                "restoring %s@%s tags=%s from the archive (%s): %s is in use (%s)",
                repository.name,
                member.digest,
                ",".join(member.tags) or "-",
                status,
                image.digest,
                why,
                extra={
                    "repository": repository.name,
                    "digest": member.digest,
                    "in_use": image.digest,
                    "reason": why,
                },
            )
        return requested


def _with_what_comes_back(image: Image, images: dict[Digest, Image]) -> list[Image]:
    """The image, its index group among the archived images (manifests before the indexes
    naming them) and then the attached artifacts of any of them, each once."""
    group = {image.digest: image}
    for other in images.values():  # the indexes naming it, and their other children
        if image.digest in other.children:
            group[other.digest] = other
    for member in list(group.values()):
        for child in member.children:
            if child in images:
                group.setdefault(child, images[child])
    ordered = sorted(group.values(), key=lambda i: (bool(i.children), i.digest))
    wanted = set(group)
    artifacts: list[Image] = []
    while True:  # a signature of an attestation of the image comes back too
        more = [i for i in images.values() if i.digest not in wanted and subjects_of(i) & wanted]
        if not more:
            break
        wanted.update(i.digest for i in more)
        artifacts.extend(sorted(more, key=lambda i: i.digest))
    return ordered + artifacts
