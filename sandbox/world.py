"""The seeded world the sandbox and the end-to-end tests run the controller in.

moto's ECR server and the API-server simulator on 127.0.0.1, seeded with `sandbox.scenario`,
and a kubeconfig for the simulator. Seeding goes through moto's own API (about 1,300
PutImage calls, seconds of work); a `Seed` is that work done once and planted again in a new
world in a fraction of the time, so that every end-to-end test still starts from a fresh,
full world.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moto.ecr.models import ecr_backends

from sandbox.kubesim import ThreadedKubeSimulator, write_kubeconfig
from sandbox.moto import ACCOUNT, CREDENTIALS, REGION, MotoEcr, moto_server
from sandbox.scenario import Scenario, seed


@dataclass
class World:
    endpoint: str
    ecr: MotoEcr
    kube: ThreadedKubeSimulator
    scenario: Scenario
    kubeconfig: str

    def env(self) -> dict[str, str]:
        return dict(
            os.environ, **CREDENTIALS, AWS_ENDPOINT_URL_ECR=self.endpoint, PYTHONUNBUFFERED="1"
        )

    def start(self, args: list[str]) -> subprocess.Popen[str]:
        """The controller as a long-running subprocess (the service)."""
        return subprocess.Popen(
            [sys.executable, "-m", "controller", *args],
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "controller", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def state(self) -> dict[str, set[str]]:
        return {repo: self.ecr.digests(repo) for repo in self.scenario.digests}


@dataclass
class _Recorder:
    """A cluster that only writes down what `seed` creates in it, in order."""

    created: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def create(self, resource: str, obj: Mapping[str, Any]) -> None:
        self.created.append((resource, copy.deepcopy(dict(obj))))


@dataclass(frozen=True)
class Seed:
    """The scenario seeded once: moto's ECR repositories as PutImage left them (push dates
    set), the cluster objects in the order they were created, and the scenario's record."""

    repositories: dict[str, Any]
    created: list[tuple[str, dict[str, Any]]]
    scenario: Scenario

    @classmethod
    def take(cls, *, progress: Callable[[str], None] = lambda _m: None) -> Seed:
        """Seed a moto server of its own through moto's API, and keep what that made."""
        with moto_server() as endpoint:
            cluster = _Recorder()
            scenario = seed(MotoEcr(endpoint), cluster, progress=progress)
            repositories = copy.deepcopy(ecr_backends[ACCOUNT][REGION].repositories)
        return cls(repositories, cluster.created, scenario)

    def plant(self, kube: ThreadedKubeSimulator) -> Scenario:
        """Put the seeded repositories into the (empty) moto server of this process, and the
        objects into `kube`; returns a copy of the scenario that the caller may change."""
        backend = ecr_backends[ACCOUNT][REGION]
        assert not backend.repositories, "plant into an empty moto server"
        backend.repositories.update(copy.deepcopy(self.repositories))
        for resource, obj in self.created:
            kube.create(resource, copy.deepcopy(obj))
        return copy.deepcopy(self.scenario)


@contextmanager
def seeded_world(
    tmp: Path,
    *,
    token: str,
    context: str,
    short_pages: bool = False,
    planted: Seed | None = None,
    progress: Callable[[str], None] = lambda _m: None,
) -> Iterator[World]:
    """moto and the API-server simulator, seeded with the sandbox's scenario (freshly through
    moto's API, or from `planted`), and a kubeconfig for the simulator in `tmp`. The AWS test
    credentials must be in the environment (`sandbox.moto.CREDENTIALS`)."""
    with moto_server() as endpoint:
        kube = ThreadedKubeSimulator(token=token, short_pages=short_pages).start()
        try:
            ecr = MotoEcr(endpoint)
            if planted is None:
                scenario = seed(ecr, kube, progress=progress)
            else:
                scenario = planted.plant(kube)
            kubeconfig = str(write_kubeconfig(tmp / "kubeconfig", {context: kube}, token=token))
            yield World(endpoint, ecr, kube, scenario, kubeconfig)
        finally:
            kube.stop()
