"""Free TCP ports on 127.0.0.1 for the servers that the sandbox, the tests and the benchmarks
start, and the stop of those servers."""

from __future__ import annotations

import asyncio
import socket

from aiohttp import web

from controller.serving import stop_accepting


def free_port() -> int:
    """A port that was free a moment ago (the kernel's pick for port 0): bind it soon."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def stop_runner(runner: web.AppRunner, listening: socket.socket) -> None:
    """`runner.cleanup()` of a runner serving on `listening`, and every connection it had closed
    for good before this returns.

    First no more connections are taken, and those being accepted are let in
    (`controller.serving.stop_accepting`): one accepted as the server closes would be left open.

    aiohttp closes each connection's transport, but asyncio completes a close only once the
    write buffer has drained, which to a client that stopped reading (a watch nobody reads,
    a paused or dying controller) never happens. A threaded simulator's loop then closes with
    the transport still open, and garbage collection reports it later, during whichever test
    runs then: `ResourceWarning: unclosed transport`, an error under `filterwarnings = error`.
    So what is left is aborted (its unsent bytes dropped), and the loop gets the one
    iteration that runs the transports' `connection_lost`."""
    await stop_accepting(listening)
    server = runner.server
    transports = [] if server is None else [h.transport for h in server.connections]
    await runner.cleanup()
    for transport in transports:
        if transport is not None:
            transport.abort()
    await asyncio.sleep(0)
