"""An Amazon ECR simulator that enforces the real ECR semantics moto 5.2.5 leaves out.

This module owns one thing: a stand-in ECR registry, served over HTTP with ECR's
AWS JSON 1.1 protocol, that the controller's ECR gateway can be pointed at through
aioboto3 (``endpoint_url=sim.endpoint_url``).  It exists because the cleanup
controller's one hard promise -- never delete an image a cluster uses -- depends on
ECR behaviour that moto does not model:

* ``maxResults``/``nextToken`` paging (moto returns everything in one page);
* image indexes (OCI index / Docker manifest list) whose children ECR refuses to
  delete with ``ImageReferencedByManifestList`` while the index exists;
* the 100-id limit of ``BatchDeleteImage``/``BatchGetImage`` and the 100-name limit
  of ``DescribeRepositories``;
* ``lastRecordedPullTime`` and millisecond-precision ``imagePushedAt``;
* the exact ``BatchDeleteImage`` answer (one entry per deleted tag);
* OCI 1.1 artifacts: a manifest's ``subject`` is reported as ``subjectManifestDigest``
  (``add_artifact`` pushes a signature), and ``ListImageReferrers`` lists them (cosign's
  tag-scheme signatures are no referrers);
* storage classes: ``UpdateImageStorageClass`` archives (ACTIVE -> ARCHIVED) and restores
  (ARCHIVED -> ACTIVATING -> ACTIVE after ``activation_delay``, 20 min by default, on the
  simulator's clock); ``DescribeImages`` returns ACTIVE images unless ``filter.imageStatus``
  asks for others, with ``lastArchivedAt``/``lastActivatedAt``; pushing an archived image
  again restores it at once (as documented).

One simulator is one registry (``account``, ``region``).  State is seeded and
inspected in-process (``create_repository``, ``add_image``, ``add_index``, ...),
and faults are injected with ``throttle``, ``server_error``, ``malform``,
``fail_images``, ``throttle_randomly`` (a storm), ``break_repository`` (5xx for one
repository), ``expire_credentials`` (ExpiredTokenException for one access key) and
``delete_repository``.  ``calls`` counts HTTP requests per operation, retries included,
for "no wasted calls" assertions.

Two lifecycles share the registry logic in :class:`EcrRegistry`:
``async with EcrSimulator() as sim`` serves on the running loop, and
:class:`ThreadedEcrSimulator` serves from its own thread and loop for tests that
run the controller as a subprocess.  All state is guarded by one lock, so seeding
from another thread is safe.

Where ECR's documentation is silent the simulator picks the conservative reading,
so a controller that is correct here is correct against ECR:

* an index that exists when a ``BatchDeleteImage`` call starts protects its children
  for the whole call, even when the same call deletes the index;
* deleting a referenced child's *last* tag fails with ``ImageReferencedByManifestList``
  (the tag stays); removing one of several tags from it succeeds;
* ``imageSizeInBytes`` is the layer total of an image and, as documented, the largest
  child's size for an index (moto reports ``config.size``);
* ``acceptedMediaTypes`` that exclude the stored type give an ``UnsupportedImageType``
  failure rather than a converted manifest;
* ``BatchGetImage`` does not touch ``lastRecordedPullTime`` unless
  ``batch_get_records_pull=True``;
* pages follow push order; a ``nextToken`` is bound to its operation, repository and
  filter (anything else is ``InvalidParameterException``) and survives deletions
  between pages; a token is only returned when more results exist;
* layers are not modelled: PutImage never answers ``LayersNotFoundException``;
* a storage-class transition from any other status than the one it leaves is refused
  (``ImageStorageClassUpdateNotSupportedException``), as are archiving a child of an
  unarchived index and restoring an index with an archived child: the index goes to the
  archive first and comes back last, as deletions go;
* BatchGetImage answers archived images as it answers active ones (not modelled: pulls).

SigV4 is not verified.  This is test harness code, never shipped in the product.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import hashlib
import hmac
import json
import logging
import random
import re
import secrets
import socket
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Literal, Self

import orjson
from aiohttp import web

from sandbox.ports import stop_runner

__all__ = [
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "INDEX_MEDIA_TYPES",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "OPERATIONS",
    "EcrError",
    "EcrRegistry",
    "EcrSimulator",
    "ImageView",
    "Malformation",
    "ManualClock",
    "RecordedRequest",
    "ThreadedEcrSimulator",
    "build_image_manifest",
    "manifest_digest",
]

logger = logging.getLogger(__name__)

_ACCESS_KEY = re.compile(r"Credential=([^/,\s]+)/")

TARGET_PREFIX = "AmazonEC2ContainerRegistry_V20150921."
JSON_CONTENT_TYPE = "application/x-amz-json-1.1"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
INDEX_MEDIA_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
IMAGE_MEDIA_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})

_CONFIG_MEDIA_TYPE = {
    OCI_MANIFEST: "application/vnd.oci.image.config.v1+json",
    DOCKER_MANIFEST: "application/vnd.docker.container.image.v1+json",
}
_LAYER_MEDIA_TYPE = {
    OCI_MANIFEST: "application/vnd.oci.image.layer.v1.tar+gzip",
    DOCKER_MANIFEST: "application/vnd.docker.image.rootfs.diff.tar.gzip",
}
_PLATFORMS: tuple[dict[str, str], ...] = (
    {"architecture": "amd64", "os": "linux"},
    {"architecture": "arm64", "os": "linux", "variant": "v8"},
    {"architecture": "arm", "os": "linux", "variant": "v7"},
    {"architecture": "ppc64le", "os": "linux"},
    {"architecture": "s390x", "os": "linux"},
    {"architecture": "386", "os": "linux"},
)

OPERATIONS = frozenset(
    {
        "CreateRepository",
        "DescribeRepositories",
        "DescribeImages",
        "BatchGetImage",
        "BatchDeleteImage",
        "PutImage",
        "UpdateImageStorageClass",
        "ListImageReferrers",
    }
)

IMAGE_STATUS_FILTERS = frozenset({"ACTIVE", "ARCHIVED", "ACTIVATING", "ANY"})
MAX_REFERRERS = 50  # ListImageReferrers maxResults upper bound (FiftyMaxResults)

# Limits straight from botocore's ECR service model (2015-09-21).
MAX_IMAGE_IDS = 100
MAX_REPOSITORY_NAMES = 100
MAX_MEDIA_TYPES = 100
MIN_RESULTS, MAX_RESULTS, DEFAULT_RESULTS = 1, 1000, 100

_REPOSITORY_NAME = re.compile(r"(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*")
_REGISTRY_ID = re.compile(r"[0-9]{12}")
# OCI digest grammar; ECR documents '[a-zA-Z0-9-_+.]+:[a-fA-F0-9]+'.
_DIGEST = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-fA-F0-9]{32,}")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,299}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)

_Mutator = Callable[[dict[str, Any]], dict[str, Any]]

Malformation = Literal["missing-field", "bad-timestamp", "wrong-type"]
"""How ``malform`` breaks an otherwise correct answer (always on its first list entry):

* ``missing-field``: drop the entry's identifying field (``imageDigest`` of an image
  detail or a deleted id, ``repositoryName`` of a repository, ``imageManifest`` of a
  fetched image, ``imageId`` of a pushed image);
* ``bad-timestamp``: a non-numeric ``imagePushedAt``/``createdAt`` (botocore raises
  ``ValueError`` while parsing the answer);
* ``wrong-type``: a non-integer ``imageSizeInBytes`` (DescribeImages) or, for the
  other operations, the entry replaced by a bare string.
"""

_MISSING_FIELD: dict[str, tuple[str, str]] = {
    "DescribeImages": ("imageDetails", "imageDigest"),
    "DescribeRepositories": ("repositories", "repositoryName"),
    "CreateRepository": ("repository", "repositoryName"),
    "BatchGetImage": ("images", "imageManifest"),
    "BatchDeleteImage": ("imageIds", "imageDigest"),
    "PutImage": ("image", "imageId"),
}
_TIMESTAMP_FIELD: dict[str, tuple[str, str]] = {
    "DescribeImages": ("imageDetails", "imagePushedAt"),
    "DescribeRepositories": ("repositories", "createdAt"),
    "CreateRepository": ("repository", "createdAt"),
}


class EcrError(Exception):
    """An ECR error answer: ``code`` becomes the ``__type`` botocore reads."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


def _invalid(member: str, constraint: str) -> EcrError:
    return EcrError(
        "InvalidParameterException",
        f"Invalid parameter at '{member}' failed to satisfy constraint: '{constraint}'",
    )


