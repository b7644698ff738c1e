"""The Go kube-ecr-cleanup-controller's algorithm, re-implemented as a benchmark baseline.

What the Go controller does each cycle, on the same transport as ours (aioboto3): for every
repository, one after another, DescribeImages in pages of 100 (the SDK's default), drop the
images in use (by tag) and the `latest` ones from the count, and, if more than max-images
remain, delete the oldest of them, at most 100 per repository per cycle (one BatchDeleteImage).
`converge` repeats cycles until every repository is under its limit and reports the work time,
without the 30-minute waits the Go controller sleeps between cycles.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import aioboto3
from aiobotocore.config import AioConfig

if TYPE_CHECKING:
    from bench.cycle import Shape

GO_PAGE = 100
GO_MAX_DELETIONS = 100


async def _cycle(
    client: Any, names: list[str], max_images: int, in_use_tag: str
) -> tuple[int, bool]:
    """One Go cycle; (calls made, whether any repository is still over its limit)."""
    calls, over = 0, False
    for name in names:
        images: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page = await client.describe_images(
                repositoryName=name, maxResults=GO_PAGE, **({"nextToken": token} if token else {})
            )
            calls += 1
            images.extend(page.get("imageDetails", []))
            token = page.get("nextToken")
            if not token:
                break
        candidates = [
            i
            for i in images
            if "latest" not in i.get("imageTags", []) and in_use_tag not in i.get("imageTags", [])
        ]
        excess = len(candidates) - max_images
        if excess <= 0:
            continue
        candidates.sort(key=lambda i: i["imagePushedAt"])
        doomed = candidates[: min(excess, GO_MAX_DELETIONS)]
        await client.batch_delete_image(
            repositoryName=name, imageIds=[{"imageDigest": i["imageDigest"]} for i in doomed]
        )
        calls += 1
        over = over or excess > GO_MAX_DELETIONS
    return calls, over


async def converge(endpoint: str, shape: Shape) -> dict[str, Any]:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    names = [f"repo-{r:04d}" for r in range(shape.repositories)]
    in_use_tag = f"build-{max(1, shape.images // 10)}"
    retries = AioConfig(retries={"mode": "adaptive", "max_attempts": 8})
    session = aioboto3.Session()
    async with session.client(
        "ecr", region_name="us-east-1", endpoint_url=endpoint, config=retries
    ) as client:
        cycles = calls = 0
        started = time.perf_counter()
        while True:
            cycles += 1
            made, over = await _cycle(client, names, shape.max_images, in_use_tag)
            calls += made
            if not over:
                break
        work = time.perf_counter() - started
    return {"repositories": shape.repositories, "cycles": cycles, "calls": calls, "work_s": work}
