"""End to end: the controller as a long-running service (a subprocess) against the simulators.

A real Prometheus scrapes its /metrics and the values are checked against the actual state
of ECR and the cluster; SIGTERM arrives while a delete call is in flight; two replicas share
one Lease, exactly one prunes, and the other takes over when the leader is killed.
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
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sandbox.ecrsim import ThreadedEcrSimulator
from sandbox.kubesim import ThreadedKubeSimulator, pod, write_kubeconfig
from sandbox.moto import CREDENTIALS
from sandbox.ports import free_port
from sandbox.scenario import MAX_IMAGES, UNSELECTED, controller_args
from tests.prometheus import prometheus
from tests.worlds import World, world

__all__ = ["world"]  # the fixture

DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


class Process:
    """A controller subprocess whose output is collected line by line as it comes."""

    def __init__(self, popen: subprocess.Popen[str]) -> None:
        self.popen = popen
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.drains = [
            threading.Thread(target=self._drain, args=(stream, sink), daemon=True)
            for stream, sink in ((popen.stdout, self.stdout), (popen.stderr, self.stderr))
        ]
        for drain in self.drains:
            drain.start()

    @staticmethod
    def _drain(stream: object, sink: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            sink.append(line)

    def wait_until(self, predicate: Callable[[], bool], within: float, what: str) -> None:
        deadline = time.monotonic() + within
        while not predicate():
            assert self.popen.poll() is None, (
                f"controller exited ({self.popen.returncode}) before {what}:\n{self.log()}"
            )
            assert time.monotonic() < deadline, f"no {what} within {within}s:\n{self.log()}"
            time.sleep(0.05)

    def cycles(self) -> int:
        return sum(line.startswith("total: ") for line in self.stdout)

    def count(self, needle: str) -> int:
        return sum(needle in line for line in self.stderr)

    def log(self) -> str:
        return "".join(self.stderr[-40:]) + "".join(self.stdout[-20:])

    def terminate(self, within: float = 30.0) -> int:
        self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout=within)

    def close(self) -> None:
        """Kill it if still running, then collect the rest of its output and close the pipes."""
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(timeout=10)
        for drain in self.drains:
            drain.join(timeout=10)
        for stream in (self.popen.stdout, self.popen.stderr):
            if stream is not None:
                stream.close()


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def digests_in(kube: ThreadedKubeSimulator) -> set[str]:
    """Every digest the cluster's objects mention, found independently of the controller's parser."""
    found: set[str] = set()
    for resource in (
        "pods",
        "deployments",
        "replicasets",
        "statefulsets",
        "daemonsets",
        "jobs",
        "cronjobs",
    ):
        found.update(DIGEST.findall(json.dumps(kube.list(resource))))
    return found


def service_args(world: World, port: int, *extra: str) -> list[str]:
    args = [a for a in controller_args(world.kubeconfig, go_style=False) if a != "--once"]
    return [
        *args,
        "--dry-run=false",
        "--interval=1h",
        f"--metrics-address=127.0.0.1:{port}",
        "--lease-namespace=default",
        *extra,
    ]


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        process.close()


def test_a_real_prometheus_scrapes_values_that_match_the_actual_state(
    world: World, tmp_path: Path, processes: list[Process]
) -> None:
    before = world.state()
    port = free_port()
    controller = Process(world.start(service_args(world, port)))
    processes.append(controller)
    with prometheus(f"127.0.0.1:{port}", tmp_path) as prom:
        controller.wait_until(lambda: controller.cycles() >= 1, 60, "first cycle")
        after = world.state()
        for repo in ("shop/api", "shop/web", "batch/reports", "docker-hub/library/nginx"):
            selector = f'{{repository="{repo}"}}'
            prom.wait_for(f"ecr_cleanup_repository_images{selector}", len(after[repo]))
            assert prom.value(f"ecr_cleanup_images_deleted_total{selector}") == len(
                before[repo]
            ) - len(after[repo])
            protected = prom.value(f"sum(ecr_cleanup_protected_images{selector})")
            assert protected is not None
            assert protected >= len(world.scenario.must_survive(repo))
        assert len(after["shop/api"]) == MAX_IMAGES
        assert after[UNSELECTED] == before[UNSELECTED]
        assert prom.value('ecr_cleanup_cycles_total{result="ok"}') == 1
        assert prom.value("ecr_cleanup_leader") == 1
        assert prom.value("ecr_cleanup_view_trusted") == 1
        assert prom.value('ecr_cleanup_watched_objects{kind="pods"}') == len(
            world.kube.list("pods")
        )
        assert prom.value("ecr_cleanup_images_in_use") == len(digests_in(world.kube))
        assert (
            prom.value('ecr_cleanup_ecr_api_calls_total{operation="BatchDeleteImage"}') or 0
        ) >= 1
        assert (prom.value("ecr_cleanup_last_success_timestamp_seconds") or 0) > time.time() - 120
        assert prom.value('ecr_cleanup_build_info{version="0.1.0"}') == 1

        # the live view follows the cluster between cycles, with no re-list
        world.kube.create(
            "pods", pod("late", "shop", {"c": world.scenario.ref("shop/api", "build-399")})
        )
        prom.wait_for('ecr_cleanup_watched_objects{kind="pods"}', len(world.kube.list("pods")))
        assert prom.value('sum(ecr_cleanup_watch_relists_total{kind="pods"})') == 0

    assert get(f"http://127.0.0.1:{port}/readyz") == (200, "ok")
    assert get(f"http://127.0.0.1:{port}/healthz") == (200, "ok")
    assert controller.terminate() == 0
    assert controller.count("controller.app stopped") == 1


def test_sigterm_mid_delete_finishes_that_call_starts_no_other_and_exits_0(
    tmp_path: Path, processes: list[Process]
) -> None:
    now = datetime.now(UTC)
    with ThreadedEcrSimulator() as ecr, ThreadedKubeSimulator(token="t") as kube:
        ecr.create_repository("app")
        digests = [
            ecr.add_image(
                "app", tags=(f"b{n}",), pushed_at=now - timedelta(hours=n), config_seed=f"s{n}"
            )
            for n in range(400)
        ]
        in_use = digests[350]  # among the oldest: in a later delete batch
        host = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
        kube.create(
            "pods",
            pod("p", "ns", {"c": f"{host}/app:b350"}, image_ids={"c": f"{host}/app@{in_use}"}),
        )
        ecr.set_latency("BatchDeleteImage", 3.0)
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"sim": kube}, token="t")
        port = free_port()
        env = dict(
            os.environ, **CREDENTIALS, AWS_ENDPOINT_URL_ECR=ecr.endpoint_url, PYTHONUNBUFFERED="1"
        )
        args = [
            f"--kubeconfig={kubeconfig}",
            "--repos=app",
            "--max-images=10",
            "--dry-run=false",
            "--interval=1h",
            f"--metrics-address=127.0.0.1:{port}",
            "--lease-namespace=default",
        ]
        controller = Process(
            subprocess.Popen(
                [sys.executable, "-m", "controller", *args],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
        processes.append(controller)
        controller.wait_until(
            lambda: controller.count("deleting 100 image(s) from app:") >= 1,
            60,
            "the first delete call",
        )
        time.sleep(0.5)  # the call is on the wire, its answer 2.5 s away
        started = time.monotonic()
        assert controller.terminate() == 0
        assert time.monotonic() - started < 30  # well within a 30 s grace period
        remaining = ecr.digests("app")
        assert ecr.calls["BatchDeleteImage"] == 1  # the in-flight call finished; no other started
        assert len(remaining) == 400 - 100
        assert in_use in remaining
        assert controller.count("received SIGTERM") == 1


def test_two_replicas_exactly_one_prunes_and_the_other_takes_over(
    world: World, tmp_path: Path, processes: list[Process]
) -> None:
    lease = ("--lease-duration=3s", "--interval=2s", "--interval-jitter=0")
    first = Process(world.start(service_args(world, free_port(), *lease)))
    processes.append(first)
    first.wait_until(lambda: first.cycles() >= 1, 60, "the leader's first cycle")
    second = Process(world.start(service_args(world, free_port(), *lease)))
    processes.append(second)
    second.wait_until(
        lambda: second.count("first cycle waits: not-leader") >= 1, 60, "the standby waiting"
    )
    first.wait_until(lambda: first.cycles() >= 3, 30, "more leader cycles")
    assert second.cycles() == 0  # every replica watches; only the leader prunes

    first.popen.kill()  # no release: the Lease must expire
    killed = time.monotonic()
    # CI pushes more: the new leader has something to prune
    for n in range(5):
        world.ecr.push("shop/api", f"after-kill-{n}", f"after-{n}")
    second.wait_until(lambda: second.count("became leader of Lease") >= 1, 30, "the takeover")
    took = time.monotonic() - killed
    # as in client-go, the standby times the 3 s lease from when *it* saw the last renewal, which
    # is up to one poll (0.4-0.88 s) after that renewal, and notices the expiry at its next poll:
    # at most lease + 2 polls after the kill, plus up to 1 s for a loaded machine to log it
    assert took < 3 + 2 * 0.88 + 1.0, took
    second.wait_until(lambda: second.cycles() >= 1, 30, "the new leader's first cycle")
    assert len(world.state()["shop/api"]) == MAX_IMAGES
    assert second.terminate() == 0


def test_the_lease_is_released_only_after_the_in_flight_delete_returned(
    tmp_path: Path, processes: list[Process]
) -> None:
    # before: SIGTERM released the Lease within milliseconds while the shielded delete call
    # went on for seconds, so the standby could start deleting alongside it
    now = datetime.now(UTC)
    with ThreadedEcrSimulator() as ecr, ThreadedKubeSimulator(token="t") as kube:
        ecr.create_repository("app")
        for n in range(400):
            ecr.add_image(
                "app", tags=(f"b{n}",), pushed_at=now - timedelta(hours=n), config_seed=f"s{n}"
            )
        host = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
        kube.create("pods", pod("p", "ns", {"c": f"{host}/app:b0"}))
        ecr.set_latency("BatchDeleteImage", 3.0)
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"sim": kube}, token="t")
        args = [
            f"--kubeconfig={kubeconfig}",
            "--repos=app",
            "--max-images=10",
            "--dry-run=false",
            "--interval=1h",
            "--lease-namespace=default",
            "--lease-duration=3s",
        ]

        def replica(key: str) -> Process:
            env = {
                **os.environ,
                **CREDENTIALS,
                "AWS_ACCESS_KEY_ID": key,  # tells the replicas' requests apart at the simulator
                "AWS_ENDPOINT_URL_ECR": ecr.endpoint_url,
                "PYTHONUNBUFFERED": "1",
            }
            process = Process(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "controller",
                        *args,
                        f"--metrics-address=127.0.0.1:{free_port()}",
                    ],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
            processes.append(process)
            return process

        leader = replica("AKIDLEADER")
        leader.wait_until(
            lambda: leader.count("deleting 100 image(s) from app:") >= 1,
            60,
            "the first delete call",
        )
        standby = replica("AKIDSTANDBY")
        standby.wait_until(
            lambda: standby.count("first cycle waits: not-leader") >= 1, 60, "the standby waiting"
        )
        leader.wait_until(
            lambda: leader.count("deleting 100 image(s) from app:") >= 2, 30, "a later delete call"
        )
        time.sleep(0.5)  # that call is on the wire, its answer 2.5 s away
        assert leader.terminate() == 0
        standby.wait_until(
            lambda: any(
                r.caller == "AKIDSTANDBY" and r.operation == "BatchDeleteImage"
                for r in ecr.requests
            ),
            60,
            "the standby's first delete call",
        )
        deletes = [r for r in ecr.requests if r.operation == "BatchDeleteImage"]
        leaders = [r for r in deletes if r.caller == "AKIDLEADER"]
        standbys = [r for r in deletes if r.caller == "AKIDSTANDBY"]
        assert leaders
        assert standbys
        last_returned = max(r.answered_at for r in leaders)
        first_started = min(r.received_at for r in standbys)
        assert first_started > last_returned, (first_started - last_returned, leader.log())
        log = "".join(leader.stderr)
        assert log.index("no delete call in flight") < log.index("released Lease")
        assert standby.terminate() == 0
