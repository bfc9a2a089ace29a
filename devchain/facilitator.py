"""The reference x402 facilitator, served over HTTP on the local chain (tests and the demo).

``ReferenceFacilitator`` runs the reference package's own ``x402Facilitator`` with its EVM
``exact`` scheme (``register_exact_evm_facilitator``) and its ``FacilitatorWeb3Signer`` on a
local anvil, behind the x402 facilitator HTTP API (``GET /supported``, ``POST /verify``, ``POST
/settle``), in a thread of its own::

    with ReferenceFacilitator(anvil_url, key, "eip155:31337", token="s3cret") as f:
        f.url            # http://127.0.0.1:<port>
        f.down = True    # every request answered 503 until set back (a fault at the transport)

Nothing here is ours but the HTTP glue: what it verifies and settles, and how, is the
reference implementation's.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Self

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from x402 import x402Facilitator
from x402.mechanisms.evm.exact import register_exact_evm_facilitator
from x402.mechanisms.evm.signers import FacilitatorWeb3Signer
from x402.schemas import PaymentPayload, PaymentRequirements

from devchain.service import free_port


def _dump(model: Any) -> dict[str, Any]:
    dumped: dict[str, Any] = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    return dumped


class ReferenceFacilitator:
    """The reference facilitator on ``rpc_url`` for ``network``, paying gas from ``key``."""

    def __init__(self, rpc_url: str, key: str, network: str, *, token: str | None = None) -> None:
        self.network = network
        self.token = token
        self.down = False
        self.settles = 0  # POST /settle requests answered (not refused by ``down``)
        facilitator = x402Facilitator()
        register_exact_evm_facilitator(
            facilitator, FacilitatorWeb3Signer(key, rpc_url), networks=network
        )
        self._facilitator = facilitator
        self._port = free_port()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/supported", self._supported, methods=["GET"]),
                Route("/verify", self._verify, methods=["POST"]),
                Route("/settle", self._settle, methods=["POST"]),
            ]
        )

    def _refused(self, request: Request) -> Response | None:
        if self.down:
            return Response(status_code=503)
        if self.token is not None and request.headers.get("authorization") != (
            f"Bearer {self.token}"
        ):
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        return None

    async def _supported(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        return JSONResponse(_dump(self._facilitator.get_supported()))

    async def _parts(self, request: Request) -> tuple[PaymentPayload, PaymentRequirements]:
        body = await request.json()
        return (
            PaymentPayload.model_validate(body["paymentPayload"]),
            PaymentRequirements.model_validate(body["paymentRequirements"]),
        )

    async def _verify(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        payload, requirements = await self._parts(request)
        # The reference signer is synchronous (web3 over HTTP): off the event loop.
        result = await asyncio.to_thread(
            lambda: asyncio.run(self._facilitator.verify(payload, requirements))
        )
        return JSONResponse(_dump(result))

    async def _settle(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        self.settles += 1
        payload, requirements = await self._parts(request)
        result = await asyncio.to_thread(
            lambda: asyncio.run(self._facilitator.settle(payload, requirements))
        )
        return JSONResponse(_dump(result))

    def __enter__(self) -> Self:
        config = uvicorn.Config(self.app(), host="127.0.0.1", port=self._port, log_level="error")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the reference facilitator did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
