"""The base of every local HTTP server here and in the tests: the toncenter, Horizon and Solana
RPC servers, and the fakes that break what a real node cannot be made to break.

A subclass answers ``handle(request) -> Reply``; the base runs it on 127.0.0.1 and a free port
in a daemon thread (one thread per connection, so sync code such as the demo and any event loop
can use it), answers only the methods the subclass names (501 otherwise, as ``http.server``
does), writes the reply with its ``content-length``, and logs nothing. A client that goes away
before its reply is written (a worker stopped, a request timed out, the end of a demo or a
benchmark run) only ends that connection: no ``BrokenPipeError`` or ``ConnectionResetError``
traceback is printed. Any other error still prints one, since it is a bug in the server.
"""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import BaseRequestHandler
from typing import Any, ClassVar, Self
from urllib.parse import parse_qs, urlsplit

from devchain.service import Service


@dataclass(frozen=True)
class Request:
    method: str
    target: str  # as the client sent it: the path and the query string
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query)


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()  # sent after content-type, before content-length


def json_reply(status: int, payload: Any, content_type: str = "application/json") -> Reply:
    """A JSON reply written as ``json.dumps`` writes it (what the recorded shapes are held to)."""
    return Reply(status, json.dumps(payload).encode(), content_type)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exception(), ConnectionError):  # the client went away: not our error
            return
        super().handle_error(request, client_address)


class LocalHTTPServer(Service):
    """``with Sub(...) as server: server.url``, or ``start()`` / ``stop()``."""

    methods: ClassVar[tuple[str, ...]] = ("GET", "POST")
    protocol_version: ClassVar[str] = "HTTP/1.0"

    def __init__(self) -> None:
        self._http = _QuietServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    def handle(self, request: Request) -> Reply:
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()


def _handler(server: LocalHTTPServer) -> type[BaseRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = server.protocol_version

        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def _serve(self) -> None:
            if self.command not in server.methods:  # as http.server answers a method it lacks
                unsupported = f"Unsupported method ({self.command!r})"
                self.send_error(HTTPStatus.NOT_IMPLEMENTED, unsupported)
                return
            length = int(self.headers.get("content-length", 0))
            reply = server.handle(Request(self.command, self.path, self.rfile.read(length)))
            self.send_response(reply.status)
            if reply.content_type is not None:
                self.send_header("content-type", reply.content_type)
            for name, value in reply.headers:
                self.send_header(name, value)
            self.send_header("content-length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the tests, the demo and the benchmark print what matters themselves."""

    return Handler
