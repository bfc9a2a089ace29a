"""The demo's TON rail: a USDT-like jetton on the local ledger, behind the local toncenter v3.

The demo pays with a standard jetton transfer carrying the challenge's commitment as the forward
payload comment, and proves it with a locator ``ton:<payee>|<nonce>``, as PipRail clients do: the
worker finds the payment among the payee wallet's transactions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from devchain.rails import LocalRail
from devchain.ton_chain import TonLedger, account_for, raw_address
from devchain.toncenter import ToncenterServer

NETWORK = "tvm:-3"
MASTER = account_for("demo-usdt-master")


class TonRail(LocalRail):
    slug = "ton"
    title = "TON USDT-like jetton (local toncenter v3)"
    network = NETWORK

    def __init__(self, server: ToncenterServer, payer: str, shop: str) -> None:
        self.server, self.payer = server, payer
        usdt = {"network": NETWORK, "symbol": "USDT", "asset": MASTER, "decimals": 6}
        accept = {"asset": MASTER, "pay_to": shop, "price": "0.05"}
        super().__init__(server.url, accept, [usdt], head_cache_seconds=0.2)

    def pay(self, accept: dict[str, Any]) -> str:
        """A jetton transfer to the payee with the memo as forward comment; returns a locator."""
        payee = raw_address(accept["payTo"])
        self.server.ledger.pay_jetton(
            raw_address(accept["asset"]),
            self.payer,
            payee,
            int(accept["amount"]),
            accept["extra"]["memo"],
        )
        return f"ton:{payee}|{accept['extra']['nonce']}"

    def requests(self) -> int:
        return len(self.server.requests)


@contextlib.contextmanager
def rail() -> Iterator[TonRail]:
    server = ToncenterServer(TonLedger(global_id=-3), masters={MASTER}).start()
    try:
        yield TonRail(server, account_for("demo-ton-payer"), account_for("demo-ton-shop"))
    finally:
        server.stop()