def _serialization(message: str) -> EcrError:
    return EcrError("SerializationException", message)


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class ImageView:
    """A read-only snapshot of one stored image, for assertions."""

    digest: str
    tags: tuple[str, ...]
    pushed_at: datetime
    is_index: bool
    children: tuple[str, ...]
    size: int
    media_type: str
    last_pulled_at: datetime | None
    subject: str | None = None
    status: str = "ACTIVE"
    archived_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One HTTP request the simulator received (retries are separate requests)."""

    operation: str
    params: Mapping[str, Any]
    caller: str = ""
    # the access key id of the SigV4 Authorization header: which client sent it
    received_at: float = 0.0
    # time.monotonic() when the request arrived (before any injected latency)
    answered_at: float = 0.0
    # time.monotonic() when it was carried out and answered (after the latency)
    status: int = 200
    # the HTTP status answered: 200 when ECR carried the call out, else the error's (a
    # throttled or refused call changed nothing)


@dataclass(slots=True)
class _Image:
    digest: str
    manifest: str
    media_type: str
    artifact_media_type: str | None
    layer_size: int
    pushed_at: datetime
    seq: int
    tags: list[str] = field(default_factory=list)
    children: tuple[str, ...] = ()
    last_pulled_at: datetime | None = None
    subject: str | None = None
    status: str = "ACTIVE"
    # ACTIVE, ARCHIVED or ACTIVATING (the storage class: UpdateImageStorageClass)
    archived_at: datetime | None = None
    activated_at: datetime | None = None
    activating_until: datetime | None = None
    # while ACTIVATING: when the restore completes

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_MEDIA_TYPES


_Storage = tuple[str, datetime | None, datetime | None, datetime | None]


def _storage(image: _Image) -> _Storage:
    return image.status, image.archived_at, image.activated_at, image.activating_until


@dataclass(slots=True)
class _Repository:
    name: str
    created_at: datetime
    seq: int
    tag_mutability: str
    images: dict[str, _Image] = field(default_factory=dict)  # digest -> image, push order
    tags: dict[str, str] = field(default_factory=dict)  # tag -> digest


@dataclass(slots=True)
class _Faults:
    server_errors: Counter[str] = field(default_factory=Counter)
    throttles: dict[str, deque[tuple[int, str]]] = field(default_factory=dict)
    malforms: dict[str, deque[tuple[Malformation, _Mutator | None]]] = field(default_factory=dict)
    failing_images: dict[tuple[str, str], str] = field(default_factory=dict)
    latency: dict[str, float] = field(default_factory=dict)
    rate: _TokenBucket | None = None
    storm: _Storm | None = None
    broken_repositories: set[str] = field(default_factory=set)
    expired_keys: set[str] = field(default_factory=set)


@dataclass(slots=True)
class _Storm:
    """A throttling storm: each call is throttled with probability `fraction`, by a seeded RNG."""

    fraction: float
    rng: random.Random
    operations: frozenset[str] | None


class _TokenBucket:
    """A shared request-rate limit: `rate` requests a second, bursts of at most `burst`."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = burst
        self.at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class ManualClock:
    """A controllable clock for ``clock=``: returns ``now`` until moved."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = _aware(start) if start is not None else datetime(2025, 1, 1, tzinfo=UTC)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta) -> datetime:
        with self._lock:
            self._now += delta
            return self._now

    def set(self, when: datetime) -> None:
        with self._lock:
            self._now = _aware(when)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _aware(when: datetime) -> datetime:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"naive datetime {when!r}: the simulator only takes aware UTC times")
    return when.astimezone(UTC)


def _to_ms(when: datetime) -> datetime:
    """Truncate to millisecond precision, as ECR stores push and pull times."""
    millis = (_aware(when) - _EPOCH) // _ONE_MS
    return _EPOCH + millis * _ONE_MS


def _epoch(when: datetime) -> float:
    """Epoch seconds with a millisecond fraction: how AWS JSON 1.1 sends timestamps."""
    return ((when - _EPOCH) // _ONE_MS) / 1000


def manifest_digest(manifest: str) -> str:
    """The content digest ECR assigns a manifest: sha256 over its exact UTF-8 bytes."""
    return "sha256:" + hashlib.sha256(manifest.encode("utf-8")).hexdigest()


def _json_text(document: Mapping[str, Any]) -> str:
    return json.dumps(document, indent=3)


EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"


def build_artifact_manifest(
    *,
    subject: str,
    artifact_type: str = "application/vnd.dev.cosign.artifact.sig.v1+json",
    seed: str = "",
    size: int = 1024,
) -> str:
    """An OCI 1.1 artifact manifest (a signature, an SBOM, an attestation) whose `subject` is
    the image digest `subject`: what `cosign sign` with the referrers API and `notation sign`
    push. ECR reports the subject as the artifact's `subjectManifestDigest`."""
    payload = hashlib.sha256(f"artifact:{subject}:{artifact_type}:{seed}".encode()).hexdigest()
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {
            "mediaType": EMPTY_CONFIG,
            "size": 2,
            "digest": "sha256:" + hashlib.sha256(b"{}").hexdigest(),
        },
        "layers": [{"mediaType": artifact_type, "size": size, "digest": "sha256:" + payload}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": 1000},
    }
    return _json_text(manifest)


def build_image_manifest(
    *,
    config_seed: str,
    size: int,
    media_type: str = OCI_MANIFEST,
    config_size: int | None = None,
) -> str:
    """A real-looking single-platform image manifest whose layers total ``size`` bytes.

    The config blob is a plausible image config carrying ``config_seed``; its sha256
    is the config digest, so distinct seeds give distinct manifests (and digests).
    ``config_size`` overrides the advertised config size (moto reports that field as
    the image size; the differential test uses it to line the two models up).
    """
    if media_type not in IMAGE_MEDIA_TYPES:
        raise ValueError(f"not an image manifest media type: {media_type}")
    if size < 0:
        raise ValueError(f"negative image size {size}")
    layer_digest = "sha256:" + hashlib.sha256(f"layer:{config_seed}".encode()).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": {"sandbox.ecrsim/seed": config_seed}},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }
    config_bytes = json.dumps(config, separators=(",", ":")).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {
            "mediaType": _CONFIG_MEDIA_TYPE[media_type],
            "size": len(config_bytes) if config_size is None else config_size,
            "digest": "sha256:" + hashlib.sha256(config_bytes).hexdigest(),
        },
        "layers": [
            {"mediaType": _LAYER_MEDIA_TYPE[media_type], "size": size, "digest": layer_digest}
        ],
    }
    return _json_text(manifest)


@dataclass(frozen=True, slots=True)
class _Parsed:
    media_type: str
    artifact_media_type: str | None
    layer_size: int
    children: tuple[str, ...]
    subject: str | None = None
    # OCI 1.1 `subject.digest`: the image this artifact (a signature, an SBOM) refers to


def _subject(document: Mapping[str, Any]) -> str | None:
    subject = document.get("subject")
    if subject is None:
        return None
    digest = subject.get("digest") if isinstance(subject, dict) else None
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise _invalid("ImageManifest", "subject needs a valid digest")
    return digest


def _parse_manifest(manifest: str, declared: str | None) -> _Parsed:
    """Validate a pushed manifest the way PutImage does and extract what we store."""
    try:
        document = json.loads(manifest)
    except ValueError:
        raise _invalid("ImageManifest", "Invalid JSON syntax") from None
    if not isinstance(document, dict):
        raise _invalid("ImageManifest", "Invalid JSON syntax")
    embedded = document.get("mediaType")
    if embedded is not None and not isinstance(embedded, str):
        raise _invalid("ImageManifest", "mediaType must be a string")
    if declared is not None and embedded is not None and declared != embedded:
        raise EcrError(
            "InvalidParameterException",
            f"Invalid parameter at 'imageManifestMediaType': '{declared}' does not match "
            f"the manifest mediaType '{embedded}'",
        )
    media_type = declared or embedded
    if media_type is None:
        raise EcrError(
            "InvalidParameterException",
            "image manifest media type not provided in manifest or imageManifestMediaType",
        )
    subject = _subject(document)
    if media_type in INDEX_MEDIA_TYPES:
        entries = document.get("manifests")
        if not isinstance(entries, list):
            raise _invalid("ImageManifest", "an image index needs a 'manifests' list")
        children: list[str] = []
        for entry in entries:
            digest = entry.get("digest") if isinstance(entry, dict) else None
            if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
                raise _invalid("ImageManifest", "every manifests[] entry needs a valid digest")
            if digest not in children:
                children.append(digest)
        return _Parsed(media_type, None, 0, tuple(children), subject)
    if media_type in IMAGE_MEDIA_TYPES:
        config = document.get("config")
        layers = document.get("layers")
        if not isinstance(config, dict) or not isinstance(layers, list):
            raise _invalid("ImageManifest", "an image manifest needs 'config' and 'layers'")
        total = 0
        for layer in layers:
            size = layer.get("size") if isinstance(layer, dict) else None
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise _invalid("ImageManifest", "every layers[] entry needs a size")
            total += size
        artifact = config.get("mediaType")
        return _Parsed(
            media_type, artifact if isinstance(artifact, str) else None, total, (), subject
        )
    raise EcrError(
        "InvalidParameterException",
        f"Invalid parameter at 'imageManifestMediaType': unsupported media type '{media_type}'",
    )


