"""The ECR gateway: the narrow port the pruner talks to, and its aioboto3 adapter.

The port speaks in the policy's plain data (`Image`, digests) so the pruner never sees a
boto response. The adapter makes the fewest calls ECR allows: DescribeImages with
maxResults=1000, BatchGetImage and BatchDeleteImage with 100 ids per call, repository names
100 per DescribeRepositories call.

Retries. The client makes one attempt per call (the SDK's retries OFF). A reading call is
retried by the gateway itself, with botocore's standard back-off (`RetryPolicy`), each within
a time budget (`call_budget`, retries included) so that one broken repository cannot hold a
cycle for a minute. BatchDeleteImage is retried by the pruner (`RetryPolicy` again), asking
the trust gate and the live in-use view again before every attempt. An SDK retry would resend
a batch checked seconds earlier, after a back-off of up to 20 s in which a rollback may have
started using one of its images. How many attempts are in flight, reads and deletes
together, adapts to throttling in one place: `AdaptiveLimit`; a call holds a slot for its
attempt only, never through a back-off (with the SDK's retries a throttled read kept its
slot while it waited: throttled, at one slot left, every other call waited with it).

Calls. A cycle makes about 1,300 calls, nearly all DescribeImages and BatchDeleteImage; those
two go a direct path (`AioEcr._direct`) on the client's own serializer, signer and HTTP session,
leaving out the per-call events, the endpoint ruleset resolved again and the response parser
that their answers do not need (`PARSE_HOOKS` reads them); every other operation is the
client's method (`AioEcr._via_client`). `tests/test_ecr_direct.py` holds the two paths to the
same request and the same outcome.

Exceptions:
    EcrError                 a call failed for good (operation, code, retryable)
    └── MalformedResponse    an answer did not have the shape the service model promises
"""

from __future__ import annotations

import logging
import platform
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

import aioboto3
import aiobotocore
import anyio
import botocore
import botocore.session
import msgspec
import orjson
from aiobotocore.config import AioConfig
from aiobotocore.endpoint import convert_to_response_dict
from aiobotocore.session import AioSession
from botocore.exceptions import BotoCoreError, ClientError, ProfileNotFound
from botocore.retries import standard

from controller import __version__
from controller.identifiers import RepositoryId
from controller.images import Digest, EcrRegistry, all_digests, is_digest
from controller.policy import Image
from controller.settings import ConfigError

log = logging.getLogger(__name__)

ECR_MODEL: Final = Path(__file__).with_name("data")
"""A botocore data directory holding the ECR service model of a newer botocore than aioboto3
pins (controller/data/ecr/PROVENANCE.json names it; scripts/vendor_ecr_model.py generates it).
The gateway's own session reads it before botocore's data, so that its clients know
UpdateImageStorageClass, ListImageReferrers and the ImageDetail fields imageStatus,
subjectManifestDigest, lastArchivedAt and lastActivatedAt. No process-wide setting changes
(AWS_DATA_PATH): other botocore sessions in the process keep the installed model."""

STORAGE_CLASS_REFUSALS = frozenset({"ImageStorageClassUpdateNotSupportedException"})
"""UpdateImageStorageClass answers for one image that ECR will not move now (already archived
or restoring, an index's child): a per-image failure, not a reason to retry."""

DESCRIBE_PAGE = 1000  # DescribeImages maxResults upper bound
ID_BATCH = 100  # BatchGetImage / BatchDeleteImage / DescribeRepositories names per call

INDEX_MEDIA_TYPES = frozenset(
    {
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.index.v1+json",
    }
)
MANIFEST_MEDIA_TYPES = (
    *sorted(INDEX_MEDIA_TYPES),
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)


SDK_MAX_RETRIES = 8
"""Retries after the first attempt, for every call: botocore's for reads, the pruner's for deletes."""

USER_AGENT = (
    f"kube-ecr-cleanup-controller/{__version__} aiobotocore/{aiobotocore.__version__} "
    f"botocore/{botocore.__version__} Python/{platform.python_version()}"
)

CALL_BUDGET = 30.0
"""Seconds one reading call may take, its retries included, before it fails for good."""


