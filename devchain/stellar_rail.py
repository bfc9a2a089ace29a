"""The demo's Stellar rail: real signed testnet-shaped transactions behind the local Horizon."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from stellar_sdk import Asset, HashMemo, Network, Payment

from devchain.horizon import HorizonServer
from devchain.rails import LocalRail
from devchain.stellar_ledger import StellarLedger, amount_text
from devchain.stellar_wallet import StellarWallet, dev_keypair

NETWORK = "stellar:testnet"
USDC = "USDC:GBBD47IF6LWK7P7MDEVSCWR7DPUWV3NY3DTQEVFL4NAT4AQH3ZLLFLA5"  # registry's testnet USDC


class StellarRail(LocalRail):
    slug = "stellar"
    title = "Stellar (local Horizon)"
    network = NETWORK

    def __init__(self, horizon: HorizonServer, wallet: StellarWallet) -> None:
        self.horizon, self.wallet = horizon, wallet
        self.payer = dev_keypair("demo-payer")
        # Testnet USDC is in the built-in registry: no [[assets]] entry.
        accept = {"asset": "USDC", "pay_to": dev_keypair("demo-shop").public_key, "price": "0.05"}
        super().__init__(horizon.url, accept)

    def pay(self, accept: dict[str, Any]) -> str:
        code, _, issuer = str(accept["asset"]).partition(":")
        asset = Asset.native() if accept["asset"] == "native" else Asset(code, issuer)
        op = Payment(accept["payTo"], asset, amount_text(int(accept["amount"])))
        memo = HashMemo(bytes.fromhex(accept["extra"]["memo"]))
        tx, _ = self.wallet.submit(self.payer, [op], memo=memo)
        return tx

    def requests(self) -> int:
        return self.horizon.requests


@contextlib.contextmanager
def rail() -> Iterator[StellarRail]:
    ledger = StellarLedger(Network.TESTNET_NETWORK_PASSPHRASE)
    with HorizonServer(ledger) as horizon:
        yield StellarRail(horizon, StellarWallet(ledger))
