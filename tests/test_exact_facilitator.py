"""The exact scheme settled through a facilitator: the reference x402 package's own facilitator
(``x402Facilitator`` with its EVM exact scheme), served over HTTP on the local chain.

Its outages are the only fake (``ReferenceFacilitator.down``: 503 at the transport); what it
verifies and settles is the reference implementation's, on a real anvil.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from devchain.anvil import ANVIL_KEYS
from devchain.facilitator import ReferenceFacilitator
from tests.evm_fixtures import NETWORK, PAYEE
from tests.exact_fixtures import PRICE, ExactEnv, ExactShop, exact_env, exact_settings
from tests.support import SettingsFactory, connected_gate, running_worker
from verifier.errors import ConfigError, FinalError, RpcUnavailable
from verifier.facilitator import FacilitatorClient
from verifier.models import Failure, ReasonCode, Receipt
from verifier.settlement import FacilitatorSettler

__all__ = ["exact_env"]  # a fixture

FACILITATOR_KEY = ANVIL_KEYS[9]
TOKEN = "s3cret"


@pytest.fixture(scope="module")
def facilitator(exact_env: ExactEnv) -> Iterator[ReferenceFacilitator]:
    with ReferenceFacilitator(
        exact_env.evm.anvil.url, FACILITATOR_KEY, NETWORK, token=TOKEN
    ) as served:
        yield served


@pytest.fixture
async def shop(
    exact_env: ExactEnv,
    facilitator: ReferenceFacilitator,
    make_settings: SettingsFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[ExactShop]:
    monkeypatch.setenv("FACILITATOR_AUTH", f"Bearer {TOKEN}")
    settings = exact_settings(
        make_settings,
        exact_env,
        settlement={
            "mode": "facilitator",
            "facilitator_url": facilitator.url,
            "facilitator_headers_env": {"Authorization": "FACILITATOR_AUTH"},
            "facilitator_timeout": 20,
        },
        worker={"retry_base": 0.2, "retry_max": 0.5},
    )
    facilitator.down = False
    async with connected_gate(settings) as gate, running_worker(settings) as worker:
        async with asyncio.timeout(30):  # started: the facilitator's networks were read
            while "verifier" not in worker.ctx:  # noqa: ASYNC110 (a probe)
                await asyncio.sleep(0.05)
        yield ExactShop(gate, exact_env)


async def test_the_reference_facilitator_settles_once(
    shop: ExactShop, facilitator: ReferenceFacilitator
) -> None:
    env = shop.env
    before, settles = env.balance(PAYEE), facilitator.settles
    proof, offers = shop.paid_header()
    receipt = await shop.settle(proof, offers)
    assert isinstance(receipt, Receipt), receipt
    assert receipt.scheme == "exact" and receipt.network == NETWORK
    assert env.balance(PAYEE) == before + PRICE
    assert await shop.settle(proof, offers) == receipt  # the same header: the same receipt
    assert facilitator.settles == settles + 1
    assert env.balance(PAYEE) == before + PRICE


async def test_a_facilitator_down_then_back_is_transient_then_one_settlement(
    shop: ExactShop, facilitator: ReferenceFacilitator
) -> None:
    env = shop.env
    before = env.balance(PAYEE)
    proof, offers = shop.paid_header()
    facilitator.down = True
    pending = await shop.settle(proof, offers, wait=2)
    assert isinstance(pending, Failure) and pending.transient, pending
    assert env.balance(PAYEE) == before
    settles = facilitator.settles
    facilitator.down = False
    receipt = await shop.settle(proof, offers, wait=30)
    assert isinstance(receipt, Receipt), receipt
    assert env.balance(PAYEE) == before + PRICE
    assert facilitator.settles == settles + 1


async def test_a_refusal_by_the_facilitator_is_final(shop: ExactShop) -> None:
    from tests.exact_fixtures import POOR_KEY

    proof, offers = shop.paid_header(key=POOR_KEY)
    outcome = await shop.settle(proof, offers)
    assert isinstance(outcome, Failure) and not outcome.transient, outcome
    assert outcome.error_reason is ReasonCode.INSUFFICIENT_BALANCE, outcome


async def test_a_facilitator_that_does_not_serve_the_network_stops_the_start(
    facilitator: ReferenceFacilitator,
) -> None:
    client = FacilitatorClient(facilitator.url, headers={"Authorization": f"Bearer {TOKEN}"})
    settler = FacilitatorSettler("eip155:8453", client, adapter=None)
    with pytest.raises(ConfigError, match="does not settle exact on eip155:8453"):
        await settler.start()
    await settler.close()


@pytest.mark.parametrize(
    ("headers", "down", "error"),
    [
        ({"Authorization": "Bearer wrong"}, False, FinalError),
        ({"Authorization": f"Bearer {TOKEN}"}, True, RpcUnavailable),
    ],
)
async def test_the_client_says_what_went_wrong(
    facilitator: ReferenceFacilitator, headers: dict[str, str], down: bool, error: Any
) -> None:
    facilitator.down = down
    client = FacilitatorClient(facilitator.url, headers=headers)
    try:
        with pytest.raises(error) as raised:
            await client.supported()
        assert "127.0.0.1/supported" in str(raised.value)
    finally:
        facilitator.down = False
        await client.close()


async def test_an_unreachable_facilitator_is_transient() -> None:
    from devchain.service import free_port

    client = FacilitatorClient(f"http://127.0.0.1:{free_port()}/?key=secret", timeout=2)
    try:
        with pytest.raises(RpcUnavailable) as raised:
            await client.supported()
        assert "secret" not in str(raised.value)
    finally:
        await client.close()
