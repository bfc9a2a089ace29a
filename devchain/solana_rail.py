"""The demo's Solana rail: a USDC-like SPL mint on LiteSVM, behind the local JSON-RPC server."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from solders.keypair import Keypair
from solders.pubkey import Pubkey

from devchain.rails import LocalRail
from devchain.solana_ledger import NETWORK, Mint, SolanaLedger
from devchain.solana_server import SolanaRpcServer


class SolanaRail(LocalRail):
    slug = "solana"
    title = "Solana USDC (LiteSVM)"
    network = NETWORK

    def __init__(
        self,
        ledger: SolanaLedger,
        mint: Mint,
        payer: Keypair,
        shop: Pubkey,
        server: SolanaRpcServer,
    ) -> None:
        self.ledger, self.mint, self.payer, self.server = ledger, mint, payer, server
        usdc = {"network": NETWORK, "symbol": "USDC", "asset": str(mint.address), "decimals": 6}
        accept = {"asset": "USDC", "pay_to": str(shop), "price": "0.05"}
        super().__init__(server.url, accept, [usdc], head_cache_seconds=0.2)

    def pay(self, accept: dict[str, Any]) -> str:
        """transfer_checked to the payee's ATA (created if needed) with the memo commitment."""
        to = Pubkey.from_string(accept["payTo"])
        ledger, payer = self.ledger, self.payer.pubkey()
        ixs = [
            ledger.create_ata_ix(payer, to, self.mint),
            ledger.token_transfer_ix(
                self.mint,
                ledger.ata(payer, self.mint),
                ledger.ata(to, self.mint),
                payer,
                int(accept["amount"]),
            ),
            ledger.memo_ix(accept["extra"]["memo"]),
        ]
        return ledger.execute(ixs, [self.payer])

    def requests(self) -> int:
        return self.server.requests


@contextlib.contextmanager
def rail() -> Iterator[SolanaRail]:
    ledger = SolanaLedger()
    mint = ledger.create_mint(6)
    payer = ledger.wallet()
    ledger.open_account(payer.pubkey(), mint, 1_000 * 10**6)
    with SolanaRpcServer(ledger) as server:
        yield SolanaRail(ledger, mint, payer, Keypair().pubkey(), server)
