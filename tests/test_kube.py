"""kubernetes_asyncio imported without its generated models, and still whole when asked for."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
import controller.app  # everything the controller imports
loaded = [m for m in sys.modules if m.startswith("kubernetes_asyncio")]
print(len(loaded), sum(m.startswith("kubernetes_asyncio.client.models.") for m in loaded))
from kubernetes_asyncio.client import V1Pod, ApiClient  # the whole library, on demand
from kubernetes_asyncio.watch import Watch
from kubernetes_asyncio import client
assert client.ApiClient is ApiClient and V1Pod.__name__ == "V1Pod" and Watch
print(sum(m.startswith("kubernetes_asyncio.client.models.") for m in sys.modules))
"""


def test_the_controller_loads_no_model_and_the_library_stays_whole() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=120
    )
    first, after = result.stdout.splitlines()
    modules, models = (int(n) for n in first.split())
    assert models == 0
    assert modules < 40  # the configuration, the REST client, five API classes, the config loader
    assert int(after) > 500  # asked for, every model is there


def test_the_api_classes_the_controller_uses_are_the_library_s_own() -> None:
    from kubernetes_asyncio.client.api.core_v1_api import CoreV1Api
    from kubernetes_asyncio.client.api_client import ApiClient

    from controller.kube import client

    assert client.CoreV1Api is CoreV1Api
    assert client.ApiClient is ApiClient
