"""Custom resources protect their images (issue 15 §2 and §3), end to end with the real CLI.

A KEDA ScaledJob, an Argo CronWorkflow and WorkflowTemplate and a Tekton Task start pods later,
with no pod between runs: with `--protect-resources` their objects protect their images. The
API-server simulator serves the CRDs under /apis/GROUP/VERSION/..., and answers 404 for a
resource not installed; ECR is the project's simulator.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sandbox.ecrsim import ThreadedEcrSimulator
from sandbox.kubesim import (
    ResourceType,
    ThreadedKubeSimulator,
    custom_object,
    pod,
    write_kubeconfig,
)
from tests.test_archive import HOST, environment

SCALED_JOBS = ResourceType("scaledjobs", "ScaledJob", "keda.sh", "v1alpha1")
CRON_WORKFLOWS = ResourceType("cronworkflows", "CronWorkflow", "argoproj.io", "v1alpha1")
WORKFLOW_TEMPLATES = ResourceType(
    "workflowtemplates", "WorkflowTemplate", "argoproj.io", "v1alpha1"
)
TASKS = ResourceType("tasks", "Task", "tekton.dev", "v1")
PIPELINES = ResourceType("pipelines", "Pipeline", "ci.example.com", "v1")
# the presets' other resources, installed so that each preset's every source is served
ARGO_REST = (
    ResourceType("workflows", "Workflow", "argoproj.io", "v1alpha1"),
    ResourceType(
        "clusterworkflowtemplates",
        "ClusterWorkflowTemplate",
        "argoproj.io",
        "v1alpha1",
        namespaced=False,
    ),
)
TEKTON_REST = (
    ResourceType("pipelines", "Pipeline", "tekton.dev", "v1"),
    ResourceType("taskruns", "TaskRun", "tekton.dev", "v1"),
    ResourceType("pipelineruns", "PipelineRun", "tekton.dev", "v1"),
)
ALL_PRESETS = "keda-scaledjobs,argo-workflows,tekton"


def scaled_job(image: str) -> dict[str, Any]:
    spec = {"jobTargetRef": {"template": {"spec": {"containers": [{"name": "w", "image": image}]}}}}
    return custom_object("keda.sh/v1alpha1", "ScaledJob", "reports", "batch", spec)


def cron_workflow(image: str) -> dict[str, Any]:
    spec = {
        "schedule": "0 3 * * *",
        "workflowSpec": {"templates": [{"name": "main", "container": {"image": image}}]},
    }
    return custom_object("argoproj.io/v1alpha1", "CronWorkflow", "nightly", "batch", spec)


def workflow_template(image: str) -> dict[str, Any]:
    spec = {"templates": [{"name": "s", "script": {"image": image, "source": "echo"}}]}
    return custom_object("argoproj.io/v1alpha1", "WorkflowTemplate", "tpl", "batch", spec)


def tekton_task(image: str) -> dict[str, Any]:
    spec = {"steps": [{"name": "build", "image": image, "script": "make"}]}
    return custom_object("tekton.dev/v1", "Task", "build", "ci", spec)


def pipeline(image: str, tool: str) -> dict[str, Any]:
    spec = {"steps": [{"image": image}], "tools": [{"image": tool}]}
    return custom_object("ci.example.com/v1", "Pipeline", "p", "ci", spec)


class World:
    """ECR with one repository of eight tagged images a day apart, and a cluster running one
    pod of the newest: everything else is due for deletion at -max-images=1."""

    def __init__(self, ecr: ThreadedEcrSimulator, kube: ThreadedKubeSimulator, path: Path):
        self.ecr, self.kube = ecr, kube
        now = datetime.now(UTC)
        ecr.create_repository("app")
        self.digests = [
            ecr.add_image("app", tags=[f"v{n}"], pushed_at=now - timedelta(days=10 - n))
            for n in range(8)
        ]
        kube.create("pods", pod("web", "shop", {"c": f"{HOST}/app@{self.digests[-1]}"}))
        self.kubeconfig = write_kubeconfig(path / "kubeconfig", {"prod": kube}, token="t")

    def image(self, n: int) -> str:
        return f"{HOST}/app:v{n}"

    def run(self, *flags: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "controller",
                "-repos=app",
                "--once",
                "-dry-run=false",
                "-max-images=1",
                "--keep-tags=",
                "--output=json",
                f"-kubeconfig={self.kubeconfig}",
                *flags,
            ],
            env=environment(self.ecr),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def left(self) -> set[int]:
        present = {i.digest for i in self.ecr.images("app")}
        return {n for n, d in enumerate(self.digests) if d in present}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    installed = (
        SCALED_JOBS,
        CRON_WORKFLOWS,
        WORKFLOW_TEMPLATES,
        TASKS,
        PIPELINES,
        *ARGO_REST,
        *TEKTON_REST,
    )
    with (
        ThreadedEcrSimulator() as ecr,
        ThreadedKubeSimulator(token="t", custom_resources=installed) as kube,
    ):
        yield World(ecr, kube, tmp_path)


def test_each_preset_protects_its_objects_images_while_no_pod_exists(world: World) -> None:
    world.kube.create("scaledjobs.keda.sh", scaled_job(world.image(1)))
    world.kube.create("cronworkflows.argoproj.io", cron_workflow(world.image(2)))
    world.kube.create("workflowtemplates.argoproj.io", workflow_template(world.image(3)))
    world.kube.create("tasks.tekton.dev", tekton_task(world.image(4)))
    result = world.run(f"--protect-resources={ALL_PRESETS}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert world.left() == {1, 2, 3, 4, 7}  # the four objects' images and the running pod's
    report = json.loads(result.stdout)
    assert report["repositories"][0]["protected"] == {"in-use-tag": 4, "in-use": 1}


def test_without_the_flag_the_same_objects_protect_nothing(world: World) -> None:
    world.kube.create("scaledjobs.keda.sh", scaled_job(world.image(1)))
    result = world.run()
    assert result.returncode == 0, result.stderr[-3000:]
    assert world.left() == {7}


def test_deleting_the_object_releases_its_image_at_the_next_cycle(world: World) -> None:
    world.kube.create("tasks.tekton.dev", tekton_task(world.image(2)))
    first = world.run("--protect-resources=tekton")
    assert first.returncode == 0, first.stderr[-3000:]
    assert world.left() == {2, 7}
    world.kube.delete("tasks.tekton.dev", "ci", "build")
    second = world.run("--protect-resources=tekton")
    assert second.returncode == 0, second.stderr[-3000:]
    assert world.left() == {7}


def test_a_generic_entry_protects_what_its_paths_reach_and_nothing_else(world: World) -> None:
    world.kube.create("pipelines.ci.example.com", pipeline(world.image(3), world.image(5)))
    entry = "ci.example.com/v1/pipelines:container=spec.steps[*];image=spec.tools[*].image"
    result = world.run(f"--protect-resources={entry}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert world.left() == {3, 5, 7}
    narrower = world.run(
        "--protect-resources=ci.example.com/v1/pipelines:image=spec.tools[*].image"
    )
    assert narrower.returncode == 0, narrower.stderr[-3000:]
    assert world.left() == {5, 7}  # spec.steps is no longer declared: its image goes


def test_an_entry_in_the_config_file_works_with_no_code_change(
    world: World, tmp_path: Path
) -> None:
    world.kube.create("pipelines.ci.example.com", pipeline(world.image(3), world.image(5)))
    config = tmp_path / "rules.yaml"
    config.write_text(
        "protect-resources:\n"
        "  - resource: ci.example.com/v1/pipelines\n"
        "    containers: ['spec.steps[*]']\n"
        "  - keda-scaledjobs\n"
    )
    world.kube.create("scaledjobs.keda.sh", scaled_job(world.image(1)))
    result = world.run(f"--config={config}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert world.left() == {1, 3, 7}


def test_a_preset_whose_crd_is_absent_refuses_to_prune_and_says_why(tmp_path: Path) -> None:
    with ThreadedEcrSimulator() as ecr, ThreadedKubeSimulator(token="t") as kube:
        w = World(ecr, kube, tmp_path)
        result = w.run("--protect-resources=keda-scaledjobs")
        assert w.left() == set(range(8))  # nothing deleted
    assert result.returncode == 1, result.stderr[-3000:]
    assert "scaledjobs.keda.sh" in result.stderr
    assert "not served (install the CRD or remove the entry)" in result.stderr
    assert json.loads(result.stdout)["refused"]


def test_a_crd_uninstalled_takes_its_protection_and_the_trust_away(world: World) -> None:
    world.kube.create("scaledjobs.keda.sh", scaled_job(world.image(1)))
    world.kube.uninstall("scaledjobs.keda.sh")
    result = world.run("--protect-resources=keda-scaledjobs")
    assert result.returncode == 1
    assert "not served" in result.stderr
    assert world.left() == set(range(8))


def test_a_source_not_served_shows_in_its_own_metric() -> None:
    import time

    from prometheus_client import CollectorRegistry

    from controller.identifiers import SourceKey
    from controller.metrics import Metrics
    from controller.trust import View

    view, registry = View(), CollectorRegistry()
    key = SourceKey("prod", "scaledjobs.keda.sh")
    view.register(key)
    Metrics(registry).watch_sources(
        view.tracker, view.index, time.monotonic, refusal=lambda: "not served"
    )
    labels = {"source_cluster": "prod", "kind": "scaledjobs.keda.sh", "source_namespace": ""}

    def value() -> float | None:
        return registry.get_sample_value("ecr_cleanup_watch_not_served", labels)

    assert value() == 0
    view.tracker.disconnected(key, time.monotonic(), "HTTP 404", status_code=404)
    assert value() == 1
    assert registry.get_sample_value("ecr_cleanup_watch_denied", labels) == 0
    view.tracker.connected(key, time.monotonic())  # the CRD installed: the next LIST works
    assert value() == 0
