"""LIST of every watched kind through kubernetes_asyncio against the API-server simulator."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from controller.clusters import Cluster, ClusterConfigError, connect
from controller.images import Digest
from controller.kinds import KINDS
from controller.kubeapi import SourceError
from controller.sources import list_kind
from sandbox.kubesim import KubeSimulator, pod, workload, write_kubeconfig
from tests.digests import digest

HOST = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
TOKEN = "t0ken"


@pytest.fixture
async def sim() -> AsyncIterator[KubeSimulator]:
    async with KubeSimulator(token=TOKEN, short_pages=True) as simulator:
        yield simulator


@pytest.fixture
async def cluster(sim: KubeSimulator, tmp_path: Path) -> AsyncIterator[Cluster]:
    path = write_kubeconfig(tmp_path / "config", {"sim": sim}, token=TOKEN)
    async with connect(kubeconfig=str(path), contexts=(), in_cluster=False) as clusters:
        yield clusters[0]


async def test_list_follows_continue_through_short_and_empty_pages(
    sim: KubeSimulator, cluster: Cluster
) -> None:
    for n in range(23):
        sim.create(
            "pods",
            pod(
                f"p{n}", "ns", {"c": f"{HOST}/app:v{n}"}, image_ids={"c": f"{HOST}/app@{digest(n)}"}
            ),
        )
    listed = await list_kind(cluster, KINDS["pods"], None, page_size=4)
    assert len(listed.objects) == 23
    assert listed.pages > 23 // 4  # short pages (and an empty one) still continue
    digests = set().union(*(refs.digests for refs in listed.objects.values()))
    assert digests == {Digest(digest(n)) for n in range(23)}
    assert listed.resource_version
    assert sim.count("GET", "/api/v1/pods") == listed.pages


async def test_namespaced_list(sim: KubeSimulator, cluster: Cluster) -> None:
    sim.create("pods", pod("a", "one", [f"{HOST}/app:v1"]))
    sim.create("pods", pod("b", "two", [f"{HOST}/app:v2"]))
    listed = await list_kind(cluster, KINDS["pods"], "two")
    (refs,) = listed.objects.values()
    assert {t.tag for t in refs.tags} == {"v2"}


@pytest.mark.parametrize(
    ("kind", "obj"),
    [
        ("deployments", workload("Deployment", "d", "ns", [f"{HOST}/app:dep"], replicas=0)),
        ("replicasets", workload("ReplicaSet", "r", "ns", [f"{HOST}/app:rs"], replicas=0)),
        ("statefulsets", workload("StatefulSet", "s", "ns", [f"{HOST}/app:sts"])),
        ("daemonsets", workload("DaemonSet", "ds", "ns", [f"{HOST}/app:ds"])),
        ("jobs", workload("Job", "j", "ns", [f"{HOST}/app:job"])),
        ("cronjobs", workload("CronJob", "cj", "ns", [f"{HOST}/app:cron"])),
    ],
)
async def test_workload_templates_are_read(
    sim: KubeSimulator, cluster: Cluster, kind: str, obj: dict[str, object]
) -> None:
    sim.create(kind, obj)
    listed = await list_kind(cluster, KINDS[kind], None)
    (refs,) = listed.objects.values()
    assert len(refs.tags) == 1


async def test_forbidden_and_unauthorized_are_flagged(
    sim: KubeSimulator, cluster: Cluster, tmp_path: Path
) -> None:
    sim.deny("pods")
    with pytest.raises(SourceError) as denied:
        await list_kind(cluster, KINDS["pods"], None)
    assert denied.value.status == 403
    assert denied.value.denied
    bad = write_kubeconfig(tmp_path / "bad", {"sim": sim}, token="wrong")
    async with connect(kubeconfig=str(bad), contexts=(), in_cluster=False) as (other,):
        with pytest.raises(SourceError) as unauthorized:
            await list_kind(other, KINDS["deployments"], None)
    assert unauthorized.value.status == 401


async def test_server_errors_raise(sim: KubeSimulator, cluster: Cluster) -> None:
    sim.fail_next(1, status=500)
    with pytest.raises(SourceError) as failed:
        await list_kind(cluster, KINDS["pods"], None)
    assert failed.value.status == 500
    assert not failed.value.denied


async def test_malformed_objects_are_skipped_and_counted(
    sim: KubeSimulator, cluster: Cluster
) -> None:
    sim.create("pods", pod("good", "ns", [f"{HOST}/app:v1"]))
    sim.create("pods", pod("bad", "ns", {"c": "Not A Reference"}))
    listed = await list_kind(cluster, KINDS["pods"], None)
    assert len(listed.objects) == 2
    assert listed.malformed >= 1


async def test_contexts_from_one_kubeconfig(tmp_path: Path) -> None:
    async with KubeSimulator(token="a") as one, KubeSimulator(token="b") as two:
        one.create("pods", pod("x", "ns", [f"{HOST}/app:one"]))
        two.create("pods", pod("y", "ns", [f"{HOST}/app:two"]))
        path = write_kubeconfig(tmp_path / "config", {"staging": one, "prod": two})
        async with connect(
            kubeconfig=str(path), contexts=("staging", "prod"), in_cluster=False
        ) as clusters:
            assert [c.name for c in clusters] == ["staging", "prod"]
            tags = [
                {
                    t.tag
                    for refs in (await list_kind(c, KINDS["pods"], None)).objects.values()
                    for t in refs.tags
                }
                for c in clusters
            ]
    assert tags == [{"one"}, {"two"}]


async def test_unknown_context_is_a_config_error(sim: KubeSimulator, tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "config", {"sim": sim}, token=TOKEN)
    with pytest.raises(ClusterConfigError):
        async with connect(kubeconfig=str(path), contexts=("nope",), in_cluster=False):
            pass


async def test_several_kubeconfig_files_merge_as_in_kubeconfig(
    sim: KubeSimulator, tmp_path: Path
) -> None:
    first = write_kubeconfig(tmp_path / "first", {"one": sim}, token=TOKEN)
    second = write_kubeconfig(tmp_path / "second", {"two": sim}, token=TOKEN)
    joined = os.pathsep.join([str(first), str(second)])
    async with connect(kubeconfig=joined, contexts=(), in_cluster=False) as clusters:
        assert [c.name for c in clusters] == ["one"]  # the first file's current-context
    async with connect(kubeconfig=joined, contexts=("two", "one"), in_cluster=False) as clusters:
        assert [c.name for c in clusters] == ["two", "one"]
    with pytest.raises(ClusterConfigError) as caught:
        async with connect(kubeconfig=joined, contexts=("three",), in_cluster=False):
            pass
    assert (
        str(caught.value) == f"--kube-context: no context 'three' in {joined} (contexts: one, two)"
    )
