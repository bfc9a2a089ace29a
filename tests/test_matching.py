"""The chain-agnostic policy: every verdict from an observation and the gate's terms."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from verifier.matching import Expectation, judge, wants_signature
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
    payer=PAYER,
    memos=(MEMO,),
)


def obs(**changes: object) -> Observation:
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
        (obs(memos=("cd" * 32,)), ReasonCode.BINDING_MISSING),
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
    assert judge(unbound, EXP, signature_ok=True).accepted
    none = dataclasses.replace(EXP, binding=Binding.NONE)
    v = judge(unbound, none)
    assert v.accepted and not v.bound
    sig = dataclasses.replace(EXP, binding=Binding.SIGNATURE)
    assert judge(OBS, sig).reason is ReasonCode.BINDING_MISSING  # memo is not enough
    assert judge(OBS, sig, signature_ok=True).accepted
    assert wants_signature(OBS, sig) and wants_signature(unbound, EXP)
    assert not wants_signature(OBS, EXP)


@given(
    parts=st.lists(st.integers(min_value=1, max_value=10**30), min_size=1, max_size=8),
    amount=st.integers(min_value=1, max_value=10**31),
)
def test_amount_arithmetic_is_exact(parts: list[int], amount: int) -> None:
    transfers = tuple(Transfer(TOKEN, PAYER, PAYEE, p) for p in parts)
    v = judge(obs(transfers=transfers), dataclasses.replace(EXP, amount=amount))
    assert v.paid == sum(parts)
    assert v.accepted is (sum(parts) >= amount)