# ------------------------------------------------------------------ request parsing


def _opt(body: Mapping[str, Any], key: str, kind: type[Any], type_name: str) -> Any:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _serialization(f"'{key}' must be {type_name}")
    return value


def _opt_str(body: Mapping[str, Any], key: str) -> str | None:
    value: str | None = _opt(body, key, str, "a string")
    return value


def _req_str(body: Mapping[str, Any], key: str) -> str:
    value = _opt_str(body, key)
    if value is None:
        raise EcrError("InvalidParameterException", f"Missing required parameter in input: '{key}'")
    return value


def _opt_list(body: Mapping[str, Any], key: str, maximum: int) -> list[Any] | None:
    value: list[Any] | None = _opt(body, key, list, "a list")
    if value is None:
        return None
    if not value:
        raise _invalid(key, "Member must have length greater than or equal to 1")
    if len(value) > maximum:
        raise _invalid(key, f"Member must have length less than or equal to {maximum}")
    return value


def _max_results(body: Mapping[str, Any]) -> int | None:
    value: int | None = _opt(body, "maxResults", int, "an integer")
    if value is None:
        return None
    if value < MIN_RESULTS:
        raise _invalid(
            "maxResults", f"Member must have value greater than or equal to {MIN_RESULTS}"
        )
    if value > MAX_RESULTS:
        raise _invalid("maxResults", f"Member must have value less than or equal to {MAX_RESULTS}")
    return value


