"""The rendered Deployment runs: the chart's container args, env and files start the real controller.

For the default values and the all-features file, `helm template` gives the container's args
and env and the ConfigMap/Secret files it mounts. The test plays the kubelet: it puts those
files where the pod would see them (under a temporary root), starts `python -m controller`
with exactly the rendered args, replacing only the connection (`--in-cluster` by a kubeconfig
for the API-server simulator; the mounted kubeconfig Secret by one naming the simulators) and
pointing ECR at moto (AWS_ENDPOINT_URL_ECR). The simulator enforces the rendered RBAC: every
verb on every resource the chart's Roles do not grant answers 403. The pod must become ready
on the port and paths its probes name, run a cycle, and exit 0 on SIGTERM within its grace
period.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.resources import resolve
from sandbox.kubesim import RESOURCES, ResourceType, ThreadedKubeSimulator, pod, write_kubeconfig
from sandbox.moto import CREDENTIALS
from sandbox.ports import free_port
from sandbox.scenario import UNSELECTED
from tests.chart import (
    ALL_FEATURES,
    BARE,
    NAMESPACE,
    Grants,
    Rendered,
    grants_of,
    merged,
    render,
)
from tests.worlds import World, world

__all__ = ["world"]  # the fixture

VERBS = ("get", "list", "watch", "create", "update", "delete")
POD_NAME = "ecr-cleanup-7d9f8b6c5-x2x4q"


def enforce_rbac(kube: ThreadedKubeSimulator, grants: Grants, namespaces: Iterable[str]) -> None:
    """Deny every (resource, verb) the grants do not give, cluster-wide or per namespace.

    As in RBAC, a namespaced grant allows only that namespace: every other namespace is denied,
    which also denies the all-namespaces LIST/WATCH. Grants narrowed to resourceNames count for
    their namespace (the simulator's denials are not per name).
    """
    for rt in kube.resource_types:  # the built-in kinds and the custom resources installed
        for verb in VERBS:
            scopes = {
                scope
                for (scope, group, granted, _names), verbs in grants.items()
                if group == rt.group and granted == rt.plural and verb in verbs
            }
            if "cluster" in scopes:
                continue
            if not scopes:
                kube.deny(rt.key, None, [verb])
            if rt.namespaced:
                for namespace in set(namespaces) - scopes:
                    kube.deny(rt.key, namespace, [verb])


def namespaces_of(kube: ThreadedKubeSimulator) -> set[str]:
    found = {NAMESPACE, "default", "kube-system"}
    for resource in RESOURCES:
        found |= {o["metadata"]["namespace"] for o in kube.list(resource)}
    return found


@dataclass
class Pod:
    """What the kubelet would run for the rendered Deployment, on this machine."""

    args: list[str]
    env: dict[str, str]
    port: int
    readiness: str
    liveness: str
    grace: int
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)

    @classmethod
    def from_rendered(
        cls, r: Rendered, root: Path, *, kubeconfig: Path | None, secrets: dict[str, str]
    ) -> Pod:
        container = r.container
        volumes = {v["name"]: v for v in r.pod_spec.get("volumes", [])}
        mounts: dict[str, Path] = {}
        for mount in container.get("volumeMounts", []):
            target = root / mount["mountPath"].lstrip("/")
            target.mkdir(parents=True, exist_ok=True)
            mounts[mount["mountPath"]] = target
            volume = volumes[mount["name"]]
            if "configMap" in volume:
                (configmap,) = [
                    o
                    for o in r.all("ConfigMap")
                    if o["metadata"]["name"] == volume["configMap"]["name"]
                ]
                for key, text in configmap["data"].items():
                    (target / key).write_text(text)
            elif "secret" in volume:
                name = volume["secret"]["secretName"]
                for item in volume["secret"]["items"]:
                    (target / item["path"]).write_text(secrets[f"{name}/{item['key']}"])
            else:  # the emptyDir for /tmp: this machine's /tmp stands in for it
                assert "emptyDir" in volume, volume
                del mounts[mount["mountPath"]]
        args = []
        for arg in container["args"]:
            if arg == "--in-cluster=true":  # the only connection the test replaces
                assert kubeconfig is not None
                arg = f"--kubeconfig={kubeconfig}"
            flag, equals, value = arg.partition("=")
            for mount_path, target in mounts.items():  # a file the pod reads from a mount
                if equals and value.startswith(mount_path + "/"):
                    arg = f"{flag}={target}{value.removeprefix(mount_path)}"
            args.append(arg)
        env = {
            "PATH": os.environ["PATH"],
            "PYTHONUNBUFFERED": "1",  # as the image sets
            "PYTHONDONTWRITEBYTECODE": "1",
            **CREDENTIALS,
        }
        for variable in container.get("env", []):
            if "value" in variable:
                env[variable["name"]] = variable["value"]
            else:  # the downward API
                field_path = variable["valueFrom"]["fieldRef"]["fieldPath"]
                env[variable["name"]] = {
                    "metadata.name": POD_NAME,
                    "metadata.namespace": NAMESPACE,
                }[field_path]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        readiness = container["readinessProbe"]["httpGet"]
        liveness = container["livenessProbe"]["httpGet"]
        assert readiness["port"] == liveness["port"]
        return cls(
            args=args,
            env=env,
            port=ports[readiness["port"]],
            readiness=readiness["path"],
            liveness=liveness["path"],
            grace=r.pod_spec["terminationGracePeriodSeconds"],
        )

    def start(self, endpoint: str, cwd: Path) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-m", "controller", *self.args],
            # moto serves ECR and, for --protect-ecs and --protect-lambda, ECS, Lambda and STS
            env={**self.env, "AWS_ENDPOINT_URL_ECR": endpoint, "AWS_ENDPOINT_URL": endpoint},
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for stream, sink in ((process.stdout, self.stdout), (process.stderr, self.stderr)):
            threading.Thread(target=_drain, args=(stream, sink), daemon=True).start()
        return process

    def log(self) -> str:
        return "".join(self.stderr[-30:]) + "".join(self.stdout[-30:])


def _drain(stream: Any, sink: list[str]) -> None:
    for line in stream:
        sink.append(line)


def probe(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        error.close()
        return int(error.code)
    except OSError:
        return 0


def reports(text: str) -> list[Any]:
    """The cycle reports on stdout: JSON documents one after the other (--output json)."""
    decoder, index = json.JSONDecoder(), 0
    found: list[Any] = []
    while True:
        while index < len(text) and text[index].isspace():
            index += 1
        if index >= len(text):
            return found
        try:
            document, index = decoder.raw_decode(text, index)
        except json.JSONDecodeError:
            return found  # a document still being written
        found.append(document)


def wait_until(
    predicate: Callable[[], bool], process: subprocess.Popen[str], pod: Pod, what: str
) -> None:
    deadline = time.monotonic() + 90
    while not predicate():
        assert process.poll() is None, f"exited ({process.returncode}) before {what}:\n{pod.log()}"
        assert time.monotonic() < deadline, f"no {what} within 90 s:\n{pod.log()}"
        time.sleep(0.1)


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[str]]]:
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def run_the_pod(
    pod_: Pod, world: World, tmp_path: Path, started: list[subprocess.Popen[str]]
) -> tuple[subprocess.Popen[str], float]:
    """Start it; wait for the probes to pass and a cycle report; then SIGTERM it."""
    process = pod_.start(world.endpoint, cwd=tmp_path)
    started.append(process)
    wait_until(lambda: probe(pod_.port, pod_.liveness) == 200, process, pod_, "a live /healthz")
    wait_until(lambda: probe(pod_.port, pod_.readiness) == 200, process, pod_, "a ready /readyz")
    wait_until(
        lambda: "total: " in "".join(pod_.stdout) or bool(reports("".join(pod_.stdout))),
        process,
        pod_,
        "a cycle report",
    )
    process.send_signal(signal.SIGTERM)
    terminated = time.monotonic()
    code = process.wait(timeout=pod_.grace)
    assert code == 0, pod_.log()
    return process, time.monotonic() - terminated


def test_the_default_deployment_runs_a_dry_run_cycle(
    world: World, tmp_path: Path, started: list[subprocess.Popen[str]]
) -> None:
    port = free_port()  # the pod's own network namespace, played by a free port
    r = render(merged(BARE, {"metrics": {"port": port}}))
    kubeconfig = write_kubeconfig(
        tmp_path / "sim-kubeconfig", {"e2e": world.kube}, token="e2e-token"
    )
    enforce_rbac(world.kube, grants_of(r), namespaces_of(world.kube))
    pod_ = Pod.from_rendered(r, tmp_path / "root", kubeconfig=kubeconfig, secrets={})
    assert pod_.port == port
    assert (pod_.readiness, pod_.liveness) == ("/readyz", "/healthz")
    before = world.state()

    _, stopping = run_the_pod(pod_, world, tmp_path, started)

    out = "".join(pod_.stdout)
    assert "(dry-run: nothing was deleted)" in out
    assert "REFUSED" not in out
    for repository in ("shop/api", "shop/web", "batch/reports", "docker-hub/library/nginx"):
        assert re.search(rf"^{re.escape(repository)}\s.*\sok$", out, re.MULTILINE), out
    assert world.state() == before  # a bare install deletes nothing
    assert stopping < pod_.grace
    lease = world.kube.get("leases", NAMESPACE, "kube-ecr-cleanup-controller")
    assert lease is not None  # leader election in the release namespace
    assert not [line for line in pod_.stderr if "403" in line or "forbidden" in line.lower()]


def test_the_all_features_deployment_prunes_two_clusters_safely(
    world: World, tmp_path: Path, started: list[subprocess.Popen[str]]
) -> None:
    port = free_port()
    # disposal delete: this world is moto's, which models no storage class (the archive mode
    # runs against the ECR simulator, in tests/test_archive.py)
    r = render({"metrics": {"port": port}, "disposal": "delete"}, files=[ALL_FEATURES])
    features = yaml.safe_load(ALL_FEATURES.read_text())
    # the CRDs of protectResources, installed in both clusters (one not served refuses)
    custom = [
        ResourceType(e.resource, e.resource.title(), e.group, e.version, namespaced=e.namespaced)
        for e in resolve(features["protectResources"])
    ]
    # a second cluster: staging runs an old shop/api build that production does not use
    with ThreadedKubeSimulator(token="staging-token", custom_resources=custom) as staging:
        for rt in custom:
            world.kube.install(rt)
        old = world.scenario.image_id("shop/api", "build-5")
        staging.create(
            "pods",
            pod(
                "api-0",
                "shop",
                {"api": world.scenario.ref("shop/api", "build-5")},
                image_ids={"api": old},
            ),
        )
        production, second = features["kubeContexts"]
        secret_kubeconfig = write_kubeconfig(
            tmp_path / "secret-kubeconfig", {production: world.kube, second: staging}
        )
        text = secret_kubeconfig.read_text()  # each context with its cluster's own token
        secret = f"{features['kubeconfig']['secretName']}/{features['kubeconfig']['key']}"
        enforce_rbac(world.kube, grants_of(r), namespaces_of(world.kube))
        pod_ = Pod.from_rendered(r, tmp_path / "root", kubeconfig=None, secrets={secret: text})
        assert not any(a.startswith("--in-cluster") for a in pod_.args)
        assert pod_.port == port
        assert pod_.env["AWS_STS_REGIONAL_ENDPOINTS"] == "regional"
        assert pod_.env["POD_NAME"] == POD_NAME
        before = world.state()

        _, stopping = run_the_pod(pod_, world, tmp_path, started)

    (report,) = reports("".join(pod_.stdout))
    assert report["ok"] is True, report
    assert report["dry_run"] is False
    after = world.state()
    for repository, digests in after.items():
        if repository != UNSELECTED:
            assert world.scenario.must_survive(repository) <= digests, repository
    assert after[UNSELECTED] == before[UNSELECTED]
    assert len(after["shop/api"]) == features["maxImages"]
    # the per-repository rules of the mounted --config file
    overrides = {o["name"]: o for o in features["repositoryOverrides"]}
    assert len(after["batch/reports"]) == overrides["batch/reports"]["maxImages"]
    assert len(after["docker-hub/library/nginx"]) == overrides["docker-hub/*"]["maxImages"]
    # the second cluster's usage protected its image; its neighbour went
    shop_api = world.scenario.digests["shop/api"]
    assert shop_api["build-5"] in after["shop/api"]
    assert shop_api["build-6"] not in after["shop/api"]
    assert stopping < pod_.grace
    assert world.kube.get("leases", NAMESPACE, features["leaderElection"]["leaseName"]) is not None
    log = [json.loads(line) for line in pod_.stderr if line.startswith("{")]
    assert log, "--log-format json"
    assert any(entry.get("level") == "DEBUG" for entry in log)  # verbosity 1


def test_enforced_rbac_answers_403_for_what_the_chart_does_not_grant() -> None:
    """The enforcement above is live: what the rendered Roles do not grant is forbidden."""

    def status(kube: ThreadedKubeSimulator, path: str) -> int:
        try:
            with urllib.request.urlopen(f"{kube.url}{path}", timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            error.close()
            return int(error.code)

    with ThreadedKubeSimulator() as kube:
        enforce_rbac(kube, grants_of(render(BARE)), {NAMESPACE, "default", "shop"})
        assert status(kube, "/api/v1/pods") == 200
        assert status(kube, "/apis/batch/v1/cronjobs") == 200
        assert status(kube, "/apis/apps/v1/controllerrevisions") == 403  # not in the default set
        lease = "apis/coordination.k8s.io/v1/namespaces/{}/leases/kube-ecr-cleanup-controller"
        assert status(kube, "/" + lease.format(NAMESPACE)) == 404  # may get; there is none
        assert status(kube, "/" + lease.format("default")) == 403
    with ThreadedKubeSimulator() as kube:
        namespaced = render(merged(BARE, {"namespaces": ["shop"]}))
        enforce_rbac(kube, grants_of(namespaced), {NAMESPACE, "default", "shop"})
        assert status(kube, "/api/v1/namespaces/shop/pods") == 200
        assert status(kube, "/api/v1/namespaces/default/pods") == 403
        assert status(kube, "/api/v1/pods") == 403  # all namespaces need a ClusterRole
