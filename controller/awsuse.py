"""What ECS and Lambda use: polls an account's ECS clusters and Lambda functions for the images
they run or will run again, as the in-use index's plain `References`.

Kubernetes is not the only thing that pulls from ECR. An ECS service starts tasks from the task
definition of its deployments, scales out, replaces failed tasks and rolls back to an older
revision; a Lambda function with PackageType Image cold-starts from its image on any invocation,
and every published version (an alias may point at any of them) keeps the digest it resolved
when it was published. Deleting one of those images breaks the next start, so a poll reads:

* ECS, per region, for the clusters whose name matches a glob: every RUNNING-desired task
  (ListTasks' default desiredStatus, which includes tasks whose lastStatus is still PENDING or
  PROVISIONING: ECS never sets a desired status of PENDING), by the digest each container
  reports (`imageDigest`) and by its image string; the task definition of every service
  deployment that is PRIMARY or ACTIVE, and of every task set; the task definition of every
  task; and the newest `revisions` ACTIVE revisions of every task-definition family (rollbacks).
* Lambda, per region: each PackageType Image function's `$LATEST` (GetFunction's
  `Code.ImageUri`, a tag, and `Code.ResolvedImageUri`, a digest) and every published version's
  `ResolvedImageUri` (GetFunction with the version as Qualifier: ListVersionsByFunction does
  not carry the image).

A poll may first assume an IAM role (STS AssumeRole, session name `SESSION_NAME`) to read
another account; the credentials live in the poll's clients only and are never logged.

Image strings become references through `inventory.extract_parts`, the parsing pods get: a
tag protects only in the ECR registry (account and region) its host names, a digest in any
repository. A string that does not parse is counted and logged, never fatal. Which revisions
to keep, which task definitions a service or task needs and which strings become references
are decided by `awsrefs`, a pure module; this one makes the calls.

Every listing is paged to its end. Reading calls go through the reading botocore
configuration (`ecr.reading_config`: adaptive retries, throttles counted in a `CallStats` by
`ecr.count_attempt`), each within a time budget, retries included.

Task definition revisions and published Lambda versions are immutable: a `UsageCache` passed
from poll to poll keeps what each one names, so a steady account costs the listings only.

Task definitions are regional: the newest revisions of a family are kept whichever cluster
(matching the glob or not) runs them; the glob selects the services and tasks read.

From a poll loop, one source per (account, region, ECS or Lambda), its cache kept across polls:

    try:
        usage = await poll_ecs(session, region=r, account=a, stats=stats, cache=cache)
    except AwsSourceError as exc:   # AwsDenied when exc.denied; exc.retryable for a throttle
        ...                         # mark the source untrusted, reason str(exc); keep its view
    else:
        index.replace(source, {"ecs": usage.references})   # synced; count usage.counts,
                                                           # len(usage.malformed)

Exceptions (a caller marks the source untrusted with `str(exc)` as the reason):
    AwsSourceError      a call failed for good (`operation`, `code`, `action`, `retryable`)
    └── AwsDenied       the call was refused (AccessDenied*, HTTP 403): `action` is the IAM
                        action the credentials lack, e.g. ecs:DescribeTasks
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import anyio
from aiobotocore.config import AioConfig
from botocore import xform_name
from botocore.exceptions import BotoCoreError, ClientError

from controller.awsrefs import (
    objects_in,
    revisions_to_keep,
    service_task_definitions,
    task_images,
    usage_references,
)
from controller.ecr import (
    CALL_BUDGET,
    CallStats,
    chunks,
    count_attempt,
    is_retryable,
    reading_config,
)
from controller.inventory import References

log = logging.getLogger(__name__)

SESSION_NAME: Final = "kube-ecr-cleanup-controller"
"""The RoleSessionName of every AssumeRole: what the other account's CloudTrail shows."""

ROLE_SECONDS: Final = 3600
"""How long assumed credentials last; one poll uses them, the next assumes the role again."""

