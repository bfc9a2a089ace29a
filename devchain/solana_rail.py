"""The demo's Solana rail: a USDC-like SPL mint on LiteSVM, behind the local JSON-RPC server."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from devchain.rails import Rail
from devchain.solana_ledger import NETWORK, Mint, SolanaLedger
from devchain.solana_server import SolanaRpcServer
from verifier.assets import NATIVE
from verifier.testing import Payment


class SolanaRail(Rail):
    slug = "solana"
    title = "Solana USDC (LiteSVM)"
    network = NETWORK
    symbol = "USDC"
    decimals = 6

    def __init__(
        self,
        ledger: SolanaLedger,
        mint: Mint,
        payer: Keypair,
        shop: Pubkey,
        server: SolanaRpcServer,
    ) -> None:
        self.ledger, self.mint, self.payer, self.server = ledger, mint, payer, server
        self.asset, self.pay_to = str(mint.address), str(shop)
        super().__init__(server.url, head_cache_seconds=0.2)

    async def send(self, payment: Payment) -> str:
        """SOL, or transfer_checked of the mint to the payee's ATA (created if needed), with the
        memo commitment; the payer holds no other token, and its transactions succeed."""
        if payment.fail or payment.asset not in (NATIVE, self.asset):
            raise ValueError(f"the demo's Solana rail cannot make {payment}")
        to = Pubkey.from_string(payment.to)
        ledger, payer = self.ledger, self.payer.pubkey()
        ixs: list[Instruction]
        if payment.asset == NATIVE:
            ixs = [ledger.sol_transfer_ix(payer, to, payment.amount)]
        else:
            ixs = [
                ledger.create_ata_ix(payer, to, self.mint),
                ledger.token_transfer_ix(
                    self.mint,
                    ledger.ata(payer, self.mint),
                    ledger.ata(to, self.mint),
                    payer,
                    payment.amount,
                ),
            ]
        ixs += [ledger.memo_ix(payment.memo)] if payment.memo else []
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