@dataclass(frozen=True, slots=True)
class _ImageId:
    digest: str | None
    tag: str | None

    def wire(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.digest is not None:
            out["imageDigest"] = self.digest
        if self.tag is not None:
            out["imageTag"] = self.tag
        return out


def _image_ids(body: Mapping[str, Any]) -> list[_ImageId] | None:
    raw = _opt_list(body, "imageIds", MAX_IMAGE_IDS)
    if raw is None:
        return None
    ids: list[_ImageId] = []
    for entry in raw:
        if not isinstance(entry, dict):
            raise _serialization("'imageIds' entries must be objects")
        ids.append(_ImageId(_opt_str(entry, "imageDigest"), _opt_str(entry, "imageTag")))
    return ids


def _failure(image_id: _ImageId, code: str, reason: str) -> dict[str, Any]:
    return {"imageId": image_id.wire(), "failureCode": code, "failureReason": reason}


# ------------------------------------------------------------------------ registry


class EcrRegistry:
    """The registry state, ECR semantics, seeding API and fault knobs (no I/O).

    :meth:`handle` answers one AWS JSON 1.1 request; the HTTP lifecycles in
    :class:`EcrSimulator` and :class:`ThreadedEcrSimulator` only move bytes.
    """

    def __init__(
        self,
        *,
        account: str = "123456789012",
        region: str = "us-east-1",
        clock: Callable[[], datetime] | None = None,
        batch_get_records_pull: bool = False,
    ) -> None:
        if not _REGISTRY_ID.fullmatch(account):
            raise ValueError(f"account must be 12 digits, not {account!r}")
        self.account = account
        self.region = region
        self.clock: Callable[[], datetime] = clock or _utc_now
        self.batch_get_records_pull = batch_get_records_pull
        self.activation_delay = timedelta(minutes=20)
        # how long a restore (UpdateImageStorageClass to STANDARD) stays ACTIVATING: ECR
        # documents "within 20 minutes"; on the simulator's clock
        self._lock = threading.RLock()
        self._repositories: dict[str, _Repository] = {}
        self._seq = 0
        self._faults = _Faults()
        self._calls: Counter[str] = Counter()
        self._requests: list[RecordedRequest] = []
        self.record_requests = True
        # False: count calls only (a benchmark's millions of requests need no record)
        self.answer_on_arrival = False
        # True: a call is carried out when it arrives and answered its latency after that, so
        # the simulator's own work (one core, one call at a time) hides in the latency instead
        # of adding to it; False: carried out after the latency (a slow call in flight)
        self._checkpoint: (
            dict[
                str, tuple[dict[str, _Image], dict[str, str], dict[str, tuple[list[str], _Storage]]]
            ]
            | None
        ) = None
        self._token_key = secrets.token_bytes(32)
        if region.startswith("cn-"):
            self._partition, self._dns_suffix = "aws-cn", "amazonaws.com.cn"
        elif region.startswith("us-gov-"):
            self._partition, self._dns_suffix = "aws-us-gov", "amazonaws.com"
        else:
            self._partition, self._dns_suffix = "aws", "amazonaws.com"

    # ------------------------------------------------------------- accounting

    @property
    def calls(self) -> Counter[str]:
        """Operation name -> HTTP requests received (retries included); a snapshot."""
        with self._lock:
            return Counter(self._calls)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received since the last :meth:`reset_calls`, in order; a snapshot."""
        with self._lock:
            return list(self._requests)

    def reset_calls(self) -> None:
        with self._lock:
            self._calls.clear()
            self._requests.clear()

    # ------------------------------------------------------------- fault knobs

    def throttle(
        self, operation: str, times: int = 1, status: int = 400, *, code: str | None = None
    ) -> None:
        """The next ``times`` calls of ``operation`` are throttled.

        ``status=400`` answers ``ThrottlingException`` (what ECR sends); ``status=429``
        answers ``TooManyRequestsException``.  Both codes are in botocore's throttling
        list, so a standard-mode client retries them with backoff.
        """
        self._check_knob(operation, times)
        if code is None:
            code = "TooManyRequestsException" if status == 429 else "ThrottlingException"
        with self._lock:
            queue = self._faults.throttles.setdefault(operation, deque())
            queue.extend([(status, code)] * times)

    def server_error(self, operation: str, times: int = 1) -> None:
        """The next ``times`` calls of ``operation`` answer HTTP 500 ``ServerException``."""
        self._check_knob(operation, times)
        with self._lock:
            self._faults.server_errors[operation] += times

    def malform(
        self,
        operation: str,
        times: int = 1,
        *,
        kind: Malformation = "missing-field",
        mutate: _Mutator | None = None,
    ) -> None:
        """The next ``times`` successful answers of ``operation`` violate the shape.

        The answer stays valid JSON with HTTP 200; ``kind`` says how it is broken (see
        :data:`Malformation`), or ``mutate`` rewrites the answer dict freely.
        """
        self._check_knob(operation, times)
        if mutate is None:
            table = _TIMESTAMP_FIELD if kind == "bad-timestamp" else _MISSING_FIELD
            if operation not in table:
                raise ValueError(f"malform kind {kind!r} does not apply to {operation}")
        with self._lock:
            queue = self._faults.malforms.setdefault(operation, deque())
            queue.extend([(kind, mutate)] * times)

    def fail_images(self, repo: str, digests: Iterable[str], code: str = "KmsError") -> None:
        """BatchDeleteImage reports these images as per-image failures with ``code``.

        Applies however the image is named (digest or tag), until :meth:`clear_faults`.
        """
        with self._lock:
            for digest in digests:
                self._faults.failing_images[(repo, digest)] = code

    def set_latency(self, operation: str, seconds: float) -> None:
        """Delay every answer to `operation` by `seconds` (a slow call in flight, for shutdown tests)."""
        self._check_knob(operation, 1)
        with self._lock:
            self._faults.latency[operation] = seconds

    def latency_for(self, target: str | None) -> float:
        operation = (target or "").rpartition(".")[2]
        with self._lock:
            return self._faults.latency.get(operation, 0.0)

    def rate_limit(self, per_second: float, *, burst: float | None = None) -> None:
        """Answer ThrottlingException to requests beyond `per_second` (all operations together),
        as a registry's shared API rate limit does; `burst` requests may come at once."""
        if per_second <= 0:
            raise ValueError(f"per_second must be positive, not {per_second}")
        with self._lock:
            self._faults.rate = _TokenBucket(per_second, burst if burst is not None else per_second)

    def lift_rate_limit(self) -> None:
        with self._lock:
            self._faults.rate = None

    def throttle_randomly(
        self, fraction: float, *, seed: int = 0, operations: Iterable[str] | None = None
    ) -> None:
        """A throttling storm: every call (of `operations`, default all) is throttled with
        probability `fraction`, half of those as HTTP 400 ``ThrottlingException`` and half as
        HTTP 429 ``TooManyRequestsException``; seeded, so a run can be replayed. Until
        :meth:`clear_faults`."""
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], not {fraction}")
        chosen = None if operations is None else frozenset(operations)
        for operation in chosen or ():
            self._check_knob(operation, 1)
        with self._lock:
            self._faults.storm = _Storm(fraction, random.Random(seed), chosen)

    def break_repository(self, repo: str) -> None:
        """Every call that names `repo` (``repositoryName``) answers HTTP 500
        ``ServerException``, as a partial outage of one repository's storage does; the other
        repositories answer normally. Until :meth:`clear_faults`."""
        with self._lock:
            self._faults.broken_repositories.add(repo)

    def expire_credentials(self, access_key: str) -> None:
        """Every request signed with `access_key` answers HTTP 400 ``ExpiredTokenException``,
        as STS session credentials past their expiry do. Until :meth:`clear_faults`."""
        with self._lock:
            self._faults.expired_keys.add(access_key)

    def delete_repository(self, name: str) -> None:
        """Delete a repository and its images (DeleteRepository with force), for a repository
        deleted while a cycle runs: later calls naming it answer RepositoryNotFoundException."""
        with self._lock:
            self._repository(name)
            del self._repositories[name]

    def clear_faults(self) -> None:
        with self._lock:
            self._faults = _Faults()

    def checkpoint(self) -> None:
        """Remember the repositories as they are now, for :meth:`rollback` (cheap: no copies of
        manifests, only of the dicts and tag lists that deletions and pushes change)."""
        with self._lock:
            self._checkpoint = {
                name: (
                    dict(repo.images),
                    dict(repo.tags),
                    {
                        digest: (list(image.tags), _storage(image))
                        for digest, image in repo.images.items()
                    },
                )
                for name, repo in self._repositories.items()
            }

    def rollback(self) -> None:
        """Put the repositories back as they were at the last :meth:`checkpoint`; reset the call
        counts, and fill a rate limit's bucket again (a benchmark's run starts with its whole
        burst). Repositories created since are dropped."""
        with self._lock:
            if self._checkpoint is None:
                raise RuntimeError("rollback() without a checkpoint()")
            self._repositories = {name: self._repositories[name] for name in self._checkpoint}
            for name, (images, tags, image_tags) in self._checkpoint.items():
                repo = self._repositories[name]
                repo.images, repo.tags = dict(images), dict(tags)
                for digest, (kept, storage) in image_tags.items():
                    image = images[digest]
                    image.tags = list(kept)
                    (
                        image.status,
                        image.archived_at,
                        image.activated_at,
                        image.activating_until,
                    ) = storage
            self._calls.clear()
            self._requests.clear()
            rate = self._faults.rate
            if rate is not None:
                rate.tokens, rate.at = rate.burst, time.monotonic()

    @staticmethod
    def _check_knob(operation: str, times: int) -> None:
        if operation not in OPERATIONS:
            raise ValueError(f"unknown operation {operation!r}; known: {sorted(OPERATIONS)}")
        if times < 1:
            raise ValueError(f"times must be >= 1, not {times}")

    # ------------------------------------------------------------- seeding API

    def create_repository(self, name: str, *, tag_mutability: str = "MUTABLE") -> None:
        with self._lock:
            self._create_repository(name, tag_mutability)

    def add_image(
        self,
        repo: str,
        *,
        tags: Iterable[str] = (),
        pushed_at: datetime | None = None,
        size: int = 10 * 1024 * 1024,
        last_pulled_at: datetime | None = None,
        config_seed: str | None = None,
        media_type: str = OCI_MANIFEST,
    ) -> str:
        """Store a single-platform image (as if pushed) and return its digest.

        ``size`` is the layer total ECR reports as ``imageSizeInBytes``.  Without a
        ``config_seed`` every call builds a distinct manifest.  Tags held by another
        image move to this one, as a push does.
        """
        with self._lock:
            repository = self._repository(repo)
            seed = config_seed if config_seed is not None else f"{repo}#{self._next_seq()}"
            manifest = build_image_manifest(config_seed=seed, size=size, media_type=media_type)
            image = self._store(repository, manifest, None, list(tags), pushed_at)
            if last_pulled_at is not None:
                image.last_pulled_at = _to_ms(last_pulled_at)
            return image.digest

    def add_artifact(
        self,
        repo: str,
        subject: str,
        *,
        artifact_type: str = "application/vnd.dev.cosign.artifact.sig.v1+json",
        tags: Iterable[str] = (),
        pushed_at: datetime | None = None,
    ) -> str:
        """Store an OCI 1.1 artifact (a signature, an SBOM) whose subject is the digest
        ``subject`` and return its digest. As in ECR, the subject need not be in ``repo``:
        a signature may be stored apart from its image (cosign's COSIGN_REPOSITORY)."""
        with self._lock:
            repository = self._repository(repo)
            manifest = build_artifact_manifest(
                subject=subject, artifact_type=artifact_type, seed=str(self._next_seq())
            )
            return self._store(repository, manifest, None, list(tags), pushed_at).digest

    def set_storage_class(self, repo: str, digest: str, target: str) -> str:
        """Seed a storage class as UpdateImageStorageClass would (`ARCHIVE` or `STANDARD`),
        with the same rules; returns the status it leaves."""
        with self._lock:
            repository = self._repository(repo)
            image = repository.images[digest]
            self._transition(repository, image, target)
            return image.status

    def add_index(
        self,
        repo: str,
        children: Sequence[str],
        *,
        tags: Iterable[str] = (),
        pushed_at: datetime | None = None,
        media_type: str = OCI_INDEX,
    ) -> str:
        """Store an image index over ``children`` (digests already in ``repo``)."""
        if media_type not in INDEX_MEDIA_TYPES:
            raise ValueError(f"not an index media type: {media_type}")
        with self._lock:
            repository = self._repository(repo)
            entries: list[dict[str, Any]] = []
            for number, digest in enumerate(children):
                child = repository.images.get(digest)
                if child is None:
                    raise EcrError(
                        "ReferencedImagesNotFoundException",
                        f"The manifest list references {digest}, which is not in {repo}",
                    )
                entries.append(
                    {
                        "mediaType": child.media_type,
                        "size": len(child.manifest.encode("utf-8")),
                        "digest": digest,
                        "platform": dict(_PLATFORMS[number % len(_PLATFORMS)]),
                    }
                )
            manifest = _json_text(
                {"schemaVersion": 2, "mediaType": media_type, "manifests": entries}
            )
            return self._store(repository, manifest, None, list(tags), pushed_at).digest

    def set_last_pulled(self, repo: str, digest: str, when: datetime | None) -> None:
        with self._lock:
            image = self._repository(repo).images.get(digest)
            if image is None:
                raise EcrError("ImageNotFoundException", f"{digest} is not in {repo}")
            image.last_pulled_at = None if when is None else _to_ms(when)

    def images(self, repo: str) -> list[ImageView]:
        """Every image in ``repo``, in push order."""
        with self._lock:
            repository = self._repository(repo)
            return [
                ImageView(
                    digest=image.digest,
                    tags=tuple(image.tags),
                    pushed_at=image.pushed_at,
                    is_index=image.is_index,
                    children=image.children,
                    size=self._size(repository, image),
                    media_type=image.media_type,
                    last_pulled_at=image.last_pulled_at,
                    subject=image.subject,
                    status=self._settled(image),
                    archived_at=image.archived_at,
                )
                for image in repository.images.values()
            ]

    def digests(self, repo: str) -> set[str]:
        with self._lock:
            return set(self._repository(repo).images)

    def manifest(self, repo: str, digest: str) -> str:
        """The exact manifest text stored for ``digest``."""
        with self._lock:
            image = self._repository(repo).images.get(digest)
            if image is None:
                raise EcrError("ImageNotFoundException", f"{digest} is not in {repo}")
            return image.manifest

    def repositories(self) -> list[str]:
        with self._lock:
            return list(self._repositories)

    # ------------------------------------------------------------- internals

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _create_repository(self, name: str, tag_mutability: str) -> _Repository:
        self._check_repository_name(name)
        if tag_mutability not in ("MUTABLE", "IMMUTABLE"):
            raise EcrError(
                "InvalidParameterException",
                f"imageTagMutability {tag_mutability!r} is not supported by the simulator",
            )
        if name in self._repositories:
            raise EcrError(
                "RepositoryAlreadyExistsException",
                f"The repository with name '{name}' already exists in the registry "
                f"with id '{self.account}'",
            )
        repository = _Repository(name, _to_ms(self.clock()), self._next_seq(), tag_mutability)
        self._repositories[name] = repository
        return repository

    @staticmethod
    def _check_repository_name(name: str) -> None:
        if not 2 <= len(name) <= 256:
            raise _invalid("repositoryName", "Member must have length between 2 and 256")
        if not _REPOSITORY_NAME.fullmatch(name):
            raise _invalid(
                "repositoryName",
                f"Member must satisfy regular expression pattern: {_REPOSITORY_NAME.pattern}",
            )

    def _repository(self, name: str, registry_id: str | None = None) -> _Repository:
        repository = self._repositories.get(name)
        if repository is None or (registry_id is not None and registry_id != self.account):
            raise EcrError(
                "RepositoryNotFoundException",
                f"The repository with name '{name}' does not exist in the registry "
                f"with id '{registry_id or self.account}'",
            )
        return repository

    def _store(
        self,
        repository: _Repository,
        manifest: str,
        declared_media_type: str | None,
        tags: list[str],
        pushed_at: datetime | None,
    ) -> _Image:
        """The PutImage core: validate, store or re-tag, move tags. Lock held."""
        for tag in tags:
            if not _TAG.fullmatch(tag):
                raise _invalid("imageTag", "Member must satisfy the image tag pattern")
        parsed = _parse_manifest(manifest, declared_media_type)
        missing = [child for child in parsed.children if child not in repository.images]
        if missing:
            raise EcrError(
                "ReferencedImagesNotFoundException",
                f"Some of the images referenced by the manifest list are not in the "
                f"repository: {missing}",
            )
        digest = manifest_digest(manifest)
        image = repository.images.get(digest)
        new_tags = [tag for tag in dict.fromkeys(tags) if image is None or tag not in image.tags]
        if image is not None and self._settled(image) != "ACTIVE":
            # documented: pushing an archived image restores it at once
            image.status, image.activating_until = "ACTIVE", None
            image.activated_at = self.clock()
        elif image is not None and not new_tags:
            tag_text = tags[0] if tags else "null"
            raise EcrError(
                "ImageAlreadyExistsException",
                f"Image with digest '{digest}' and tag '{tag_text}' already exists in the "
                f"repository with name '{repository.name}' in registry with id '{self.account}'",
            )
        if repository.tag_mutability == "IMMUTABLE":
            for tag in new_tags:
                if tag in repository.tags:
                    raise EcrError(
                        "ImageTagAlreadyExistsException",
                        f"The image tag '{tag}' already exists in the '{repository.name}' "
                        f"repository and cannot be overwritten because the repository is "
                        f"immutable.",
                    )
        if image is None:
            when = _to_ms(pushed_at if pushed_at is not None else self.clock())
            image = _Image(
                digest=digest,
                manifest=manifest,
                media_type=parsed.media_type,
                artifact_media_type=parsed.artifact_media_type,
                layer_size=parsed.layer_size,
                pushed_at=when,
                seq=self._next_seq(),
                children=parsed.children,
                subject=parsed.subject,
            )
            repository.images[digest] = image
        for tag in new_tags:
            previous = repository.tags.get(tag)
            if previous is not None:
                repository.images[previous].tags.remove(tag)
                logger.debug("ecrsim: tag %s moved from %s to %s", tag, previous, digest)
            repository.tags[tag] = digest
            image.tags.append(tag)
        return image

    def _size(self, repository: _Repository, image: _Image) -> int:
        """``imageSizeInBytes``: layer total, or for an index the largest child's size."""
        if not image.is_index:
            return image.layer_size
        sizes = [
            self._size(repository, repository.images[child])
            for child in image.children
            if child in repository.images and child != image.digest
        ]
        return max(sizes, default=0)

    def _resolve(self, repository: _Repository, image_id: _ImageId) -> _Image | None:
        if image_id.digest is not None:
            image = repository.images.get(image_id.digest)
            if image is not None and image_id.tag is not None and image_id.tag not in image.tags:
                return None
            return image
        if image_id.tag is not None:
            digest = repository.tags.get(image_id.tag)
            return None if digest is None else repository.images[digest]
        return None

    def _resolve_or_raise(self, repository: _Repository, image_id: _ImageId) -> _Image:
        """The image `image_id` names, or ECR's ImageNotFoundException (an operation error, as
        DescribeImages and UpdateImageStorageClass answer, not a per-image failure)."""
        image = self._resolve(repository, image_id)
        if image is None:
            raise EcrError(
                "ImageNotFoundException",
                f"The image with imageId {{imageDigest:'{image_id.digest or 'null'}', "
                f"imageTag:'{image_id.tag or 'null'}'}} does not exist within the "
                f"repository with name '{repository.name}' in the registry with id "
                f"'{self.account}'",
            )
        return image

    def _id_problem(self, repository: _Repository, image_id: _ImageId) -> tuple[str, str] | None:
        """A per-image failure (code, reason) for a malformed or mismatched id."""
        if image_id.digest is None and image_id.tag is None:
            return (
                "MissingDigestAndTag",
                "Invalid request parameters: both tag and digest cannot be null",
            )
        if image_id.digest is not None and not _DIGEST.fullmatch(image_id.digest):
            return (
                "InvalidImageDigest",
                "Invalid request parameters: image digest should satisfy the regex "
                "'[a-zA-Z0-9-_+.]+:[a-fA-F0-9]+'",
            )
        if image_id.tag is not None and not _TAG.fullmatch(image_id.tag):
            return ("InvalidImageTag", "Invalid request parameters: invalid image tag")
        if image_id.digest is not None and image_id.tag is not None:
            holder = repository.tags.get(image_id.tag)
            if holder is not None and holder != image_id.digest:
                return (
                    "ImageTagDoesNotMatchDigest",
                    "Invalid request parameters: given tag does not map to the given digest",
                )
        return None

    # ------------------------------------------------------------- dispatch

    def handle(
        self,
        target: str | None,
        body: bytes,
        *,
        caller: str = "",
        received_at: float | None = None,
    ) -> tuple[int, bytes]:
        """Answer one AWS JSON 1.1 request: (HTTP status, JSON body)."""
        operation = (target or "").removeprefix(TARGET_PREFIX)
        with self._lock:
            self._calls[operation] += 1
            try:
                params = orjson.loads(body) if body else {}
            except orjson.JSONDecodeError:
                params = None
            now = time.monotonic()
            try:
                self._injected(operation, params, caller)
                payload = self._answer(target, operation, params)
            except EcrError as error:
                self._record(operation, params, caller, received_at, now, error.status)
                logger.debug("ecrsim %s -> %s %s", operation, error.status, error.code)
                return error.status, orjson.dumps({"__type": error.code, "message": error.message})
            self._record(operation, params, caller, received_at, now, 200)
            payload = self._maybe_malform(operation, payload)
        logger.debug("ecrsim %s -> 200", operation)
        return 200, orjson.dumps(payload)

    def _record(
        self,
        operation: str,
        params: Any,
        caller: str,
        received_at: float | None,
        now: float,
        status: int,
    ) -> None:
        if self.record_requests:
            self._requests.append(
                RecordedRequest(
                    operation,
                    params if isinstance(params, dict) else {},
                    caller=caller,
                    received_at=now if received_at is None else received_at,
                    answered_at=now,
                    status=status,
                )
            )

    def _injected(self, operation: str, params: Any, caller: str) -> None:
        """The faults that depend on who calls or what is named: raise the injected error."""
        faults = self._faults
        if caller and caller in faults.expired_keys:
            logger.info("ecrsim: expired credentials %s for %s", caller, operation)
            raise EcrError(
                "ExpiredTokenException", "The security token included in the request is expired"
            )
        storm = faults.storm
        if (
            storm is not None
            and (storm.operations is None or operation in storm.operations)
            and storm.rng.random() < storm.fraction
        ):
            status = 429 if storm.rng.random() < 0.5 else 400
            code = "TooManyRequestsException" if status == 429 else "ThrottlingException"
            logger.debug("ecrsim: storm: %s (%d) for %s", code, status, operation)
            raise EcrError(code, "Rate exceeded", status=status)
        name = params.get("repositoryName") if isinstance(params, dict) else None
        if name is not None and name in faults.broken_repositories:
            logger.info("ecrsim: injected server error for %s of %s", operation, name)
            raise EcrError("ServerException", f"Injected internal server error in {name}", 500)

    def _answer(self, target: str | None, operation: str, params: Any) -> dict[str, Any]:
        if target is None or not target.startswith(TARGET_PREFIX):
            raise EcrError("UnknownOperationException", f"unexpected X-Amz-Target {target!r}")
        if operation not in OPERATIONS:
            raise EcrError(
                "UnknownOperationException", f"the ECR simulator does not implement {operation}"
            )
        if self._faults.rate is not None and not self._faults.rate.take():
            logger.debug("ecrsim: rate limit exceeded for %s", operation)
            raise EcrError("ThrottlingException", "Rate exceeded")
        if self._faults.server_errors[operation] > 0:
            self._faults.server_errors[operation] -= 1
            logger.info("ecrsim: injected server error for %s", operation)
            raise EcrError("ServerException", "Injected internal server error", status=500)
        throttles = self._faults.throttles.get(operation)
        if throttles:
            status, code = throttles.popleft()
            logger.info("ecrsim: injected %s (%d) for %s", code, status, operation)
            raise EcrError(code, "Rate exceeded", status=status)
        if not isinstance(params, dict):
            raise _serialization("the request body is not a JSON object")
        registry_id = _opt_str(params, "registryId")
        if registry_id is not None and not _REGISTRY_ID.fullmatch(registry_id):
            raise _invalid(
                "registryId", "Member must satisfy regular expression pattern: [0-9]{12}"
            )
        handler: Callable[[dict[str, Any], str | None], dict[str, Any]] = getattr(
            self, f"_op_{operation}"
        )
        return handler(params, registry_id)

    def _maybe_malform(self, operation: str, payload: dict[str, Any]) -> dict[str, Any]:
        queue = self._faults.malforms.get(operation)
        if not queue:
            return payload
        kind, mutate = queue.popleft()
        logger.info("ecrsim: malforming the %s answer (%s)", operation, mutate or kind)
        if mutate is not None:
            return mutate(payload)
        table = _TIMESTAMP_FIELD if kind == "bad-timestamp" else _MISSING_FIELD
        container, member = table[operation]
        value = payload.get(container)
        entries = value if isinstance(value, list) else [value]
        if not entries or not isinstance(entries[0], dict):
            return payload
        first: dict[str, Any] = entries[0]
        if kind == "missing-field":
            first.pop(member, None)
        elif kind == "bad-timestamp":
            first[member] = "not-a-timestamp"
        elif operation == "DescribeImages":
            first["imageSizeInBytes"] = "ten megabytes"
        elif isinstance(value, list):
            value[0] = "not-an-object"
        else:
            payload[container] = "not-an-object"
        return payload

    # ------------------------------------------------------------- paging

    def _token(self, scope: str, after: int) -> str:
        body = base64.urlsafe_b64encode(orjson.dumps({"s": scope, "a": after})).decode()
        mac = hmac.new(self._token_key, body.encode(), hashlib.sha256).hexdigest()[:32]
        return f"{body}.{mac}"

    def _untoken(self, scope: str, token: str) -> int:
        invalid = _invalid("nextToken", "Invalid NextToken")
        body, _, mac = token.partition(".")
        expected = hmac.new(self._token_key, body.encode(), hashlib.sha256).hexdigest()[:32]
        if not hmac.compare_digest(mac, expected):
            raise invalid
        try:
            decoded = orjson.loads(base64.urlsafe_b64decode(body.encode()))
        except (ValueError, orjson.JSONDecodeError):
            raise invalid from None
        if not isinstance(decoded, dict) or decoded.get("s") != scope:
            raise invalid
        after = decoded.get("a")
        if not isinstance(after, int):
            raise invalid
        return after

    # ------------------------------------------------------------- wire views

    def _repository_wire(self, repository: _Repository) -> dict[str, Any]:
        return {
            "repositoryArn": (
                f"arn:{self._partition}:ecr:{self.region}:{self.account}:repository/"
                f"{repository.name}"
            ),
            "registryId": self.account,
            "repositoryName": repository.name,
            "repositoryUri": (
                f"{self.account}.dkr.ecr.{self.region}.{self._dns_suffix}/{repository.name}"
            ),
            "createdAt": _epoch(repository.created_at),
            "imageTagMutability": repository.tag_mutability,
            "imageScanningConfiguration": {"scanOnPush": False},
            "encryptionConfiguration": {"encryptionType": "AES256"},
        }

    def _detail_wire(self, repository: _Repository, image: _Image) -> dict[str, Any]:
        detail: dict[str, Any] = {
            "registryId": self.account,
            "repositoryName": repository.name,
            "imageDigest": image.digest,
        }
        if image.tags:
            detail["imageTags"] = list(image.tags)
        detail["imageSizeInBytes"] = self._size(repository, image)
        detail["imagePushedAt"] = _epoch(image.pushed_at)
        detail["imageManifestMediaType"] = image.media_type
        if image.artifact_media_type is not None:
            detail["artifactMediaType"] = image.artifact_media_type
        if image.last_pulled_at is not None:
            detail["lastRecordedPullTime"] = _epoch(image.last_pulled_at)
        if image.subject is not None:
            detail["subjectManifestDigest"] = image.subject
        detail["imageStatus"] = self._settled(image)
        if image.archived_at is not None:
            detail["lastArchivedAt"] = _epoch(image.archived_at)
        if image.activated_at is not None:
            detail["lastActivatedAt"] = _epoch(image.activated_at)
        return detail

    def _settled(self, image: _Image) -> str:
        """The image's status now: a restore whose time has come is complete."""
        until = image.activating_until
        if image.status == "ACTIVATING" and until is not None and self.clock() >= until:
            image.status, image.activated_at, image.activating_until = "ACTIVE", until, None
        return image.status

    # ------------------------------------------------------------- operations

    def _op_CreateRepository(
        self, params: dict[str, Any], registry_id: str | None
    ) -> dict[str, Any]:
        name = _req_str(params, "repositoryName")
        if registry_id is not None and registry_id != self.account:
            raise EcrError(
                "InvalidParameterException", "repositories can only be created in this registry"
            )
        mutability = _opt_str(params, "imageTagMutability") or "MUTABLE"
        return {"repository": self._repository_wire(self._create_repository(name, mutability))}

    def _op_DescribeRepositories(
        self, params: dict[str, Any], registry_id: str | None
    ) -> dict[str, Any]:
        names = _opt_list(params, "repositoryNames", MAX_REPOSITORY_NAMES)
        max_results = _max_results(params)
        token = _opt_str(params, "nextToken")
        if names is not None:
            if max_results is not None or token is not None:
                raise EcrError(
                    "InvalidParameterException",
                    "maxResults and nextToken cannot be used with repositoryNames",
                )
            found = []
            for name in dict.fromkeys(names):
                if not isinstance(name, str):
                    raise _serialization("'repositoryNames' entries must be strings")
                found.append(self._repository_wire(self._repository(name, registry_id)))
            return {"repositories": found}
        if registry_id is not None and registry_id != self.account:
            return {"repositories": []}
        after = self._untoken("DescribeRepositories", token) if token is not None else 0
        limit = max_results or DEFAULT_RESULTS
        pending = [r for r in self._repositories.values() if r.seq > after]
        page = pending[:limit]
        answer: dict[str, Any] = {"repositories": [self._repository_wire(r) for r in page]}
        if len(pending) > limit:
            answer["nextToken"] = self._token("DescribeRepositories", page[-1].seq)
        return answer

    def _op_DescribeImages(self, params: dict[str, Any], registry_id: str | None) -> dict[str, Any]:
        repository = self._repository(_req_str(params, "repositoryName"), registry_id)
        image_ids = _image_ids(params)
        max_results = _max_results(params)
        token = _opt_str(params, "nextToken")
        filter_: dict[str, Any] | None = _opt(params, "filter", dict, "an object")
        tag_status = _opt_str(filter_ or {}, "tagStatus") or "ANY"
        if tag_status not in ("TAGGED", "UNTAGGED", "ANY"):
            raise _invalid(
                "filter.tagStatus", "Member must satisfy enum value set: [TAGGED, UNTAGGED, ANY]"
            )
        # documented: without the filter, only ACTIVE images are returned
        image_status = _opt_str(filter_ or {}, "imageStatus") or "ACTIVE"
        if image_status not in IMAGE_STATUS_FILTERS:
            raise _invalid(
                "filter.imageStatus",
                "Member must satisfy enum value set: [ACTIVE, ARCHIVED, ACTIVATING, ANY]",
            )

        def wanted(image: _Image) -> bool:
            if image_status != "ANY" and self._settled(image) != image_status:
                return False
            if tag_status == "TAGGED":
                return bool(image.tags)
            if tag_status == "UNTAGGED":
                return not image.tags
            return True

        if image_ids is not None:
            if max_results is not None or token is not None:
                raise EcrError(
                    "InvalidParameterException",
                    "maxResults and nextToken cannot be used with imageIds",
                )
            details: dict[str, dict[str, Any]] = {}
            for image_id in image_ids:
                problem = self._id_problem(repository, image_id)
                if problem is not None and problem[0] != "ImageTagDoesNotMatchDigest":
                    raise EcrError("InvalidParameterException", problem[1])
                image = self._resolve_or_raise(repository, image_id)
                if wanted(image):
                    details.setdefault(image.digest, self._detail_wire(repository, image))
            return {"imageDetails": list(details.values())}

        scope = f"DescribeImages/{repository.name}/{tag_status}/{image_status}"
        after = self._untoken(scope, token) if token is not None else 0
        limit = max_results or DEFAULT_RESULTS
        page: list[_Image] = []
        more = False
        for image in repository.images.values():
            if image.seq <= after or not wanted(image):
                continue
            if len(page) == limit:
                more = True
                break
            page.append(image)
        answer: dict[str, Any] = {
            "imageDetails": [self._detail_wire(repository, image) for image in page]
        }
        if more:
            answer["nextToken"] = self._token(scope, page[-1].seq)
        return answer

    def _op_BatchGetImage(self, params: dict[str, Any], registry_id: str | None) -> dict[str, Any]:
        repository = self._repository(_req_str(params, "repositoryName"), registry_id)
        image_ids = _image_ids(params)
        if image_ids is None:
            raise EcrError("InvalidParameterException", "Missing required parameter: 'imageIds'")
        accepted = _opt_list(params, "acceptedMediaTypes", MAX_MEDIA_TYPES)
        images: list[dict[str, Any]] = []
        failures: list[dict[str, Any]] = []
        for image_id in dict.fromkeys(image_ids):
            problem = self._id_problem(repository, image_id)
            if problem is not None:
                failures.append(_failure(image_id, *problem))
                continue
            image = self._resolve(repository, image_id)
            if image is None:
                failures.append(_failure(image_id, "ImageNotFound", "Requested image not found"))
                continue
            if accepted is not None and image.media_type not in accepted:
                failures.append(
                    _failure(
                        image_id,
                        "UnsupportedImageType",
                        f"The image is stored as {image.media_type}, which is not among "
                        f"the acceptedMediaTypes",
                    )
                )
                continue
            if self.batch_get_records_pull:
                image.last_pulled_at = _to_ms(self.clock())
            images.append(
                {
                    "registryId": self.account,
                    "repositoryName": repository.name,
                    "imageId": {**image_id.wire(), "imageDigest": image.digest},
                    "imageManifest": image.manifest,
                    "imageManifestMediaType": image.media_type,
                }
            )
        return {"images": images, "failures": failures}

    def _op_BatchDeleteImage(
        self, params: dict[str, Any], registry_id: str | None
    ) -> dict[str, Any]:
        repository = self._repository(_req_str(params, "repositoryName"), registry_id)
        image_ids = _image_ids(params)
        if image_ids is None:
            raise EcrError("InvalidParameterException", "Missing required parameter: 'imageIds'")
        # Conservative reading of ECR: an index that exists when the call starts
        # protects its children for the whole call, even if the same call deletes it.
        referenced: dict[str, list[str]] = {}
        for stored in repository.images.values():
            for child in stored.children:
                referenced.setdefault(child, []).append(stored.digest)
        deleted: list[dict[str, str]] = []
        failures: list[dict[str, Any]] = []
        for image_id in dict.fromkeys(image_ids):
            problem = self._id_problem(repository, image_id)
            if problem is not None:
                failures.append(_failure(image_id, *problem))
                continue
            image = self._resolve(repository, image_id)
            if image is None:
                failures.append(_failure(image_id, "ImageNotFound", "Requested image not found"))
                continue
            injected = self._faults.failing_images.get((repository.name, image.digest))
            if injected is not None:
                failures.append(_failure(image_id, injected, f"Injected failure: {injected}"))
                continue
            untag_only = image_id.tag is not None and len(image.tags) > 1
            if not untag_only and image.digest in referenced:
                failures.append(
                    _failure(
                        image_id,
                        "ImageReferencedByManifestList",
                        f"Requested image referenced by manifest list: {referenced[image.digest]}",
                    )
                )
                continue
            if image_id.tag is not None:
                tag = image_id.tag
                image.tags.remove(tag)
                del repository.tags[tag]
                deleted.append({"imageDigest": image.digest, "imageTag": tag})
                if image.tags:
                    continue
            else:
                deleted.extend({"imageDigest": image.digest, "imageTag": t} for t in image.tags)
                if not image.tags:
                    deleted.append({"imageDigest": image.digest})
                for tag in image.tags:
                    del repository.tags[tag]
                image.tags.clear()
            del repository.images[image.digest]
        return {"imageIds": deleted, "failures": failures}

    def _op_PutImage(self, params: dict[str, Any], registry_id: str | None) -> dict[str, Any]:
        repository = self._repository(_req_str(params, "repositoryName"), registry_id)
        manifest = _req_str(params, "imageManifest")
        declared = _opt_str(params, "imageManifestMediaType")
        tag = _opt_str(params, "imageTag")
        claimed = _opt_str(params, "imageDigest")
        if claimed is not None and claimed != manifest_digest(manifest):
            raise EcrError(
                "ImageDigestDoesNotMatchException",
                f"The digest '{claimed}' does not match the digest of the manifest",
            )
        image = self._store(repository, manifest, declared, [tag] if tag else [], None)
        image_id = {"imageDigest": image.digest}
        if tag:
            image_id["imageTag"] = tag
        return {
            "image": {
                "registryId": self.account,
                "repositoryName": repository.name,
                "imageId": image_id,
                "imageManifest": image.manifest,
                "imageManifestMediaType": image.media_type,
            }
        }

    def _op_UpdateImageStorageClass(
        self, params: dict[str, Any], registry_id: str | None
    ) -> dict[str, Any]:
        repository = self._repository(_req_str(params, "repositoryName"), registry_id)
        raw_id = _opt(params, "imageId", dict, "an object")
        if raw_id is None:
            raise EcrError("InvalidParameterException", "Missing required parameter: 'imageId'")
        image_id = _ImageId(_opt_str(raw_id, "imageDigest"), _opt_str(raw_id, "imageTag"))
        target = _req_str(params, "targetStorageClass")
        if target not in ("STANDARD", "ARCHIVE"):
            raise _invalid(
                "targetStorageClass", "Member must satisfy enum value set: [STANDARD, ARCHIVE]"
            )
        problem = self._id_problem(repository, image_id)
        if problem is not None:
            raise EcrError("InvalidParameterException", problem[1])
        image = self._resolve_or_raise(repository, image_id)
        self._transition(repository, image, target)
        return {
            "registryId": self.account,
            "repositoryName": repository.name,
            "imageId": {**image_id.wire(), "imageDigest": image.digest},
            "imageStatus": image.status,
        }

    def _transition(self, repository: _Repository, image: _Image, target: str) -> None:
        """ACTIVE -> ARCHIVED, ARCHIVED -> ACTIVATING (-> ACTIVE after `activation_delay`).

        Where the documentation is silent, the conservative reading: a transition from any
        other status is refused (a controller must not count on repeating one); an image an
        unarchived index references cannot be archived before the index (archive the index
        first, as deletions go), and an index cannot be restored while a child of it is
        archived (restore the children first)."""
        status = self._settled(image)
        refused = "ImageStorageClassUpdateNotSupportedException"
        if target == "ARCHIVE":
            if status != "ACTIVE":
                raise EcrError(refused, f"image {image.digest} is {status}, not ACTIVE")
            holders = [
                other.digest
                for other in repository.images.values()
                if image.digest in other.children and self._settled(other) != "ARCHIVED"
            ]
            if holders:
                raise EcrError(
                    refused, f"image {image.digest} is referenced by the image index {holders[0]}"
                )
            image.status, image.archived_at = "ARCHIVED", self.clock()
            return
        if status != "ARCHIVED":
            raise EcrError(refused, f"image {image.digest} is {status}, not ARCHIVED")
        archived = [
            child
            for child in image.children
            if child in repository.images and self._settled(repository.images[child]) == "ARCHIVED"
        ]
        if archived:
            raise EcrError(
                refused, f"the image index {image.digest} has archived child {archived[0]}"
            )
        image.status = "ACTIVATING"
        image.activating_until = self.clock() + self.activation_delay
        self._settled(image)  # a zero delay restores at once

    def _op_ListImageReferrers(
        self, params: dict[str, Any], registry_id: str | None
    ) -> dict[str, Any]:
        repository = self._repository(_req_str(params, "repositoryName"), registry_id)
        subject = _opt(params, "subjectId", dict, "an object")
        digest = _opt_str(subject or {}, "imageDigest")
        if digest is None:
            raise EcrError(
                "InvalidParameterException", "Missing required parameter: 'subjectId.imageDigest'"
            )
        if not _DIGEST.fullmatch(digest):
            raise _invalid("subjectId.imageDigest", "Member must satisfy the digest pattern")
        filter_: dict[str, Any] = _opt(params, "filter", dict, "an object") or {}
        types = _opt_list(filter_, "artifactTypes", 100)
        status = _opt_str(filter_, "artifactStatus") or "ACTIVE"
        if status not in IMAGE_STATUS_FILTERS:
            raise _invalid(
                "filter.artifactStatus",
                "Member must satisfy enum value set: [ACTIVE, ARCHIVED, ACTIVATING, ANY]",
            )
        limit = params.get("maxResults", MAX_REFERRERS)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_REFERRERS:
            raise _invalid("maxResults", f"Member must have value between 1 and {MAX_REFERRERS}")
        token = _opt_str(params, "nextToken")
        scope = f"ListImageReferrers/{repository.name}/{digest}/{types}/{status}"
        after = self._untoken(scope, token) if token is not None else 0
        page: list[_Image] = []
        more = False
        for image in repository.images.values():
            if image.seq <= after or image.subject != digest:
                continue
            kind = _artifact_type(image)
            if types is not None and kind not in types:
                continue
            if status != "ANY" and self._settled(image) != status:
                continue
            if len(page) == limit:
                more = True
                break
            page.append(image)
        answer: dict[str, Any] = {
            "referrers": [
                {
                    "digest": image.digest,
                    "mediaType": image.media_type,
                    "artifactType": _artifact_type(image),
                    "size": len(image.manifest.encode("utf-8")),
                    "artifactStatus": self._settled(image),
                }
                for image in page
            ]
        }
        if more:
            answer["nextToken"] = self._token(scope, page[-1].seq)
        return answer


