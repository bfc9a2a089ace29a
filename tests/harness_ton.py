"""The TON harness for the conformance suite: real TL-B transactions behind a local toncenter v3.

Also the TON test environment the ``test_ton*`` modules share: a ledger, its server, a local
USDT-like jetton master and the accounts that pay each other.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pytoniq_core import Address

from chains.ton.codec import normalize_address
from devchain.ton_chain import TonLedger, account_for
from devchain.toncenter import ToncenterServer
from verifier.assets import NATIVE
from verifier.models import Accept
from verifier.testing import Harness, Payment

NETWORK = "tvm:-3"
MASTER = account_for("local-usdt-master")
OTHER_MASTER = account_for("local-other-jetton-master")
PAYER = account_for("payer")
PAYEE = account_for("payee")
STRANGER = account_for("stranger")


def friendly(
    raw: str, *, bounceable: bool = True, testnet: bool = False, url_safe: bool = True
) -> str:
    return str(
        Address(raw).to_str(
            is_user_friendly=True,
            is_url_safe=url_safe,
            is_bounceable=bounceable,
            is_test_only=testnet,
        )
    )


@dataclass
class TonEnv:
    server: ToncenterServer

    @property
    def ledger(self) -> TonLedger:
        return self.server.ledger

    def network_settings(self, **extra: Any) -> dict[str, Any]:
        return {"rpc_urls": [self.server.url], "head_cache_seconds": 0, **extra}


@contextlib.contextmanager
def ton_env() -> Iterator[TonEnv]:
    server = ToncenterServer(TonLedger(global_id=-3), masters={MASTER, OTHER_MASTER}).start()
    try:
        yield TonEnv(server)
    finally:
        server.stop()


class TonHarness(Harness):
    network = NETWORK
    symbol = "JUSD"
    decimals = 6
    other_asset = NATIVE

    def __init__(self, env: TonEnv) -> None:
        self.env = env
        self.asset = friendly(MASTER)  # offers may name the master in any form
        self.pay_to = friendly(PAYEE, bounceable=False)
        self.stranger = STRANGER

    def network_settings(self) -> dict[str, Any]:
        return self.env.network_settings()

    def wrong_network(self) -> str:
        return "tvm:-239"

    async def send(self, payment: Payment) -> str:
        ledger, dst = self.env.ledger, normalize_address(payment.to)
        if payment.asset == NATIVE:
            return ledger.pay_ton(PAYER, dst, payment.amount, payment.memo, aborted=payment.fail)
        master = normalize_address(payment.asset)
        wallet_tx, _ = ledger.pay_jetton(
            master, PAYER, dst, payment.amount, payment.memo, aborted=payment.fail
        )
        return wallet_tx

    def sign(self, accept: Accept, tx: str) -> None:
        return None  # TON proofs bind with the comment only

    def malformed_signatures(self, accept: Accept, tx: str) -> list[str]:
        return ["not a signature", "00" * 64, "@@@@"]

    def unknown_tx(self) -> str:
        return "ab" * 32

    def garbage_tx(self) -> str:
        return "not-a-ton-hash"
