"""Build and sign real Stellar transactions for the local ledger (tests and the demo).

Keys are derived from fixed seeds so runs are reproducible; sequence numbers are tracked here
since the model keeps no accounts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from stellar_sdk import Account, Keypair, Memo, TransactionBuilder
from stellar_sdk.operation import Operation

from devchain.stellar_ledger import StellarLedger


def dev_keypair(name: str) -> Keypair:
    """A deterministic test key (never use for real funds)."""
    return Keypair.from_raw_ed25519_seed(hashlib.sha256(f"x402-dev:{name}".encode()).digest())


class StellarWallet:
    def __init__(self, ledger: StellarLedger) -> None:
        self.ledger = ledger
        self._sequences: dict[str, int] = {}

    def submit(
        self,
        source: Keypair,
        ops: Sequence[Operation],
        *,
        memo: Memo | None = None,
        fee_bump_by: Keypair | None = None,
        success: bool = True,
        delivered: dict[int, int] | None = None,
    ) -> tuple[str, str]:
        """Sign ``ops`` from ``source`` (fee-bumped by ``fee_bump_by``), close a ledger with
        them; returns (hash, inner hash) — the same hash twice without a fee bump."""
        seq = self._sequences.get(source.public_key, 1 << 32)
        self._sequences[source.public_key] = seq + 1
        passphrase = self.ledger.passphrase
        builder = TransactionBuilder(Account(source.public_key, seq), passphrase, base_fee=100)
        for op in ops:
            builder.append_operation(op)
        if memo is not None:
            builder.add_memo(memo)
        inner = builder.set_timeout(300).build()
        inner.sign(source)
        if fee_bump_by is None:
            return self.ledger.apply(inner, success=success, delivered=delivered), inner.hash_hex()
        bump = TransactionBuilder.build_fee_bump_transaction(
            fee_bump_by.public_key, 200, inner, passphrase
        )
        bump.sign(fee_bump_by)
        return self.ledger.apply(bump, success=success, delivered=delivered), inner.hash_hex()