def _artifact_type(image: _Image) -> str | None:
    """OCI 1.1: a manifest's `artifactType`, else its config's media type."""
    try:
        declared = json.loads(image.manifest).get("artifactType")
    except (ValueError, AttributeError):
        declared = None
    return declared if isinstance(declared, str) else image.artifact_media_type


# ------------------------------------------------------------------------ HTTP front


def settle_garbage() -> None:
    """Collect now and freeze what is left, out of a benchmark's measured run.

    A rollback allocates a list per image (600,000 in the benchmarks' registry), and the
    full collection that follows then ran during the next run's first calls: 0.6 s in which
    this process answered nothing, added to the cycle being measured. Frozen, the registry's
    objects are never traversed again by a later collection."""
    gc.collect()
    gc.freeze()


class LoopLag:
    """How late this process's event loop runs a task that asked to wake every `period`
    seconds: how long a request arriving at a random moment waits before the loop reads it.

    A benchmark's endpoint (`main`) runs it, so that a cycle's answer times can be told apart:
    the controller's own loop, or this simulator's (ECR serves calls in parallel; this process
    serves them one at a time on one core). Samples since the last rollback."""

    def __init__(self, period: float = 0.005) -> None:
        self.period = period
        self._late: list[float] = []
        self._resets = 0

    async def run(self) -> None:
        clock, period, late = time.perf_counter, self.period, self._late
        while True:
            asked, resets = clock(), self._resets
            await asyncio.sleep(period)
            if self._resets == resets:  # a sample across a reset is the rollback's own time
                late.append(clock() - asked - period)

    def reset(self) -> None:
        self._late.clear()
        self._resets += 1

    def summary(self) -> dict[str, float]:
        """Milliseconds late at the 50th, 90th and 99th percentile and at most, and samples."""
        late = sorted(self._late) or [0.0]
        n = len(late)

        def at(q: float) -> float:
            return late[min(n - 1, int(q * n))] * 1000

        return {
            "p50_ms": at(0.5),
            "p90_ms": at(0.9),
            "p99_ms": at(0.99),
            "max_ms": late[-1] * 1000,
            "samples": float(len(self._late)),
        }


