"""Finding a TCP port to listen on."""

from __future__ import annotations

import socket


def free_port(preferred: int = 0) -> int:
    """`preferred` when it can be bound on 127.0.0.1, else a port the system picks."""
    for port in (preferred, 0) if preferred else (0,):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            chosen: int = sock.getsockname()[1]
            return chosen
    raise OSError("no free port")
