"""moto's ECR server on 127.0.0.1 and seeding helpers: an independent implementation of the ECR wire protocol."""

from __future__ import annotations

import hashlib
import json
import logging
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import boto3
from moto.ecr.models import ecr_backends
from moto.server import ThreadedMotoServer

ACCOUNT = "123456789012"  # moto's default account
REGION = "us-east-1"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}


@contextmanager
def moto_server() -> Iterator[str]:
    """Start moto's threaded server on an ephemeral port; yields its endpoint URL."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one access-log line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        # moto's state is process-wide: start every server empty
        urllib.request.urlopen(
            urllib.request.Request(f"{url}/moto-api/reset", method="POST")
        ).close()
        yield url
    finally:
        server.stop()


def image_manifest(seed: str, size: int | None = None) -> str:
    """A Docker v2 manifest whose digest (in moto: from its layers) is unique to `seed`.

    moto reports `config.size` as the image size, so the config carries the image's size
    (by default a stable pseudo-random 40-400 MB).
    """
    hashed = hashlib.sha256(seed.encode()).hexdigest()
    size = size if size is not None else 40_000_000 + int(hashed[:8], 16) % 360_000_000
    layer = "sha256:" + hashed
    config = "sha256:" + hashlib.sha256(("config" + seed).encode()).hexdigest()
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": size,
                "digest": config,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": size,
                    "digest": layer,
                }
            ],
        }
    )


def index_manifest(children: Sequence[str]) -> str:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": c,
                    "size": 500,
                    "platform": {"architecture": arch, "os": "linux"},
                }
                for c, arch in zip(children, ["amd64", "arm64", "s390x", "ppc64le"], strict=False)
            ],
        }
    )


class MotoEcr:
    """Seeds moto through its own API (boto3), and sets what the API cannot (push dates)."""

    def __init__(self, endpoint: str) -> None:
        self.client: Any = boto3.client(
            "ecr",
            endpoint_url=endpoint,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def create(self, name: str) -> None:
        self.client.create_repository(repositoryName=name)

    def push(self, repo: str, seed: str, *tags: str, pushed_at: datetime | None = None) -> str:
        manifest = image_manifest(seed)
        digest = ""
        for tag in tags or ("",):
            kwargs = {"imageTag": tag} if tag else {}
            digest = self.client.put_image(repositoryName=repo, imageManifest=manifest, **kwargs)[
                "image"
            ]["imageId"]["imageDigest"]
        if pushed_at is not None:
            self.set_pushed_at(repo, digest, pushed_at)
        return str(digest)

    def push_index(
        self, repo: str, children: Sequence[str], *tags: str, pushed_at: datetime | None = None
    ) -> str:
        manifest = index_manifest(children)
        digest = "sha256:" + hashlib.sha256(manifest.encode()).hexdigest()
        for tag in tags or ("",):
            kwargs = {"imageTag": tag} if tag else {}
            self.client.put_image(
                repositoryName=repo,
                imageManifest=manifest,
                imageManifestMediaType="application/vnd.oci.image.index.v1+json",
                imageDigest=digest,
                **kwargs,
            )
        if pushed_at is not None:
            self.set_pushed_at(repo, digest, pushed_at)
        return digest

    @staticmethod
    def set_pushed_at(repo: str, digest: str, when: datetime) -> None:
        # newest first: the image just pushed is the last one (moto keeps one per digest), so
        # seeding n images is not n²/2 digest comparisons
        for image in reversed(ecr_backends[ACCOUNT][REGION].repositories[repo].images):
            if image.get_image_digest() == digest:
                image.image_pushed_at = int(when.timestamp())
                return

    def digests(self, repo: str) -> set[str]:
        pages = self.client.get_paginator("describe_images").paginate(repositoryName=repo)
        return {d["imageDigest"] for page in pages for d in page["imageDetails"]}

    def tags(self, repo: str) -> dict[str, tuple[str, ...]]:
        pages = self.client.get_paginator("describe_images").paginate(repositoryName=repo)
        return {
            d["imageDigest"]: tuple(sorted(d.get("imageTags", [])))
            for page in pages
            for d in page["imageDetails"]
        }


# -- ECS, Lambda and IAM: what moto does not model -----------------------------------------------

PAGED_ECS = {
    "list_clusters": "clusterArns",
    "list_services": "serviceArns",
    "list_tasks": "taskArns",
    "list_task_definitions": "taskDefinitionArns",
}
# the ECS listings moto answers in one page whatever maxResults asks (ECS: 1-100 per page)
PAGED_LAMBDA = {"list_functions": "Functions", "list_versions_by_function": "Versions"}
# the Lambda listings moto answers in one page whatever MaxItems asks (Lambda: 1-50)


@contextmanager
def paged(size: int) -> Iterator[None]:
    """moto's ECS and Lambda listings (5.2.5: no pagination at all) answered in pages, as AWS
    does: at most min(`size`, maxResults/MaxItems) items, and a token (nextToken, NextMarker)
    for the rest. A page smaller than asked is what AWS may send too; the token is an offset."""
    from moto.awslambda.responses import LambdaResponse
    from moto.core.responses import ActionResult
    from moto.ecs.responses import EC2ContainerServiceResponse

    def window(start: str | None, asked: object) -> tuple[int, int]:
        first = int(start) if start else 0
        return first, first + min(size, int(asked) if isinstance(asked, int | str) else size)

    def ecs(method: Any, key: str) -> Any:
        def listing(self: Any) -> Any:
            items = list(method(self).result[key])
            first, end = window(self._get_param("nextToken"), self._get_param("maxResults"))
            page: dict[str, Any] = {key: items[first:end]}
            if end < len(items):
                page["nextToken"] = str(end)
            return ActionResult(page)

        return listing

    def lam(method: Any, key: str) -> Any:
        def listing(self: Any) -> Any:
            answer = json.loads(method(self))
            query = self.querystring
            first, end = window(
                query.get("Marker", [None])[0], query.get("MaxItems", [str(size)])[0]
            )
            items = answer[key]
            answer[key] = items[first:end]
            if end < len(items):
                answer["NextMarker"] = str(end)
            return json.dumps(answer)

        return listing

    patched = [
        *((EC2ContainerServiceResponse, name, ecs, key) for name, key in PAGED_ECS.items()),
        *((LambdaResponse, name, lam, key) for name, key in PAGED_LAMBDA.items()),
    ]
    originals = [(cls, name, getattr(cls, name)) for cls, name, _, _ in patched]
    for cls, name, wrap, key in patched:
        setattr(cls, name, wrap(getattr(cls, name), key))
    try:
        yield
    finally:
        for cls, name, method in originals:
            setattr(cls, name, method)


def set_image_digests(account: str, region: str, cluster: str, digests: dict[str, str]) -> int:
    """Give the running tasks' containers the `imageDigest` ECS reports once it has pulled
    (moto 5.2.5 never sets it; its serializer sends the attribute when it exists), by image
    string; returns the containers changed. moto models one container per task: the task
    definition's first."""
    from moto.ecs.models import ecs_backends

    changed = 0
    for task in ecs_backends[account][region].tasks.get(cluster, {}).values():
        for container in task.containers:
            if container.image in digests:
                container.image_digest = digests[container.image]  # type: ignore[attr-defined]
                changed += 1
    return changed


