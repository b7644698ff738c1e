"""The HTTP server: /metrics content negotiation, the probes, 404s, quiet logs and a fast shutdown."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

import aiohttp
import anyio
import anyio.lowlevel
import pytest
from prometheus_client import CollectorRegistry, Counter

from controller.serving import listen, serve
from controller.settings import ConfigError, split_address


@pytest.fixture
def registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("ecr_cleanup_test_total", "A counter for the tests.", registry=registry).inc(3)
    return registry


@asynccontextmanager
async def running(
    registry: CollectorRegistry,
    *,
    address: str = "127.0.0.1:0",
    ready: Callable[[], str | None] = lambda: None,
) -> AsyncIterator[str]:
    """The server in a task group; yields its base URL; cancelled on exit."""
    with await listen(address) as sock:
        async with anyio.create_task_group() as tg:
            port = await tg.start(partial(serve, sock, registry=registry, ready=ready))
            yield f"http://127.0.0.1:{port}"
            tg.cancel_scope.cancel()


async def get(url: str, **headers: str) -> tuple[int, str, str]:
    """Status, Content-Type header and body text of one GET."""
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


# -- /metrics ---------------------------------------------------------------------------------


async def test_metrics_in_the_prometheus_text_format_by_default(
    registry: CollectorRegistry,
) -> None:
    async with running(registry) as url:
        status, content_type, body = await get(url + "/metrics")

    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    assert "ecr_cleanup_test_total 3.0" in body
    assert "# EOF" not in body


async def test_metrics_in_openmetrics_when_the_scraper_asks(registry: CollectorRegistry) -> None:
    # what Prometheus itself sends
    accept = (
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
        "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
    )
    async with running(registry) as url:
        status, content_type, body = await get(url + "/metrics", Accept=accept)

    assert status == 200
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert "ecr_cleanup_test_total 3.0" in body
    assert body.endswith("# EOF\n")


async def test_metrics_are_read_from_the_registry_at_each_scrape(
    registry: CollectorRegistry,
) -> None:
    counter = Counter("ecr_cleanup_later_total", "Counted between scrapes.", registry=registry)
    async with running(registry) as url:
        _, _, before = await get(url + "/metrics")
        counter.inc(2)
        _, _, after = await get(url + "/metrics")

    assert "ecr_cleanup_later_total 0.0" in before
    assert "ecr_cleanup_later_total 2.0" in after


async def test_metrics_are_gzipped_when_accepted(registry: CollectorRegistry) -> None:
    async with (
        running(registry) as url,
        aiohttp.ClientSession() as session,
        session.get(url + "/metrics", headers={"Accept-Encoding": "gzip"}) as resp,
    ):
        assert resp.headers.get("Content-Encoding") == "gzip"
        assert "ecr_cleanup_test_total 3.0" in await resp.text()  # the client inflates it


# -- probes -----------------------------------------------------------------------------------


async def test_healthz_answers_while_the_controller_is_not_ready(
    registry: CollectorRegistry,
) -> None:
    """Liveness is not readiness: a controller still listing its sources must not be killed."""
    async with running(registry, ready=lambda: "not synced: prod/pods") as url:
        health = await get(url + "/healthz")
        ready = await get(url + "/readyz")

    assert (health[0], health[2]) == (200, "ok")
    assert ready[0] == 503


async def test_readyz_says_what_is_not_ready(registry: CollectorRegistry) -> None:
    reason: list[str | None] = ["not synced: prod/pods, prod/deployments"]
    async with running(registry, ready=lambda: reason[0]) as url:
        waiting = await get(url + "/readyz")
        reason[0] = None
        ready = await get(url + "/readyz")

    assert waiting[0] == 503
    assert waiting[2] == "not synced: prod/pods, prod/deployments"
    assert ready[0] == 200
    assert ready[2] == "ok"


@pytest.mark.parametrize("path", ["/", "/metricz", "/healthz/extra", "/debug/pprof"])
async def test_other_paths_are_not_found(registry: CollectorRegistry, path: str) -> None:
    async with running(registry) as url:
        status, _, _ = await get(url + path)
    assert status == 404


async def test_only_get_is_allowed(registry: CollectorRegistry) -> None:
    async with (
        running(registry) as url,
        aiohttp.ClientSession() as session,
        session.post(url + "/metrics") as resp,
    ):
        assert resp.status == 405


# -- addresses, logs, shutdown ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        (":8080", ("", 8080)),
        ("0.0.0.0:9090", ("0.0.0.0", 9090)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:8080", ("::1", 8080)),
    ],
)
def test_split_address(address: str, expected: tuple[str, int]) -> None:
    assert split_address(address, ephemeral=True) == expected


@pytest.mark.parametrize("address", ["8080", "host:", "host:http", ":70000", "::1:8080"])
def test_split_address_rejects(address: str) -> None:
    with pytest.raises(ConfigError, match="host:port"):
        split_address(address, ephemeral=True)


def test_port_0_is_for_the_tests_servers_only() -> None:
    """One parser for the flag and for listen(): they differ only in port 0, which the flag
    refuses (the port would be unknown to the probes and the Service)."""
    with pytest.raises(ConfigError, match="a port from 1 to 65535"):
        split_address("localhost:0", field="--metrics-address")
    assert split_address("localhost:0", ephemeral=True) == ("localhost", 0)


async def test_colon_port_listens_on_all_interfaces(registry: CollectorRegistry) -> None:
    async with running(registry, address=":0") as url:
        status, _, body = await get(url + "/healthz")
    assert (status, body) == (200, "ok")


async def test_requests_are_logged_at_debug_only(
    registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        async with running(registry) as url:
            await get(url + "/healthz")
            await get(url + "/nowhere")

    assert not [r for r in caplog.records if r.levelno >= logging.INFO], caplog.text
    requests = [r.getMessage() for r in caplog.records if r.name == "controller.serving"]
    assert any("GET /healthz -> 200" in line for line in requests), requests
    assert any("GET /nowhere -> 404" in line for line in requests), requests


async def test_cancellation_shuts_down_fast_despite_open_connections(
    registry: CollectorRegistry,
) -> None:
    async with aiohttp.ClientSession() as session:
        with anyio.fail_after(1), await listen("127.0.0.1:0") as sock:
            async with anyio.create_task_group() as tg:
                port = await tg.start(
                    partial(
                        serve,
                        sock,
                        registry=registry,
                        ready=lambda: None,
                    )
                )
                # an idle keep-alive connection, and one stuck halfway through its request
                async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
                    await resp.read()
                stuck = await anyio.connect_tcp("127.0.0.1", port)
                await stuck.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                tg.cancel_scope.cancel()
            # a deadline passed inside the shielded cleanup surfaces here as TimeoutError
            await anyio.lowlevel.checkpoint()
        await stuck.aclose()


async def test_the_port_is_free_again_after_shutdown(registry: CollectorRegistry) -> None:
    async with running(registry) as url:
        port = int(url.rsplit(":", 1)[1])
    async with running(registry, address=f"127.0.0.1:{port}") as again:
        status, _, _ = await get(again + "/healthz")
    assert status == 200


async def test_an_address_in_use_fails_at_listen_naming_the_error(
    registry: CollectorRegistry,
) -> None:
    async with running(registry) as url:
        port = int(url.rsplit(":", 1)[1])
        with pytest.raises(OSError, match="in use"):
            await listen(f"127.0.0.1:{port}")


async def test_an_address_this_host_does_not_have_fails_at_listen() -> None:
    with pytest.raises(OSError, match="assign requested address"):
        await listen("192.0.2.1:0")  # TEST-NET-1: never a local address