class EcrError(Exception):
    """An ECR call failed for good (after the retries of a read, or one attempt for a delete)."""

    def __init__(self, operation: str, code: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(f"{operation}: {code}: {message}")
        self.operation = operation
        self.code = code
        self.message = message
        self.retryable = retryable
        # a throttle, a 5xx or a connection failure: the same call may succeed later


class MalformedResponse(EcrError):
    def __init__(self, operation: str, message: str) -> None:
        super().__init__(operation, "MalformedResponse", message)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How the pruner retries BatchDeleteImage: botocore's standard back-off, made visible.

    Before retry n (1-based) it waits rand(0, 1) × min(base × 2^(n-1), max_backoff) seconds, as
    botocore's ExponentialBackoff does, for at most `attempts` attempts in all and while the
    back-off so far leaves the next wait within `budget` seconds.
    """

    attempts: int = SDK_MAX_RETRIES + 1
    base: float = 1.0
    max_backoff: float = 20.0
    budget: float = 60.0
    # seconds of back-off in all: no retry starts whose wait would take the sum past this
    jitter: Callable[[], float] = field(default=random.random, compare=False)

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (1 for the first retry)."""
        return float(self.jitter() * min(self.base * 2 ** (retry - 1), self.max_backoff))


READ_RETRY: Final = RetryPolicy()
"""How the gateway retries a reading call: botocore's standard mode, within the call budget."""

_RETRYABLE = standard.OrRetryChecker(
    [standard.ThrottledRetryableChecker(), standard.TransientRetryableChecker()]
)


class _Status:
    """The one attribute of an HTTP response that botocore's retry checkers read."""

    def __init__(self, status_code: int) -> None:
        self.status_code = status_code


def is_retryable(exc: Exception) -> bool:
    """Whether botocore's standard retry mode would retry this failure (throttle, 5xx, network)."""
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if status == 429:
            return True
        context = standard.RetryContext(
            attempt_number=1, parsed_response=exc.response, http_response=_Status(status)
        )
    else:
        context = standard.RetryContext(attempt_number=1, caught_exception=exc)
    return bool(_RETRYABLE.is_retryable(context))


@dataclass(frozen=True, slots=True)
class Repository:
    id: RepositoryId
    uri: str = ""

    @property
    def name(self) -> str:
        return self.id.name


@dataclass(frozen=True, slots=True)
class Failure:
    digest: Digest
    code: str
    reason: str


@dataclass(frozen=True, slots=True)
class DeleteOutcome:
    deleted: tuple[Digest, ...] = ()
    gone: tuple[Digest, ...] = ()
    # ImageNotFound: someone else deleted it first; counts as done
    failed: tuple[Failure, ...] = ()


@dataclass(frozen=True, slots=True)
class Listing:
    """The repositories found, and the requested names that do not exist."""

    repositories: tuple[Repository, ...]
    missing: tuple[str, ...] = ()


class EcrPort(Protocol):
    """What the pruner needs from ECR."""

    async def repositories(self, names: Sequence[str] | None) -> Listing:
        """The named repositories, or every repository of the registry when `names` is None."""
        ...

    async def images(self, repository: Repository, *, archived: bool = False) -> list[Image]:
        """Every ACTIVE image, or with `archived` every ARCHIVED one; `children` not yet filled
        in."""
        ...

    async def index_children(
        self, repository: Repository, digests: Sequence[Digest]
    ) -> dict[Digest, tuple[Digest, ...]]:
        """The manifests each index references. Raises unless every index could be read."""
        ...

    async def delete(self, repository: Repository, digests: Sequence[Digest]) -> DeleteOutcome:
        """Delete at most 100 images by digest (with all their tags)."""
        ...

    async def archive(self, repository: Repository, digest: Digest) -> DeleteOutcome:
        """Move one image to the archive storage class (`deleted`: moved)."""
        ...

    async def restore(self, repository: Repository, digest: Digest) -> str:
        """Ask for an archived image back; the status ECR answers (ACTIVATING)."""
        ...


async def with_children_of(
    ecr: EcrPort, repository: Repository, images: Sequence[Image]
) -> list[Image]:
    """The images with each index's children filled in (one BatchGetImage per 100 indexes)."""
    indexes = [i.digest for i in images if i.media_type in INDEX_MEDIA_TYPES]
    if not indexes:
        return list(images)
    children = await ecr.index_children(repository, indexes)
    return [replace(i, children=children[i.digest]) if i.digest in children else i for i in images]


@dataclass
class CallStats:
    """ECR calls made (one per API call, not per HTTP attempt), and throttled and failed (5xx)
    attempts, per operation."""

    calls: Counter[str] = field(default_factory=Counter)
    throttles: Counter[str] = field(default_factory=Counter)
    server_errors: Counter[str] = field(default_factory=Counter)
    # attempts answered with a 5xx: they are retried, so a call that then succeeds would
    # otherwise leave no trace of an ECR in trouble


def count_attempt(stats: CallStats, response: Any, operation: Any) -> str | None:
    """A botocore `needs-retry` event's attempt, counted in `stats`: "throttled" (HTTP 429 or a
    throttling code), "server-error" (5xx), or None (an answer, or no answer at all). Every
    gateway that uses `reading_config` registers it, so throttles are counted alike."""
    if not response:
        return None
    http, parsed = response
    code = parsed.get("Error", {}).get("Code", "") if isinstance(parsed, dict) else ""
    status = getattr(http, "status_code", 0)
    name = getattr(operation, "name", "?")
    if status == 429 or code in {"ThrottlingException", "TooManyRequestsException"}:
        stats.throttles[name] += 1
        return "throttled"
    if status >= 500:
        stats.server_errors[name] += 1
        return "server-error"
    return None


class AdaptiveLimit:
    """How many ECR calls may be in flight, adapted to throttling as TCP adapts its window:
    halved when ECR throttles, one more after each window of successful calls, between 1 and
    `maximum` (the --concurrency). Under a shared rate limit, more calls in flight only buy
    more throttled attempts and longer back-offs: a cycle at 32 was slower than one at 8.

    The throttles of one burst halve the limit once: after a decrease, throttles are ignored
    for about one call's duration (the calls already in flight answer in that time)."""

    def __init__(self, maximum: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.maximum = maximum
        self.limiter = anyio.CapacityLimiter(maximum)
        self._clock = clock
        self._successes = 0
        self._quiet_until = 0.0
        self.call_seconds = 0.05
        # a moving average of how long a call takes: the time the calls in flight need to answer

    @property
    def limit(self) -> int:
        return int(self.limiter.total_tokens)

    def throttled(self) -> None:
        now = self._clock()
        if now < self._quiet_until:
            return
        self.limiter.total_tokens = max(1, self.limit // 2)
        self._successes = 0
        self._quiet_until = now + self.call_seconds
        log.info("ECR throttles: at most %d call(s) in flight now", self.limit)

    def succeeded(self, seconds: float) -> None:
        self.call_seconds += (seconds - self.call_seconds) / 8
        if self.limit >= self.maximum:
            return
        self._successes += 1
        if self._successes >= self.limit:
            self._successes = 0
            self.limiter.total_tokens = self.limit + 1


_T = TypeVar("_T")


@dataclass(frozen=True)
class _Route:
    """Where the client's endpoint ruleset sends an operation, and how it is signed."""

    url: str
    headers: Mapping[str, Any]
    properties: Mapping[str, Any]
    auth_type: Any
    signing: Mapping[str, Any] | None


def chunks(items: Sequence[_T], size: int) -> Iterable[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class AioEcr:
    """`EcrPort` over an aioboto3 ECR client that makes one attempt per call (`open_ecr`): the
    gateway retries the reads (`read_retry`), the pruner the deletes."""

    def __init__(
        self,
        client: Any,
        *,
        region: str,
        registry_id: str | None,
        call_budget: float = CALL_BUDGET,
        max_in_flight: int = 8,
        read_retry: RetryPolicy = READ_RETRY,
    ) -> None:
        self._client = client
        self._region = region
        self._registry_id = registry_id
        self._call_budget = call_budget
        self._read_retry = read_retry
        self.stats = CallStats()
        self.limit = AdaptiveLimit(max_in_flight)
        self._routes: dict[str, _Route] = {}
        client.meta.events.register("needs-retry.ecr.*", self._on_retry_check)
        for operation, hook in PARSE_HOOKS.items():
            client.meta.events.register(f"before-parse.ecr.{operation}", hook)
        client._serializer = PlainJsonBodies(client._serializer)

    def _on_retry_check(self, response: Any = None, operation: Any = None, **_: Any) -> None:
        if count_attempt(self.stats, response, operation) == "throttled":
            self.limit.throttled()

    def _registry(self) -> dict[str, str]:
        return {"registryId": self._registry_id} if self._registry_id else {}

    async def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        """A reading call, retried (`read_retry`) within the call budget."""
        return await self._exchange(operation, kwargs, retried=True)

    async def _call_once(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        """A changing call, one attempt: its caller retries, checking the images again first."""
        return await self._exchange(operation, kwargs, retried=False)

    async def _exchange(
        self, operation: str, kwargs: Mapping[str, Any], *, retried: bool
    ) -> dict[str, Any]:
        """One ECR call: attempts, each in a slot of `limit`, until one answers, fails for good,
        or the retries (none unless `retried`) or the call budget run out."""
        self.stats.calls[operation] += 1
        method = self._direct if operation in PARSE_HOOKS else self._via_client
        retry = self._read_retry
        try:
            with anyio.fail_after(self._call_budget):
                attempt = 1
                while True:
                    try:
                        async with self.limit.limiter:
                            started = time.monotonic()
                            result = await method(operation, kwargs)
                            self.limit.succeeded(time.monotonic() - started)
                        break
                    except (ClientError, BotoCoreError) as exc:
                        if not retried or attempt >= retry.attempts or not is_retryable(exc):
                            raise
                    await anyio.sleep(retry.delay(attempt))  # out of the slot
                    attempt += 1
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", "Unknown"))
            raise EcrError(
                operation, code, str(error.get("Message", exc)), retryable=is_retryable(exc)
            ) from exc
        except BotoCoreError as exc:  # includes response parser errors on malformed answers
            raise EcrError(
                operation, type(exc).__name__, str(exc), retryable=is_retryable(exc)
            ) from exc
        except TimeoutError as exc:
            raise EcrError(
                operation,
                "CallBudgetExceeded",
                f"no answer within {self._call_budget:.0f}s, retries included",
                retryable=True,
            ) from exc
        except (ValueError, TypeError, KeyError) as exc:  # botocore's parser on a broken answer
            raise MalformedResponse(operation, f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(result, dict):
            raise MalformedResponse(operation, f"answer is {type(result).__name__}, not an object")
        raw = result.get(RAW)
        return raw if isinstance(raw, dict) else result

    async def _via_client(self, operation: str, kwargs: Mapping[str, Any]) -> Any:
        """One attempt through the client's method: botocore's whole call path."""
        return await getattr(self._client, _snake(operation))(**kwargs)

    async def _direct(self, operation: str, kwargs: Mapping[str, Any]) -> Any:
        """One attempt of a hot operation (`PARSE_HOOKS`) on the client's own parts: its
        serializer, signer (`request-created`, with the credentials it refreshes) and HTTP
        session, with the endpoint the client's ruleset resolved for the operation's first call.
        Left out: the per-call events, whose handlers do nothing for these two operations on
        this client (no idempotency token or validation-mode member in them, the recursion
        header is Lambda's, one attempt a call: nothing to retry or release; the gateway's
        own `needs-retry` handler, `count_attempt`, runs here), the ruleset resolved again on
        every call (its inputs, region, FIPS, dual-stack and endpoint, are the client's), and
        botocore's parser for an answer the hook read. An error answer, or one the hook did not
        read, goes through botocore's parser and error classes as before.
        A cycle makes 1,300 of these calls: the part left out was about a fifth of the CPU of
        each (bench.cycle's per-call figure, by hand: 627-748 µs before, 462-562 µs after)."""
        client = self._client
        model = client._service_model.operation_model(operation)
        context: dict[str, Any] = {
            "client_region": client.meta.region_name,
            "client_config": client.meta.config,
            "has_streaming_input": False,
            "auth_type": model.resolved_auth_type,
            "unsigned_payload": model.unsigned_payload,
            "auth_options": client._service_model.metadata.get("auth"),
        }
        route = self._routes.get(operation) or await self._route(model, kwargs, context)
        context["auth_type"] = route.auth_type
        if route.signing is not None:  # a copy: the signer may change the one it is given
            context["signing"] = dict(route.signing)
        if route.properties:
            context["endpoint_properties"] = route.properties
        request_dict = await client._convert_to_request_dict(
            api_params=kwargs,
            operation_model=model,
            endpoint_url=route.url,
            context=context,
            headers=route.headers,
        )
        endpoint = client._endpoint
        endpoint._update_retries_context(context, 1)
        request = await endpoint.create_request(request_dict, model)
        http = await endpoint.http_session.send(request)
        response = await convert_to_response_dict(http, model)
        answer: dict[str, Any] = {}
        PARSE_HOOKS[operation](response_dict=response, customized_response_dict=answer)
        if RAW in answer:  # a successful answer the hook read
            return answer
        parser = endpoint._response_parser_factory.create_parser(
            model.service_model.resolved_protocol
        )
        parsed = await parser.parse(response, model.output_shape)
        parsed.update(answer)
        if http.status_code >= 300:
            await endpoint._add_modeled_error_fields(response, parsed, model, parser)
        self._on_retry_check(response=(http, parsed), operation=model)
        if http.status_code >= 300:
            code = parsed.get("Error", {}).get("Code")
            raise client.exceptions.from_code(code)(parsed, operation)
        return parsed

    async def _route(
        self, model: Any, kwargs: Mapping[str, Any], context: dict[str, Any]
    ) -> _Route:
        """The endpoint and signing the client's ruleset gives the operation (it writes them
        into `context`), kept for its later calls."""
        client = self._client
        url, headers, properties = await client._resolve_endpoint_ruleset(model, kwargs, context)
        signing = context.get("signing")
        route = _Route(
            url, headers, properties, context["auth_type"], None if signing is None else {**signing}
        )
        self._routes[model.name] = route
        return route

    # -- repositories --------------------------------------------------------------------------

    async def repositories(self, names: Sequence[str] | None) -> Listing:
        if names is None:
            found: list[Repository] = []
            token: str | None = None
            while True:
                page = await self._call(
                    "DescribeRepositories",
                    maxResults=DESCRIBE_PAGE,
                    **self._registry(),
                    **({"nextToken": token} if token else {}),
                )
                found.extend(
                    self._repository(r) for r in _list(page, "repositories", "DescribeRepositories")
                )
                token = page.get("nextToken")
                if not token:
                    return Listing(tuple(found))
        found, missing = [], []
        for chunk in chunks(list(dict.fromkeys(names)), ID_BATCH):
            try:
                page = await self._call(
                    "DescribeRepositories", repositoryNames=list(chunk), **self._registry()
                )
            except EcrError as exc:
                if exc.code != "RepositoryNotFoundException":
                    raise
                if len(chunk) == 1:
                    missing.append(chunk[0])
                    continue
                # ECR fails the whole call for one unknown name: find which, one by one
                for name in chunk:
                    single = await self.repositories([name])
                    found.extend(single.repositories)
                    missing.extend(single.missing)
                continue
            found.extend(
                self._repository(r) for r in _list(page, "repositories", "DescribeRepositories")
            )
        return Listing(tuple(found), tuple(missing))

    def _repository(self, raw: object) -> Repository:
        if not isinstance(raw, Mapping):
            raise MalformedResponse("DescribeRepositories", "repository entry is not an object")
        name, registry = raw.get("repositoryName"), raw.get("registryId")
        if not isinstance(name, str) or not isinstance(registry, str):
            raise MalformedResponse(
                "DescribeRepositories", f"repository entry without name or registry: {raw!r}"
            )
        region = _region_of(raw.get("repositoryArn")) or self._region
        return Repository(
            RepositoryId(EcrRegistry(registry, region), name), str(raw.get("repositoryUri", ""))
        )

    # -- images --------------------------------------------------------------------------------

    async def images(self, repository: Repository, *, archived: bool = False) -> list[Image]:
        images: list[Image] = []
        token: str | None = None
        status = {"filter": {"imageStatus": "ARCHIVED"}} if archived else {}
        while True:
            page = await self._call(
                "DescribeImages",
                repositoryName=repository.name,
                registryId=repository.id.registry.account,
                maxResults=DESCRIBE_PAGE,
                **status,
                **({"nextToken": token} if token else {}),
            )
            typed = page.get(IMAGES)
            if type(typed) is list:
                images.extend(typed)
            else:
                images.extend(_image(raw) for raw in _list(page, "imageDetails", "DescribeImages"))
            token = page.get("nextToken")
            if not token:
                return images

    async def index_children(
        self, repository: Repository, digests: Sequence[Digest]
    ) -> dict[Digest, tuple[Digest, ...]]:
        children: dict[Digest, tuple[Digest, ...]] = {}
        for chunk in chunks(digests, ID_BATCH):
            page = await self._call(
                "BatchGetImage",
                repositoryName=repository.name,
                registryId=repository.id.registry.account,
                imageIds=[{"imageDigest": d} for d in chunk],
                acceptedMediaTypes=list(MANIFEST_MEDIA_TYPES),
            )
            for raw in _list(page, "images", "BatchGetImage"):
                digest, kids = _index_manifest(raw)
                children[digest] = kids
            failures = _list(page, "failures", "BatchGetImage")
            if failures:
                raise EcrError(
                    "BatchGetImage",
                    "IndexUnreadable",
                    f"cannot read {len(failures)} index manifest(s): {failures[0]!r}",
                )
        unread = [d for d in digests if d not in children]
        if unread:
            raise MalformedResponse("BatchGetImage", f"no manifest returned for {unread[0]}")
        return children

    async def archive(self, repository: Repository, digest: Digest) -> DeleteOutcome:
        """Move one image to the archive storage class (UpdateImageStorageClass takes one),
        one attempt, as deletes: the pruner retries, and checks the image again first. An
        image already gone counts as done; one ECR will not move now (already archived or
        restoring, a child of an unarchived index) is a failure; any other error is raised."""
        try:
            await self._call_once(
                "UpdateImageStorageClass",
                repositoryName=repository.name,
                registryId=repository.id.registry.account,
                imageId={"imageDigest": digest},
                targetStorageClass="ARCHIVE",
            )
        except EcrError as exc:
            if exc.code == "ImageNotFoundException":
                return DeleteOutcome(gone=(digest,))
            if exc.code in STORAGE_CLASS_REFUSALS:
                return DeleteOutcome(failed=(Failure(digest, exc.code, exc.message),))
            raise
        return DeleteOutcome(deleted=(digest,))

    async def restore(self, repository: Repository, digest: Digest) -> str:
        """Ask for an archived image back in the standard storage class (it is ACTIVATING for
        up to about 20 minutes); the status ECR answers. Retried as a read is: a restore is the
        safe direction."""
        page = await self._call(
            "UpdateImageStorageClass",
            repositoryName=repository.name,
            registryId=repository.id.registry.account,
            imageId={"imageDigest": digest},
            targetStorageClass="STANDARD",
        )
        status = page.get("imageStatus")
        return status if isinstance(status, str) else "UNKNOWN"

    async def delete(self, repository: Repository, digests: Sequence[Digest]) -> DeleteOutcome:
        if not digests:
            return DeleteOutcome()
        if len(digests) > ID_BATCH:
            raise ValueError(f"at most {ID_BATCH} images per BatchDeleteImage call")
        page = await self._call_once(
            "BatchDeleteImage",
            repositoryName=repository.name,
            registryId=repository.id.registry.account,
            imageIds=[{"imageDigest": d} for d in digests],
        )
        failed: list[Failure] = []
        gone: list[Digest] = []
        for raw in _list(page, "failures", "BatchDeleteImage"):
            if not isinstance(raw, Mapping):
                raise MalformedResponse("BatchDeleteImage", "failure entry is not an object")
            image_id = raw.get("imageId") or {}
            digest = image_id.get("imageDigest") if isinstance(image_id, Mapping) else None
            if not isinstance(digest, str):
                raise MalformedResponse("BatchDeleteImage", f"failure without digest: {raw!r}")
            code = str(raw.get("failureCode", "Unknown"))
            if code == "ImageNotFound":
                gone.append(Digest(digest))
            else:
                failed.append(Failure(Digest(digest), code, str(raw.get("failureReason", ""))))
        # An untagged image deleted by digest may be missing from `imageIds` (moto does this),
        # so what was asked for and did not fail is what was deleted.
        not_deleted = {f.digest for f in failed} | set(gone)
        deleted = tuple(d for d in digests if d not in not_deleted)
        return DeleteOutcome(deleted, tuple(gone), tuple(failed))


# -- parsing ---------------------------------------------------------------------------------


RAW = "__raw_answer"
"""Where `_answer_raw` puts an answer it parsed itself, in botocore's parsed response."""


def _successful_body(response_dict: Any, customized_response_dict: Any) -> bytes | None:
    """The body of a successful answer a `before-parse` hook may read; None for any other."""
    if not isinstance(response_dict, dict) or not isinstance(customized_response_dict, dict):
        return None
    body = response_dict.get("body")
    status = response_dict.get("status_code")
    if not isinstance(status, int) or status >= 300 or not isinstance(body, bytes | bytearray):
        return None
    return bytes(body)


def _answer_raw(response_dict: Any = None, customized_response_dict: Any = None, **_: Any) -> None:
    """`before-parse` hook: parse a successful answer with orjson and give botocore an empty
    body to parse instead. The gateway checks the shape itself (MalformedResponse); an error
    answer or a body that is not a JSON object is left to botocore, which reports it."""
    body = _successful_body(response_dict, customized_response_dict)
    if body is None:
        return
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return
    if isinstance(answer, dict):
        customized_response_dict[RAW] = answer
        response_dict["body"] = b"{}"


IMAGES = "__images"
"""Where `_answer_images` puts the images it read from a DescribeImages answer, in the answer
it gives the gateway instead of the raw one (with the answer's nextToken)."""


class _ImageDetail(msgspec.Struct, gc=False):
    """An `imageDetails` entry, as far as `_image` reads it, typed as a well-formed one is: a
    field absent takes the value `_image` gives it; one of another type (`null` included) sends
    the answer to the general path."""

    imageDigest: Digest
    imagePushedAt: float
    imageTags: tuple[str, ...] | None = None
    imageSizeInBytes: int = 0
    imageManifestMediaType: str | None = None
    lastRecordedPullTime: float | None = None
    lastArchivedAt: float | None = None
    subjectManifestDigest: Digest | None = None


class _DescribeImages(msgspec.Struct, gc=False):
    imageDetails: list[_ImageDetail] = msgspec.field(default_factory=list)
    nextToken: Any = None


_DESCRIBE_IMAGES: Final = msgspec.json.Decoder(_DescribeImages)


def typed_images(body: bytes) -> tuple[list[Image], object] | None:
    """A DescribeImages answer's images and nextToken, decoded straight into the fields
    `_image` reads (msgspec; the digests checked all at once, `all_digests`; the other fields
    are checked as JSON and skipped). None: not of the shape a well-formed answer has (a value
    of another type, an invalid digest or timestamp): the general path (orjson and `_image`)
    reads it, and reports what is wrong. On every answer this reads, it gives the general
    path's images (`tests/test_ecr_wire.py`)."""
    try:
        answer = _DESCRIBE_IMAGES.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    details = answer.imageDetails
    subjects = [s for d in details if (s := d.subjectManifestDigest) is not None]
    if not all_digests([d.imageDigest for d in details]) or not all_digests(subjects):
        return None
    stamp = datetime.fromtimestamp
    try:
        # out of range, a timestamp raises here and the general path says so
        images = [
            Image(
                detail.imageDigest,
                stamp(detail.imagePushedAt, UTC),
                () if (tags := detail.imageTags) is None else tags,
                detail.imageSizeInBytes,
                None if (pulled := detail.lastRecordedPullTime) is None else stamp(pulled, UTC),
                (),
                detail.imageManifestMediaType,
                detail.subjectManifestDigest,
                None if (archived := detail.lastArchivedAt) is None else stamp(archived, UTC),
            )
            for detail in details
        ]
    except _OUT_OF_RANGE:
        return None
    return images, answer.nextToken


_OUT_OF_RANGE: Final = (OverflowError, OSError, ValueError)
"""What datetime.fromtimestamp raises for a timestamp it cannot represent."""


def _answer_images(
    response_dict: Any = None, customized_response_dict: Any = None, **_: Any
) -> None:
    """`before-parse` hook of DescribeImages: a successful answer of the well-formed shape is
    read by `typed_images`, and botocore gets an empty body to parse; any other answer goes to
    `_answer_raw`."""
    body = _successful_body(response_dict, customized_response_dict)
    typed = None if body is None else typed_images(body)
    if typed is None:
        _answer_raw(response_dict, customized_response_dict)
        return
    images, token = typed
    customized_response_dict[RAW] = {IMAGES: images, "nextToken": token}
    response_dict["body"] = b"{}"


PARSE_HOOKS: Final = {"DescribeImages": _answer_images, "BatchDeleteImage": _answer_raw}
"""The large answers (up to 1000 image details, 100 image ids), read by a `before-parse` hook
of their own: botocore's shape walker and its timestamp parsing through dateutil cost several
times the rest of a cycle's CPU on them."""


class PlainJsonBodies:
    """botocore's JSON serializer, with the bodies of the large requests written by orjson.

    A BatchDeleteImage names 100 image ids, a cycle sends one per 100 deletions, and botocore's
    shape walker copies every value of every id before json.dumps writes them: 7% of a large
    cycle's CPU. The parameters of `PLAIN_OPERATIONS` are plain JSON (strings, integers, and
    lists and objects of them: no timestamp, blob or document member to convert), so their
    body is the parameters as they are; method, URL, headers and host prefix are still
    botocore's. `tests/test_ecr_wire.py` checks the requests equal botocore's own."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def serialize_to_request(self, parameters: Any, operation_model: Any) -> Any:
        if operation_model.name not in PLAIN_OPERATIONS:
            return self._inner.serialize_to_request(parameters, operation_model)
        serialized = self._inner.serialize_to_request({}, operation_model)
        serialized["body"] = orjson.dumps(parameters)
        return serialized


PLAIN_OPERATIONS: Final = frozenset(("BatchDeleteImage", "DescribeImages"))


def _snake(operation: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in operation).lstrip("_")


def _list(page: Mapping[str, Any], key: str, operation: str) -> list[Any]:
    value = page.get(key, [])
    if not isinstance(value, list):
        raise MalformedResponse(operation, f"`{key}` is {type(value).__name__}, not a list")
    return value


def _region_of(arn: object) -> str | None:
    if isinstance(arn, str):
        parts = arn.split(":")
        if len(parts) > 3 and parts[3]:
            return parts[3]
    return None


def _image(raw: object) -> Image:
    """One `imageDetails` entry (plain JSON, or botocore's parse of it), checked as it is read:
    a cycle reads one per image in the registry, so every test here is the cheapest there is."""
    if type(raw) is not dict and not isinstance(raw, Mapping):  # JSON objects are dicts
        raise MalformedResponse("DescribeImages", "imageDetails entry is not an object")
    get = raw.get
    digest = get("imageDigest")
    if type(digest) is not str or not is_digest(digest):
        raise MalformedResponse("DescribeImages", f"image without a valid digest: {digest!r}")
    pushed = _timestamp(get("imagePushedAt"))
    if pushed is None:
        raise MalformedResponse(
            "DescribeImages", f"{digest}: imagePushedAt is {get('imagePushedAt')!r}"
        )
    tags = get("imageTags")
    if tags is None:
        tags = ()
    elif type(tags) is list:
        for tag in tags:
            if type(tag) is not str:
                raise MalformedResponse("DescribeImages", f"{digest}: imageTags is {tags!r}")
        tags = tuple(tags)
    else:
        raise MalformedResponse("DescribeImages", f"{digest}: imageTags is {tags!r}")
    size = get("imageSizeInBytes")
    media = get("imageManifestMediaType")
    pulled = get("lastRecordedPullTime")
    archived = get("lastArchivedAt")
    subject = get("subjectManifestDigest")
    if subject is not None and (type(subject) is not str or not is_digest(subject)):
        # whose artifact it is decides whether it may go: never guess
        raise MalformedResponse("DescribeImages", f"{digest}: subjectManifestDigest {subject!r}")
    return Image(
        Digest(digest),
        pushed,
        tags,
        size if type(size) is int else 0,
        None if pulled is None else _timestamp(pulled),
        (),
        media if type(media) is str else None,
        None if subject is None else Digest(subject),
        None if archived is None else _timestamp(archived),
    )


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _timestamp(value: object) -> datetime | None:
    """A wire timestamp (epoch seconds, as ECR's JSON protocol sends them) or one botocore
    already parsed, as an aware UTC datetime; None when absent or of another type."""
    if type(value) is float or type(value) is int:
        try:
            return datetime.fromtimestamp(value, UTC)
        except _OUT_OF_RANGE:
            return None
    if isinstance(value, datetime):
        return _utc(value)
    return None


def _index_manifest(raw: object) -> tuple[Digest, tuple[Digest, ...]]:
    if not isinstance(raw, Mapping):
        raise MalformedResponse("BatchGetImage", "image entry is not an object")
    image_id = raw.get("imageId") or {}
    digest = image_id.get("imageDigest") if isinstance(image_id, Mapping) else None
    manifest = raw.get("imageManifest")
    if not isinstance(digest, str) or not isinstance(manifest, str):
        raise MalformedResponse("BatchGetImage", f"image without digest or manifest: {raw!r}")
    try:
        document = orjson.loads(manifest)
    except orjson.JSONDecodeError as exc:
        raise MalformedResponse("BatchGetImage", f"{digest}: manifest is not JSON") from exc
    entries = document.get("manifests") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise MalformedResponse("BatchGetImage", f"{digest}: not an index (no `manifests`)")
    kids = []
    for entry in entries:
        kid = entry.get("digest") if isinstance(entry, dict) else None
        if not isinstance(kid, str) or not is_digest(kid):
            raise MalformedResponse("BatchGetImage", f"{digest}: child without digest")
        kids.append(Digest(kid))
    return Digest(digest), tuple(kids)


# -- construction ----------------------------------------------------------------------------


@asynccontextmanager
async def open_ecr(
    *,
    region: str,
    registry_id: str | None,
    concurrency: int,
    endpoint_url: str | None = None,
    call_budget: float = CALL_BUDGET,
) -> AsyncIterator[AioEcr]:
    """An ECR gateway on the standard AWS credential chain (env, profile, web identity/IRSA,
    EKS Pod Identity, instance role). `AWS_ENDPOINT_URL_ECR` is honoured by botocore itself.

    Raises `ConfigError` (naming the setting) for a profile or endpoint that cannot be used."""
    # one attempt per call, no client-side rate limit of botocore's: the gateway's AdaptiveLimit
    # adapts every ECR attempt in flight, reads and deletes, to throttling. A bucket learned from
    # the reads alone (a tenth of a cycle's calls) paced them far below ECR's rate after a
    # throttle, and a wave of repositories waiting in it to be listed left the limit unused: a
    # throttled cycle at --concurrency 32 took 1.05-1.15x one at 8 (bench/cycle.py, throttled)
    config = AioConfig(
        retries={"mode": "standard", "total_max_attempts": 1}, **_common(concurrency)
    )
    try:
        session = new_session()
    except ProfileNotFound as exc:
        raise ConfigError("AWS_PROFILE", f"{exc}: check AWS_PROFILE and ~/.aws/config") from None
    async with AsyncExitStack() as stack:
        try:  # aiobotocore makes the client on entry: that is where a bad endpoint is refused
            ecr = await stack.enter_async_context(
                session.client("ecr", region_name=region, endpoint_url=endpoint_url, config=config)
            )
        except ValueError as exc:  # botocore: "Invalid endpoint: ..."
            raise ConfigError("AWS_ENDPOINT_URL_ECR", str(exc)) from None
        yield AioEcr(
            ecr,
            region=region,
            registry_id=registry_id,
            call_budget=call_budget,
            max_in_flight=concurrency,
        )


def _common(concurrency: int) -> dict[str, Any]:
    return {
        "max_pool_connections": max(10, concurrency * 2),
        "connect_timeout": 10,
        "read_timeout": 60,
        # botocore re-validates every request against the model: for 100 image ids a call that
        # is most of the request's CPU, and ECR validates the same rules on its side
        "parameter_validation": False,
        # who calls, in CloudTrail's userAgent; set, it is also built once instead of being
        # assembled from a dozen sanitized parts twice per request
        "user_agent": USER_AGENT,
    }


def reading_config(concurrency: int) -> AioConfig:
    """The botocore configuration of the reading clients of `awsuse` (ECS, Lambda, STS):
    SDK_MAX_RETRIES retries for throttles, 5xx and connection failures, in botocore's adaptive
    mode (after a throttle, a token bucket of the client's own paces its requests at a rate
    learned from its own traffic); a pool for `concurrency` calls in flight; the controller's
    user agent. ECR's client makes one attempt per call instead (`open_ecr`)."""
    return AioConfig(
        retries={"mode": "adaptive", "max_attempts": SDK_MAX_RETRIES}, **_common(concurrency)
    )


def new_session() -> aioboto3.Session:
    """An aioboto3 session whose data loader reads `ECR_MODEL` first (raises ProfileNotFound
    for an AWS_PROFILE the config files do not have, as aioboto3.Session() does)."""
    core = AioSession()
    core.get_component("data_loader").search_paths.insert(0, str(ECR_MODEL))
    return aioboto3.Session(botocore_session=core)


def check_profile() -> None:
    """Raise ConfigError when AWS_PROFILE names a profile the AWS config files do not have
    (botocore would raise ProfileNotFound from deep inside the first client)."""
    try:
        botocore.session.Session().get_scoped_config()
    except ProfileNotFound as exc:
        raise ConfigError("AWS_PROFILE", f"{exc}: check AWS_PROFILE and ~/.aws/config") from None


def known_region(region: str) -> bool:
    """Whether the installed botocore knows `region` for ECR in any partition."""
    session = botocore.session.Session()
    return any(
        region in session.get_available_regions("ecr", partition_name=partition)
        for partition in session.get_available_partitions()
    )
