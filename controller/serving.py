"""The HTTP endpoints: /metrics for Prometheus, /healthz and /readyz for the kubelet's probes.

/healthz says that the event loop answers, and nothing more. The watchers and the scheduler
run on that loop and retry their failures on their own; one that fails for good ends the whole
task group and the process, so no task can stop while the process runs on. What a restart can
fix is a loop that no longer answers, and the kubelet sees that as a probe timeout.

One aiohttp server inside the caller's task group (asyncio backend), until cancelled. The
exposition is generated on the event loop, not in a thread: the scrape-time collectors read
the in-use index and the source tracker, which only the loop's tasks change, so every
scrape sees a consistent state without locks. Requests are logged at DEBUG only, so a
scrape every 15 s and two probes every 10 s do not flood the INFO log.

Hardened against slow and idle clients (the port is reachable from the whole cluster network
unless a NetworkPolicy narrows it): a connection must send a complete request head within
`IDLE_TIMEOUT` of opening, or of its previous answer (slowloris, idle keep-alive), and at most
`MAX_CONNECTIONS` are open at once; more are reset as soon as accepted, so that clients cannot use
up the file descriptors the watches and the ECR calls need. aiohttp bounds the request line and
headers (8190 bytes each, 128 headers) and answers malformed requests with 400.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

import anyio
import anyio.abc
from aiohttp import hdrs, web
from aiohttp.abc import AbstractAccessLogger
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from controller.settings import split_address

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT = 0.25
"""Seconds an in-flight request gets to finish once the server is told to stop."""

CLEANUP_DEADLINE = 0.75
"""Seconds after which the shielded cleanup is abandoned, whatever is left."""

IDLE_TIMEOUT = 5.0
"""Seconds a connection may stay without a complete request head: from when it opens (a client
that sends nothing, or a byte at a time), and between requests on a kept-alive one. Probes and
Prometheus send a whole request at once and reconnect when an idle connection was closed."""

MAX_CONNECTIONS = 128
"""Open connections at most (the probes and a few scrapers need a handful); more are reset."""


async def listen(address: str) -> socket.socket:
    """A socket bound to `address` (`host:port`, `[v6]:port` or `:port`); raises OSError.

    Bound before anything else starts, so that a port in use or an address this host does not
    have is a start-up error naming the address, not a failure deep inside the task group.
    Port 0 binds any free port (the tests' servers); `--metrics-address` never allows it."""
    host, port = split_address(address, ephemeral=True)
    return await _listen(host, port)


async def serve(
    sock: socket.socket,
    *,
    registry: CollectorRegistry,
    ready: Callable[[], str | None],
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve /metrics, /healthz and /readyz on the bound `sock` until cancelled.

    `ready()` returns why the controller is not ready yet (e.g. which sources have not synced), or None.
    Reports the bound port (useful with port 0) through `task_status.started`. The caller
    owns the socket and closes it.
    """
    runner = web.AppRunner(
        _application(registry, ready),
        handle_signals=False,
        access_log_class=_DebugAccessLogger,
        access_log=log,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
        keepalive_timeout=IDLE_TIMEOUT,
    )
    listener: asyncio.Server | None = None
    try:
        await runner.setup()
        listener = await _start_listener(runner.server, sock)
        bound: int = sock.getsockname()[1]
        log.debug("listening on port %d", bound)
        task_status.started(bound)
        await anyio.sleep_forever()
    finally:
        with anyio.move_on_after(CLEANUP_DEADLINE, shield=True) as scope:
            if listener is not None:
                await stop_accepting(sock)
                listener.close()
            await runner.cleanup()
        if scope.cancelled_caught:
            log.warning("HTTP server cleanup took over %.2fs; abandoned", CLEANUP_DEADLINE)


async def stop_accepting(sock: socket.socket) -> None:
    """Accept nothing more on the listening `sock`, and let the loop finish what it has accepted,
    so that closing the server next closes every connection it took.

    Python 3.11's asyncio accepts a connection in one loop iteration and makes its transport in
    a later one. A server closed in between makes that transport's constructor fail (an
    assertion in `Server._attach`), asyncio says nothing of it outside debug mode, and the
    accepted socket stays open until the garbage collector finds it (`ResourceWarning`). With
    the listener's reader removed first, no accept falls in that gap; connections still in the
    kernel's backlog are reset when the socket closes."""
    asyncio.get_running_loop().remove_reader(sock.fileno())
    for _ in range(ACCEPT_ITERATIONS):
        await asyncio.sleep(0)


ACCEPT_ITERATIONS = 3
"""Loop iterations from an accept already under way to aiohttp's `connection_made`: the accept
callback, the task that makes the transport, then the transport's scheduled callbacks."""


async def _start_listener(server: web.Server | None, sock: socket.socket) -> asyncio.Server:
    """Accept on `sock` for aiohttp's `server`, resetting connections beyond MAX_CONNECTIONS."""
    assert server is not None  # AppRunner.setup() made it

    def connection() -> asyncio.Protocol:
        if len(server.connections) >= MAX_CONNECTIONS:
            return _Refused()
        return server()

    return await asyncio.get_running_loop().create_server(connection, sock=sock)


class _Refused(asyncio.Protocol):
    """A connection over the limit: reset at once, its descriptor freed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        log.debug("over %d connections: one reset", MAX_CONNECTIONS)
        assert isinstance(transport, asyncio.Transport)
        transport.abort()


def _application(registry: CollectorRegistry, ready: Callable[[], str | None]) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        accept = ",".join(request.headers.getall(hdrs.ACCEPT, []))
        encode, content_type = choose_encoder(accept)
        response = web.Response(body=encode(registry), headers={hdrs.CONTENT_TYPE: content_type})
        response.enable_compression()  # gzip when the scraper accepts it (Prometheus does)
        return response

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_request: web.Request) -> web.Response:
        reason = ready()
        if reason is None:
            return web.Response(text="ok")
        return web.Response(status=503, text=reason)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def _listen(host: str, port: int) -> socket.socket:
    """A bound TCP socket: one dual-stack socket for all interfaces, else the host's first address.

    One socket, so that port 0 yields one port (asyncio would bind IPv4 and IPv6 apart, each
    to its own ephemeral port).
    """
    if not host:
        try:
            return _bind(socket.AF_INET6, ("::", port), dual_stack=True)
        except OSError as exc:  # no IPv6 on this machine: IPv4 only
            log.debug("no dual-stack socket (%s); listening on IPv4 only", exc)
            return _bind(socket.AF_INET, ("0.0.0.0", port))
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _type, _proto, _name, sockaddr = infos[0]
    return _bind(family, sockaddr)


def _bind(
    family: int,
    sockaddr: tuple[str, int] | tuple[str, int, int, int] | tuple[int, bytes],
    *,
    dual_stack: bool = False,
) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if dual_stack:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock


class _DebugAccessLogger(AbstractAccessLogger):
    """One DEBUG line per request; nothing at all unless DEBUG is on."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.debug(
            "%s %s %s -> %d in %.3fs",
            request.remote,
            request.method,
            request.path_qs,
            response.status,
            time,
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.DEBUG)
