"""The pods' wire schema: a pod watch event or LIST page decoded straight into the few fields
that name images, everything else skipped unbuilt.

Pods are most of what the controller reads: 50,000 of them of about 4.7 KB in an initial
LIST, then every status change of every pod as a watch event. Building a dict of every field
of a pod (orjson) costs about three times what decoding into the image fields alone costs
(msgspec, with the other fields checked as JSON and skipped; `python -m bench.event_path`
measures both paths). `Kind.wire` names this schema for the pods kind; the watch (`watching`)
and the LIST (`sources`) try it first.

The decode is typed for the shape a well-formed pod has. Whatever does not fit it is not an
error here: a field of another type, a container entry that is not an object, an ERROR event
or one of an unknown type, an event without an object. The decoder answers None and the
caller takes the general path (orjson and the dict extractor of `inventory`, which reads,
skips and counts what is malformed, and raises a watch ERROR). So on every input this path
accepts, it gives exactly the general path's answer (`tests/test_podwire.py` checks that as a
property, malformed inputs included), and it defers on every other.

One difference, by design: bytes outside the fields read are checked as JSON syntax only. A
line whose skipped fields hold invalid UTF-8 or a number beyond a double's range is read here,
where orjson refuses the whole line; an API server (Go's encoding/json) sends neither.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from sys import intern
from typing import Any, Final

import msgspec

from controller.inventory import Extraction, extract_pod_images

# The structs hold only values decoded from JSON, which cannot form a reference cycle:
# gc=False keeps the garbage collector from tracking (and scanning) each of them.


class _Container(msgspec.Struct, gc=False):
    image: str | None = None
    # a string or nothing: any other value is malformed, which the general path reports


class _ContainerStatus(msgspec.Struct, gc=False):
    imageID: str | None = None


class _Spec(msgspec.Struct, gc=False):
    initContainers: list[_Container] | None = None
    containers: list[_Container] | None = None
    ephemeralContainers: list[_Container] | None = None


class _Status(msgspec.Struct, gc=False):
    initContainerStatuses: list[_ContainerStatus] | None = None
    containerStatuses: list[_ContainerStatus] | None = None
    ephemeralContainerStatuses: list[_ContainerStatus] | None = None


class _Metadata(msgspec.Struct, gc=False):
    uid: Any = None
    resourceVersion: Any = None


class Pod(msgspec.Struct, gc=False):
    """A pod, as far as its image references and its identity go."""

    metadata: _Metadata | None = None
    spec: _Spec | None = None
    status: _Status | None = None


class _Event(msgspec.Struct, gc=False):
    type: Any = None
    object: Pod | None = None


class _ListMetadata(msgspec.Struct, gc=False):
    resourceVersion: Any = None
    continue_: Any = msgspec.field(default=None, name="continue")


class _List(msgspec.Struct, gc=False):
    metadata: _ListMetadata | None = None
    items: list[Pod] | None = None


_EVENT: Final = msgspec.json.Decoder(_Event)
_LIST: Final = msgspec.json.Decoder(_List)
_CHANGES: Final = frozenset(("ADDED", "MODIFIED", "DELETED", "BOOKMARK"))
_FAILED: Final = (msgspec.DecodeError, msgspec.ValidationError)


def _text(value: object) -> str | None:
    """A non-empty string, else None: how the general path reads a uid or a resourceVersion."""
    return value if type(value) is str and value else None


def uid(pod: Pod) -> str | None:
    """`metadata.uid`, as `sources.uid_of` reads it from a dict."""
    return None if pod.metadata is None else _text(pod.metadata.uid)


def version(pod: Pod) -> str | None:
    """`metadata.resourceVersion`, as the watch reads it from a dict."""
    return None if pod.metadata is None else _text(pod.metadata.resourceVersion)


def extract(pod: Pod) -> Extraction:
    """`inventory.extract_pod` of the same pod: its spec images, then its status imageIDs.

    An absent image adds nothing there, so it is left out here; the strings are interned, so
    that the extraction cache's keys and the image parse caches' keys are the same objects."""
    spec, status = pod.spec, pod.status
    images = (
        ()
        if spec is None
        else tuple(
            [
                intern(c.image)
                for field in (spec.initContainers, spec.containers, spec.ephemeralContainers)
                if field
                for c in field
                if c.image is not None
            ]
        )
    )
    image_ids = (
        ()
        if status is None
        else tuple(
            [
                intern(c.imageID)
                for field in (
                    status.initContainerStatuses,
                    status.containerStatuses,
                    status.ephemeralContainerStatuses,
                )
                if field
                for c in field
                if c.imageID is not None
            ]
        )
    )
    return extract_pod_images(images, image_ids)


def event(line: bytes) -> tuple[str, Pod] | None:
    """An ADDED, MODIFIED, DELETED or BOOKMARK watch event of a pod: its type and object.
    None: not of the shape this reads; take the general path."""
    try:
        decoded = _EVENT.decode(line)
    except _FAILED:
        return None
    kind, obj = decoded.type, decoded.object
    if obj is None or type(kind) is not str or kind not in _CHANGES:
        return None
    return kind, obj


@dataclass(frozen=True, slots=True)
class Page:
    """One LIST page of pods: the list's resourceVersion and continue token, and its items."""

    resource_version: str
    token: str | None
    items: Sequence[Pod]


def page(body: bytes) -> Page | None:
    """A LIST page of pods. None: not of the shape this reads; take the general path."""
    try:
        decoded = _LIST.decode(body)
    except _FAILED:
        return None
    if decoded.items is None:
        return None
    meta = decoded.metadata
    if meta is None:
        return Page("", None, decoded.items)
    # as the general path reads a page's metadata
    resource_version = "" if meta.resourceVersion is None else str(meta.resourceVersion)
    return Page(resource_version, meta.continue_ or None, decoded.items)


@dataclass(frozen=True, slots=True)
class Wire:
    """A kind's typed wire schema (`Kind.wire`): the decoders and the readers of one object."""

    event: Callable[[bytes], tuple[str, Any] | None]
    page: Callable[[bytes], Page | None]
    uid: Callable[[Any], str | None]
    version: Callable[[Any], str | None]
    extract: Callable[[Any], Extraction]


POD_WIRE: Final = Wire(event, page, uid, version, extract)
"""The pods kind's wire schema."""
