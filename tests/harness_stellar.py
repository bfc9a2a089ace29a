"""The Stellar harness for the conformance suite: real signed transactions, a local Horizon."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterator
from typing import Any

from stellar_sdk import Asset, HashMemo, Keypair, Network
from stellar_sdk import Payment as PaymentOp

from devchain.horizon import HorizonServer
from devchain.stellar_ledger import StellarLedger, amount_text
from devchain.stellar_wallet import StellarWallet, dev_keypair
from verifier.challenge import proof_message
from verifier.models import Accept
from verifier.testing import Harness, Payment, ed25519_high_s

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

    def send(self, payment: Payment, source: Keypair = PAYER) -> str:
        op = PaymentOp(payment.to, sdk_asset(payment.asset), amount_text(payment.amount))
        memo = HashMemo(bytes.fromhex(payment.memo)) if payment.memo else None
        tx, _ = self.wallet.submit(source, [op], memo=memo, success=not payment.fail)
        return tx

    def pay(self, accept: Accept, *, source: Keypair = PAYER, **how: Any) -> str:
        """Pay for ``accept`` from ``source`` (``how``: what ``Payment.of`` changes)."""
        return self.send(Payment.of(accept, **how), source)


@contextlib.contextmanager
def stellar_env() -> Iterator[StellarEnv]:
    env = StellarEnv()
    env.horizon.start()
    try:
        yield env
    finally:
        env.horizon.stop()


class StellarHarness(Harness):
    network = NETWORK
    asset = USDC
    symbol = "USDC"
    decimals = 7
    pay_to = PAYEE
    stranger = STRANGER
    other_asset = FAKE_USDC

    def __init__(self, env: StellarEnv) -> None:
        self.env = env

    def network_settings(self) -> dict[str, Any]:
        return {"rpc_urls": [self.env.horizon.url], "head_cache_seconds": 0, "rpc_timeout": 5}

    def wrong_network(self) -> str:
        return "stellar:pubnet"

    async def send(self, payment: Payment) -> str:
        return self.env.send(payment)

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

    def unknown_tx(self) -> str:
        return "ab" * 32

    def garbage_tx(self) -> str:
        return "0xnot-a-hash"
