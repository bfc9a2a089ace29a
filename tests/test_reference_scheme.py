"""The onchain-proof scheme server for the reference SDK (``verifier.reference``), alone: the
prices it takes and the challenge it puts in the requirements."""

from __future__ import annotations

import dataclasses

import pytest
from x402.schemas import AssetAmount, PaymentRequirements, SupportedKind

from tests.support import SettingsFactory
from verifier.challenge import ChallengeSigner, Terms, memo_for
from verifier.errors import FinalError
from verifier.facilitator_api import facilitator_resource
from verifier.models import Binding

NETWORK = "eip155:8453"
USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"  # Base USDC, from ASSETS.md
PAYEE = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"


@pytest.fixture
def scheme(make_settings: SettingsFactory) -> object:
    from verifier.reference import OnchainProofServerScheme

    settings = make_settings(networks={NETWORK: {"rpc_urls": ["http://x"], "min_confirmations": 3}})
    return OnchainProofServerScheme(settings)


@pytest.mark.parametrize(
    ("price", "amount"), [("$0.01", "10000"), ("0.25", "250000"), (1, "1000000")]
)
def test_money_is_the_networks_usdc(scheme: object, price: object, amount: str) -> None:
    parsed = scheme.parse_price(price, NETWORK)  # type: ignore[attr-defined]
    assert (parsed.amount, parsed.asset) == (amount, USDC)


def test_an_asset_amount_is_taken_as_given(scheme: object) -> None:
    given = AssetAmount(amount="7", asset="0xabc")
    assert scheme.parse_price(given, NETWORK) is given  # type: ignore[attr-defined]
    as_dict = scheme.parse_price({"amount": "7", "asset": "0xabc"}, NETWORK)  # type: ignore[attr-defined]
    assert (as_dict.amount, as_dict.asset) == ("7", "0xabc")


@pytest.mark.parametrize("price", ["$0.0000001", "ten dollars", {"amount": "7"}])
def test_a_price_that_is_not_exact_or_not_money_is_refused(scheme: object, price: object) -> None:
    with pytest.raises(ValueError):
        scheme.parse_price(price, NETWORK)  # type: ignore[attr-defined]


def test_each_402_gets_a_fresh_challenge_authenticated_for_its_route(
    scheme: object, make_settings: SettingsFactory
) -> None:
    def built() -> PaymentRequirements:
        requirements = PaymentRequirements(
            scheme="onchain-proof",
            network=NETWORK,
            asset=USDC.lower(),
            amount="10000",
            pay_to=PAYEE,
            max_timeout_seconds=300,
            extra={"route": "/report"},
        )
        kind = SupportedKind(x402_version=2, scheme="onchain-proof", network=NETWORK)
        return scheme.enhance_payment_requirements(requirements, kind, [])  # type: ignore[attr-defined, no-any-return]

    first, second = built(), built()
    extra = first.extra
    assert extra["nonce"] != second.extra["nonce"]
    assert extra["memo"] == memo_for(extra["nonce"])
    assert (extra["minConfirmations"], extra["binding"], extra["decimals"]) == (3, "required", 6)
    assert first.asset == USDC  # as the registry spells it
    terms = Terms(
        scheme="onchain-proof",
        network=NETWORK,
        asset=USDC,
        amount=10000,
        pay_to=PAYEE,
        max_timeout_seconds=300,
        min_confirmations=3,
        binding=Binding.REQUIRED,
        resource=facilitator_resource("/report"),
    )
    settings = scheme.settings  # type: ignore[attr-defined]
    signer = ChallengeSigner(settings.challenge.key_bytes(), settings.challenge.active)
    assert signer.authenticate(extra["nonce"], terms).terms == terms
    with pytest.raises(FinalError):  # the same nonce does not answer another route's terms
        signer.authenticate(
            extra["nonce"], dataclasses.replace(terms, resource=facilitator_resource("/other"))
        )
