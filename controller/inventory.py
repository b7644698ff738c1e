"""The in-use view: which image digests and tags the watched cluster objects hold, per source.

Every watched object (a pod, or a workload whose pod template names images) contributes a
`References` value: the digests it runs or names, and the ECR tags its spec names. The
`InUseIndex` keeps one entry per object, keyed by (cluster, kind, uid); equal values (the pods
of one workload) share one stored instance, and reference counts over the distinct values make
a query a dictionary lookup. An event that changes no reference costs no rebuild. Sources
(one per cluster and kind) are marked synced after their first complete LIST; the pruner must
not trust the view before every source is.

Pure: no I/O, no clock. The watchers feed it; the policy reads it through `InUse`.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final, TypeVar

from controller.identifiers import RepositoryId, SourceKey, TagRef
from controller.images import (
    Digest,
    ImageRef,
    InvalidReference,
    is_digest,
    parse_image_id,
    parse_reference,
)


@dataclass(frozen=True, slots=True)
class References:
    """The image references one watched object holds."""

    digests: frozenset[Digest] = frozenset()
    # digests it runs (status imageID) or names (spec `repo@sha256:…`), in any registry
    tags: frozenset[TagRef] = frozenset()
    # ECR tags its spec names; non-ECR tags cannot match a pruned repository and are dropped


NO_REFERENCES = References()


@dataclass(frozen=True, slots=True)
class Extraction:
    """What an extractor found in one object: the references, and the strings it could not parse."""

    references: References
    malformed: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------------
# Extraction from raw API objects (plain dicts parsed from JSON)

_CONTAINER_FIELDS = ("initContainers", "containers", "ephemeralContainers")
_STATUS_FIELDS = ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses")
_CACHE_SIZE: Final = 4096
_POD_CACHE_SIZE: Final = 1024


_Found = tuple[Digest | None, TagRef | None]
# what one image string contributes: its digest, and its tag when the registry is ECR


def _found(ref: ImageRef) -> _Found:
    digest = Digest(sys.intern(ref.digest)) if ref.digest is not None else None
    if ref.tag is None or ref.ecr is None:
        return digest, None
    return digest, TagRef(RepositoryId(ref.ecr, sys.intern(ref.repository)), sys.intern(ref.tag))


# Image strings repeat across events and across the pods of a workload: each is parsed once
# into shared Digest and TagRef values. InvalidReference is raised again, never cached.
@lru_cache(maxsize=_CACHE_SIZE)
def _found_in_spec(text: str) -> _Found:
    return _found(parse_reference(text))


@lru_cache(maxsize=_CACHE_SIZE)
def _found_in_status(text: str) -> _Found:
    ref = parse_image_id(text)
    return (None, None) if ref is None else _found(ref)


class _Collector:
    __slots__ = ("digests", "malformed", "tags")

    def __init__(self) -> None:
        self.digests: set[Digest] = set()
        self.tags: set[TagRef] = set()
        self.malformed: list[str] = []

    def image(self, value: object, parse: Callable[[str], _Found]) -> None:
        if not isinstance(value, str):
            if value is not None:
                self.malformed.append(repr(value))
            return
        try:
            digest, tag = parse(value)
        except InvalidReference:
            self.malformed.append(value)
            return
        if digest is not None:
            self.digests.add(digest)
        if tag is not None:
            self.tags.add(tag)

    def digest(self, value: object) -> None:
        if isinstance(value, str) and is_digest(value):
            self.digests.add(Digest(sys.intern(value)))
        elif value is not None:
            self.malformed.append(value if isinstance(value, str) else repr(value))

    def images(
        self, obj: object, fields: tuple[str, ...], key: str, parse: Callable[[str], _Found]
    ) -> None:
        """The `key` string of every mapping in the lists `obj[field]`, for each field."""
        if not (type(obj) is dict or isinstance(obj, Mapping)):
            return
        for field in fields:
            items = obj.get(field)
            if isinstance(items, list):
                for item in items:
                    # JSON objects are dicts: the exact type check spares the ABC check
                    if type(item) is dict or isinstance(item, Mapping):
                        self.image(item.get(key), parse)

    def pod_spec(self, spec: object) -> None:
        self.images(spec, _CONTAINER_FIELDS, "image", _found_in_spec)

    def container(self, container: object) -> None:
        # a non-object is skipped, as a non-object entry of a pod spec's container list is
        if type(container) is dict or isinstance(container, Mapping):
            self.image(container.get("image"), _found_in_spec)

    def result(self) -> Extraction:
        if not self.digests and not self.tags:
            refs = NO_REFERENCES
        else:
            refs = References(frozenset(self.digests), frozenset(self.tags))
        return Extraction(refs, tuple(self.malformed))


def _dig(obj: object, *path: str) -> object:
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def extract_pod(pod: Mapping[str, Any]) -> Extraction:
    """References a pod holds: every container's spec image and every status imageID.

    Init, regular and ephemeral containers count. A bare `sha256:` config id carries no
    repository digest and is ignored; a malformed string is skipped and reported.
    """
    collector = _Collector()
    collector.pod_spec(pod.get("spec"))
    collector.images(pod.get("status"), _STATUS_FIELDS, "imageID", _found_in_status)
    return collector.result()


# The pods of one workload, and every status change of one pod, name the same images: the
# extraction of a pod's image strings is a pure function of them, kept for the latest ones.
@lru_cache(maxsize=_POD_CACHE_SIZE)
def extract_pod_images(images: tuple[str, ...], image_ids: tuple[str, ...]) -> Extraction:
    """`extract_pod`'s answer from a pod's container images (init, regular, ephemeral, in that
    order) and status imageIDs, already read out of it (by `podwire`'s typed decode). Strings
    only: keys equal as values are then the same strings, and the answer is the same."""
    collector = _Collector()
    for image in images:
        collector.image(image, _found_in_spec)
    for image_id in image_ids:
        collector.image(image_id, _found_in_status)
    return collector.result()


def extract_pod_template(obj: Mapping[str, Any], *template_path: str) -> Extraction:
    """References held by the pod template at `template_path` (e.g. spec, template, spec)."""
    collector = _Collector()
    collector.pod_spec(_dig(obj, *template_path))
    return collector.result()


def extract_parts(
    *,
    pod_specs: Iterable[object] = (),
    containers: Iterable[object] = (),
    images: Iterable[object] = (),
    digests: Iterable[object] = (),
) -> Extraction:
    """References held by pod specs, container objects, image strings and digests found
    anywhere: in a custom resource (`resources` finds the parts, this parses them), or outside
    Kubernetes (an ECS container definition's image, a Lambda function's ImageUri: `awsrefs`).

    A pod spec counts its init, regular and ephemeral containers as `extract_pod_template`
    does, a container its `image`, and every image is parsed as a spec reference, so an image
    in another registry or region protects exactly what it would in a pod; `digests` are bare
    manifest digests a runtime reports (an ECS container's imageDigest). None is skipped; any
    other value that does not parse is reported as malformed.
    """
    collector = _Collector()
    for spec in pod_specs:
        collector.pod_spec(spec)
    for container in containers:
        collector.container(container)
    for image in images:
        collector.image(image, _found_in_spec)
    for digest in digests:
        collector.digest(digest)
    return collector.result()


# ---------------------------------------------------------------------------------------------
# The index


class _Held:
    """One distinct `References` value in the index: the instance every holder shares."""

    __slots__ = ("holders", "refs")

    def __init__(self, refs: References) -> None:
        self.refs = refs
        self.holders = 0


class InUseIndex:
    """References of every watched object, with reference counts for O(1) queries."""

    def __init__(self) -> None:
        self._objects: dict[SourceKey, dict[str, References]] = {}
        self._synced: set[SourceKey] = set()
        self._held: dict[References, _Held] = {}
        # each distinct value stored once; the counters below count values, not objects
        self._digests: Counter[Digest] = Counter()
        self._tags: dict[RepositoryId, Counter[str]] = {}
        # per repository, the tags in use: a listing of one repository asks one mapping

    # -- sources ------------------------------------------------------------------------------

    def register(self, source: SourceKey) -> None:
        """Declare a source; it is not synced until its first complete LIST replaces it."""
        self._objects.setdefault(source, {})

    @property
    def sources(self) -> tuple[SourceKey, ...]:
        return tuple(self._objects)

    def is_synced(self, source: SourceKey) -> bool:
        return source in self._synced

    def unsynced(self) -> tuple[SourceKey, ...]:
        """Registered sources that have not completed a first LIST."""
        return tuple(s for s in self._objects if s not in self._synced)

    def count(self, source: SourceKey) -> int:
        """Objects the source holds now."""
        return len(self._objects.get(source, ()))

    def object_count(self, *, kind: str | None = None) -> int:
        return sum(len(objs) for src, objs in self._objects.items() if kind in (None, src.kind))

    # -- updates ------------------------------------------------------------------------------

    def upsert(self, source: SourceKey, uid: str, refs: References) -> bool:
        """Record an object's references; returns whether anything in use changed."""
        objects = self._objects.setdefault(source, {})
        old = objects.get(uid)
        if old == refs:
            return False
        objects[uid] = self._acquire(refs)
        if old is not None:
            self._release(old)
        return True

    def delete(self, source: SourceKey, uid: str) -> bool:
        """Forget an object; returns whether it was known."""
        old = self._objects.get(source, {}).pop(uid, None)
        if old is None:
            return False
        self._release(old)
        return True

    def replace(self, source: SourceKey, objects: Mapping[str, References]) -> None:
        """Swap a source's whole content for a fresh LIST, atomically, and mark it synced.

        Objects absent from the LIST disappear (deleted while disconnected). The new
        references are counted before the old ones are released, so no query ever sees a
        partly empty index, not even between two statements.
        """
        new = {uid: self._acquire(refs) for uid, refs in objects.items()}
        old = self._objects.get(source, {})
        for refs in old.values():
            self._release(refs)
        self._objects[source] = new
        self._synced.add(source)

    def mark_unsynced(self, source: SourceKey) -> None:
        """A source lost its view and must LIST again before it can be trusted."""
        self._synced.discard(source)

    def _acquire(self, refs: References) -> References:
        """Count one more holder of `refs`; returns the shared instance equal to it."""
        held = self._held.get(refs)
        if held is None:
            held = self._held[refs] = _Held(refs)
            self._digests.update(refs.digests)
            for ref in refs.tags:
                tags = self._tags.get(ref.repository)
                if tags is None:
                    tags = self._tags[ref.repository] = Counter()
                tags[ref.tag] += 1
        held.holders += 1
        return held.refs

    def _release(self, refs: References) -> None:
        held = self._held[refs]
        held.holders -= 1
        if not held.holders:
            del self._held[refs]
            _decrement(self._digests, refs.digests)
            for ref in refs.tags:
                tags = self._tags[ref.repository]
                _decrement(tags, (ref.tag,))
                if not tags:
                    del self._tags[ref.repository]

    # -- queries ------------------------------------------------------------------------------

    def digest_in_use(self, digest: Digest) -> bool:
        return digest in self._digests

    def tag_in_use(self, repository: RepositoryId, tag: str) -> bool:
        return tag in self._tags.get(repository, _NO_TAGS)

    def tags_in(self, repository: RepositoryId) -> Container[str]:
        return self._tags.get(repository, _NO_TAGS)

    def digests_in_use(self) -> int:
        return len(self._digests)

    def snapshot(self) -> InUseSnapshot:
        """An immutable copy for one planning pass."""
        return InUseSnapshot(
            frozenset(self._digests),
            frozenset(TagRef(r, t) for r, tags in self._tags.items() for t in tags),
        )


_NO_TAGS: Counter[str] = Counter()


_K = TypeVar("_K")


def _decrement(counter: Counter[_K], keys: Iterable[_K]) -> None:
    for key in keys:
        remaining = counter[key] - 1
        if remaining > 0:
            counter[key] = remaining
        else:
            del counter[key]


@dataclass(frozen=True, slots=True)
class InUseSnapshot:
    """The in-use set frozen at one moment; satisfies `InUse`."""

    digests: frozenset[Digest] = frozenset()
    tags: frozenset[TagRef] = frozenset()

    def digest_in_use(self, digest: Digest) -> bool:
        return digest in self.digests

    def tag_in_use(self, repository: RepositoryId, tag: str) -> bool:
        return TagRef(repository, tag) in self.tags

    def tags_in(self, repository: RepositoryId) -> Container[str]:
        return frozenset(ref.tag for ref in self.tags if ref.repository == repository)
