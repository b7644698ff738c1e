"""ECS and Lambda as sources of "in use": one poller per --protect-ecs or --protect-lambda scope.

Each implements `sources.Source`, so the trust rules judge it as they judge a Kubernetes
kind: not trusted before its first complete poll, never while denied (a 403: the log names
the IAM action missing), and not once its last good poll is older than --max-staleness. A
failed poll leaves the last view in force meanwhile: a poll's view is always up to one
interval old, and one more failed poll makes it older, not partial: its staleness counts from
the last good poll, always, under way, late or failing. So unlike a watch that reconnects, a
failing poller does not make the delete calls wait for it (`SourceStatus.polled`).

The calls are `awsuse`'s; this module only schedules them, every --aws-sources-interval,
and reports each outcome to the view.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any, Final

import anyio

from controller.awsuse import (
    Account,
    AwsSourceError,
    Usage,
    UsageCache,
    poll_ecs,
    poll_lambda,
)
from controller.ecr import CallStats, new_session
from controller.identifiers import SourceKey
from controller.settings import AwsScope, Settings
from controller.trust import SourceStatus, View

log = logging.getLogger(__name__)


def aws_sources(
    settings: Settings, view: View, *, region: str, stats: CallStats
) -> list[AwsSource]:
    """One poller per --protect-ecs and --protect-lambda scope, sharing one AWS session (made
    at the first poll, not at start-up)."""
    session = functools.cache(new_session)
    return [
        AwsSource(
            scope,
            region=region,
            session=session,
            view=view,
            interval=settings.aws_sources_interval.total_seconds(),
            keep_revisions=settings.ecs_keep_task_definitions,
            stats=stats,
        )
        for scope in settings.protect_aws
    ]


POLL_BUDGET: Final = 600.0
"""Seconds one poll may take, calls and retries included, before it counts as failed."""

_ARN_ACCOUNT = 4  # arn:aws:iam::ACCOUNT:role/NAME, split at ':'


def source_key(scope: AwsScope, region: str) -> SourceKey:
    """`aws:ACCOUNT:REGION/ecs@GLOB` or `aws:ACCOUNT:REGION/lambda`; ACCOUNT is the assumed
    role's, or `self` for the controller's own credentials."""
    account = scope.role.split(":")[_ARN_ACCOUNT] if scope.role else "self"
    namespace = scope.clusters if scope.service == "ecs" else ""
    return SourceKey(f"aws:{account}:{region}", scope.service, namespace)


class AwsSource:
    """Polls one ECS or Lambda scope into the view; implements `sources.Source`."""

    def __init__(
        self,
        scope: AwsScope,
        *,
        region: str,
        session: Callable[[], Any],
        view: View,
        interval: float,
        keep_revisions: int,
        stats: CallStats,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.scope = scope
        self.region = scope.region or region
        self._session = session
        self._view = view
        self._interval = interval
        self._keep_revisions = keep_revisions
        self._stats = stats
        self._clock = clock
        self._cache = UsageCache()
        self._last_good: float | None = None
        self._failing = ""  # the last failure logged, so a repeated one is logged at INFO
        self._key = source_key(scope, self.region)
        self._status = view.register(self._key)
        self._status.polled = True

    @property
    def key(self) -> SourceKey:
        return self._key

    @property
    def status(self) -> SourceStatus:
        return self._status

    async def once(self) -> None:
        await self.poll()

    async def run(self) -> None:
        while True:
            await self.poll()
            await anyio.sleep(self._interval)

    async def poll(self) -> bool:
        """One poll into the view; whether it succeeded. Never raises but for cancellation."""
        started = self._clock()
        try:
            with anyio.fail_after(POLL_BUDGET):
                usage = await self._poll()
        except AwsSourceError as exc:
            self._failed(started, str(exc), 403 if exc.denied else None)
            return False
        except TimeoutError:
            self._failed(started, f"poll took longer than {POLL_BUDGET:g}s", None)
            return False
        except Exception as exc:  # a source's bug must not take the service down: fail closed
            log.exception("poll of %s failed", self._key, extra={"source": str(self._key)})
            self._failed(started, f"{type(exc).__name__}: {exc}", None)
            return False
        now = self._clock()
        self._view.index.replace(self._key, {self.scope.service: usage.references})
        self._view.tracker.listed(self._key, now)
        self._status.malformed += len(usage.malformed)
        self._last_good = now
        if self._failing:
            log.info("%s: polled again after a failure", self._key)
        self._failing = ""
        counts = usage.counts
        log.debug(
            "polled %s: %d digests, %d tags in use (%s)",
            self._key,
            len(usage.references.digests),
            len(usage.references.tags),
            counts,
            extra={"source": str(self._key)},
        )
        for text in usage.malformed:
            log.warning("%s: skipped a malformed image reference: %r", self._key, text)
        return True

    async def _poll(self) -> Usage:
        account = Account(role_arn=self.scope.role)
        if self.scope.service == "ecs":
            return await poll_ecs(
                self._session(),
                region=self.region,
                clusters=self.scope.clusters,
                revisions=self._keep_revisions,
                account=account,
                stats=self._stats,
                cache=self._cache,
            )
        return await poll_lambda(
            self._session(),
            region=self.region,
            account=account,
            stats=self._stats,
            cache=self._cache,
        )

    def _failed(self, started: float, reason: str, status_code: int | None) -> None:
        # its staleness counts from the last good poll whatever happens (SourceStatus.polled)
        self._view.tracker.disconnected(self._key, started, reason, status_code=status_code)
        level = logging.ERROR if reason != self._failing else logging.INFO
        log.log(
            level,
            "cannot poll %s: %s%s",
            self._key,
            reason,
            "" if self._last_good is None else "; its last view protects until --max-staleness",
            extra={"source": str(self._key)},
        )
        self._failing = reason
