"""The demo's TON rail: a USDT-like jetton on the local ledger, behind the local toncenter v3.

The demo pays with a standard jetton transfer carrying the challenge's commitment as the forward
payload comment, and proves it with a locator ``ton:<payee>|<nonce>``, as PipRail clients do: the
worker finds the payment among the payee wallet's transactions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from devchain.rails import Rail
from devchain.ton_chain import TonLedger, account_for, raw_address
from devchain.toncenter import ToncenterServer
from verifier.assets import NATIVE
from verifier.models import Accept
from verifier.testing import Payment

NETWORK = "tvm:-3"
MASTER = account_for("demo-usdt-master")


class TonRail(Rail):
    slug = "ton"
    title = "TON USDT-like jetton (local toncenter v3)"
    network = NETWORK
    asset = MASTER
    symbol = "USDT"
    decimals = 6

    def __init__(self, server: ToncenterServer, payer: str, shop: str) -> None:
        self.server, self.payer, self.pay_to = server, payer, shop
        super().__init__(server.url, head_cache_seconds=0.2)

    async def pay(self, accept: Accept, **how: Any) -> str:
        """Pay as ``send`` does; the proof names the payment by a locator, not its hash."""
        await super().pay(accept, **how)
        return f"ton:{raw_address(accept.pay_to)}|{accept.extra.nonce}"

    async def send(self, payment: Payment) -> str:
        """TON, or a jetton transfer with the memo as forward comment; the payee wallet's tx."""
        ledger, dst = self.server.ledger, raw_address(payment.to)
        if payment.asset == NATIVE:
            return ledger.pay_ton(
                self.payer, dst, payment.amount, payment.memo, aborted=payment.fail
            )
        master = raw_address(payment.asset)
        tx, _ = ledger.pay_jetton(
            master, self.payer, dst, payment.amount, payment.memo, aborted=payment.fail
        )
        return tx

    def requests(self) -> int:
        return len(self.server.requests)


@contextlib.contextmanager
def rail() -> Iterator[TonRail]:
    server = ToncenterServer(TonLedger(global_id=-3), masters={MASTER}).start()
    try:
        yield TonRail(server, account_for("demo-ton-payer"), account_for("demo-ton-shop"))
    finally:
        server.stop()
