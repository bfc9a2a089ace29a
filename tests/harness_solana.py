"""The Solana harness: real SPL programs in LiteSVM, served by the local jsonParsed RPC server.

One ledger and server per test process (the server runs in a thread, so every event loop and the
worker's HTTP client can reach it). ``SolanaShop`` is the gate-side helper of the Solana tests.
"""

from __future__ import annotations

import base64
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.signature import Signature

from devchain.solana_ledger import NETWORK, Mint, SolanaLedger
from devchain.solana_render import TOKEN_2022, b58encode
from devchain.solana_server import SolanaRpcServer
from tests.support import SettingsFactory, Shop, connected_gate, running_worker
from verifier.assets import NATIVE
from verifier.challenge import proof_message
from verifier.gate import Gate
from verifier.models import Accept
from verifier.settings import Settings
from verifier.testing import Harness, Payment, ed25519_high_s

RESOURCE = "http://shop.test/solana"


@dataclass
class SolanaEnv:
    ledger: SolanaLedger
    server: SolanaRpcServer
    usdc: Mint  # a classic SPL Token mint, offered as "USDC"
    other: Mint  # another SPL Token mint the payer holds
    fee_mint: Mint  # a Token-2022 mint with a 1% transfer fee
    payer: Keypair
    payee: Pubkey
    stranger: Pubkey
    poor: Keypair  # holds SOL, no tokens: its token transfers fail

    def settings(self, make_settings: SettingsFactory, **net: Any) -> Settings:
        return make_settings(
            networks={NETWORK: {"rpc_urls": [self.server.url], "head_cache_seconds": 0, **net}},
            assets=[
                {
                    "network": NETWORK,
                    "symbol": "USDC",
                    "asset": str(self.usdc.address),
                    "decimals": 6,
                },
                {
                    "network": NETWORK,
                    "symbol": "FEE",
                    "asset": str(self.fee_mint.address),
                    "decimals": 6,
                },
            ],
        )

    def mint_of(self, asset: str) -> Mint:
        return next(m for m in (self.usdc, self.other, self.fee_mint) if str(m.address) == asset)

    def token_payment(
        self,
        mint: Mint,
        to: Pubkey,
        amount: int,
        *,
        memo: str | None,
        sender: Keypair | None = None,
    ) -> list[Instruction]:
        """Create the recipient's ATA if needed, transfer_checked, and the memo."""
        sender = sender or self.payer
        ixs = [
            self.ledger.create_ata_ix(sender.pubkey(), to, mint),
            self.ledger.token_transfer_ix(
                mint,
                self.ledger.ata(sender.pubkey(), mint),
                self.ledger.ata(to, mint),
                sender.pubkey(),
                amount,
            ),
        ]
        return ixs + ([self.ledger.memo_ix(memo)] if memo else [])


_ENV: SolanaEnv | None = None


def solana_env() -> SolanaEnv:
    """The process-wide ledger and server, built on first use."""
    global _ENV
    if _ENV is None:
        ledger = SolanaLedger()
        payer, poor = ledger.wallet(), ledger.wallet()
        payee, stranger = Keypair().pubkey(), Keypair().pubkey()
        usdc, other = ledger.create_mint(), ledger.create_mint()
        fee_mint = ledger.create_mint(program=TOKEN_2022, fee_bps=100)
        for mint in (usdc, other, fee_mint):
            ledger.open_account(payer.pubkey(), mint, 10**12)
            ledger.open_account(poor.pubkey(), mint)
        ledger.open_account(payee, usdc)
        server = SolanaRpcServer(ledger).start()
        _ENV = SolanaEnv(ledger, server, usdc, other, fee_mint, payer, payee, stranger, poor)
    return _ENV


class SolanaHarness(Harness):
    network = NETWORK
    symbol = "USDC"
    decimals = 6

    def __init__(self, env: SolanaEnv) -> None:
        self.env = env
        self.asset = str(env.usdc.address)
        self.other_asset = str(env.other.address)
        self.pay_to = str(env.payee)
        self.stranger = str(env.stranger)

    def network_settings(self) -> dict[str, Any]:
        return {"rpc_urls": [self.env.server.url], "head_cache_seconds": 0}

    def wrong_network(self) -> str:
        return "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp"

    async def send(self, payment: Payment) -> str:
        env = self.env
        recipient = Pubkey.from_string(payment.to)
        if payment.asset == NATIVE:
            ixs = [env.ledger.sol_transfer_ix(env.payer.pubkey(), recipient, payment.amount)]
            ixs += [env.ledger.memo_ix(payment.memo)] if payment.memo else []
            return env.ledger.execute(ixs, [env.payer])
        mint = env.mint_of(payment.asset)
        sender = env.poor if payment.fail else env.payer
        ixs = env.token_payment(mint, recipient, payment.amount, memo=payment.memo, sender=sender)
        return env.ledger.execute(ixs, [sender], allow_failure=payment.fail)

    def sign(self, accept: Accept, tx: str) -> str:
        return SolanaShop.sign(accept, tx, self.env.payer)

    def malformed_signatures(self, accept: Accept, tx: str) -> list[str]:
        real = bytes(Signature.from_string(self.sign(accept, tx)))
        return [
            "0OIl-not-base58",
            b58encode(real[:63]),
            real.hex() + "00",
            base64.b64encode(real)[:-4].decode() + "@@@@",
            str(Signature.from_bytes(ed25519_high_s(real))),
        ]

    def unknown_tx(self) -> str:
        return str(Signature.from_bytes(os.urandom(64)))

    def garbage_tx(self) -> str:
        return "0OIl-not-base58"


class SolanaShop(Shop):
    """A gate selling one resource on the local Solana ledger."""

    def __init__(self, gate: Gate, env: SolanaEnv) -> None:
        super().__init__(
            gate, RESOURCE, network=NETWORK, asset="USDC", pay_to=str(env.payee), amount=100_000
        )
        self.env = env

    @staticmethod
    def sign(accept: Accept, tx: str, key: Keypair) -> str:
        return str(key.sign_message(proof_message(NETWORK, accept.extra.nonce, tx)))


@contextlib.asynccontextmanager
async def solana_shop(settings: Settings) -> AsyncIterator[SolanaShop]:
    async with connected_gate(settings) as gate, running_worker(settings):
        yield SolanaShop(gate, solana_env())
