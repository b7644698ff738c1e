"""The live view: list+watch through kubernetes_asyncio against the API-server simulator."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from controller.app import list_everything
from controller.clusters import Cluster, connect
from controller.identifiers import SourceKey
from controller.images import Digest
from controller.inventory import InUseIndex
from controller.kinds import KINDS, Kind, pod_template_at
from controller.policy import Image, Rules
from controller.pruning import PruneOptions, Pruner
from controller.settings import RepositorySelection
from controller.sources import list_kind
from controller.trust import SourceTracker, View
from controller.watching import Backoff, EventSink, Watcher, WatchOptions
from sandbox.kubesim import KubeSimulator, pod, workload, write_kubeconfig
from tests.digests import digest
from tests.fake_ecr import FakeEcr
from tests.waiting import eventually

HOST = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
TOKEN = "watch-token"
FAST = WatchOptions(timeout_seconds=30, inactivity=2.0, backoff_initial=0.02, backoff_max=0.1)


def running(name: str, n: int, namespace: str = "ns") -> dict[str, object]:
    return pod(
        name, namespace, {"c": f"{HOST}/app:v{n}"}, image_ids={"c": f"{HOST}/app@{digest(n)}"}
    )


@dataclass
class Harness:
    sim: KubeSimulator
    cluster: Cluster
    index: InUseIndex
    tracker: SourceTracker
    tg: anyio.abc.TaskGroup

    def watch(
        self, kind: str = "pods", namespace: str = "", options: WatchOptions = FAST
    ) -> Watcher:
        watcher = Watcher(
            self.cluster,
            KINDS[kind],
            namespace,
            view=View(self.index, self.tracker),
            options=options,
        )
        self.tg.start_soon(watcher.run)
        return watcher

    def lists(self, path: str = "/api/v1/pods") -> int:
        return self.sim.count("GET", path, watch=False)


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with KubeSimulator(token=TOKEN, bookmark_interval=0.1) as sim:
        path = write_kubeconfig(tmp_path / "config", {"sim": sim}, token=TOKEN)
        async with (
            connect(kubeconfig=str(path), contexts=(), in_cluster=False) as (cluster,),
            anyio.create_task_group() as tg,
        ):
            yield Harness(sim, cluster, InUseIndex(), SourceTracker(), tg)
            tg.cancel_scope.cancel()


PODS = SourceKey("sim", "pods")


async def test_create_update_delete_are_reflected_within_100ms(harness: Harness) -> None:
    harness.sim.create("pods", running("a", 1))
    harness.watch()
    await eventually(lambda: harness.tracker.sources[PODS].connected)
    assert harness.index.digest_in_use(digest(1))

    harness.sim.create("pods", running("b", 2))
    assert await eventually(lambda: harness.index.digest_in_use(digest(2))) < 0.1

    harness.sim.update("pods", running("b", 3))
    assert await eventually(lambda: harness.index.digest_in_use(digest(3))) < 0.1
    assert not harness.index.digest_in_use(digest(2))

    harness.sim.delete("pods", "ns", "b")
    assert await eventually(lambda: not harness.index.digest_in_use(digest(3))) < 0.1
    assert harness.lists() == 1


async def test_410_mid_stream_relists_with_no_gap(harness: Harness) -> None:
    harness.sim.create("pods", running("steady", 1))
    watcher = harness.watch()
    await eventually(lambda: harness.tracker.sources[PODS].connected)
    gaps = 0

    async def sample() -> None:
        nonlocal gaps
        while True:
            gaps += not harness.index.digest_in_use(digest(1))
            await anyio.lowlevel.checkpoint()

    harness.tg.start_soon(sample)
    harness.sim.drop_watches()  # disconnect ...
    harness.sim.create("pods", running("new", 2))
    harness.sim.compact()  # ... and compact past our version: the resume gets 410
    await eventually(lambda: harness.lists() == 2)
    await eventually(lambda: harness.index.digest_in_use(digest(2)))
    assert gaps == 0
    assert harness.tracker.sources[PODS].relists == 1
    assert harness.index.is_synced(watcher.key)


async def test_deletes_during_a_disconnection_are_observed_after_the_relist(
    harness: Harness,
) -> None:
    for n in range(5):
        harness.sim.create("pods", running(f"p{n}", n))
    harness.watch()
    await eventually(lambda: harness.index.digest_in_use(digest(4)))
    harness.sim.set_watch_expiry_mode("http")  # this time the 410 comes as the HTTP status
    harness.sim.drop_watches()
    harness.sim.delete("pods", "ns", "p3")
    harness.sim.delete("pods", "ns", "p4")
    harness.sim.compact()
    await eventually(lambda: not harness.index.digest_in_use(digest(4)))
    assert not harness.index.digest_in_use(digest(3))
    assert harness.index.digest_in_use(digest(0))
    assert harness.index.object_count() == 3


async def test_a_dropped_connection_resumes_from_the_last_bookmark_without_a_relist(
    harness: Harness,
) -> None:
    harness.sim.create("pods", running("a", 1))
    watcher = harness.watch()
    await eventually(lambda: watcher.sink.counts.bookmarks >= 2)
    harness.sim.create(
        "deployments", workload("Deployment", "elsewhere", "ns", [f"{HOST}/other:v1"])
    )  # moves RV on
    bookmarked = harness.sim.resource_version
    harness.sim.send_bookmarks()
    await eventually(lambda: watcher.sink.counts.bookmarks >= 3)
    harness.sim.drop_watches()
    await eventually(lambda: harness.sim.count("GET", "/api/v1/pods", watch=True) == 2)
    resumed = [r for r in harness.sim.requests if r.path == "/api/v1/pods" and r.is_watch][-1]
    assert int(resumed.query["resourceVersion"]) >= bookmarked
    assert harness.lists() == 1
    harness.sim.create("pods", running("b", 2))
    await eventually(lambda: harness.index.digest_in_use(digest(2)))


async def test_a_normal_end_of_stream_resumes_without_a_relist(harness: Harness) -> None:
    harness.watch(options=WatchOptions(timeout_seconds=1, inactivity=2.0, backoff_initial=0.02))
    await eventually(lambda: harness.sim.count("GET", "/api/v1/pods", watch=True) >= 2, within=4)
    assert harness.lists() == 1


async def test_a_silent_stream_is_dropped_after_the_inactivity_timeout(harness: Harness) -> None:
    harness.sim.set_latency(0)
    options = WatchOptions(
        timeout_seconds=60, inactivity=0.3, backoff_initial=0.02, backoff_max=0.05
    )
    # bookmarks are only sent when asked for, so this stream goes silent
    watcher = Watcher(
        harness.cluster,
        KINDS["pods"],
        "",
        view=View(harness.index, harness.tracker),
        options=options,
    )
    harness.sim.bookmark_interval = 3600
    harness.tg.start_soon(watcher.run)
    await eventually(lambda: harness.sim.count("GET", "/api/v1/pods", watch=True) >= 2, within=3)
    assert harness.lists() == 1


@pytest.mark.parametrize(
    ("kind", "obj", "tag"),
    [
        (
            "cronjobs",
            workload("CronJob", "nightly", "batch", [f"{HOST}/reports:build-15"]),
            "build-15",
        ),
        ("deployments", workload("Deployment", "idle", "web", [f"{HOST}/ui:v3"], replicas=0), "v3"),
        (
            "replicasets",
            workload("ReplicaSet", "web-7f9c", "web", [f"{HOST}/ui:v2"], replicas=0),
            "v2",
        ),
    ],
    ids=["cronjob between runs", "deployment scaled to zero", "old replicaset"],
)
async def test_workload_templates_protect_with_no_pod_running(
    harness: Harness, kind: str, obj: dict[str, object], tag: str
) -> None:
    harness.sim.create(kind, obj)
    harness.watch(kind)
    source = SourceKey("sim", kind)
    await eventually(lambda: harness.index.is_synced(source))
    snapshot = harness.index.snapshot()
    assert {t.tag for t in snapshot.tags} == {tag}
    assert harness.index.object_count(kind="pods") == 0


async def test_a_second_clusters_pod_protects_an_image(tmp_path: Path) -> None:
    async with KubeSimulator() as staging, KubeSimulator() as prod:
        staging.create("pods", running("s", 1))
        prod.create("pods", running("p", 2))
        path = write_kubeconfig(tmp_path / "config", {"staging": staging, "prod": prod})
        index, tracker = InUseIndex(), SourceTracker()
        async with (
            connect(
                kubeconfig=str(path), contexts=("staging", "prod"), in_cluster=False
            ) as clusters,
            anyio.create_task_group() as tg,
        ):
            for cluster in clusters:
                tg.start_soon(
                    Watcher(cluster, KINDS["pods"], "", view=View(index, tracker), options=FAST).run
                )
            await eventually(lambda: not index.unsynced())
            assert index.digest_in_use(digest(1))
            assert index.digest_in_use(digest(2))
            prod.delete("pods", "ns", "p")
            await eventually(lambda: not index.digest_in_use(digest(2)))
            assert index.digest_in_use(digest(1))  # staging still protects its own
            tg.cancel_scope.cancel()


async def test_a_403_on_one_source_stops_all_pruning_with_the_reason(harness: Harness) -> None:
    harness.sim.create("pods", running("a", 1))
    harness.sim.deny("cronjobs")
    harness.watch("pods")
    harness.watch("cronjobs")
    await eventually(lambda: harness.index.is_synced(PODS))
    cron = SourceKey("sim", "cronjobs")
    await eventually(lambda: harness.tracker.sources[cron].denied == 403)
    refusal = harness.tracker.refusal(
        harness.index, time.monotonic(), max_staleness=300, may_be_empty=lambda _source: False
    )
    assert refusal is not None
    assert "sim/cronjobs: answers 403" in refusal
    # the API server's Status, as its reason and message, not the raw bytes of the body
    assert (
        'HTTP 403: Forbidden: cronjobs.batch is forbidden: User "system:serviceaccount:' in refusal
    )
    assert "b'" not in refusal
    assert '"kind"' not in refusal

    ecr = FakeEcr()
    ecr.add(
        "app", *[Image(digest(100 + n), datetime.now(UTC) - timedelta(days=n)) for n in range(20)]
    )
    pruner = Pruner(
        ecr,
        harness.index,
        PruneOptions(RepositorySelection(("app",)), lambda _r: Rules(max_images=1), dry_run=False),
    )
    report = await pruner.run_cycle(
        now=datetime.now(UTC),
        gate=lambda: harness.tracker.refusal(
            harness.index, time.monotonic(), max_staleness=300, may_be_empty=lambda _source: False
        ),
        clock=lambda: datetime.now(UTC),
    )
    assert report.refused == refusal
    assert len(ecr.repos["app"]) == 20

    harness.sim.allow("cronjobs")  # permission fixed: the source recovers by itself
    await eventually(
        lambda: harness.index.is_synced(cron) and harness.tracker.sources[cron].denied is None
    )
    assert (
        harness.tracker.refusal(
            harness.index, time.monotonic(), max_staleness=300, may_be_empty=lambda _source: False
        )
        is None
    )


async def test_staleness_past_the_limit_refuses(harness: Harness) -> None:
    harness.sim.create("pods", running("a", 1))
    watcher = harness.watch()
    await eventually(lambda: watcher.status.connected)
    harness.sim.fail_next(1000, status=503)
    harness.sim.drop_watches()
    await eventually(lambda: not watcher.status.connected)
    now = time.monotonic()
    assert (
        harness.tracker.refusal(
            harness.index, now, max_staleness=60, may_be_empty=lambda _source: False
        )
        is None
    )
    refusal = harness.tracker.refusal(
        harness.index, now + 61, max_staleness=60, may_be_empty=lambda _source: False
    )
    assert refusal is not None
    assert "disconnected for" in refusal
    assert harness.index.digest_in_use(digest(1))  # the last view still protects meanwhile


async def test_unknown_and_malformed_events_are_skipped(harness: Harness) -> None:
    watcher = harness.watch()
    await eventually(lambda: harness.sim.watch_count("pods") == 1)
    harness.sim.inject_raw_event(
        "pods", b'{"type":"FUTURE","object":{"metadata":{"resourceVersion":"1"}}}'
    )
    harness.sim.inject_raw_event("pods", b"{not json")
    harness.sim.inject_raw_event("pods", b'{"type":"ADDED","object":{"metadata":{}}}')
    harness.sim.create("pods", running("after", 7))
    await eventually(lambda: harness.index.digest_in_use(digest(7)))
    assert watcher.sink.counts.unknown == 1
    assert watcher.sink.counts.malformed == 2
    assert harness.lists() == 1


async def test_a_pod_appearing_during_a_cycle_protects_its_image_from_later_batches(
    harness: Harness,
) -> None:
    harness.sim.create("pods", running("a", 1))
    harness.watch()
    await eventually(lambda: harness.index.is_synced(PODS))
    now = datetime.now(UTC)
    ecr = FakeEcr()
    ecr.add(
        "app", *[Image(digest(1000 + n), now - timedelta(hours=n), (f"b{n}",)) for n in range(350)]
    )
    victim = 1000 + 340  # among the oldest: in the first batch's plan, deleted in a late one
    sent_after_event: list[Sequence[Digest]] = []

    async def pod_starts(_repo: str, batch: Sequence[Digest]) -> None:
        if not ecr.batches:
            harness.sim.create("pods", running("late", victim))
            await eventually(lambda: harness.index.digest_in_use(digest(victim)))
        else:
            sent_after_event.append(batch)

    ecr.before_delete = pod_starts
    victim_batch_index = None
    pruner = Pruner(
        ecr,
        harness.index,
        PruneOptions(RepositorySelection(("app",)), lambda _r: Rules(max_images=10), dry_run=False),
    )
    report = await pruner.run_cycle(now=now, gate=lambda: None, clock=lambda: now)
    assert len(report.repositories) == 1
    for i, (_, batch) in enumerate(ecr.batches):
        if digest(victim) in batch:
            victim_batch_index = i
    # the first batch was already on its way; every batch after the event excludes the image
    assert all(digest(victim) not in batch for batch in sent_after_event)
    assert victim_batch_index in (None, 0)
    assert len(sent_after_event) == 3


def test_backoff_grows_with_jitter_and_resets() -> None:
    import random

    backoff = Backoff(0.5, 8, random.Random(1))
    delays = [backoff.next() for _ in range(7)]
    ceilings = [0.5, 1, 2, 4, 8, 8, 8]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    backoff.reset()
    assert backoff.next() <= 0.5


def test_event_sink_counts_unchanged_events() -> None:
    index = InUseIndex()
    sink = EventSink(PODS, KINDS["pods"], index)
    line = b'{"type":"ADDED","object":%s}' % __import__("orjson").dumps(
        running("a", 1) | {"metadata": {"uid": "u1", "resourceVersion": "5"}}
    )
    assert sink.apply_line(line) == "5"
    assert sink.apply_line(line.replace(b"ADDED", b"MODIFIED")) == "5"
    assert (sink.counts.applied, sink.counts.unchanged) == (1, 1)
    assert index.snapshot().digests == frozenset({digest(1)})
    assert {t.tag for t in index.snapshot().tags} == {"v1"}


async def test_the_back_off_resets_after_a_stream_that_delivered_events(harness: Harness) -> None:
    # client-go resets its back-off once a watch has worked; without that, every drop of a
    # healthy stream waited longer (0.4 s, 0.6 s, 1 s, 2.3 s, 4.8 s, ... up to 30 s)
    options = WatchOptions(timeout_seconds=30, inactivity=5.0, backoff_initial=0.05, backoff_max=30)
    watcher = harness.watch(options=options)
    await eventually(lambda: harness.tracker.sources[PODS].connected)
    for n in range(6):
        watches = harness.sim.count("GET", "/api/v1/pods", watch=True)
        harness.sim.create("pods", running(f"p{n}", n))
        await eventually(lambda n=n: harness.index.digest_in_use(digest(n)))  # type: ignore[misc]
        harness.sim.drop_watches()
        await eventually(
            lambda w=watches: harness.sim.count("GET", "/api/v1/pods", watch=True) > w,  # type: ignore[misc]
            within=5,
        )
        assert watcher.backoff.attempt <= 1, (
            f"drop {n}: back-off at attempt {watcher.backoff.attempt}"
        )
    assert harness.lists() == 1


async def test_the_back_off_still_grows_while_reconnects_fail(harness: Harness) -> None:
    watcher = harness.watch()
    await eventually(lambda: harness.tracker.sources[PODS].connected)
    harness.sim.fail_next(4, 500, path_prefix="/api/v1/pods")
    harness.sim.drop_watches()
    await eventually(lambda: watcher.backoff.attempt >= 4, within=5)
    # the fifth attempt gets through, and the stream it opens is healthy again
    await eventually(lambda: harness.tracker.sources[PODS].connected, within=5)


# ---------------------------------------------------------------------------------------------
# Any kind through the same loop: a kind built at run time, one not served, one denied

# the simulator serves no custom resource on this branch: a built-in resource expressed as a
# runtime kind goes through CustomObjectsApi (/apis/apps/v1/...) like a custom resource would
DEPLOYMENTS_AS_CUSTOM = Kind.custom(
    "apps",
    "v1",
    "deployments",
    namespaced=True,
    extract=pod_template_at("spec", "template", "spec"),
)
WIDGETS = Kind.custom(
    "example.com", "v1", "widgets", namespaced=True, extract=pod_template_at("spec")
)


def runtime_watcher(harness: Harness, kind: Kind, namespace: str = "") -> Watcher:
    watcher = Watcher(
        harness.cluster, kind, namespace, view=View(harness.index, harness.tracker), options=FAST
    )
    harness.tg.start_soon(watcher.run)
    return watcher


def refusal_of(harness: Harness) -> str | None:
    return harness.tracker.refusal(
        harness.index, time.monotonic(), max_staleness=300, may_be_empty=lambda _source: True
    )


@pytest.mark.parametrize("namespace", ["", "ns"])
async def test_a_kind_built_at_run_time_is_listed_and_watched_through_custom_objects(
    harness: Harness, namespace: str
) -> None:
    harness.sim.create(
        "deployments", workload("Deployment", "a", "ns", [f"{HOST}/app@{digest(1)}"])
    )
    watcher = runtime_watcher(harness, DEPLOYMENTS_AS_CUSTOM, namespace)
    assert watcher.key == SourceKey("sim", "deployments.apps", namespace)
    await eventually(lambda: harness.index.is_synced(watcher.key))
    assert harness.index.digest_in_use(digest(1))
    await eventually(lambda: harness.tracker.sources[watcher.key].connected)

    harness.sim.create(
        "deployments", workload("Deployment", "b", "ns", [f"{HOST}/app@{digest(2)}"])
    )
    await eventually(lambda: harness.index.digest_in_use(digest(2)))
    harness.sim.delete("deployments", "ns", "a")
    await eventually(lambda: not harness.index.digest_in_use(digest(1)))

    path = "/apis/apps/v1/" + (f"namespaces/{namespace}/" if namespace else "") + "deployments"
    assert harness.sim.count("GET", path, watch=False) == 1
    assert harness.sim.count("GET", path, watch=True) >= 1
    assert refusal_of(harness) is None


async def test_a_cluster_scoped_kind_is_asked_cluster_wide(harness: Harness) -> None:
    """No namespace for a cluster-scoped kind: the Watcher refuses one, and a LIST asked for a
    namespace is the cluster's all the same (`list_cluster_custom_object`)."""
    cluster_scoped = Kind.custom(
        "apps",
        "v1",
        "deployments",
        namespaced=False,
        extract=pod_template_at("spec", "template", "spec"),
    )
    with pytest.raises(ValueError, match="cluster-scoped"):
        Watcher(harness.cluster, cluster_scoped, "ns", view=View())
    harness.sim.create(
        "deployments", workload("Deployment", "a", "ns", [f"{HOST}/app@{digest(1)}"])
    )
    listed = await list_kind(harness.cluster, cluster_scoped, "other")
    assert len(listed.objects) == 1
    assert harness.sim.count("GET", "/apis/apps/v1/deployments") == 1
    assert harness.sim.count("GET", "/apis/apps/v1/namespaces") == 0


