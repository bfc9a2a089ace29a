"""An existing FastAPI app that sells two paths through ``verifier.middleware``.

``/report`` has a fixed price; ``/rows?rows=N`` costs N x ``UNIT`` base units, capped at
``MAX_ROWS`` rows: the price is resolved from the request before the challenge is issued and is
authenticated in it, so a client cannot pay for 1 row and take 1,000. ``/health`` is free and
untouched by the middleware. The handlers get the payment's receipt with ``Depends``.
``/quote`` is paid without the middleware, by the ``require_payment`` dependency: one payment,
one call.

Run it against your configuration (Redis, challenge keys, networks) and a worker pool::

    X402_CONFIG=verifier.toml PAY_TO=0x… uvicorn examples.fastapi_app:app
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Request

from verifier.middleware import (
    PaidPath,
    PaymentMiddleware,
    PaymentRequiredError,
    paid_receipt,
    payment_error_handler,
    require_payment,
)
from verifier.models import Receipt
from verifier.settings import AcceptSettings, Settings, load_settings

UNIT = 100  # base units per row: 0.0001 USDC
MAX_ROWS = 1000
# What a paid handler takes: the receipt of the request's payment.
Paid = Annotated[Receipt, Depends(paid_receipt)]


def rows_price(request: Request) -> int:
    rows = int(request.query_params.get("rows", "1"))
    return max(rows, 1) * UNIT


def create_app(settings: Settings, *, network: str, asset: str, pay_to: str) -> FastAPI:
    fixed = [AcceptSettings(network=network, asset=asset, pay_to=pay_to, price="0.01")]
    quote_paid = require_payment(fixed, settings=settings, description="a quote")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await quote_paid.aclose()

    app = FastAPI(lifespan=lifespan)
    # The gate's own 402 body (without it, FastAPI wraps it in {"detail": ...}).
    app.add_exception_handler(PaymentRequiredError, payment_error_handler)
    per_row = [AcceptSettings(network=network, asset=asset, pay_to=pay_to, amount=UNIT)]
    app.add_middleware(
        PaymentMiddleware,
        settings=settings,
        paths=[
            PaidPath("/report", accepts=fixed, description="the daily report"),
            PaidPath(
                "/rows",
                accepts=per_row,
                price=rows_price,
                max_amount=MAX_ROWS * UNIT,
                description="rows of the dataset, priced per row",
            ),
        ],
    )

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/report")
    async def report(receipt: Paid) -> dict[str, object]:
        return {"report": "all good", "paid_by": receipt.payer, "tx": receipt.transaction}

    # A default, not Annotated: the dependency is local, and annotations are strings here.
    @app.get("/quote")
    async def quote(receipt: Receipt = Depends(quote_paid)) -> dict[str, object]:  # noqa: B008
        return {"quote": 42, "paid_by": receipt.payer}

    @app.get("/rows")
    async def rows(receipt: Paid, rows: int = 1) -> dict[str, object]:
        return {"rows": list(range(rows)), "paid": receipt.amount}

    return app


if os.environ.get("PAY_TO"):  # as run by uvicorn, from the environment
    app = create_app(
        load_settings(),
        network=os.environ.get("NETWORK", "eip155:8453"),
        asset=os.environ.get("ASSET", "USDC"),
        pay_to=os.environ["PAY_TO"],
    )
