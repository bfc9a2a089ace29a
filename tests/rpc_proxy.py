"""A JSON-RPC pass-through in front of a real node, for what a node cannot be made to do.

It forwards every request unchanged to the real node (anvil) and can, on demand, answer ``503``
(down), ``429`` (rate limited), or hold requests for a while (slow). This is the transport
boundary: everything it does not break comes from the real node.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


class RpcProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.status: int | None = None  # answer every request with this status instead
        self.delay = 0.0
        self.requests = 0
        self.seen = threading.Event()  # set when a request arrives
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                proxy.requests += 1
                proxy.seen.set()
                if proxy.delay:
                    time.sleep(proxy.delay)
                if proxy.status is not None:
                    self.send_response(proxy.status)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                req = urllib.request.Request(
                    proxy.upstream, data=body, headers={"content-type": "application/json"}
                )
                with urllib.request.urlopen(req, timeout=30) as reply:
                    data = reply.read()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> RpcProxy:
        self._thread.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