@contextmanager
def iam_enforced() -> Iterator[None]:
    """moto checks every request's signature and IAM policies (its INITIAL_NO_AUTH_ACTION_COUNT
    set to 0 in this process, where the server runs) until the block ends. Only calls signed
    with an IAM user's access key or an assumed role's credentials pass; moto's Lambda does not
    verify its own signatures (SignatureDoesNotMatch for every call), so only ECS, STS and IAM
    can be tested under it."""
    import moto.settings
    from moto.core.authorization import ActionAuthenticatorMixin

    before = moto.settings.INITIAL_NO_AUTH_ACTION_COUNT, ActionAuthenticatorMixin.request_count
    moto.settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    ActionAuthenticatorMixin.request_count = 0
    try:
        yield
    finally:
        moto.settings.INITIAL_NO_AUTH_ACTION_COUNT, ActionAuthenticatorMixin.request_count = before


@contextmanager
def throttling(operation: str, times: int) -> Iterator[list[int]]:
    """moto's ECS answers its first `times` calls of `operation` (a response method name such
    as "list_tasks") with ThrottlingException, HTTP 400, as ECS does past its rate; moto itself
    never throttles. Yields the count of calls answered so far (one element)."""
    with failing(operation, times, "ThrottlingException", "Rate exceeded") as seen:
        yield seen


@contextmanager
def failing(operation: str, times: int, code: str, message: str) -> Iterator[list[int]]:
    """moto's ECS answers its first `times` calls of `operation` with the error `code`, HTTP
    400 (ServerException, for one: an ECS in trouble). Yields the count of calls so far."""
    from moto.core.exceptions import JsonRESTError
    from moto.ecs.responses import EC2ContainerServiceResponse

    original = getattr(EC2ContainerServiceResponse, operation)
    seen = [0]

    def limited(self: Any) -> Any:
        seen[0] += 1
        if seen[0] <= times:
            raise JsonRESTError(code, message)
        return original(self)

    setattr(EC2ContainerServiceResponse, operation, limited)
    try:
        yield seen
    finally:
        setattr(EC2ContainerServiceResponse, operation, original)
