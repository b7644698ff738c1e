"""Whether the in-use view can be trusted for deleting: the fail-closed conditions, per source.

Every source reports what happens to it (listed, connected, disconnected, denied, not served);
`refusal` turns that, the index and the clock into the one reason deleting must not happen
now, or None. The pruner asks before a cycle and before every delete call; readiness and
metrics show the same conditions. Pure: times are plain seconds from a monotonic clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from controller.identifiers import SourceKey
from controller.inventory import InUseIndex
from controller.kinds import PODS

NOT_SERVED_FIX: Final = "install the CRD or remove the entry"
"""What to do about a source whose API server answers 404 (the resource is not served)."""


@dataclass(slots=True)
class SourceStatus:
    connected: bool = False
    # a watch stream (or, for --once, the LIST itself) is current
    since: float | None = None
    # when `connected` last changed
    denied: int | None = None
    # 401 or 403 from the API server, until a request succeeds again
    not_served: bool = False
    # 404 from the API server (the resource is not served: a CRD not installed), until a
    # request succeeds again
    last_error: str = ""
    events: int = 0
    restarts: int = 0
    # watch streams (re)opened
    lists: int = 0
    # complete LISTs; whether the source is synced is the index's to say
    malformed: int = 0
    # objects, image references and watch lines skipped as malformed (LISTs and watch events)
    polled: bool = False
    # a periodic poll (ECS, Lambda), not a watch: its view is as old as its last good poll,
    # whether the next one is under way, late or failing; so its staleness always counts from
    # that poll (`listed_at`), and it never "lags": no missed events for a delete call to wait for
    listed_at: float | None = None
    # when the last complete LIST (or poll) landed

    @property
    def relists(self) -> int:
        """LISTs after the first (after a 410 Gone)."""
        return max(0, self.lists - 1)


class SourceTracker:
    """The status of every source; written by the watchers, read by gates, readiness and metrics."""

    def __init__(self, sources: Iterable[SourceKey] = ()) -> None:
        self.sources: dict[SourceKey, SourceStatus] = {s: SourceStatus() for s in sources}

    def register(self, source: SourceKey) -> SourceStatus:
        return self.sources.setdefault(source, SourceStatus())

    def listed(self, source: SourceKey, now: float) -> None:
        """A LIST completed (the caller has just replaced the source in the index)."""
        status = self.register(source)
        status.lists += 1
        status.listed_at = now
        self.connected(source, now)

    def connected(self, source: SourceKey, now: float) -> None:
        status = self.register(source)
        status.denied = None
        status.not_served = False
        status.last_error = ""
        if not status.connected:
            status.connected = True
            status.since = now

    def disconnected(
        self, source: SourceKey, now: float, error: str, *, status_code: int | None = None
    ) -> None:
        status = self.register(source)
        status.last_error = error
        if status_code in (401, 403):
            status.denied = status_code
        elif status_code == 404:
            status.not_served = True
        if status.connected or status.since is None:
            status.connected = False
            status.since = now

    def lagging(self) -> str | None:
        """A source whose view is behind right now (its watch is reconnecting, or it is listing
        again after a 410), described; None when every source is current. Within
        --max-staleness such a view is still trusted, but the events of the gap are not in it
        yet: a delete call waits for it to catch up."""
        for source, status in self.sources.items():
            if not status.connected and status.since is not None and not status.polled:
                return f"{source}: reconnecting ({status.last_error or 'no stream'})"
        return None

    def staleness(self, source: SourceKey, now: float) -> float:
        """Seconds since the source's view was last known current (0 while connected)."""
        status = self.register(source)
        if status.polled:
            return now - status.listed_at if status.listed_at is not None else float("inf")
        if status.connected:
            return 0.0
        return now - status.since if status.since is not None else float("inf")

    def problems(
        self, index: InUseIndex, now: float, *, max_staleness: float
    ) -> dict[SourceKey, str]:
        """Why each untrusted source is untrusted."""
        found: dict[SourceKey, str] = {}
        for source, status in self.sources.items():
            if status.denied is not None:
                found[source] = f"answers {status.denied}: {status.last_error}"
            elif status.not_served:
                # even with a view synced before: a CRD uninstalled takes its objects' truth away
                found[source] = f"not served ({NOT_SERVED_FIX}): {status.last_error}"
            elif not index.is_synced(source):
                found[source] = "initial LIST not complete" + (
                    f" ({status.last_error})" if status.last_error else ""
                )
            elif status.polled and self.staleness(source, now) > max_staleness:
                found[source] = (
                    f"last good poll {self.staleness(source, now):.0f}s ago "
                    f"(max {max_staleness:.0f}s)"
                    + (f": {status.last_error}" if status.last_error else "")
                )
            elif not status.connected and self.staleness(source, now) > max_staleness:
                found[source] = (
                    f"disconnected for {self.staleness(source, now):.0f}s "
                    f"(max {max_staleness:.0f}s): {status.last_error}"
                )
        return found

    def refusal(
        self,
        index: InUseIndex,
        now: float,
        *,
        max_staleness: float,
        may_be_empty: Callable[[SourceKey], bool],
    ) -> str | None:
        """Why deleting must not happen now, or None. Checked before every delete call.

        Besides each source's own trust, every pod source must hold at least one pod: each
        cluster, and each namespace when the scope is narrowed to some. A typo in a namespace,
        a context pointing at the wrong cluster, or credentials that see nothing all look
        exactly like an empty scope, and an empty scope protects nothing. `may_be_empty` is
        the user's explicit opt-out, per source.
        """
        problems = self.problems(index, now, max_staleness=max_staleness)
        if problems:
            return "; ".join(
                f"{source}: {why}"
                for source, why in sorted(problems.items(), key=lambda p: str(p[0]))
            )
        empty = [
            source
            for source in sorted(self.sources, key=str)
            if source.kind == PODS and index.count(source) == 0 and not may_be_empty(source)
        ]
        if empty:
            return (
                "no pods in "
                + ", ".join(_scope(s) for s in empty)
                + (
                    ": a wrong -namespaces, --kube-context or credentials look like this "
                    "(pass --allow-empty-namespaces, --allow-empty-clusters or --allow-empty "
                    "if it is expected)"
                )
            )
        return None


@dataclass(slots=True)
class View:
    """The in-use index and the trust state of each of its sources: the one registry of sources.

    A source registers once, here, and is then both unsynced in the index (so that the view
    is not trusted before its first LIST) and known to the tracker (so that the trust rules,
    readiness and metrics judge it)."""

    index: InUseIndex = field(default_factory=InUseIndex)
    tracker: SourceTracker = field(default_factory=SourceTracker)

    def register(self, source: SourceKey) -> SourceStatus:
        """Declare a source: not synced until its first complete LIST; its trust state."""
        self.index.register(source)
        return self.tracker.register(source)

    def refusal(
        self, now: float, *, max_staleness: float, may_be_empty: Callable[[SourceKey], bool]
    ) -> str | None:
        """Why deleting must not happen now, or None (see `SourceTracker.refusal`)."""
        return self.tracker.refusal(
            self.index, now, max_staleness=max_staleness, may_be_empty=may_be_empty
        )


def _scope(source: SourceKey) -> str:
    if source.namespace:
        return f"namespace {source.namespace} of cluster {source.cluster}"
    return f"cluster {source.cluster}"