async def test_a_kind_not_served_is_untrusted_as_not_served_and_logged_once(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    harness.sim.create("pods", running("a", 1))
    harness.watch("pods")
    watcher = runtime_watcher(harness, WIDGETS)
    path = "/apis/example.com/v1/widgets"
    await eventually(lambda: harness.sim.count("GET", path) >= 3)  # it keeps trying
    status = harness.tracker.sources[watcher.key]
    assert status.not_served
    assert status.denied is None
    assert not harness.index.is_synced(watcher.key)
    refusal = refusal_of(harness)
    assert refusal is not None
    assert refusal.startswith(
        "sim/widgets.example.com: not served (install the CRD or remove the entry): "
    )
    assert "HTTP 404" in refusal
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    message = errors[0].getMessage()
    assert "sim/widgets.example.com" in message
    assert "widgets.example.com is not served (install the CRD or remove the entry)" in message


async def test_a_watch_answering_404_after_a_synced_list_refuses_while_it_lasts(
    harness: Harness,
) -> None:
    """A CRD uninstalled under a synced source: its view is not trusted, within the staleness
    or not, until a request succeeds again."""
    harness.sim.create("pods", running("a", 1))
    watcher = harness.watch("pods")
    await eventually(lambda: harness.tracker.sources[PODS].connected)
    harness.sim.fail_next(2, 404, path_prefix="/api/v1/pods")
    harness.sim.drop_watches()
    await eventually(lambda: harness.tracker.sources[PODS].not_served)
    assert harness.index.is_synced(watcher.key)  # synced, recently: still refused
    refusal = refusal_of(harness)
    assert refusal is not None
    assert refusal.startswith("sim/pods: not served (install the CRD or remove the entry): ")
    await eventually(lambda: harness.tracker.sources[PODS].connected)
    assert not harness.tracker.sources[PODS].not_served
    assert refusal_of(harness) is None


@pytest.mark.parametrize(
    ("namespace", "rule"),
    [
        ("", "RBAC must allow the verbs list and watch on cronjobs.batch cluster-wide"),
        ("team", "RBAC must allow the verbs list and watch on cronjobs.batch in namespace team"),
    ],
)
async def test_a_403_names_the_verbs_and_the_resource_rbac_must_allow(
    harness: Harness, namespace: str, rule: str
) -> None:
    harness.sim.deny("cronjobs", namespace or None)
    harness.watch("cronjobs", namespace)
    key = SourceKey("sim", "cronjobs", namespace)
    await eventually(lambda: harness.tracker.sources[key].denied == 403)
    refusal = refusal_of(harness)
    assert refusal is not None
    assert refusal.startswith(f"{key}: answers 403: ")
    assert rule in refusal
    assert not harness.tracker.sources[key].not_served


async def test_the_once_list_reports_not_served_and_denied_sources(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    harness.sim.create("pods", running("a", 1))
    harness.sim.deny("jobs")
    view = View(harness.index, harness.tracker)
    sources = [
        Watcher(harness.cluster, KINDS["pods"], "", view=view),
        Watcher(harness.cluster, KINDS["jobs"], "", view=view),
        Watcher(harness.cluster, WIDGETS, "", view=view),
    ]
    await list_everything(sources)
    assert harness.index.is_synced(PODS)
    assert harness.index.unsynced() == (
        SourceKey("sim", "jobs"),
        SourceKey("sim", "widgets.example.com"),
    )
    refusal = refusal_of(harness)
    assert refusal is not None
    assert (
        "sim/jobs: answers 403: LIST sim/jobs: HTTP 403: Forbidden: jobs.batch is forbidden"
        in refusal
    )
    assert "RBAC must allow the verbs list and watch on jobs.batch cluster-wide" in refusal
    assert "sim/widgets.example.com: not served (install the CRD or remove the entry)" in refusal
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2, errors
    assert any("widgets.example.com is not served" in e for e in errors)
