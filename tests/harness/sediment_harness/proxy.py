"""A Kafka-aware TCP proxy for fault injection.

It forwards whole frames in both directions and remembers the api key of each request by
correlation id, so a fault can target one API. Faults:

* ``drop_response(api_key, probability)``: instead of delivering a matching response, close
  both sides of the connection. The broker processed the request, the client never learns the
  outcome and retries on a new connection: the classic way to force idempotent-producer
  retries of batches that were in fact appended.
* ``delay`` (seconds): added before every forwarded response (userspace latency, since netem
  is not available here).

The broker must advertise the proxy's address (``--advertised-listener``) or clients will
bypass it after the bootstrap metadata request.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from typing import Optional

from .ports import free_port


def _recv_exact(sock: socket.socket, n: int) -> Optional[bytes]:
    buf = bytearray()
    while len(buf) < n:
        try:
            chunk = sock.recv(n - len(buf))
        except OSError:
            return None
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _recv_frame(sock: socket.socket) -> Optional[bytes]:
    head = _recv_exact(sock, 4)
    if head is None:
        return None
    (size,) = struct.unpack(">i", head)
    body = _recv_exact(sock, size)
    if body is None:
        return None
    return head + body


class KafkaProxy:
    def __init__(self, upstream_host: str, upstream_port: int, *, port: Optional[int] = None, seed: int = 0):
        self.upstream = (upstream_host, upstream_port)
        self.port = port or free_port()
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.drop_rules: dict[int, float] = {}
        self.delay = 0.0
        self.dropped = 0
        self.forwarded = 0
        self.connections = 0
        self._stop = threading.Event()
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", self.port))
        self._server.listen(128)
        self._server.settimeout(0.2)
        self._thread = threading.Thread(target=self._accept_loop, daemon=True, name="kafka-proxy")
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def drop_response(self, api_key: int, probability: float) -> None:
        with self.lock:
            if probability <= 0:
                self.drop_rules.pop(api_key, None)
            else:
                self.drop_rules[api_key] = probability

    def _should_drop(self, api_key: Optional[int]) -> bool:
        with self.lock:
            p = self.drop_rules.get(api_key) if api_key is not None else None
            return p is not None and self.rng.random() < p

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._serve, args=(client, upstream), daemon=True).start()

    def _serve(self, client: socket.socket, upstream: socket.socket) -> None:
        # One scope per connection: the closures below must not see a later connection's sockets.
        upstream.settimeout(None)
        client.settimeout(None)
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connections += 1
        pending: dict[int, int] = {}
        closed = threading.Event()

        def close_both() -> None:
            closed.set()
            for s in (client, upstream):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

        def c2s() -> None:
            while not closed.is_set():
                frame = _recv_frame(client)
                if frame is None:
                    break
                if len(frame) >= 12:
                    api_key, _ver, corr = struct.unpack(">hhi", frame[4:12])
                    with self.lock:
                        pending[corr] = api_key
                try:
                    upstream.sendall(frame)
                except OSError:
                    break
            close_both()

        def s2c() -> None:
            while not closed.is_set():
                frame = _recv_frame(upstream)
                if frame is None:
                    break
                corr = struct.unpack(">i", frame[4:8])[0] if len(frame) >= 8 else None
                with self.lock:
                    api_key = pending.pop(corr, None)
                if self._should_drop(api_key):
                    with self.lock:
                        self.dropped += 1
                    break
                if self.delay:
                    time.sleep(self.delay)
                try:
                    client.sendall(frame)
                except OSError:
                    break
                with self.lock:
                    self.forwarded += 1
            close_both()

        threading.Thread(target=c2s, daemon=True).start()
        threading.Thread(target=s2c, daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        try:
            self._server.close()
        except OSError:
            pass

    def __enter__(self) -> "KafkaProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
