"""The gate server's limits over real sockets: slow clients, too many of them, too much data."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from devchain.redis_server import free_port
from tests.evm_fixtures import PAYEE
from tests.support import SettingsFactory
from verifier.server import build_server
from verifier.settings import Settings

# A network with USDC in the built-in registry; the gate alone never calls its RPC.
NETWORK = "eip155:84532"
Limited = Callable[..., Settings]
Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@pytest.fixture
def limited(make_settings: SettingsFactory) -> Limited:
    """Settings for one static paid route, ``/report``, with these ``[gate]`` values."""

    def factory(**gate: Any) -> Settings:
        accepts = [{"network": NETWORK, "asset": "USDC", "pay_to": PAYEE, "amount": 1000}]
        return make_settings(
            networks={NETWORK: {"rpc_urls": ["http://127.0.0.1:9"]}},
            gate=gate,
            routes=[{"path": "/report", "body": '{"report": 42}', "accepts": accepts}],
        )

    return factory


def probe_app() -> Starlette:
    """Routes the gate does not have: one that answers slowly, one that reads the body."""

    async def slow(request: Request) -> PlainTextResponse:
        await asyncio.sleep(0.8)
        return PlainTextResponse("done")

    async def echo(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(len(await request.body())))

    return Starlette(routes=[Route("/slow", slow), Route("/echo", echo, methods=["POST"])])


@contextlib.asynccontextmanager
async def serve(settings: Settings, app: Any = None) -> AsyncIterator[int]:
    """The server ``x402-verifier gate`` runs, on a free port (the gate app unless ``app``)."""
    port = free_port()
    server = build_server(settings, app, host="127.0.0.1", port=port)
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the server did not start"
        await asyncio.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def connection(port: int) -> AsyncIterator[Stream]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def get(path: str, *headers: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: gate", *headers, "", ""]
    return "\r\n".join(lines).encode()


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in lines if h)}
    return int(status_line.split()[1]), headers


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    async with asyncio.timeout(5):
        status, headers = parse_head(await reader.readuntil(b"\r\n\r\n"))
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        else:  # uvicorn's own error answers close the connection instead
            body = await reader.read()
    return status, headers, body


async def request(stream: Stream, raw: bytes) -> int:
    reader, writer = stream
    writer.write(raw)
    status, _, _ = await read_response(reader)
    return status


async def seconds_until_closed(
    stream: Stream, *, trickle: bytes = b"", limit: float = 4.0
) -> float:
    """How long the server keeps the connection open, while we send ``trickle`` every 0.1 s."""
    reader, writer = stream
    loop = asyncio.get_running_loop()
    start = loop.time()
    while (elapsed := loop.time() - start) < limit:
        try:
            data = await asyncio.wait_for(reader.read(65536), 0.1)
        except TimeoutError:
            writer.write(trickle)
            continue
        except ConnectionResetError:
            return elapsed
        assert data == b"", f"the server answered {data[:80]!r} instead of closing"
        return elapsed
    raise AssertionError(f"the connection was still open after {limit} s")


async def test_a_slow_client_is_disconnected_while_others_are_served(limited: Limited) -> None:
    async with serve(limited(header_timeout=0.5)) as port, connection(port) as slow:
        slow[1].write(b"GET /report HTTP/1.1\r\nHost: gate\r\n")
        closing = asyncio.create_task(seconds_until_closed(slow, trickle=b"X-Slow: 1\r\n"))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            for _ in range(4):
                assert (await client.get("/report")).status_code == 402
                await asyncio.sleep(0.1)
        assert 0.3 <= await closing < 1.5


@pytest.mark.parametrize("kept_alive", [False, True], ids=["new", "after-a-response"])
async def test_request_headers_must_arrive_within_header_timeout(
    limited: Limited, kept_alive: bool
) -> None:
    settings = limited(header_timeout=0.5, keep_alive_timeout=30)
    async with serve(settings) as port, connection(port) as stream:
        if kept_alive:
            assert await request(stream, get("/healthz")) == 200
            stream[1].write(b"GET /healthz HTTP/1.1\r\n")
        # A new connection that sends nothing; a kept-alive one that trickles its next request.
        trickle = b"X-Slow: 1\r\n" if kept_alive else b""
        assert 0.3 <= await seconds_until_closed(stream, trickle=trickle) < 1.5


async def test_a_slow_answer_is_not_cut_by_the_header_timeout(limited: Limited) -> None:
    async with serve(limited(header_timeout=0.3), probe_app()) as port, connection(port) as s:
        assert await request(s, get("/slow")) == 200
        assert await request(s, get("/slow")) == 200  # and again on the same connection


async def test_an_idle_kept_alive_connection_is_closed(limited: Limited) -> None:
    settings = limited(keep_alive_timeout=1, header_timeout=30)
    async with serve(settings) as port, connection(port) as stream:
        assert await request(stream, get("/healthz")) == 200
        assert 0.8 <= await seconds_until_closed(stream) < 2.5


async def test_connections_beyond_max_connections_get_503(limited: Limited) -> None:
    async with (
        serve(limited(max_connections=2)) as port,
        connection(port) as first,
        connection(port) as second,
    ):
        assert await request(first, get("/healthz")) == 200
        assert await request(second, get("/healthz")) == 200
        async with connection(port) as third:
            assert await request(third, get("/healthz")) == 503
        await asyncio.sleep(0.1)  # the server sees the third one go
        assert await request(first, get("/healthz")) == 200


async def test_a_declared_body_over_the_limit_gets_413_before_it_is_sent(
    limited: Limited,
) -> None:
    settings = limited(max_body_bytes=1024, header_timeout=0.5)
    async with serve(settings) as port, connection(port) as stream:
        # Headers only: the answer must not wait for the body.
        stream[1].write(b"POST /report HTTP/1.1\r\nHost: gate\r\nContent-Length: 1025\r\n\r\n")
        status, headers, body = await read_response(stream[0])
        assert status == 413 and headers["content-type"] == "application/json"
        assert json.loads(body) == {"error": "request body larger than 1024 bytes"}
        # The server would discard the body, but not wait for it longer than for headers.
        assert await seconds_until_closed(stream) < 1.5


async def test_a_client_sending_a_large_body_at_once_reads_the_413(limited: Limited) -> None:
    # Were the connection closed with the 413, the unread body would reset it, answer unread.
    async with serve(limited(max_body_bytes=1024)) as port, httpx.AsyncClient(timeout=10) as client:
        for _ in range(3):
            refused = await client.post(f"http://127.0.0.1:{port}/report", content=b"x" * 2**24)
            assert refused.status_code == 413 and "error" in refused.json()


def chunked(*sizes: int) -> bytes:
    head = b"POST /echo HTTP/1.1\r\nHost: gate\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunks = [b"%x\r\n%s\r\n" % (n, b"x" * n) for n in sizes]
    return head + b"".join(chunks) + b"0\r\n\r\n"


async def test_a_chunked_body_is_counted_as_it_streams(limited: Limited) -> None:
    async with serve(limited(max_body_bytes=1024), probe_app()) as port:
        async with connection(port) as (reader, writer):
            writer.write(chunked(512, 512))  # exactly the limit
            status, _, body = await read_response(reader)
            assert (status, body) == (200, b"1024")
        async with connection(port) as stream:
            stream[1].write(chunked(512, 512, 1))
            status, _, body = await read_response(stream[0])
            assert status == 413 and "1024" in json.loads(body)["error"]
            # The rest of the body was discarded; the connection serves the next request.
            post = b"POST /echo HTTP/1.1\r\nHost: gate\r\nContent-Length: 3\r\n\r\nabc"
            assert await request(stream, post) == 200


async def send_slowly(stream: Stream, data: bytes, piece: int) -> tuple[int, dict[str, str]]:
    """Send ``data`` in pieces 0.05 s apart, as a slow network delivers it; the answer's head.

    Sending stops once the server answers: more data then would only reset the connection.
    """
    reader, writer = stream
    for at in range(0, len(data), piece):
        writer.write(data[at : at + piece])
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.05):
                return parse_head(await reader.readuntil(b"\r\n\r\n"))
    async with asyncio.timeout(5):
        return parse_head(await reader.readuntil(b"\r\n\r\n"))


async def answer(
    stream: Stream, raw: bytes, piece: int | None
) -> tuple[int, dict[str, str], bytes]:
    """Send ``raw`` at once (``piece`` None) or slowly in pieces; the whole answer."""
    if piece is None:
        stream[1].write(raw)
        return await read_response(stream[0])
    status, headers = await send_slowly(stream, raw, piece)
    async with asyncio.timeout(5):
        if "content-length" in headers:
            return status, headers, await stream[0].readexactly(int(headers["content-length"]))
        return status, headers, await stream[0].read()


@pytest.mark.parametrize("piece", [None, 4096], ids=["at-once", "in-pieces"])
async def test_a_proof_header_over_16_kib_is_invalid_payload(
    limited: Limited, piece: int | None
) -> None:
    """Within max_header_bytes, an oversized proof reaches the gate: 402 invalid_payload."""
    proof = "x" * 20 * 1024
    async with serve(limited()) as port, connection(port) as stream:
        status, headers, _ = await answer(
            stream, get("/report", f"PAYMENT-SIGNATURE: {proof}"), piece
        )
        assert status == 402
        refusal = json.loads(base64.b64decode(headers["payment-response"]))
        assert refusal["errorReason"] == "invalid_payload" and "16384" in refusal["errorMessage"]


# However the head arrives (h11 refuses an incomplete one as it grows, the gate a complete one),
# the answer is the same documented 431 with a JSON error, never a bare 400.
@pytest.mark.parametrize("piece", [None, 4096], ids=["at-once", "in-pieces"])
@pytest.mark.parametrize("size", [40, 200], ids=["just-over", "far-over"])
async def test_headers_over_the_limit_get_431(
    limited: Limited, piece: int | None, size: int
) -> None:
    settings = limited(max_header_bytes=32 * 1024)
    raw = get("/report", *(f"X-Filler-{i}: {'y' * 1000}" for i in range(size)))
    async with serve(settings) as port, connection(port) as stream:
        status, headers, body = await answer(stream, raw, piece)
    assert status == 431 and headers["content-type"] == "application/json"
    assert json.loads(body) == {"error": "request headers larger than 32768 bytes"}


def test_max_header_bytes_leaves_room_for_a_proof(limited: Limited) -> None:
    # A 16 KiB proof header and the request's other headers.
    for too_small in (8 * 1024, 16 * 1024, 32 * 1024 - 1):
        with pytest.raises(ValidationError, match="max_header_bytes"):
            limited(max_header_bytes=too_small)
    assert limited(max_header_bytes=32 * 1024).gate.max_header_bytes == 32 * 1024
