"""An in-memory `EcrPort` for the pruner's unit tests: real ECR rules, no HTTP."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

import anyio

from controller.ecr import DeleteOutcome, EcrError, Failure, Listing, Repository
from controller.identifiers import RepositoryId
from controller.images import Digest, EcrRegistry
from controller.policy import Image

REGISTRY = EcrRegistry("123456789012", "us-east-1")
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"


class FakeEcr:
    def __init__(self) -> None:
        self.repos: dict[str, dict[Digest, Image]] = {}
        self.calls: Counter[str] = Counter()
        self.batches: list[tuple[str, tuple[Digest, ...]]] = []
        self.failing: dict[str, EcrError] = {}
        self.failing_listing: EcrError | None = None
        self.delete_failures: dict[Digest, str] = {}
        self.before_delete: Callable[[str, Sequence[Digest]], Awaitable[None]] | None = None
        self.archived: dict[str, dict[Digest, Image]] = {}
        # per repository, the images moved to the archive storage class (out of `repos`)
        self.restored: list[tuple[str, Digest]] = []
        self.in_flight = 0
        self.max_in_flight = 0

    def add(self, repo: str, *images: Image) -> None:
        store = self.repos.setdefault(repo, {})
        for image in images:
            media = INDEX_TYPE if image.children else image.media_type
            store[image.digest] = replace(image, media_type=media)

    def repo_id(self, name: str) -> RepositoryId:
        return RepositoryId(REGISTRY, name)

    async def repositories(self, names: Sequence[str] | None) -> Listing:
        self.calls["DescribeRepositories"] += 1
        if self.failing_listing is not None:
            raise self.failing_listing
        wanted = list(self.repos) if names is None else list(names)
        found = tuple(Repository(self.repo_id(n)) for n in wanted if n in self.repos)
        return Listing(found, tuple(n for n in wanted if n not in self.repos))

    async def images(self, repository: Repository, *, archived: bool = False) -> list[Image]:
        self.calls["DescribeImages"] += 1
        if repository.name in self.failing:
            raise self.failing[repository.name]
        if archived:
            return [
                replace(i, children=()) for i in self.archived.get(repository.name, {}).values()
            ]
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        await anyio.sleep(0.01)
        self.in_flight -= 1
        # the port does not fill in children: the pruner asks index_children for them
        return [replace(i, children=()) for i in self.repos[repository.name].values()]

    async def index_children(
        self, repository: Repository, digests: Sequence[Digest]
    ) -> dict[Digest, tuple[Digest, ...]]:
        self.calls["BatchGetImage"] += 1
        store = {**self.archived.get(repository.name, {}), **self.repos[repository.name]}
        return {d: store[d].children for d in digests}

    async def delete(self, repository: Repository, digests: Sequence[Digest]) -> DeleteOutcome:
        assert 1 <= len(digests) <= 100, len(digests)
        if self.before_delete is not None:
            await self.before_delete(repository.name, digests)
        self.calls["BatchDeleteImage"] += 1
        self.batches.append((repository.name, tuple(digests)))
        store = self.repos[repository.name]
        archive = self.archived.get(repository.name, {})
        # BatchDeleteImage deletes an archived image as well as an active one
        everything = [*store.values(), *archive.values()]
        deleted, gone, failed = [], [], []
        for digest in digests:
            if digest in self.delete_failures:
                failed.append(Failure(digest, self.delete_failures[digest], "injected"))
            elif digest not in store and digest not in archive:
                gone.append(digest)
            elif any(digest in i.children for i in everything):
                failed.append(Failure(digest, "ImageReferencedByManifestList", "in an index"))
            else:
                deleted.append(digest)
        for digest in deleted:
            store.pop(digest, None)
            archive.pop(digest, None)
        return DeleteOutcome(tuple(deleted), tuple(gone), tuple(failed))

    async def archive(self, repository: Repository, digest: Digest) -> DeleteOutcome:
        """As ECR (and the simulator) answer: an index's child cannot go before the index."""
        if self.before_delete is not None:
            await self.before_delete(repository.name, (digest,))
        self.calls["UpdateImageStorageClass"] += 1
        self.batches.append((repository.name, (digest,)))
        store = self.repos[repository.name]
        if digest in self.delete_failures:
            return DeleteOutcome(
                failed=(Failure(digest, self.delete_failures[digest], "injected"),)
            )
        if digest not in store:
            return DeleteOutcome(gone=(digest,))
        if any(digest in i.children for i in store.values()):
            code = "ImageStorageClassUpdateNotSupportedException"
            return DeleteOutcome(failed=(Failure(digest, code, "in an active index"),))
        self.archived.setdefault(repository.name, {})[digest] = store.pop(digest)
        return DeleteOutcome(deleted=(digest,))

    async def restore(self, repository: Repository, digest: Digest) -> str:
        self.calls["UpdateImageStorageClass"] += 1
        self.restored.append((repository.name, digest))
        return "ACTIVATING"