KEEP_REVISIONS: Final = 5
"""ACTIVE task-definition revisions kept per family by default: what a rollback may start."""

ECS_PAGE: Final = 100  # ListClusters, ListServices, ListTasks, ListTaskDefinitions maxResults
DESCRIBE_SERVICES: Final = 10  # services per DescribeServices call
DESCRIBE_TASKS: Final = 100  # tasks per DescribeTasks call
LAMBDA_PAGE: Final = 50  # ListFunctions, ListVersionsByFunction MaxItems
LATEST: Final = "$LATEST"
GONE: Final = "ResourceNotFoundException"
# Lambda's answer for a function or version deleted between the listing and the call: it runs nothing

ECS_ACTIONS: Final = (
    "ecs:ListClusters",
    "ecs:ListServices",
    "ecs:DescribeServices",
    "ecs:ListTasks",
    "ecs:DescribeTasks",
    "ecs:ListTaskDefinitions",
    "ecs:DescribeTaskDefinition",
)
"""The IAM actions an ECS poll makes (sts:AssumeRole too, by the controller's own identity,
when it assumes a role)."""

LAMBDA_ACTIONS: Final = (
    "lambda:ListFunctions",
    "lambda:GetFunction",
    "lambda:ListVersionsByFunction",
)
"""The IAM actions a Lambda poll makes."""


# ---------------------------------------------------------------------------------------------
# Errors


class AwsSourceError(Exception):
    """An ECS, Lambda or STS call failed for good (after the SDK's retries)."""

    def __init__(
        self, operation: str, code: str, message: str, *, action: str, retryable: bool = False
    ) -> None:
        super().__init__(operation, code, message)
        self.operation = operation
        self.code = code
        self.message = message
        self.action = action
        # the IAM action of the call, e.g. "ecs:DescribeTasks"
        self.retryable = retryable
        # a throttle, a 5xx or a connection failure: the next poll may succeed

    def __str__(self) -> str:
        return f"{self.operation}: {self.code}: {self.message}"

    @property
    def denied(self) -> bool:
        """Refused for lack of permission: the source stays untrusted until the policy changes."""
        return False


class AwsDenied(AwsSourceError):
    """A call was refused: the credentials (or the assumed role) lack `action`."""

    def __init__(self, operation: str, code: str, message: str, *, action: str) -> None:
        super().__init__(operation, code, message, action=action)

    def __str__(self) -> str:
        return f"{self.action} denied ({self.code}): {self.message}"

    @property
    def denied(self) -> bool:
        return True


def is_denied(code: str, status: int) -> bool:
    """Whether an error answer means missing permission: AccessDenied, AccessDeniedException
    (ECS, Lambda, STS), or any HTTP 403 (moto answers a denied JSON call with code "403")."""
    return code.startswith("AccessDenied") or status == 403


# ---------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True, slots=True)
class Account:
    """Whose ECS and Lambda a poll reads: the controller's own identity, or a role it assumes."""

    role_arn: str | None = None
    # assumed through STS AssumeRole before the poll; None: the default credential chain
    external_id: str | None = None
    # the ExternalId the role's trust policy asks for, if any


@dataclass(frozen=True, slots=True)
class UsageCounts:
    """What one poll read, for metrics."""

    clusters: int = 0
    # ECS clusters matching the glob
    services: int = 0
    tasks: int = 0
    # RUNNING-desired tasks
    task_definitions: int = 0
    # distinct revisions whose images count (deployments, tasks, the newest per family)
    functions: int = 0
    # Lambda functions with PackageType Image
    versions: int = 0
    # their published versions ($LATEST not counted)


@dataclass(frozen=True, slots=True)
class Usage:
    """What one poll found in use: the references, the counts, and what could not be parsed."""

    references: References
    counts: UsageCounts
    malformed: tuple[str, ...] = ()
    # image strings, digests and task-definition ARNs that did not parse, skipped


