"""Observation + offer -> verdict. The one place where payment policy lives, for every chain."""

from __future__ import annotations

from dataclasses import dataclass

from verifier.models import Binding, Finality, Observation, ReasonCode


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


@dataclass(frozen=True, slots=True)
class Verdict:
    reason: ReasonCode | None  # None: the payment counts
    message: str
    paid: int = 0
    bound: bool = False

    @property
    def accepted(self) -> bool:
        return self.reason is None


def memo_bound(obs: Observation, exp: Expectation) -> bool:
    return exp.memo in obs.memos


def wants_signature(obs: Observation, exp: Expectation) -> bool:
    """Whether a payer signature, if the proof has one, must be checked to decide."""
    return exp.binding is Binding.SIGNATURE or not memo_bound(obs, exp)


def judge(obs: Observation, exp: Expectation, *, signature_ok: bool = False) -> Verdict:
    """Decide whether ``obs`` pays what ``exp`` asks for.

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

    of_asset = [t for t in obs.transfers if t.asset == exp.asset]
    to_payee = [t for t in obs.transfers if t.recipient == exp.pay_to]
    paid = sum(t.amount for t in of_asset if t.recipient == exp.pay_to)
    if paid == 0:
        if of_asset and not to_payee:
            return Verdict(ReasonCode.WRONG_RECIPIENT, "the asset was paid to another address")
        if to_payee:
            return Verdict(ReasonCode.WRONG_ASSET, "the payee received another asset")
        return Verdict(ReasonCode.TRANSFER_NOT_FOUND, "no transfer of the asset to the payee")
    if paid < exp.amount:
        return Verdict(ReasonCode.AMOUNT_TOO_LOW, f"paid {paid}, required {exp.amount}", paid=paid)

    bound = signature_ok or memo_bound(obs, exp)
    if exp.binding is Binding.SIGNATURE and not signature_ok:
        return Verdict(ReasonCode.BINDING_MISSING, "the offer requires a payer signature")
    if exp.binding is not Binding.NONE and not bound:
        return Verdict(
            ReasonCode.BINDING_MISSING,
            "the transaction carries no memo commitment and the proof no valid payer signature",
        )
    return Verdict(None, "paid", paid=paid, bound=bound)