class _HttpFront:
    """Serves one registry over HTTP on the loop it is started on."""

    def __init__(self, registry: EcrRegistry, host: str, port: int) -> None:
        self._registry = registry
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self._sock: socket.socket | None = None
        self.endpoint_url: str | None = None
        self.lag = LoopLag()
        # sampled only while its `run` is a task (`main` starts it); reset at each rollback

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("POST", "/_sim/rollback", self._rollback)
        app.router.add_route("GET", "/_sim/calls", self._calls)
        app.router.add_route("GET", "/_sim/lag", self._lag)
        app.router.add_route("POST", "/_sim/rate", self._rate)
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._host, self._port))
            site = web.SockSite(runner, sock)
            await site.start()
        except BaseException:
            sock.close()
            await runner.cleanup()
            raise
        host, port = sock.getsockname()[:2]
        self._runner, self._sock = runner, sock
        self.endpoint_url = f"http://{host}:{port}"
        logger.info("ecrsim: serving registry %s on %s", self._registry.account, self.endpoint_url)
        return self.endpoint_url

    async def close(self) -> None:
        runner, sock, self._runner, self._sock = self._runner, self._sock, None, None
        if runner is not None and sock is not None:
            await stop_runner(runner, sock)
            logger.info("ecrsim: stopped %s", self.endpoint_url)

    async def _rollback(self, _request: web.Request) -> web.Response:
        """Admin: the state of the last checkpoint, for a benchmark's next run."""
        self._registry.rollback()
        settle_garbage()
        self.lag.reset()
        return web.json_response({"ok": True})

    async def _rate(self, request: web.Request) -> web.Response:
        """Admin: `{"per_second": N}` sets a shared rate limit; 0 lifts it."""
        per_second = float((await request.json()).get("per_second", 0))
        if per_second > 0:
            self._registry.rate_limit(per_second)
        else:
            self._registry.lift_rate_limit()
        return web.json_response({"ok": True})

    async def _calls(self, _request: web.Request) -> web.Response:
        """Admin: the requests received per operation since the last rollback."""
        return web.json_response(dict(self._registry.calls))

    async def _lag(self, _request: web.Request) -> web.Response:
        """Admin: how late this loop ran since the last rollback (`LoopLag.summary`)."""
        return web.json_response(self.lag.summary())

    async def _handle(self, request: web.Request) -> web.Response:
        received_at = time.monotonic()
        body = await request.read()
        target = request.headers.get("X-Amz-Target")
        delay = self._registry.latency_for(target)
        early = self._registry.answer_on_arrival
        if delay > 0 and not early:
            await asyncio.sleep(delay)
        caller = _ACCESS_KEY.search(request.headers.get("Authorization", ""))
        status, payload = self._registry.handle(
            target, body, caller=caller.group(1) if caller else "", received_at=received_at
        )
        if delay > 0 and early:
            await asyncio.sleep(max(0.0, received_at + delay - time.monotonic()))
        return web.Response(
            status=status,
            body=payload,
            content_type=JSON_CONTENT_TYPE,
            headers={"x-amzn-RequestId": str(uuid.uuid4())},
        )


