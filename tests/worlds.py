"""A seeded world for end-to-end tests: moto's ECR and the API-server simulator, with the sandbox's scenario."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from sandbox.kubesim import ThreadedKubeSimulator, write_kubeconfig
from sandbox.moto import CREDENTIALS, MotoEcr, moto_server
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


@contextmanager
def seeded_world(tmp: Path) -> Iterator[World]:
    """moto and the API-server simulator, seeded with the sandbox's scenario (the AWS test
    credentials must be in the environment: the `world` fixture sets them)."""
    with moto_server() as endpoint:
        # short pages: the server answers fewer items than `limit`; the LIST must follow `continue`
        kube = ThreadedKubeSimulator(token="e2e-token", short_pages=True).start()
        try:
            ecr = MotoEcr(endpoint)
            scenario = seed(ecr, kube)
            kubeconfig = str(write_kubeconfig(tmp / "kubeconfig", {"e2e": kube}, token="e2e-token"))
            yield World(endpoint, ecr, kube, scenario, kubeconfig)
        finally:
            kube.stop()


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    with seeded_world(tmp_path) as seeded:
        yield seeded
