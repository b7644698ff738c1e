"""Leader election on a coordination.k8s.io/v1 Lease: only the replica holding it may delete images.

Follows client-go's leaderelection semantics, on `CoordinationV1Api` with optimistic
concurrency (every write carries the resourceVersion it was computed from; a 409 is a lost
race, never a success):

* A candidate takes the Lease when it does not exist (create; 409 AlreadyExists = another
  won), when nobody holds it (released), when it already holds it, or when it has expired.
  Expiry is judged from *our* monotonic clock: the time we first observed the current record
  plus its leaseDurationSeconds, not the holder's renewTime, so clock skew between replicas
  does not matter.
* The leader renews every `retry_period`. Leadership counts from the *start* of the last
  successful write attempt, and ends `renew_deadline` later unless renewed again. Another
  replica can observe that write only after it was sent, and then waits `lease_duration`
  (> `renew_deadline`), so the old leader has stopped before anyone else can start.
  `is_leader` is computed from the clock, so it turns False on time even while a request hangs;
  every request is also bounded by the time left before the deadline.
* On shutdown (cancellation of `run`) the leader first stops leading, then releases the Lease
  (empty holderIdentity, leaseDurationSeconds=1) so another replica takes over at its next poll.

`kubernetes_asyncio.leaderelection` is not used: it offers no release on shutdown and no
"am I leader now" query, requires periods of at least one second, bounds no request by the
renew deadline, judges expiry on the wall clock, writes local time as UTC, loses renewTime
when the microseconds are zero, never counts leaseTransitions, and returns after the first
loss of leadership instead of campaigning again.

A request that fails (`kubeapi.REQUEST_FAILURES`: an HTTP error of the API, a `LeaseError` for an
answer that is not a JSON object, a connection or timeout error) is a failed attempt: logged,
retried at the next period, and leadership ends at its deadline as if the write never happened.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple, Protocol

import anyio

from controller.kube import client
from controller.kubeapi import REQUEST_FAILURES, LeaseError, json_object, read_answer

log = logging.getLogger(__name__)

JITTER_FACTOR: Final = 1.2
# as client-go: candidates poll every retry_period * (1 + U(0, 1.2)); renew_deadline must exceed
# retry_period * JITTER_FACTOR
RELEASE_TIMEOUT: Final = 5.0
# upper bound of the shielded release on shutdown (further capped by renew_deadline)


class Leadership(Protocol):
    """What the rest of the controller needs from leader election."""

    @property
    def is_leader(self) -> bool: ...

    @property
    def standby(self) -> bool: ...

    async def run(self) -> None: ...

    def leading_lost_reason(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class ElectionConfig:
    name: str
    # Lease name
    namespace: str
    identity: str
    # unique per replica: pod name (HOSTNAME) + random suffix
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not (self.name and self.namespace and self.identity):
            raise ValueError("leader election needs a lease name, a namespace and an identity")
        if not self.retry_period > 0:
            raise ValueError("retry_period must be positive")
        if not self.renew_deadline > JITTER_FACTOR * self.retry_period:
            raise ValueError(
                f"renew_deadline ({self.renew_deadline}) must exceed "
                f"{JITTER_FACTOR} x retry_period ({self.retry_period})"
            )
        if not self.lease_duration > self.renew_deadline:
            raise ValueError(
                f"lease_duration ({self.lease_duration}) must exceed "
                f"renew_deadline ({self.renew_deadline})"
            )

    @property
    def lease_duration_seconds(self) -> int:
        """leaseDurationSeconds is an integer: round up, others must never wait less."""
        return max(1, math.ceil(self.lease_duration))


class _Record(NamedTuple):
    """The election-relevant part of a Lease spec, compared to detect changes."""

    holder: str
    duration: int
    acquire: str
    renew: str
    transitions: int

    @classmethod
    def of(cls, lease: dict[str, Any]) -> _Record:
        spec = lease.get("spec")
        spec = spec if isinstance(spec, dict) else {}
        duration = spec.get("leaseDurationSeconds")
        transitions = spec.get("leaseTransitions")
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            duration=duration if isinstance(duration, int) else 0,
            acquire=str(spec.get("acquireTime") or ""),
            renew=str(spec.get("renewTime") or ""),
            transitions=transitions if isinstance(transitions, int) else 0,
        )

    def spec(self) -> dict[str, Any]:
        return {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": self.duration,
            "acquireTime": self.acquire,
            "renewTime": self.renew,
            "leaseTransitions": self.transitions,
        }


def micro_time(at: datetime) -> str:
    """A Kubernetes MicroTime: RFC 3339 in UTC with exactly six fractional digits."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _LeaseApi:
    """read/create/replace one Lease as raw JSON; answers (HTTP status, body) instead of raising."""

    def __init__(self, api_client: Any, namespace: str, name: str) -> None:
        self._api = client.CoordinationV1Api(api_client)
        self.namespace, self.name = namespace, name

    async def read(self) -> tuple[int, dict[str, Any]]:
        response = await self._api.read_namespaced_lease(
            self.name, self.namespace, _preload_content=False
        )
        return await self._answer(response)

    async def create(self, spec: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": spec,
        }
        response = await self._api.create_namespaced_lease(
            self.namespace,
            body,  # stubs want a V1Lease; a dict is sent as is
            _preload_content=False,
        )
        return await self._answer(response)

    async def replace(self, lease: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """PUT `lease`; its metadata.resourceVersion makes the write conditional (409 if stale)."""
        response = await self._api.replace_namespaced_lease(
            self.name,
            self.namespace,
            lease,  # stubs want a V1Lease; a dict is sent as is
            _preload_content=False,
        )
        return await self._answer(response)

    async def _answer(self, response: Any) -> tuple[int, dict[str, Any]]:
        # with _preload_content=False the stubs' V1Lease is really an aiohttp response; every
        # status is the caller's to judge, an empty body (some 404s and 409s) reads as {}
        status, raw = await read_answer(response)
        data = json_object(raw, f"HTTP {status}", error=LeaseError) if raw.strip() else {}
        return status, data


def _failure(status: int, body: dict[str, Any]) -> str:
    reason = body.get("reason") or "error"
    message = body.get("message") or ""
    return f"HTTP {status} {reason}: {message}".rstrip(": ")


class LeaderElector:
    """Campaigns for, holds and releases one Lease until `run` is cancelled."""

    def __init__(
        self,
        api_client: Any,
        config: ElectionConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.config = config
        self._lease_api = _LeaseApi(api_client, config.namespace, config.name)
        self._clock = clock
        self._on_change = on_change
        self._random = random.Random()
        self._extra = {"lease": f"{config.namespace}/{config.name}", "identity": config.identity}
        # the last Lease object read or written (its resourceVersion guards our next write)
        self._lease: dict[str, Any] | None = None
        self._observed: _Record | None = None
        self._observed_at = 0.0
        # clock() when the write attempt that last made or kept us leader started; None = follower
        self._renewed_at: float | None = None
        self._leading = False
        # run()'s view, for on_change transitions; is_leader additionally checks the clock
        self._reason = "not leader: lease not acquired yet"
        self._last_failure: str | None = None

    # ------------------------------------------------------------------ queries

    @property
    def is_leader(self) -> bool:
        """True only while we hold the Lease and renewed it within renew_deadline."""
        renewed = self._renewed_at
        return renewed is not None and self._clock() - renewed < self.config.renew_deadline

    def leading_lost_reason(self) -> str | None:
        """Why we are not leader (None when we are), for logs and metrics."""
        if self.is_leader:
            return None
        if self._renewed_at is not None:
            ago = self._clock() - self._renewed_at
            return f"not leader: lease not renewed for {ago:.1f}s (renew deadline exceeded)"
        return self._reason

    @property
    def standby(self) -> bool:
        """Not leader only because another replica holds the Lease: a normal, healthy state
        (unlike a Lease we cannot read or write, which keeps every replica from pruning)."""
        holder = self.holder
        return (
            not self.is_leader
            and self._last_failure is None
            and holder is not None
            and holder != self.config.identity
        )

    @property
    def holder(self) -> str | None:
        """The holder in the last observed Lease record (None: unknown or released)."""
        return (self._observed.holder or None) if self._observed is not None else None

    # ------------------------------------------------------------------ main loop

    async def run(self) -> None:
        """Campaign and renew until cancelled; then stop leading and release the Lease."""
        log.info(
            "leader election for Lease %s/%s as %s",
            self.config.namespace,
            self.config.name,
            self.config.identity,
            extra=self._extra,
        )
        try:
            while True:
                renewed = await self._attempt()
                if renewed or self._leading:
                    delay = self.config.retry_period
                else:
                    delay = self.config.retry_period * (1 + self._random.random() * JITTER_FACTOR)
                await anyio.sleep(delay)
        finally:
            self._lose("not leader: shutting down", level=logging.INFO)
            timeout = min(RELEASE_TIMEOUT, self.config.renew_deadline)
            with anyio.move_on_after(timeout, shield=True) as scope:
                await self._release()
            if scope.cancelled_caught:
                log.warning(
                    "Lease %s/%s not released within %.1fs; others take over when it expires",
                    self.config.namespace,
                    self.config.name,
                    timeout,
                    extra=self._extra,
                )

    async def _attempt(self) -> bool:
        """One try to acquire or renew, bounded so that a leader never outlives its deadline."""
        if self._leading and not self.is_leader:
            self._lose(self.leading_lost_reason() or "not leader: renew deadline exceeded")
        started = self._clock()
        if self._renewed_at is not None:
            budget = self._renewed_at + self.config.renew_deadline - started
        else:
            budget = self.config.renew_deadline
        outcome: bool | str = f"no answer within {budget:.1f}s"
        with anyio.move_on_after(budget):
            try:
                outcome = await self._try_acquire_or_renew(started)
            except REQUEST_FAILURES as exc:
                outcome = f"{type(exc).__name__}: {exc}"
        if outcome is True:
            self._last_failure = None
            return True
        if isinstance(outcome, str):
            self._failed(outcome)
        else:  # the Lease was read and is held by another replica: no failure
            self._last_failure = None
        if self._leading and not self.is_leader:
            self._lose(self.leading_lost_reason() or "not leader: renew deadline exceeded")
        return False

    async def _try_acquire_or_renew(self, started: float) -> bool | str:
        """True: we lead (renewed from `started`); False: another holds it; str: a failure."""
        api = self._lease_api
        now = micro_time(datetime.now(UTC))
        if self._leading and self._lease is not None and self._observed is not None:
            # fast path: the leader writes on top of its own last write
            record = self._observed._replace(renew=now)
            status, body = await api.replace(self._with_spec(self._lease, record))
            if status == 200:
                self._won(body, started)
                return True
            log.debug(
                "renewing Lease %s/%s: %s; reading it again",
                api.namespace,
                api.name,
                _failure(status, body),
                extra=self._extra,
            )

        status, body = await api.read()
        if status == 404:
            record = _Record(self.config.identity, self.config.lease_duration_seconds, now, now, 0)
            status, body = await api.create(record.spec())
            if status in (200, 201):
                self._won(body, started)
                return True
            if status == 409:
                self._reason = "not leader: another replica created the Lease first"
                log.debug("lost the race to create the Lease", extra=self._extra)
                return False
            return f"creating the Lease: {_failure(status, body)}"
        if status != 200:
            return f"reading the Lease: {_failure(status, body)}"

        current = self._observe(body)
        me = self.config.identity
        if current.holder and current.holder != me:
            remaining = self._observed_at + current.duration - self._clock()
            if remaining > 0:
                self._follow(current.holder, remaining)
                return False
        if current.holder == me:
            record = current._replace(duration=self.config.lease_duration_seconds, renew=now)
        else:
            # free (released, or never held) or expired: take it over
            record = _Record(
                me, self.config.lease_duration_seconds, now, now, current.transitions + 1
            )
        status, body = await api.replace(self._with_spec(body, record))
        if status == 200:
            if current.holder != me:
                log.info(
                    "acquired Lease %s/%s (previous holder %s)",
                    api.namespace,
                    api.name,
                    current.holder or "none",
                    extra=self._extra,
                )
            self._won(body, started)
            return True
        if status == 409:
            # someone wrote in between: never assume success, look again next period
            self._reason = "not leader: lost a write race for the Lease"
            log.debug("conflict writing the Lease; will re-read", extra=self._extra)
            return False
        return f"writing the Lease: {_failure(status, body)}"

    # ------------------------------------------------------------------ state changes

    def _observe(self, lease: dict[str, Any]) -> _Record:
        """Remember the Lease; restart the expiry clock if its record changed."""
        record = _Record.of(lease)
        self._lease = lease
        if record != self._observed:
            self._observed = record
            self._observed_at = self._clock()
        return record

    def _with_spec(self, lease: dict[str, Any], record: _Record) -> dict[str, Any]:
        body = copy.deepcopy(lease)
        spec = body.get("spec")
        body["spec"] = {**(spec if isinstance(spec, dict) else {}), **record.spec()}
        return body

    def _won(self, lease: dict[str, Any], started: float) -> None:
        self._observe(lease)
        self._renewed_at = started
        if not self._leading:
            self._leading = True
            self._reason = ""
            log.info(
                "became leader of Lease %s/%s",
                self.config.namespace,
                self.config.name,
                extra=self._extra,
            )
            self._notify(True)

    def _follow(self, holder: str, remaining: float) -> None:
        reason = f"not leader: held by {holder}"
        if self._leading:
            self._lose(reason)
        elif reason != self._reason:
            log.info(
                "Lease %s/%s is held by %s (expires in %.1fs unless renewed)",
                self.config.namespace,
                self.config.name,
                holder,
                remaining,
                extra={**self._extra, "holder": holder},
            )
        self._reason = reason

    def _lose(self, reason: str, *, level: int = logging.WARNING) -> None:
        self._renewed_at = None
        self._reason = reason
        if self._leading:
            self._leading = False
            log.log(
                level,
                "stopped leading Lease %s/%s: %s",
                self.config.namespace,
                self.config.name,
                reason,
                extra=self._extra,
            )
            self._notify(False)

    def _failed(self, failure: str) -> None:
        if not self._leading:
            self._reason = f"not leader: {failure}"
        # one warning per kind of failure, not one per retry
        level = logging.DEBUG if failure == self._last_failure else logging.WARNING
        self._last_failure = failure
        log.log(
            level,
            "Lease %s/%s: %s",
            self.config.namespace,
            self.config.name,
            failure,
            extra={**self._extra, "failure": failure},
        )

    def _notify(self, leading: bool) -> None:
        if self._on_change is None:
            return
        try:
            self._on_change(leading)
        except Exception:
            log.exception("on_change(%s) failed", leading, extra=self._extra)

    # ------------------------------------------------------------------ release

    async def _release(self) -> None:
        """Hand the Lease back if the last record we saw names us (conditional write)."""
        api = self._lease_api
        for _ in range(2):
            lease, record = self._lease, self._observed
            if lease is None or record is None or record.holder != self.config.identity:
                return
            now = micro_time(datetime.now(UTC))
            released = _Record("", 1, now, now, record.transitions)
            try:
                status, body = await api.replace(self._with_spec(lease, released))
                if status == 200:
                    self._observe(body)
                    log.info("released Lease %s/%s", api.namespace, api.name, extra=self._extra)
                    return
                if status != 409:
                    log.warning(
                        "could not release Lease %s/%s: %s",
                        api.namespace,
                        api.name,
                        _failure(status, body),
                        extra=self._extra,
                    )
                    return
                # our copy is stale (e.g. a write whose answer we never saw): look again
                status, body = await api.read()
                if status != 200:
                    return
                self._observe(body)
            except REQUEST_FAILURES as exc:
                log.warning(
                    "could not release Lease %s/%s: %s: %s",
                    api.namespace,
                    api.name,
                    type(exc).__name__,
                    exc,
                    extra=self._extra,
                )
                return


class AlwaysLeader:
    """`--leader-elect=false`: this replica always leads."""

    def __init__(self, *, on_change: Callable[[bool], None] | None = None) -> None:
        self._on_change = on_change

    @property
    def is_leader(self) -> bool:
        return True

    @property
    def standby(self) -> bool:
        return False

    def leading_lost_reason(self) -> str | None:
        return None

    async def run(self) -> None:
        if self._on_change is not None:
            self._on_change(True)
        await anyio.sleep_forever()


__all__ = [
    "AlwaysLeader",
    "ElectionConfig",
    "LeaderElector",
    "Leadership",
    "LeaseError",
    "micro_time",
]
