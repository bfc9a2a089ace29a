"""Stateless challenges: forged, edited, rotated, expired."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import pytest

from tests.support import an_accept
from verifier.challenge import ChallengeSigner, Terms, authenticate_proof, memo_for, nonce_expiry
from verifier.errors import ConfigError, FinalError
from verifier.models import (
    Binding,
    PaymentPayload,
    ProofBody,
    ReasonCode,
)

K1 = b"k" * 32
K2 = b"z" * 40
TERMS = Terms(
    "onchain-proof", "eip155:8453", "0xtoken", 100000, "0xpayee", 600, 3, Binding.MEMO, "/r"
)


def test_issue_then_authenticate() -> None:
    signer = ChallengeSigner({"k1": K1}, "k1")
    ch = signer.issue(TERMS, now=1_000)
    assert ch.expires_at == 1_600
    assert nonce_expiry(ch.nonce) == 1_600
    assert signer.authenticate(ch.nonce, TERMS) == ch
    assert ch.memo == hashlib.sha256(ch.nonce.encode()).hexdigest() == memo_for(ch.nonce)


@pytest.mark.parametrize(
    "field",
    ["amount", "pay_to", "asset", "network", "min_confirmations", "binding", "resource", "scheme"],
)
def test_any_edited_term_breaks_the_mac(field: str) -> None:
    signer = ChallengeSigner({"k1": K1}, "k1")
    ch = signer.issue(TERMS)
    value = getattr(TERMS, field)
    edited: Any
    if isinstance(value, Binding):
        edited = Binding.NONE
    elif isinstance(value, int):
        edited = value - 1
    else:
        edited = value + "x"
    with pytest.raises(FinalError) as err:
        signer.authenticate(ch.nonce, dataclasses.replace(TERMS, **{field: edited}))
    assert err.value.reason is ReasonCode.NONCE_UNKNOWN


def test_forged_and_malformed_nonces() -> None:
    signer = ChallengeSigner({"k1": K1}, "k1")
    ch = signer.issue(TERMS)
    head, _, mac = ch.nonce.rpartition(".")
    flipped = head + "." + ("A" if mac[0] != "A" else "B") + mac[1:]
    other = ChallengeSigner({"k1": b"q" * 32}, "k1").issue(TERMS).nonce
    longer = head.replace(".600.", ".").split(".")
    for bad in [
        flipped,
        other,
        "garbage",
        ch.nonce + "x",
        "n1.k9" + ch.nonce[5:],
        ".".join(longer),
    ]:
        with pytest.raises(FinalError) as err:
            signer.authenticate(bad, TERMS)
        assert err.value.reason is ReasonCode.NONCE_UNKNOWN


def test_lifetime_cannot_be_extended() -> None:
    signer = ChallengeSigner({"k1": K1}, "k1")
    ch = signer.issue(TERMS, now=1_000)
    parts = ch.nonce.split(".")
    parts[3] = str(int(parts[3]) + 10_000)
    with pytest.raises(FinalError):
        signer.authenticate(".".join(parts), TERMS)


def test_key_rotation() -> None:
    old = ChallengeSigner({"k1": K1}, "k1")
    ch = old.issue(TERMS)
    rotated = ChallengeSigner({"k1": K1, "k2": K2}, "k2")
    assert rotated.authenticate(ch.nonce, TERMS).kid == "k1"
    fresh = rotated.issue(TERMS)
    assert fresh.kid == "k2" and ".k2." in fresh.nonce
    retired = ChallengeSigner({"k2": K2}, "k2")
    with pytest.raises(FinalError):
        retired.authenticate(ch.nonce, TERMS)


def test_bad_key_configuration() -> None:
    with pytest.raises(ConfigError):
        ChallengeSigner({"k1": b"short"}, "k1")
    with pytest.raises(ConfigError):
        ChallengeSigner({"k1": K1}, "k2")
    with pytest.raises(ConfigError):
        ChallengeSigner({"bad id!": K1}, "bad id!")


def _proof(nonce: str, **accept_changes: object) -> PaymentPayload:
    accept = an_accept(
        nonce,
        network="eip155:8453",
        asset="0xtoken",
        pay_to="0xpayee",
        min_confirmations=3,
        binding="memo",
    )
    return PaymentPayload(
        accepted=accept.model_copy(update=accept_changes),
        payload=ProofBody(nonce=nonce, tx_hash="0x1"),
    )


def test_authenticate_proof_expiry_scheme_network() -> None:
    signer = ChallengeSigner({"k1": K1}, "k1")
    ch = signer.issue(TERMS, now=1_000)
    assert authenticate_proof(signer, _proof(ch.nonce), "/r", now=1_500, grace=0) == ch
    # Past expiry but within grace: still admitted (the block time decides later).
    assert authenticate_proof(signer, _proof(ch.nonce), "/r", now=1_650, grace=100) == ch
    cases = [
        (_proof(ch.nonce), 1_601, ReasonCode.PAYMENT_EXPIRED),
        (_proof(ch.nonce, scheme="upto"), 1_500, ReasonCode.INVALID_SCHEME),
        # A scheme we take, but not the one this challenge was issued for.
        (_proof(ch.nonce, scheme="exact"), 1_500, ReasonCode.NONCE_UNKNOWN),
        (_proof(ch.nonce, network="not a network"), 1_500, ReasonCode.INVALID_NETWORK),
        (_proof(ch.nonce, amount="1"), 1_500, ReasonCode.NONCE_UNKNOWN),
        (_proof(ch.nonce, pay_to="0xattacker"), 1_500, ReasonCode.NONCE_UNKNOWN),
    ]
    for proof, now, reason in cases:
        with pytest.raises(FinalError) as err:
            authenticate_proof(signer, proof, "/r", now=now, grace=0)
        assert err.value.reason is reason
    with pytest.raises(FinalError) as err:
        authenticate_proof(signer, _proof(ch.nonce), "/other", now=1_500, grace=0)
    assert err.value.reason is ReasonCode.NONCE_UNKNOWN


def test_ton_alias_is_the_same_network() -> None:
    signer = ChallengeSigner({"k1": K1}, "k1")
    terms = dataclasses.replace(TERMS, network="tvm:-239")
    ch = signer.issue(terms, now=1_000)
    proof = _proof(ch.nonce, network="ton:-239")
    assert authenticate_proof(signer, proof, "/r", now=1_100, grace=0).terms.network == "tvm:-239"
