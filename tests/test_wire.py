"""Header codecs: ours both ways, the reference x402 package both ways, hostile input."""

from __future__ import annotations

import base64
import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from x402.http.utils import (
    decode_payment_required_header,
    decode_payment_response_header,
    decode_payment_signature_header,
    encode_payment_signature_header,
)
from x402.schemas import PaymentPayload as RefPayload
from x402.schemas import PaymentRequired as RefRequired
from x402.schemas import PaymentRequirements as RefRequirements

from tests.support import an_accept
from verifier.challenge import memo_for
from verifier.errors import InvalidProof
from verifier.models import (
    Failure,
    PaymentPayload,
    PaymentRequired,
    ProofBody,
    ReasonCode,
    Receipt,
    ResourceInfo,
    failure,
)
from verifier.wire import (
    decode_payment_payload,
    decode_payment_required,
    decode_payment_response,
    encode_json,
    proof_header,
    response_headers,
)

NONCE = "n1.k1.1767000000.1767000600.AAAAAAAAAAAAAAAAAAAAAA.BBBBBBBBBBBBBBBBBBBBBB"
ACCEPT = an_accept(
    NONCE,
    network="eip155:8453",
    asset="0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
    pay_to="0x00000000000000000000000000000000000000aa",
    decimals=6,
    symbol="USDC",
)
TX = "0x" + "ab" * 32


def b64(obj: object) -> str:
    return base64.b64encode(json.dumps(obj).encode()).decode()


def test_payment_required_roundtrip_and_reference_decodes_it() -> None:
    required = PaymentRequired(resource=ResourceInfo(url="https://api.example/x"), accepts=[ACCEPT])
    header = encode_json(required)
    assert decode_payment_required(header) == required
    ref = decode_payment_required_header(header)
    assert isinstance(ref, RefRequired)  # the v2 shape, not PaymentRequiredV1
    assert ref.x402_version == 2
    assert ref.accepts[0].pay_to == ACCEPT.pay_to
    assert ref.accepts[0].amount == "100000"
    extra = ref.accepts[0].extra
    assert extra is not None
    assert extra["nonce"] == NONCE
    assert extra["memo"] == memo_for(NONCE)


def test_reference_encoded_proof_decodes_with_ours() -> None:
    requirements = RefRequirements.model_validate(ACCEPT.model_dump(by_alias=True))
    ref = RefPayload(accepted=requirements, payload={"nonce": NONCE, "txHash": TX})
    ours = decode_payment_payload(encode_payment_signature_header(ref))
    assert ours.proof.tx_hash == TX
    assert ours.accepted == ACCEPT


def test_our_proof_decodes_with_reference() -> None:
    proof = PaymentPayload(accepted=ACCEPT, payload=ProofBody(nonce=NONCE, tx_hash=TX))
    ref = decode_payment_signature_header(encode_json(proof))
    assert isinstance(ref, RefPayload)  # the v2 shape, not PaymentPayloadV1
    assert ref.payload == {"nonce": NONCE, "txHash": TX}
    assert ref.accepted.network == "eip155:8453"


def test_receipt_and_failure_decode_with_reference() -> None:
    receipt = Receipt(
        network="eip155:8453",
        transaction=TX,
        asset=ACCEPT.asset,
        amount="100000",
        payer="0x" + "11" * 20,
        pay_to=ACCEPT.pay_to,
        verified_at="2026-01-01T00:00:00.000Z",
        nonce=NONCE,
        extensions={"onchain-proof": {"paidAmount": "100000", "bound": True}},
    )
    ref = decode_payment_response_header(encode_json(receipt))
    assert ref.success and ref.transaction == TX and ref.payer == receipt.payer
    assert decode_payment_response(encode_json(receipt)) == receipt

    fail = failure(ReasonCode.AMOUNT_TOO_LOW, "paid 1", network="eip155:8453", nonce=NONCE)
    ref_fail = decode_payment_response_header(encode_json(fail))
    assert not ref_fail.success and ref_fail.error_reason == "amount_too_low"
    back = decode_payment_response(encode_json(fail))
    assert isinstance(back, Failure) and back.error_reason is ReasonCode.AMOUNT_TOO_LOW
    assert back.transient is False


def test_v1_alias_and_v2_name_both_read_and_written() -> None:
    assert proof_header({"X-PAYMENT": "a"}) == "a"
    assert proof_header({"payment-signature": "b", "x-payment": "a"}) == "b"
    assert proof_header({"accept": "x"}) is None
    headers = response_headers(failure(ReasonCode.TX_NOT_FOUND, "later"))
    assert headers["PAYMENT-RESPONSE"] == headers["X-PAYMENT-RESPONSE"]


def test_urlsafe_and_unpadded_base64_accepted() -> None:
    proof = PaymentPayload(accepted=ACCEPT, payload=ProofBody(nonce=NONCE, tx_hash=TX))
    raw = proof.model_dump_json(by_alias=True).encode()
    urlsafe = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert decode_payment_payload(urlsafe) == proof


@pytest.mark.parametrize(
    ("header", "fragment"),
    [
        ("", "empty"),
        ("%%%not-base64%%%", "base64"),
        (base64.b64encode(b"\xff\xfe").decode(), "JSON"),
        (base64.b64encode(b"{not json").decode(), "JSON"),
        (b64([1, 2, 3]), "JSON object"),
        (b64({"x402Version": 2}), "accepted"),
        (b64({"x402Version": 2, "accepted": "x", "payload": {}}), "accepted"),
        ("A" * 20000, "larger than"),
    ],
)
def test_malformed_headers_raise_invalid_proof(header: str, fragment: str) -> None:
    with pytest.raises(InvalidProof, match=fragment):
        decode_payment_payload(header)


def _proof_dict(**changes: object) -> dict[str, object]:
    data = PaymentPayload(accepted=ACCEPT, payload=ProofBody(nonce=NONCE, tx_hash=TX)).model_dump(
        by_alias=True
    )
    for path, value in changes.items():
        target = data
        *parents, leaf = path.split("__")
        for p in parents:
            target = target[p]
        target[leaf] = value
    return data


@pytest.mark.parametrize(
    "changes",
    [
        {"accepted__amount": 100000},  # a number, not a string
        {"accepted__amount": "1.5"},  # never floats
        {"accepted__amount": "-5"},
        {"accepted__amount": "9" * 200},
        {"accepted__maxTimeoutSeconds": "soon"},
        {"accepted__extra__memo": "zz"},
        {"payload__txHash": ""},
        {"payload__txHash": "a" * 1000},
        {"payload__nonce": "other"},  # differs from accepted.extra.nonce
        {"x402Version": 3},
    ],
)
def test_wrong_types_and_sizes_are_invalid(changes: dict[str, object]) -> None:
    with pytest.raises(InvalidProof):
        decode_payment_payload(b64(_proof_dict(**changes)))


@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_crash(raw: bytes) -> None:
    for header in (raw, base64.b64encode(raw)):
        with contextlib.suppress(InvalidProof):
            decode_payment_payload(header)


@given(
    amount=st.integers(min_value=0, max_value=10**40),
    tx=st.text(alphabet="0123456789abcdefx", min_size=1, max_size=100),
)
def test_proof_roundtrip_property(amount: int, tx: str) -> None:
    accept = ACCEPT.model_copy(update={"amount": str(amount)})
    proof = PaymentPayload(accepted=accept, payload=ProofBody(nonce=NONCE, tx_hash=tx))
    assert decode_payment_payload(encode_json(proof)) == proof
