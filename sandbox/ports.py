"""Free TCP ports on 127.0.0.1 for the servers that the sandbox, the tests and the benchmarks start."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port that was free a moment ago (the kernel's pick for port 0): bind it soon."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
