"""The trust rules on plain data: every source synced, none denied or stale, and a pod in every
cluster and every listed namespace (unless the user allowed that scope to be empty)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from controller.identifiers import SourceKey
from controller.images import Digest
from controller.inventory import InUseIndex, References
from controller.settings import RepositorySelection, Settings
from controller.trust import SourceTracker, View

NOW = 1000.0


def view(pods: dict[SourceKey, int], *others: SourceKey) -> tuple[SourceTracker, InUseIndex]:
    """A tracker and index where every source is listed and connected, with `pods` pods each."""
    tracker, index = SourceTracker(), InUseIndex()
    for source in [*pods, *others]:
        count = pods.get(source, 0)
        refs = References(frozenset({Digest("sha256:" + "a" * 64)}))
        index.replace(source, {f"{source}-{n}": refs for n in range(count)})
        tracker.listed(source, NOW)
    return tracker, index


def refusal(tracker: SourceTracker, index: InUseIndex, settings: Settings) -> str | None:
    return tracker.refusal(index, NOW, max_staleness=300, may_be_empty=settings.may_be_empty)


def settings(**fields: object) -> Settings:
    return Settings(repositories=RepositorySelection(("*",)), **fields)  # type: ignore[arg-type]


PROD_PODS = SourceKey("prod", "pods")
STAGING_PODS = SourceKey("staging", "pods")
SHOP = SourceKey("prod", "pods", "shop")
BATCH_TYPO = SourceKey("prod", "pods", "bacth")


def test_every_cluster_with_pods_is_trusted() -> None:
    tracker, index = view({PROD_PODS: 3, STAGING_PODS: 1})
    assert refusal(tracker, index, settings()) is None


def test_an_empty_second_cluster_refuses_naming_it() -> None:
    # before: the guard counted pods over every cluster together, so an empty or wrong second
    # context passed, and nothing of what runs there was protected
    tracker, index = view({PROD_PODS: 3, STAGING_PODS: 0})
    why = refusal(tracker, index, settings())
    assert why is not None
    assert why.startswith("no pods in cluster staging: a wrong -namespaces, --kube-context or")
    assert "prod" not in why.split(":")[0]


def test_a_typo_in_one_listed_namespace_refuses_naming_it() -> None:
    tracker, index = view({SHOP: 40, BATCH_TYPO: 0})
    why = refusal(tracker, index, settings(namespaces=("shop", "bacth")))
    assert why is not None
    assert why.startswith("no pods in namespace bacth of cluster prod:")


def test_workloads_alone_do_not_count_as_pods() -> None:
    cronjobs = SourceKey("prod", "cronjobs", "bacth")
    tracker, index = view({SHOP: 40, BATCH_TYPO: 0}, cronjobs)
    index.upsert(cronjobs, "nightly", References(frozenset({Digest("sha256:" + "b" * 64)})))
    assert refusal(tracker, index, settings(namespaces=("shop", "bacth"))) is not None


@pytest.mark.parametrize(
    "allowed",
    [
        {"allow_empty": True},
        {"allow_empty_namespaces": ("bacth",)},
        {"allow_empty_clusters": ("prod",)},
    ],
    ids=["allow-empty", "that namespace", "that cluster"],
)
def test_the_empty_scope_can_be_allowed_explicitly(allowed: dict[str, object]) -> None:
    tracker, index = view({SHOP: 40, BATCH_TYPO: 0})
    assert refusal(tracker, index, settings(namespaces=("shop", "bacth"), **allowed)) is None


def test_allowing_one_namespace_keeps_the_others_checked() -> None:
    other = SourceKey("prod", "pods", "web")
    tracker, index = view({SHOP: 0, BATCH_TYPO: 0, other: 2})
    why = refusal(
        tracker,
        index,
        settings(namespaces=("shop", "bacth", "web"), allow_empty_namespaces=("bacth",)),
    )
    assert why is not None
    assert why.startswith("no pods in namespace shop of cluster prod:")
    assert "bacth" not in why.split(":")[0]


def test_allowing_one_cluster_keeps_the_others_checked() -> None:
    tracker, index = view({PROD_PODS: 0, STAGING_PODS: 0})
    why = refusal(tracker, index, settings(allow_empty_clusters=("staging",)))
    assert why is not None
    assert why.startswith("no pods in cluster prod:")


def test_source_problems_come_before_emptiness() -> None:
    tracker, index = view({PROD_PODS: 0})
    tracker.disconnected(PROD_PODS, NOW, "Forbidden", status_code=403)
    why = refusal(tracker, index, settings(allow_empty=True))
    assert why == "prod/pods: answers 403: Forbidden"


def test_staleness_counts_from_the_disconnection() -> None:
    tracker, index = view({PROD_PODS: 1})
    tracker.disconnected(PROD_PODS, NOW, "connection reset")
    assert refusal(tracker, index, settings()) is None  # the last view still protects
    later = NOW + timedelta(minutes=6).total_seconds()
    why = tracker.refusal(index, later, max_staleness=300, may_be_empty=lambda _s: False)
    assert why == "prod/pods: disconnected for 360s (max 300s): connection reset"


WIDGETS = SourceKey("prod", "widgets.example.com")


def test_a_source_not_served_is_untrusted_as_such_until_a_request_succeeds() -> None:
    tracker, index = view({PROD_PODS: 1})
    tracker.register(WIDGETS)
    index.register(WIDGETS)
    tracker.disconnected(WIDGETS, NOW, "LIST prod/widgets.example.com: HTTP 404", status_code=404)
    why = refusal(tracker, index, settings())
    assert why == (
        "prod/widgets.example.com: not served (install the CRD or remove the entry): "
        "LIST prod/widgets.example.com: HTTP 404"
    )
    tracker.disconnected(WIDGETS, NOW, "connection reset")  # another failure: still not served
    assert tracker.sources[WIDGETS].not_served
    index.replace(WIDGETS, {})
    tracker.listed(WIDGETS, NOW)  # installed, listed: trusted (an empty kind is not pods)
    assert not tracker.sources[WIDGETS].not_served
    assert refusal(tracker, index, settings()) is None


def test_not_served_refuses_even_a_synced_fresh_view() -> None:
    tracker, index = view({PROD_PODS: 1})
    tracker.disconnected(PROD_PODS, NOW, "WATCH: HTTP 404", status_code=404)
    assert index.is_synced(PROD_PODS)
    why = refusal(tracker, index, settings())
    assert why == "prod/pods: not served (install the CRD or remove the entry): WATCH: HTTP 404"


def test_a_view_registers_a_source_in_the_index_and_the_tracker_at_once() -> None:
    both = View()
    status = both.register(WIDGETS)
    assert both.tracker.sources[WIDGETS] is status
    assert both.index.unsynced() == (WIDGETS,)
    why = both.refusal(NOW, max_staleness=300, may_be_empty=lambda _s: False)
    assert why == "prod/widgets.example.com: initial LIST not complete"
