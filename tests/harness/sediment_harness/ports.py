"""Free TCP ports on 127.0.0.1.

Ports come from 10000-19999, below the kernel's ephemeral range (32768 and up
here), where every outgoing connection takes its local port: a broker restarted
on its old port could otherwise find it taken by some client's connection (the
Rust cluster tests hand out 20000-31999 for the same reason). A port is checked
by binding it and closing the socket, so another process can still take it
before the broker binds it; the Broker retries its first start with fresh ports
when that happens, so suites under pytest-xdist need no coordination.
"""

from __future__ import annotations

import random
import socket

_handed_out: set[int] = set()
_RANGE = (10000, 19999)
_rng = random.Random()  # seeded from the OS: xdist workers draw different ports


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now, not handed out before by this process."""
    for _ in range(200):
        port = _rng.randint(*_RANGE)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"could not find a free port in {_RANGE}")


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    return [free_port(host) for _ in range(n)]


def port_is_listening(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
