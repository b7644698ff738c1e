"""A server stopped while a connection is being accepted closes that connection too.

Python 3.11's asyncio accepts a connection in one loop iteration and builds its transport in a
later one. A server closed in between makes the transport's constructor fail on an assertion
(`Server._attach`: its sockets are None), which asyncio swallows without a word unless in debug
mode; the half-built transport and its accepted socket are dropped unclosed. Garbage collection
reports them later, during whichever test runs then, as `ResourceWarning: unclosed transport`:
an error under `filterwarnings = error` that failed CI twice, in tests that had nothing to do
with it. A client connects while a server stops whenever a controller retries its watch, or
makes its next ECR call, as a test ends.

Each case connects, lets the loop run `iterations` times (the accept falls on one of them),
stops the server, and collects garbage. Every server the suite runs is covered: the ECR
simulator, the API-server simulator (both through `sandbox.ports.stop_runner`) and the
controller's own HTTP endpoint (`controller.serving.serve`).
"""

from __future__ import annotations

import asyncio
import gc
import socket
import warnings
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from functools import partial

import anyio
import pytest
from prometheus_client import CollectorRegistry

from controller.serving import listen, serve
from sandbox.ecrsim import EcrSimulator
from sandbox.kubesim import KubeSimulator

ITERATIONS = range(5)


@contextmanager
def no_unclosed_sockets() -> Iterator[None]:
    """Fails if garbage collection finds a socket or a transport left open in the block."""
    gc.collect()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield
        gc.collect()
    leaked = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaked == []


async def connect_then_run(port: int, iterations: int) -> socket.socket:
    """A client connected to `port` (the kernel has completed it: the listener is readable),
    after which the loop runs `iterations` times before the caller goes on."""
    client = socket.create_connection(("127.0.0.1", port), timeout=5)
    for _ in range(iterations):
        await asyncio.sleep(0)
    return client


async def stop_while_accepting(
    port: int, iterations: int, stop: Callable[[], Awaitable[object]]
) -> None:
    client = await connect_then_run(port, iterations)
    try:
        await stop()
    finally:
        client.close()


@pytest.mark.parametrize("iterations", ITERATIONS)
async def test_the_ecr_simulator(iterations: int) -> None:
    with no_unclosed_sockets():
        sim = EcrSimulator()
        await sim.start()
        port = int(sim.endpoint_url.rsplit(":", 1)[1])
        await stop_while_accepting(port, iterations, sim.close)


@pytest.mark.parametrize("iterations", ITERATIONS)
async def test_the_api_server_simulator(iterations: int) -> None:
    with no_unclosed_sockets():
        sim = await KubeSimulator().start()
        await stop_while_accepting(sim.port, iterations, sim.stop)


@pytest.mark.parametrize("iterations", ITERATIONS)
async def test_the_controllers_endpoint(iterations: int) -> None:
    with no_unclosed_sockets(), await listen("127.0.0.1:0") as sock:
        async with anyio.create_task_group() as tg:
            port = await tg.start(
                partial(serve, sock, registry=CollectorRegistry(), ready=lambda: None)
            )
            client = await connect_then_run(port, iterations)
            tg.cancel_scope.cancel()
        client.close()
