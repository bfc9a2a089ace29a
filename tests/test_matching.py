"""The chain-agnostic policy: every verdict from an observation and the gate's terms."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from verifier.matching import Expectation, commitments, judge, signature_candidates
from verifier.models import Binding, Finality, Observation, ReasonCode, Transfer

TOKEN, OTHER, PAYEE, PAYER = "0xtoken", "0xother", "0xpayee", "0xpayer"
MEMO = "ab" * 32
EXP = Expectation(
    asset=TOKEN,
    pay_to=PAYEE,
    amount=100,
    min_confirmations=3,
    binding=Binding.MEMO,
    memo=MEMO,
    issued_at=1_000,
    expires_at=1_600,
    clock_skew=60,
)
OBS = Observation(
    txid="0x01",
    success=True,
    block_ref="7:0xb",
    block_time=1_100,
    confirmations=3,
    finality=Finality.CONFIRMED,
    transfers=(Transfer(TOKEN, PAYER, PAYEE, 100),),
    memos=(MEMO,),
)


def obs(**changes: Any) -> Observation:
    return dataclasses.replace(OBS, **changes)


def test_good_payment() -> None:
    v = judge(OBS, EXP)
    assert v.accepted and v.paid == 100 and v.bound


@pytest.mark.parametrize(
    ("observation", "reason"),
    [
        (obs(confirmations=2), ReasonCode.INSUFFICIENT_CONFIRMATIONS),
        (obs(finality=Finality.PENDING), ReasonCode.INSUFFICIENT_CONFIRMATIONS),
        (obs(success=False), ReasonCode.TX_REVERTED),
        (obs(block_time=1_000 - 61), ReasonCode.TX_BEFORE_CHALLENGE),
        (obs(block_time=1_600 + 61), ReasonCode.PAYMENT_EXPIRED),
        (obs(transfers=(Transfer(TOKEN, PAYER, PAYEE, 99),)), ReasonCode.AMOUNT_TOO_LOW),
        (obs(transfers=(Transfer(TOKEN, PAYER, "0xelse", 100),)), ReasonCode.WRONG_RECIPIENT),
        (obs(transfers=(Transfer(OTHER, PAYER, PAYEE, 100),)), ReasonCode.WRONG_ASSET),
        (obs(transfers=()), ReasonCode.TRANSFER_NOT_FOUND),
        (obs(memos=()), ReasonCode.BINDING_MISSING),
        (obs(memos=("a memo that is no commitment",)), ReasonCode.BINDING_MISSING),
        (obs(memos=("cd" * 32,)), ReasonCode.BINDING_MISMATCH),
    ],
)
def test_rejections(observation: Observation, reason: ReasonCode) -> None:
    v = judge(observation, EXP)
    assert v.reason is reason


def test_shallow_reverted_tx_is_not_final_yet() -> None:
    assert (
        judge(obs(success=False, confirmations=1), EXP).reason
        is ReasonCode.INSUFFICIENT_CONFIRMATIONS
    )


def test_clock_skew_is_tolerated() -> None:
    assert judge(obs(block_time=1_000 - 60), EXP).accepted
    assert judge(obs(block_time=1_600 + 60), EXP).accepted


def test_split_transfers_are_summed_and_overpayment_reported() -> None:
    split = (Transfer(TOKEN, PAYER, PAYEE, 60), Transfer(TOKEN, PAYER, PAYEE, 90))
    v = judge(obs(transfers=split), EXP)
    assert v.accepted and v.paid == 150


def test_other_assets_and_payees_do_not_count() -> None:
    mixed = (
        Transfer(TOKEN, PAYER, PAYEE, 50),
        Transfer(OTHER, PAYER, PAYEE, 1_000),
        Transfer(TOKEN, PAYER, "0xelse", 1_000),
    )
    v = judge(obs(transfers=mixed), EXP)
    assert v.reason is ReasonCode.AMOUNT_TOO_LOW and v.paid == 50


def test_binding_policies() -> None:
    unbound = obs(memos=())
    assert judge(unbound, EXP, signer=PAYER).accepted
    none = dataclasses.replace(EXP, binding=Binding.NONE)
    v = judge(unbound, none)
    assert v.accepted and not v.bound
    sig = dataclasses.replace(EXP, binding=Binding.SIGNATURE)
    assert judge(OBS, sig).reason is ReasonCode.BINDING_MISSING  # memo is not enough
    assert judge(OBS, sig, signer=PAYER).accepted
    assert signature_candidates(OBS, sig) == [PAYER] == signature_candidates(unbound, EXP)
    assert signature_candidates(OBS, EXP) == []  # the memo decides: no signature is checked


@given(
    parts=st.lists(st.integers(min_value=1, max_value=10**30), min_size=1, max_size=8),
    amount=st.integers(min_value=1, max_value=10**31),
)
def test_amount_arithmetic_is_exact(parts: list[int], amount: int) -> None:
    transfers = tuple(Transfer(TOKEN, PAYER, PAYEE, p) for p in parts)
    v = judge(obs(transfers=transfers), dataclasses.replace(EXP, amount=amount))
    assert v.paid == sum(parts)
    assert v.accepted is (sum(parts) >= amount)


FOREIGN = "cd" * 32


@pytest.mark.parametrize("binding", list(Binding))
@pytest.mark.parametrize("signer", [None, PAYER])
def test_a_commitment_binds_to_its_own_challenge_only(binding: Binding, signer: str | None) -> None:
    """Neither a signature nor an unbound offer takes a transaction committed elsewhere."""
    elsewhere = obs(memos=(FOREIGN,))
    exp = dataclasses.replace(EXP, binding=binding)
    assert signature_candidates(elsewhere, exp) == []
    assert judge(elsewhere, exp, signer=signer).reason is ReasonCode.BINDING_MISMATCH
    # the commitment is recognised whatever the case of its hex digits
    assert judge(obs(memos=(MEMO.upper(),)), exp, signer=PAYER).accepted
    assert commitments(obs(memos=(FOREIGN.upper(), "thanks"))) == {FOREIGN}


def test_only_a_debited_owner_can_sign_and_only_for_what_it_paid() -> None:
    relay, alice, bob = "0xrelay", "0xalice", "0xbob"
    sig = dataclasses.replace(EXP, binding=Binding.SIGNATURE)
    two = obs(
        memos=(), transfers=(Transfer(TOKEN, alice, PAYEE, 60), Transfer(TOKEN, bob, PAYEE, 50))
    )
    # the candidates are the owners whose funds paid, most paid first; never the submitter
    assert signature_candidates(two, sig) == [alice, bob]
    assert judge(two, sig, signer=relay).reason is ReasonCode.BINDING_MISSING
    # alice's signature buys what alice paid (60), not bob's 50 as well
    v = judge(two, sig, signer=alice)
    assert v.reason is ReasonCode.AMOUNT_TOO_LOW and v.paid == 60
    enough = dataclasses.replace(sig, amount=60)
    v = judge(two, enough, signer=alice)
    assert v.accepted and v.payer == alice and v.paid == 60 and v.bound
    # an unknown sender ("": the chain does not say whose funds) is nobody's to sign for
    anonymous = obs(memos=(), transfers=(Transfer(TOKEN, "", PAYEE, 100),))
    assert signature_candidates(anonymous, sig) == []
    assert judge(anonymous, sig, signer="").reason is ReasonCode.BINDING_MISSING


def test_payer_is_the_signer_or_the_largest_contributor() -> None:
    alice, bob = "0xalice", "0xbob"
    memo_bound = obs(transfers=(Transfer(TOKEN, bob, PAYEE, 40), Transfer(TOKEN, alice, PAYEE, 70)))
    v = judge(memo_bound, EXP)
    assert v.accepted and v.payer == alice and v.paid == 110  # the commitment binds it all
    tie = obs(transfers=(Transfer(TOKEN, bob, PAYEE, 50), Transfer(TOKEN, alice, PAYEE, 50)))
    assert judge(tie, EXP).payer == alice
    assert judge(obs(transfers=(Transfer(TOKEN, "", PAYEE, 100),)), EXP).payer == ""
    none = dataclasses.replace(EXP, binding=Binding.NONE, amount=40)
    assert judge(obs(memos=(), transfers=memo_bound.transfers), none, signer=bob).payer == bob


def test_a_short_payment_of_the_asset_is_too_low_whatever_else_arrived() -> None:
    """A zero-amount transfer of the asset with another asset beside it is not ``wrong_asset``."""
    zero = obs(transfers=(Transfer(TOKEN, PAYER, PAYEE, 0), Transfer(OTHER, PAYER, PAYEE, 10**9)))
    assert judge(zero, EXP).reason is ReasonCode.AMOUNT_TOO_LOW
    some = obs(transfers=(Transfer(TOKEN, PAYER, PAYEE, 1), Transfer("native", PAYER, PAYEE, 5)))
    assert judge(some, EXP).reason is ReasonCode.AMOUNT_TOO_LOW
