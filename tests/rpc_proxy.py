"""A JSON-RPC pass-through in front of a real node, for what a node cannot be made to do.

It forwards every request unchanged to the real node (anvil) and can, on demand, answer ``503``
(down), ``429`` (rate limited), or hold requests for a while (slow). This is the transport
boundary: everything it does not break comes from the real node.
"""

from __future__ import annotations

import threading
import time
import urllib.request

from devchain.http_server import LocalHTTPServer, Reply, Request


class RpcProxy(LocalHTTPServer):
    methods = ("POST",)

    def __init__(self, upstream: str) -> None:
        super().__init__()
        self.upstream = upstream
        self.status: int | None = None  # answer every request with this status instead
        self.delay = 0.0
        self.requests = 0
        self.seen = threading.Event()  # set when a request arrives
        # Requests naming this JSON-RPC method are held ``hold_seconds`` (then forwarded), and
        # ``held`` is set: a worker caught in the middle of that call.
        self.hold_method: str | None = None
        self.hold_seconds = 0.0
        self.held = threading.Event()

    def handle(self, request: Request) -> Reply:
        self.requests += 1
        self.seen.set()
        if self.delay:
            time.sleep(self.delay)
        if self.hold_method and f'"{self.hold_method}"'.encode() in request.body:
            self.held.set()
            time.sleep(self.hold_seconds)
        if self.status is not None:
            return Reply(self.status)
        forward = urllib.request.Request(
            self.upstream, data=request.body, headers={"content-type": "application/json"}
        )
        with urllib.request.urlopen(forward, timeout=30) as reply:
            return Reply(200, reply.read(), "application/json")