class _Served(EcrRegistry):
    """A registry with an HTTP front; the subclasses decide which event loop serves it."""

    def __init__(
        self,
        *,
        account: str = "123456789012",
        region: str = "us-east-1",
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], datetime] | None = None,
        batch_get_records_pull: bool = False,
    ) -> None:
        super().__init__(
            account=account,
            region=region,
            clock=clock,
            batch_get_records_pull=batch_get_records_pull,
        )
        self._front = _HttpFront(self, host, port)

    @property
    def lag(self) -> LoopLag:
        """The serving loop's lag (`GET /_sim/lag`), sampled while its `run` is a task."""
        return self._front.lag

    @property
    def endpoint_url(self) -> str:
        if self._front.endpoint_url is None:
            raise RuntimeError("the ECR simulator is not started")
        return self._front.endpoint_url


class EcrSimulator(_Served):
    """The simulator served on the running event loop: ``async with EcrSimulator() as sim``."""

    async def start(self) -> None:
        await self._front.start()

    async def close(self) -> None:
        await self._front.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class ThreadedEcrSimulator(_Served):
    """The simulator served from its own thread and event loop.

    For tests whose client is not on the test's loop (e.g. the controller run as a
    subprocess).  Seeding and fault knobs are thread-safe; ``start()``/``stop()`` or
    ``with ThreadedEcrSimulator() as sim``.
    """

    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None

    def start(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            raise RuntimeError("the ECR simulator is already started")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=self._run, args=(loop,), name="ecrsim", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            asyncio.run_coroutine_threadsafe(self._front.start(), loop).result(timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 10.0) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._front.close(), loop).result(timeout)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            self._loop = self._thread = None

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def seed_benchmark_registry(
    registry: EcrRegistry, *, repositories: int, images: int, now: datetime | None = None
) -> None:
    """`repositories` repositories (repo-0000, ...) of `images` images each, pushed a minute
    apart and tagged build-N, the newest also `latest`; then a checkpoint to roll back to."""
    now = now or _utc_now()
    for r in range(repositories):
        name = f"repo-{r:04d}"
        registry.create_repository(name)
        for n in range(images, 0, -1):
            tags = (f"build-{n}", "latest") if n == images else (f"build-{n}",)
            registry.add_image(
                name,
                tags=tags,
                pushed_at=now - timedelta(minutes=images - n),
                config_seed=f"{name}-{n}",
            )
    registry.checkpoint()


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m sandbox.ecrsim`: serve a seeded registry until stdin closes (for benchmarks,
    in a process of its own so that its CPU is not the controller's). Prints the endpoint URL
    on the first line. `POST /_sim/rollback` restores the seeded state; `GET /_sim/calls`;
    `GET /_sim/lag`, how late its loop ran since (`LoopLag`)."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m sandbox.ecrsim")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--repositories", type=int, default=10)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per call")
    parser.add_argument("--rate", type=float, default=0.0, help="calls/s limit (0: none)")
    parser.add_argument("--burst", type=float, default=None)
    parser.add_argument(
        "--answer-on-arrival",
        action="store_true",
        help="carry a call out when it arrives and answer it --latency later (benchmarks)",
    )
    options = parser.parse_args(argv)

    async def serve() -> None:
        sim = EcrSimulator(host=options.host, port=options.port)
        sim.record_requests = False
        sim.answer_on_arrival = options.answer_on_arrival
        seed_benchmark_registry(sim, repositories=options.repositories, images=options.images)
        for operation in OPERATIONS:
            if options.latency:
                sim.set_latency(operation, options.latency)
        if options.rate:
            sim.rate_limit(options.rate, burst=options.burst)
        async with sim:
            print(sim.endpoint_url, flush=True)
            loop = asyncio.get_running_loop()
            lag = loop.create_task(sim.lag.run())
            await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes stdin
            lag.cancel()

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
