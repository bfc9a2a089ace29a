"""Observation + offer -> verdict. The one place where payment policy lives, for every chain.

Who paid, and what binds a transaction to a challenge, is decided here and nowhere else:

* **Counted transfers** are the transfers of the offered asset to the payee.
* **A commitment binds to its challenge only.** A commitment is a memo of the shape the gate
  issues (64 hex digits: a Solana memo, a Stellar memo hash, a TON comment, an EVM calldata
  suffix). A transaction carrying one binds to that challenge, and to no other: neither a payer
  signature nor an offer with ``binding = "none"`` can claim it for another challenge
  (``binding_mismatch``). Otherwise anyone watching the chain could take a challenge of a cheap
  unbound offer, or co-sign as a relay, and redeem someone else's payment under it.
* **A payer signature counts only from an owner whose funds were debited in the counted
  transfers** (a ``Transfer.sender``), never from a fee payer, relay or bundler that merely
  signed or submitted the transaction; and it buys only what its signer paid: with a signature,
  the signer's own counted transfers must cover the amount.
* **The payer** in the receipt is the signer when a signature bound the proof, else the owner
  who paid the most in the counted transfers (the lexically first on a tie), or ``""`` when the
  chain does not say whose funds were debited.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from verifier.adapter import ChainAdapter, Query
from verifier.challenge import Challenge
from verifier.errors import FinalError
from verifier.models import Binding, Finality, Observation, ReasonCode, Transfer

# The most owners whose signature is tried for one proof: each try may cost an RPC call (an
# EIP-1271 contract wallet), and a crafted transaction may list many owners.
MAX_SIGNERS = 8
_COMMITMENT = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass(frozen=True, slots=True)
class Expectation:
    """The gate's terms, with addresses and asset already normalized by the chain's adapter."""

    asset: str
    pay_to: str
    amount: int
    min_confirmations: int
    binding: Binding
    memo: str
    issued_at: int
    expires_at: int
    clock_skew: int

    @classmethod
    def of(cls, challenge: Challenge, adapter: ChainAdapter, *, clock_skew: int) -> Expectation:
        """The terms of an authenticated challenge, in the normal form of ``adapter``'s chain.

        Raises ``FinalError`` when the offer's asset or payee is not valid on that chain.
        """
        terms = challenge.terms
        try:
            asset = adapter.normalize_asset(terms.asset)
            pay_to = adapter.normalize_address(terms.pay_to)
        except ValueError as exc:  # an offer the gate should never have made
            raise FinalError(f"the offer is invalid: {exc}") from exc
        return cls(
            asset=asset,
            pay_to=pay_to,
            amount=terms.amount,
            min_confirmations=terms.min_confirmations,
            binding=terms.binding,
            memo=challenge.memo,
            issued_at=challenge.issued_at,
            expires_at=challenge.expires_at,
            clock_skew=clock_skew,
        )

    def query(self, txid: str) -> Query:
        """What to ask the adapter about the transaction ``txid``."""
        return Query(
            txid=txid,
            asset=self.asset,
            pay_to=self.pay_to,
            min_confirmations=self.min_confirmations,
            memo=self.memo,
            issued_at=self.issued_at,
            amount=self.amount,
        )


@dataclass(frozen=True, slots=True)
class Verdict:
    reason: ReasonCode | None  # None: the payment counts
    message: str
    paid: int = 0
    bound: bool = False
    payer: str = ""

    @property
    def accepted(self) -> bool:
        return self.reason is None


def is_commitment(memo: str) -> bool:
    """Whether ``memo`` has the shape of a challenge commitment (``memo_for``: 64 hex digits)."""
    return _COMMITMENT.match(memo) is not None


def commitments(obs: Observation) -> frozenset[str]:
    """The challenge commitments ``obs`` carries, lowercase."""
    return frozenset(m.lower() for m in obs.memos if is_commitment(m))


def counted(obs: Observation, exp: Expectation) -> list[Transfer]:
    return [t for t in obs.transfers if t.asset == exp.asset and t.recipient == exp.pay_to]


def _contributions(transfers: list[Transfer]) -> dict[str, int]:
    paid: dict[str, int] = {}
    for t in transfers:
        if t.sender:
            paid[t.sender] = paid.get(t.sender, 0) + t.amount
    return paid


def signature_candidates(obs: Observation, exp: Expectation) -> list[str]:
    """The owners whose payer signature could decide this proof, most paid first.

    Empty when no signature can change the verdict: the transaction carries this challenge's
    commitment and the offer does not insist on a signature, or it carries another challenge's.
    """
    found = commitments(obs)
    if found and exp.memo not in found:
        return []
    if exp.memo in found and exp.binding is not Binding.SIGNATURE:
        return []
    paid = _contributions(counted(obs, exp))
    return sorted(paid, key=lambda owner: (-paid[owner], owner))[:MAX_SIGNERS]


def _refusal_without_payment(obs: Observation, exp: Expectation) -> Verdict:
    if any(t.asset == exp.asset for t in obs.transfers):
        return Verdict(ReasonCode.WRONG_RECIPIENT, "the asset was paid to another address")
    if any(t.recipient == exp.pay_to for t in obs.transfers):
        return Verdict(ReasonCode.WRONG_ASSET, "the payee received another asset")
    return Verdict(ReasonCode.TRANSFER_NOT_FOUND, "no transfer of the asset to the payee")


def judge(obs: Observation, exp: Expectation, *, signer: str | None = None) -> Verdict:
    """Decide whether ``obs`` pays what ``exp`` asks for.

    ``signer`` is the owner (one of ``signature_candidates``) whose payer signature over the
    proof the adapter verified, if any.

    Depth comes first: nothing read from a block that may still be replaced is final, so a
    shallow transaction is ``insufficient_confirmations`` (transient) whatever it holds.
    """
    if obs.finality is Finality.PENDING or obs.confirmations < exp.min_confirmations:
        return Verdict(
            ReasonCode.INSUFFICIENT_CONFIRMATIONS,
            f"{obs.confirmations} of {exp.min_confirmations} confirmations",
        )
    if not obs.success:
        return Verdict(ReasonCode.TX_REVERTED, "the transaction failed on chain")
    if obs.block_time < exp.issued_at - exp.clock_skew:
        return Verdict(
            ReasonCode.TX_BEFORE_CHALLENGE,
            f"block time {obs.block_time} is before the challenge was issued ({exp.issued_at})",
        )
    if obs.block_time > exp.expires_at + exp.clock_skew:
        return Verdict(
            ReasonCode.PAYMENT_EXPIRED,
            f"block time {obs.block_time} is after the challenge expired ({exp.expires_at})",
        )

    # Any transfer of the asset to the payee, even of 0, makes the question "how much".
    to_payee = counted(obs, exp)
    if not to_payee:
        return _refusal_without_payment(obs, exp)
    found = commitments(obs)
    if found and exp.memo not in found:
        return Verdict(
            ReasonCode.BINDING_MISMATCH,
            "the transaction commits to another challenge (its memo is not this challenge's)",
        )
    memo_bound = exp.memo in found
    contributions = _contributions(to_payee)
    signed = signer is not None and signer in contributions
    if signed and (exp.binding is Binding.SIGNATURE or not memo_bound):
        # A signature buys what its signer paid, not what others paid in the same transaction.
        paid = contributions[signer or ""]
    else:
        paid = sum(t.amount for t in to_payee)
    if paid < exp.amount:
        who = " by the signer" if signed and paid != sum(t.amount for t in to_payee) else ""
        return Verdict(
            ReasonCode.AMOUNT_TOO_LOW, f"paid {paid}{who}, required {exp.amount}", paid=paid
        )
    if exp.binding is Binding.SIGNATURE and not signed:
        return Verdict(
            ReasonCode.BINDING_MISSING,
            "the offer requires a signature by an owner whose funds paid the transfer",
        )
    bound = signed or memo_bound
    if exp.binding is not Binding.NONE and not bound:
        return Verdict(
            ReasonCode.BINDING_MISSING,
            "the transaction carries no memo commitment and the proof no valid signature of an "
            "owner whose funds paid the transfer",
        )
    if signed:
        payer = signer or ""
    else:
        payer = min(contributions, key=lambda o: (-contributions[o], o), default="")
    return Verdict(None, "paid", paid=paid, bound=bound, payer=payer)
