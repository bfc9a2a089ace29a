"""The demo's Solana rail: a USDC-like SPL mint on LiteSVM, behind the local JSON-RPC server."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from solders.keypair import Keypair
from solders.pubkey import Pubkey

from devchain.solana_ledger import NETWORK, Mint, SolanaLedger
from devchain.solana_server import SolanaRpcServer


@dataclass
class SolanaRail:
    ledger: SolanaLedger
    mint: Mint
    payer: Keypair
    shop: Pubkey
    server: SolanaRpcServer
    slug: str = "solana"
    title: str = "Solana USDC (LiteSVM)"
    network: str = NETWORK
    network_settings: dict[str, Any] = field(default_factory=dict)
    assets: list[dict[str, Any]] = field(default_factory=list)
    accept: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.network_settings = {"rpc_urls": [self.server.url], "head_cache_seconds": 0.2}
        self.assets = [
            {"network": NETWORK, "symbol": "USDC", "asset": str(self.mint.address), "decimals": 6}
        ]
        self.accept = {"asset": "USDC", "pay_to": str(self.shop), "price": "0.05"}

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
