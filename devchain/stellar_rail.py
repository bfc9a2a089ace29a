"""The demo's Stellar rail: real signed testnet-shaped transactions behind the local Horizon."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from stellar_sdk import Asset, HashMemo, Network
from stellar_sdk import Payment as PaymentOp

from devchain.horizon import HorizonServer
from devchain.rails import Rail
from devchain.stellar_ledger import StellarLedger, amount_text
from devchain.stellar_wallet import StellarWallet, dev_keypair
from verifier.assets import NATIVE
from verifier.testing import Payment

NETWORK = "stellar:testnet"
USDC = "USDC:GBBD47IF6LWK7P7MDEVSCWR7DPUWV3NY3DTQEVFL4NAT4AQH3ZLLFLA5"  # registry's testnet USDC


class StellarRail(Rail):
    slug = "stellar"
    title = "Stellar (local Horizon)"
    network = NETWORK
    asset = USDC
    symbol = "USDC"
    decimals = 7

    def __init__(self, horizon: HorizonServer, wallet: StellarWallet) -> None:
        self.horizon, self.wallet = horizon, wallet
        self.payer = dev_keypair("demo-payer")
        self.pay_to = dev_keypair("demo-shop").public_key
        super().__init__(horizon.url)

    def asset_settings(self) -> list[dict[str, Any]]:
        return []  # testnet USDC is in the built-in registry

    async def send(self, payment: Payment) -> str:
        code, _, issuer = payment.asset.partition(":")
        asset = Asset.native() if payment.asset == NATIVE else Asset(code, issuer)
        op = PaymentOp(payment.to, asset, amount_text(payment.amount))
        memo = HashMemo(bytes.fromhex(payment.memo)) if payment.memo else None
        tx, _ = self.wallet.submit(self.payer, [op], memo=memo, success=not payment.fail)
        return tx

    def requests(self) -> int:
        return self.horizon.requests


@contextlib.contextmanager
def rail() -> Iterator[StellarRail]:
    ledger = StellarLedger(Network.TESTNET_NETWORK_PASSPHRASE)
    with HorizonServer(ledger) as horizon:
        yield StellarRail(horizon, StellarWallet(ledger))