@dataclass
class UsageCache:
    """What each immutable thing names, from poll to poll: a task-definition revision's
    container images, a published Lambda version's resolved image. One per source: a poll
    keeps only what it used, so two sources sharing one would evict each other's entries."""

    images: dict[str, tuple[object, ...]] = field(default_factory=dict)

    def retain(self, keys: Iterable[str]) -> None:
        keep = set(keys)
        for key in [k for k in self.images if k not in keep]:
            del self.images[key]


# ---------------------------------------------------------------------------------------------
# Calls


_T = TypeVar("_T")
_R = TypeVar("_R")


class _Caller:
    """One poll's calls: each counted, within the budget, its failure mapped to our errors."""

    def __init__(self, stats: CallStats, call_budget: float, limit: anyio.CapacityLimiter) -> None:
        self.stats = stats
        self.call_budget = call_budget
        self.limit = limit

    def watch(self, client: Any, service: str) -> None:
        client.meta.events.register(f"needs-retry.{service}.*", self._on_retry_check)

    def _on_retry_check(self, response: Any = None, operation: Any = None, **_: Any) -> None:
        count_attempt(self.stats, response, operation)

    async def __call__(
        self, client: Any, service: str, operation: str, **kwargs: Any
    ) -> Mapping[str, Any]:
        action = f"{service}:{operation}"
        self.stats.calls[operation] += 1
        try:
            with anyio.fail_after(self.call_budget):
                async with self.limit:
                    result = await getattr(client, xform_name(operation))(**kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", "Unknown"))
            message = str(error.get("Message", exc))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if is_denied(code, status):
                raise AwsDenied(operation, code, message, action=action) from exc
            raise AwsSourceError(
                operation, code, message, action=action, retryable=is_retryable(exc)
            ) from exc
        except BotoCoreError as exc:
            raise AwsSourceError(
                operation, type(exc).__name__, str(exc), action=action, retryable=is_retryable(exc)
            ) from exc
        except TimeoutError as exc:
            raise AwsSourceError(
                operation,
                "CallBudgetExceeded",
                f"no answer within {self.call_budget:.0f}s, retries included",
                action=action,
                retryable=True,
            ) from exc
        if not isinstance(result, Mapping):
            raise _malformed(operation, action, f"answer is {type(result).__name__}")
        return result

    async def pages(
        self,
        client: Any,
        service: str,
        operation: str,
        key: str,
        *,
        token: tuple[str, str],
        **kwargs: Any,
    ) -> list[Any]:
        """Every item of `key` over all pages; `token` names the request's and the answer's
        continuation fields (ECS: nextToken, nextToken; Lambda: Marker, NextMarker)."""
        request, answer = token
        items: list[Any] = []
        after: str | None = None
        while True:
            page = await self(
                client, service, operation, **kwargs, **({request: after} if after else {})
            )
            items.extend(_list(page, key, operation, f"{service}:{operation}"))
            following = page.get(answer)
            if not following:
                return items
            if following == after:
                raise _malformed(operation, f"{service}:{operation}", "the same page token twice")
            after = str(following)

    async def each(self, items: Sequence[_T], fetch: Callable[[_T], Awaitable[_R]]) -> list[_R]:
        """`fetch` of every item, at most the limiter's tokens in flight; the first failure is
        raised (as itself, not in an exception group), the calls still in flight cancelled."""
        results: list[_R | None] = [None] * len(items)
        failures: list[AwsSourceError] = []

        async def one(index: int, item: _T) -> None:
            try:
                results[index] = await fetch(item)
            except AwsSourceError as exc:
                failures.append(exc)
                tg.cancel_scope.cancel()  # the poll fails: the other calls are not needed

        async with anyio.create_task_group() as tg:
            for index, item in enumerate(items):
                tg.start_soon(one, index, item)
        if failures:
            raise failures[0]
        return results  # type: ignore[return-value]  # every slot is filled when none failed


def _malformed(operation: str, action: str, message: str) -> AwsSourceError:
    return AwsSourceError(operation, "MalformedResponse", message, action=action)


def _list(page: Mapping[str, Any], key: str, operation: str, action: str) -> list[Any]:
    value = page.get(key, [])
    if not isinstance(value, list):
        raise _malformed(operation, action, f"`{key}` is {type(value).__name__}, not a list")
    return value


def _objects(
    page: Mapping[str, Any], key: str, operation: str, action: str
) -> list[Mapping[str, Any]]:
    return [item for item in _list(page, key, operation, action) if isinstance(item, Mapping)]


def _described(page: Mapping[str, Any], key: str, operation: str) -> list[Mapping[str, Any]]:
    """DescribeServices' or DescribeTasks' `key` objects. A `failures` entry whose reason is
    MISSING is a service or task gone since the listing (nothing of it runs); any other reason
    leaves the poll without a view of it, and fails it."""
    action = f"ecs:{operation}"
    for failure in objects_in(_list(page, "failures", operation, action)):
        if failure.get("reason") != "MISSING":
            raise AwsSourceError(
                operation,
                "Failure",
                f"{failure.get('arn')}: {failure.get('reason')}: {failure.get('detail', '')}",
                action=action,
            )
    return _objects(page, key, operation, action)


async def _credentials(
    session: Any, account: Account, *, region: str, config: AioConfig, call: _Caller
) -> dict[str, str]:
    """Client keyword arguments for `account`: none for the default chain, else the temporary
    credentials of an AssumeRole (never logged)."""
    if account.role_arn is None:
        return {}
    async with session.client("sts", region_name=region, config=config) as sts:
        call.watch(sts, "sts")
        answer = await call(
            sts,
            "sts",
            "AssumeRole",
            RoleArn=account.role_arn,
            RoleSessionName=SESSION_NAME,
            DurationSeconds=ROLE_SECONDS,
            **({"ExternalId": account.external_id} if account.external_id else {}),
        )
    granted = answer.get("Credentials")
    keys = ("AccessKeyId", "SecretAccessKey", "SessionToken")
    if not isinstance(granted, Mapping) or not all(isinstance(granted.get(k), str) for k in keys):
        raise _malformed("AssumeRole", "sts:AssumeRole", "no credentials in the answer")
    log.info("assumed role %s for region %s", account.role_arn, region)
    return {
        "aws_access_key_id": granted["AccessKeyId"],
        "aws_secret_access_key": granted["SecretAccessKey"],
        "aws_session_token": granted["SessionToken"],
    }


def _finish(
    what: str,
    images: list[object],
    digests: list[object],
    counts: UsageCounts,
    malformed: Sequence[str] = (),
) -> Usage:
    found = usage_references(images, digests)
    skipped = (*malformed, *found.malformed)
    if skipped:
        log.warning(
            "%s: skipped %d malformed image references: %.300r", what, len(skipped), skipped
        )
    return Usage(found.references, counts, skipped)


# ---------------------------------------------------------------------------------------------
# ECS


async def poll_ecs(
    session: Any,
    *,
    region: str,
    clusters: str = "*",
    revisions: int = KEEP_REVISIONS,
    account: Account = Account(),
    stats: CallStats | None = None,
    cache: UsageCache | None = None,
    concurrency: int = 8,
    call_budget: float = CALL_BUDGET,
) -> Usage:
    """What ECS in `region` uses, for the clusters whose name matches the glob `clusters`, with
    the newest `revisions` ACTIVE revisions of every family. Raises AwsSourceError."""
    cache = cache if cache is not None else UsageCache()
    async with _client(session, "ecs", region, account, stats, concurrency, call_budget) as (
        ecs,
        call,
    ):
        return await _EcsPoll(ecs, call, cache, region).run(clusters, revisions)


@asynccontextmanager
async def _client(
    session: Any,
    service: str,
    region: str,
    account: Account,
    stats: CallStats | None,
    concurrency: int,
    call_budget: float,
) -> AsyncIterator[tuple[Any, _Caller]]:
    """A poll's client of `service`, with the account's credentials (a role assumed first),
    ECR's reading configuration, and every call counted in `stats` and bounded in time."""
    stats = stats if stats is not None else CallStats()
    call = _Caller(stats, call_budget, anyio.CapacityLimiter(concurrency))
    config = reading_config(concurrency)
    credentials = await _credentials(session, account, region=region, config=config, call=call)
    async with session.client(service, region_name=region, config=config, **credentials) as aws:
        call.watch(aws, service)
        yield aws, call


class _EcsPoll:
    def __init__(self, ecs: Any, call: _Caller, cache: UsageCache, region: str) -> None:
        self.ecs = ecs
        self.call = call
        self.cache = cache
        self.region = region
        self.images: list[object] = []
        self.digests: list[object] = []
        self.definitions: set[str] = set()

    async def pages(self, operation: str, key: str, **kwargs: Any) -> list[Any]:
        return await self.call.pages(
            self.ecs, "ecs", operation, key, token=("nextToken", "nextToken"), **kwargs
        )

    async def run(self, clusters: str, revisions: int) -> Usage:
        arns = [
            a
            for a in await self.pages("ListClusters", "clusterArns", maxResults=ECS_PAGE)
            if isinstance(a, str) and fnmatch.fnmatchcase(a.rpartition("/")[2], clusters)
        ]
        services = tasks = 0
        for cluster in arns:
            services += await self.services(cluster)
            tasks += await self.tasks(cluster)
        active = await self.pages(
            "ListTaskDefinitions",
            "taskDefinitionArns",
            status="ACTIVE",
            sort="DESC",
            maxResults=ECS_PAGE,
        )
        kept, unranked = revisions_to_keep(
            (a for a in active if isinstance(a, str)), newest=revisions
        )
        self.definitions |= kept
        await self.describe_definitions()
        counts = UsageCounts(
            clusters=len(arns),
            services=services,
            tasks=tasks,
            task_definitions=len(self.definitions),
        )
        return _finish(f"ECS {self.region}", self.images, self.digests, counts, unranked)

    async def services(self, cluster: str) -> int:
        arns = await self.pages("ListServices", "serviceArns", cluster=cluster, maxResults=ECS_PAGE)
        count = 0
        for chunk in chunks(arns, DESCRIBE_SERVICES):
            page = await self.call(
                self.ecs, "ecs", "DescribeServices", cluster=cluster, services=list(chunk)
            )
            for service in _described(page, "services", "DescribeServices"):
                count += 1
                self.definitions |= service_task_definitions(service)
        return count

    async def tasks(self, cluster: str) -> int:
        arns = await self.pages(
            "ListTasks", "taskArns", cluster=cluster, desiredStatus="RUNNING", maxResults=ECS_PAGE
        )
        count = 0
        for chunk in chunks(arns, DESCRIBE_TASKS):
            page = await self.call(
                self.ecs, "ecs", "DescribeTasks", cluster=cluster, tasks=list(chunk)
            )
            for task in _described(page, "tasks", "DescribeTasks"):
                count += 1
                definition = task.get("taskDefinitionArn")
                if isinstance(definition, str) and definition:
                    self.definitions.add(definition)
                images, digests = task_images(task)
                self.images += images
                self.digests += digests
        return count

    async def describe_definitions(self) -> None:
        missing = sorted(a for a in self.definitions if a not in self.cache.images)

        async def describe(arn: str) -> tuple[str, tuple[object, ...]]:
            page = await self.call(self.ecs, "ecs", "DescribeTaskDefinition", taskDefinition=arn)
            definition = page.get("taskDefinition")
            if not isinstance(definition, Mapping):
                raise _malformed(
                    "DescribeTaskDefinition",
                    "ecs:DescribeTaskDefinition",
                    f"{arn}: no taskDefinition",
                )
            return arn, tuple(
                c.get("image") for c in objects_in(definition.get("containerDefinitions"))
            )

        self.cache.images.update(await self.call.each(missing, describe))
        self.cache.retain(self.definitions)
        for arn in self.definitions:
            self.images.extend(self.cache.images[arn])


# ---------------------------------------------------------------------------------------------
# Lambda


async def poll_lambda(
    session: Any,
    *,
    region: str,
    account: Account = Account(),
    stats: CallStats | None = None,
    cache: UsageCache | None = None,
    concurrency: int = 8,
    call_budget: float = CALL_BUDGET,
) -> Usage:
    """What Lambda in `region` uses: every PackageType Image function's $LATEST image (tag and
    digest) and every published version's digest. Raises AwsSourceError."""
    cache = cache if cache is not None else UsageCache()
    async with _client(session, "lambda", region, account, stats, concurrency, call_budget) as (
        aws,
        call,
    ):
        return await _LambdaPoll(aws, call, cache, region).run()


class _LambdaPoll:
    def __init__(self, aws: Any, call: _Caller, cache: UsageCache, region: str) -> None:
        self.aws = aws
        self.call = call
        self.cache = cache
        self.region = region

    async def pages(self, operation: str, key: str, **kwargs: Any) -> list[Any]:
        return await self.call.pages(
            self.aws, "lambda", operation, key, token=("Marker", "NextMarker"), **kwargs
        )

    async def code(self, name: str, qualifier: str | None = None) -> Mapping[str, Any]:
        """GetFunction's `Code`; empty for a function or version deleted since the listing."""
        try:
            page = await self.call(
                self.aws,
                "lambda",
                "GetFunction",
                FunctionName=name,
                **({"Qualifier": qualifier} if qualifier else {}),
            )
        except AwsSourceError as exc:
            if exc.code == GONE:
                return {}
            raise
        code = page.get("Code")
        return code if isinstance(code, Mapping) else {}

    async def versions(self, name: str) -> list[Any]:
        try:
            return await self.pages(
                "ListVersionsByFunction", "Versions", FunctionName=name, MaxItems=LAMBDA_PAGE
            )
        except AwsSourceError as exc:
            if exc.code == GONE:
                return []
            raise

    async def run(self) -> Usage:
        listed = await self.pages("ListFunctions", "Functions", MaxItems=LAMBDA_PAGE)
        names = [
            f["FunctionName"]
            for f in listed
            if isinstance(f, Mapping)
            and f.get("PackageType") == "Image"
            and isinstance(f.get("FunctionName"), str)
        ]
        images: list[object] = []

        async def function(name: str) -> list[tuple[str, str]]:
            latest = await self.code(name)
            images.extend((latest.get("ImageUri"), latest.get("ResolvedImageUri")))
            versions = await self.versions(name)
            return [
                (str(v.get("FunctionArn") or f"{name}:{v['Version']}"), str(v["Version"]))
                for v in versions
                if isinstance(v, Mapping)
                and isinstance(v.get("Version"), str)
                and v["Version"] != LATEST
            ]

        published = [
            (name, key, version)
            for name, found in zip(names, await self.call.each(names, function), strict=True)
            for key, version in found
        ]
        missing = [p for p in published if p[1] not in self.cache.images]

        async def version(item: tuple[str, str, str]) -> tuple[str, tuple[object, ...]]:
            name, key, number = item
            return key, ((await self.code(name, number)).get("ResolvedImageUri"),)

        self.cache.images.update(await self.call.each(missing, version))
        used = [key for _, key, _ in published]
        self.cache.retain(used)
        for key in used:
            images.extend(self.cache.images[key])
        counts = UsageCounts(functions=len(names), versions=len(published))
        return _finish(f"Lambda {self.region}", images, [], counts)
