"""Kubernetes API answers, read in one place, and the one hierarchy of what a request fails with.

Every request the controller makes to an API server (a LIST or WATCH of a source, a read or
write of the Lease) asks for the raw answer (`_preload_content=False`): `read_answer` reads its
status and whole body and releases the connection, `read_ok` reads the body of a request
that only a 2xx answer satisfies (a LIST page), and `json_object` parses a body. The Lease
protocol reads non-2xx answers too (404 no Lease yet, 409 a lost race), so it takes the status
and decides.

Exceptions:
    KubeError               a request failed: an HTTP status it cannot use, or an answer it
    │                       cannot read (`status`: the HTTP status when there was one;
    │                       `denied`: 401/403)
    ├── SourceError         a LIST or WATCH of a source failed
    │   └── Expired         410 Gone: the resourceVersion was compacted; LIST again
    └── LeaseError          a Lease answer that is not a JSON object

What else a request raises, before or while its answer is read; `REQUEST_FAILURES` is these
and `KubeError`, caught as one by the watchers, the --once LIST and leader election:
    aiohttp.ClientError     connection refused or reset, DNS, TLS, a body cut short
    TimeoutError            aiohttp's connect or read timeout, or a bound of our own
    OSError                 a socket error aiohttp did not wrap
    ValueError              a server address that is not a URL, a value kubernetes_asyncio
                            refuses before sending (ApiValueError)
    ApiException            kubernetes_asyncio's own (its REST layer, before an answer)

Not a request failure: `clusters.ClusterConfigError` (a `settings.ConfigError`): a kubeconfig
or context that cannot be used is a start-up error (one line, exit status 2), never retried.
"""

from __future__ import annotations

from typing import Any, Final

import aiohttp
import orjson

from controller.kube import client


class KubeError(Exception):
    """A Kubernetes API request failed; `status` is the HTTP status when there was one."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def denied(self) -> bool:
        """401/403: the view cannot be trusted until this is fixed."""
        return self.status in (401, 403)


class SourceError(KubeError):
    """A LIST or WATCH of a source failed."""


class Expired(SourceError):
    """410 Gone: the resourceVersion is older than the server's history; LIST again."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=410)


class LeaseError(KubeError):
    """A Lease request's answer cannot be used (not JSON, not a JSON object)."""


REQUEST_FAILURES: Final = (
    KubeError,
    aiohttp.ClientError,
    TimeoutError,
    OSError,
    ValueError,
    client.exceptions.ApiException,
)
"""Everything a request to an API server can fail with (see the module docstring)."""


def status_text(body: bytes) -> str:
    """What an error answer says: a Kubernetes Status's reason and message, else its text."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict) and data.get("kind") == "Status":
        reason, message = data.get("reason"), data.get("message")
        return ": ".join(str(part) for part in (reason, message) if part) or "no reason given"
    text = body[:200].decode("utf-8", "replace")
    return " ".join(text.split()) or "empty body"


def http_error(what: str, status: int, body: bytes, error: type[KubeError]) -> KubeError:
    """The error for a non-2xx answer: `what`, the status, and what the answer says."""
    return error(f"{what}: HTTP {status}: {status_text(body)}", status=status)


async def read_answer(response: Any) -> tuple[int, bytes]:
    """The status and the whole body of a raw answer; the response is released after."""
    async with response:
        return int(response.status), await response.read()


def json_object(body: bytes, what: str, *, error: type[KubeError]) -> dict[str, Any]:
    """The body as a JSON object, or `error` saying what `what` answered instead."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise error(f"{what}: the answer is not JSON: {body[:120]!r}") from None
    if not isinstance(data, dict):
        raise error(f"{what}: the answer is not a JSON object")
    return data


async def read_ok(response: Any, what: str, *, error: type[KubeError] = SourceError) -> bytes:
    """The body of a raw answer that must be 2xx (a LIST page), else `error` saying what
    `what` answered instead."""
    status, body = await read_answer(response)
    if not 200 <= status < 300:
        raise http_error(what, status, body, error)
    return body
