"""The Stellar harness for the conformance suite: real signed transactions, a local Horizon."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from stellar_sdk import Asset, HashMemo, Network, Payment

from chains.stellar.horizon import format_stroops
from devchain.horizon import HorizonServer
from devchain.stellar_ledger import StellarLedger
from devchain.stellar_wallet import StellarWallet, dev_keypair
from tests.conformance import AS_OFFERED, Pay, ed25519_high_s
from verifier.challenge import proof_message
from verifier.models import Accept

NETWORK = "stellar:testnet"
# The registry's testnet USDC: the model keeps no balances, so no issuer key is needed.
USDC = "USDC:GBBD47IF6LWK7P7MDEVSCWR7DPUWV3NY3DTQEVFL4NAT4AQH3ZLLFLA5"
FAKE_USDC = f"USDC:{dev_keypair('fake-issuer').public_key}"  # right code, wrong issuer
PAYER = dev_keypair("payer")
PAYEE = dev_keypair("payee").public_key
STRANGER = dev_keypair("stranger").public_key
SPONSOR = dev_keypair("fee-sponsor")


def sdk_asset(asset: str) -> Asset:
    if asset == "native":
        return Asset.native()
    code, _, issuer = asset.partition(":")
    return Asset(code, issuer)


class StellarEnv:
    """A testnet-shaped local Horizon with a wallet that signs for the test accounts."""

    def __init__(self, passphrase: str = Network.TESTNET_NETWORK_PASSPHRASE) -> None:
        self.ledger = StellarLedger(passphrase)
        self.horizon = HorizonServer(self.ledger)
        self.wallet = StellarWallet(self.ledger)

    def memo(self, accept: Accept) -> HashMemo:
        return HashMemo(bytes.fromhex(accept.extra.memo))

    def pay(self, accept: Accept, how: Pay = AS_OFFERED) -> str:
        """``PAYER`` pays for ``accept`` as ``how`` says, in one payment operation."""
        value = int(accept.amount) if how.amount is None else how.amount
        asset = sdk_asset(how.asset or accept.asset)
        op = Payment(how.to or accept.pay_to, asset, format_stroops(value))
        memo = self.memo(accept) if how.memo else None
        tx, _ = self.wallet.submit(PAYER, [op], memo=memo, success=not how.fail)
        return tx


@contextlib.contextmanager
def stellar_env() -> Iterator[StellarEnv]:
    env = StellarEnv()
    env.horizon.start()
    try:
        yield env
    finally:
        env.horizon.stop()


class StellarHarness:
    network = NETWORK
    asset = USDC
    symbol = "USDC"
    decimals = 7
    min_confirmations = 1
    pay_to = PAYEE
    stranger = STRANGER
    other_asset = FAKE_USDC
    unknown_tx = "ab" * 32
    garbage_tx = "0xnot-a-hash"

    def __init__(self, env: StellarEnv) -> None:
        self.env = env

    def network_settings(self) -> dict[str, Any]:
        return {"rpc_urls": [self.env.horizon.url], "head_cache_seconds": 0, "rpc_timeout": 5}

    def wrong_network(self) -> str:
        return "stellar:pubnet"

    async def pay(self, accept: Accept, how: Pay = AS_OFFERED) -> str:
        return self.env.pay(accept, how)

    def sign(self, accept: Accept, tx: str) -> str:
        return PAYER.sign(proof_message(NETWORK, accept.extra.nonce, tx)).hex()

    def malformed_signatures(self, accept: Accept, tx: str) -> list[str]:
        real = bytes.fromhex(self.sign(accept, tx))
        return [
            "not a signature",
            real[:63].hex(),
            base64.b64encode(real + b"\0").decode(),
            base64.b64encode(real)[:-4].decode() + "@@@@",
            ed25519_high_s(real).hex(),
        ]


@contextlib.asynccontextmanager
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[StellarHarness]:
    with stellar_env() as env:
        yield StellarHarness(env)
