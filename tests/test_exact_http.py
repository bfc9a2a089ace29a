"""A stock x402 client pays the HTTP gate with no code of ours on its side: the reference
package's ``x402Client`` with its EVM exact scheme, through its own httpx client, against
``verifier.asgi`` and a worker settling locally or through the reference facilitator.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from eth_account import Account
from x402 import x402Client
from x402.http.clients import x402HttpxClient
from x402.mechanisms.evm.exact import register_exact_evm_client
from x402.mechanisms.evm.signers import EthAccountSigner

from devchain.anvil import ANVIL_KEYS
from devchain.facilitator import ReferenceFacilitator
from tests.evm_fixtures import NETWORK, PAYEE
from tests.exact_fixtures import (
    PAYER,
    PAYER_KEY,
    PRICE,
    ExactEnv,
    exact_env,
    exact_route,
    exact_settings,
    relayer_key,
)
from tests.support import SettingsFactory, serve
from verifier.asgi import create_app
from verifier.testing import running_worker
from verifier.wire import decode_payment_required, decode_payment_response

__all__ = ["exact_env", "relayer_key"]  # fixtures


def reference_client() -> x402HttpxClient:
    client = x402Client()
    register_exact_evm_client(client, EthAccountSigner(Account.from_key(PAYER_KEY)))
    # The local chain's token is not one the client knows (mainnet USDC is): allow it, as a
    # user of the reference client allows a token of their choice.
    client.set_spend_controls({"allowed_assets": True})
    return x402HttpxClient(client, timeout=30)


@pytest.fixture
async def local_gate(
    exact_env: ExactEnv, make_settings: SettingsFactory, relayer_key: str
) -> AsyncIterator[str]:
    settings = exact_settings(
        make_settings,
        exact_env,
        gate={"settle_timeout": 20},
        routes=[exact_route("/exact"), exact_route("/both", both=True)],
    )
    async with serve(create_app(settings)) as url, running_worker(settings):
        yield url


@pytest.mark.parametrize("path", ["/exact", "/both"])
async def test_the_reference_client_pays_the_gate_settling_locally(
    local_gate: str, exact_env: ExactEnv, path: str
) -> None:
    before = exact_env.balance(PAYEE)
    async with reference_client() as http:
        paid = await http.get(local_gate + path)
    assert paid.status_code == 200, (paid.status_code, paid.text, dict(paid.headers))
    assert paid.json() == {"paid": True}
    receipt = decode_payment_response(paid.headers["PAYMENT-RESPONSE"])
    assert receipt.success and receipt.scheme == "exact"
    assert receipt.payer == PAYER.lower()
    assert exact_env.balance(PAYEE) == before + PRICE


async def test_a_route_offering_both_schemes_lists_both_for_the_same_price(
    local_gate: str,
) -> None:
    async with httpx.AsyncClient() as http:
        unpaid = await http.get(local_gate + "/both")
    assert unpaid.status_code == 402
    accepts = decode_payment_required(unpaid.headers["PAYMENT-REQUIRED"]).accepts
    assert [a.scheme for a in accepts] == ["onchain-proof", "exact"]
    assert {a.amount for a in accepts} == {str(PRICE)}
    exact = accepts[1].extra
    assert (exact.name, exact.version) == ("USD Coin", "2")


async def test_the_reference_client_pays_through_the_reference_facilitator(
    exact_env: ExactEnv, make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FACILITATOR_AUTH", "Bearer t0ken")
    with ReferenceFacilitator(
        exact_env.evm.anvil.url, ANVIL_KEYS[9], NETWORK, token="t0ken"
    ) as facilitator:
        settings = exact_settings(
            make_settings,
            exact_env,
            settlement={
                "mode": "facilitator",
                "facilitator_url": facilitator.url,
                "facilitator_headers_env": {"Authorization": "FACILITATOR_AUTH"},
            },
            gate={"settle_timeout": 20},
            routes=[exact_route("/exact")],
        )
        before = exact_env.balance(PAYEE)
        async with (
            serve(create_app(settings)) as url,
            running_worker(settings),
            reference_client() as http,
        ):
            paid: Any = await http.get(url + "/exact")
        assert paid.status_code == 200, (paid.status_code, paid.text)
        assert exact_env.balance(PAYEE) == before + PRICE
        assert facilitator.settles == 1
