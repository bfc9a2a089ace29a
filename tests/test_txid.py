"""The gate's transaction id shapes: what each namespace accepts, and that the gate's canonical
form is the adapter's, so a job keyed at the gate names the transaction the worker reads."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from solders.signature import Signature

from chains.evm import EVMAdapter
from chains.solana import SolanaAdapter
from chains.stellar import StellarAdapter
from chains.ton import TONAdapter
from verifier import txid
from verifier.errors import InvalidProof
from verifier.settings import NetworkSettings
from verifier.txid import MAX_TX_REF, canonical_tx_ref

CONFIG = NetworkSettings(rpc_urls=["http://127.0.0.1:9"])
EVM = EVMAdapter("eip155:8453", CONFIG)
SOLANA = SolanaAdapter("solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1", CONFIG)
STELLAR = StellarAdapter("stellar:testnet", CONFIG)
TON = TONAdapter("tvm:-3", CONFIG)
NONCE = "n1.k1.1.2.AAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA"
TON_ACCOUNT = "0:" + "ab" * 32


@given(st.binary(min_size=32, max_size=32), st.booleans())
def test_evm_hash_is_lowercased_like_the_adapter(raw: bytes, upper: bool) -> None:
    ref = "0x" + (raw.hex().upper() if upper else raw.hex())
    assert canonical_tx_ref("eip155:8453", ref, nonce=NONCE) == EVM.canonical_txid(ref)


@given(st.binary(min_size=64, max_size=64))
def test_solana_signature_is_the_adapters(raw: bytes) -> None:
    ref = str(Signature.from_bytes(raw))
    assert canonical_tx_ref("solana:x", ref, nonce=NONCE) == SOLANA.canonical_txid(ref)


@given(st.binary(min_size=32, max_size=32), st.sampled_from(["hex", "HEX", "b64", "b64url"]))
def test_stellar_and_ton_hashes_are_the_adapters(raw: bytes, form: str) -> None:
    text = {
        "hex": raw.hex(),
        "HEX": raw.hex().upper(),
        "b64": base64.b64encode(raw).decode(),
        "b64url": base64.urlsafe_b64encode(raw).decode(),
    }[form]
    assert canonical_tx_ref("tvm:-3", text, nonce=NONCE) == TON.canonical_txid(text)
    if form.lower() == "hex":
        assert canonical_tx_ref("stellar:testnet", text, nonce=NONCE) == STELLAR.canonical_txid(
            text
        )


@pytest.mark.parametrize(
    ("network", "ref"),
    [
        ("eip155:1", "0x" + "ab" * 31),  # 31 bytes
        ("eip155:1", "ab" * 32),  # no 0x
        ("eip155:1", "0x" + "zz" * 32),
        ("solana:x", str(Signature.from_bytes(b"\x07" * 64)) + "2"),  # 65 bytes
        ("solana:x", "0OIl" * 20),  # not base58
        ("stellar:pubnet", "0x" + "ab" * 32),
        ("stellar:pubnet", "ab" * 31),
        ("tvm:-239", "ab" * 33),
        ("tvm:-239", "ton:nobody|" + NONCE),  # not an account
        ("tvm:-239", f"ton:{TON_ACCOUNT}|"),
        ("eip155:1", ""),
        ("acme:1", "x" * (MAX_TX_REF + 1)),
        ("acme:1", "has space"),
        ("acme:1", "caf\u00e9"),
    ],
)
def test_refused_shapes(network: str, ref: str) -> None:
    with pytest.raises(InvalidProof):
        canonical_tx_ref(network, ref, nonce=NONCE)


def test_ton_locator_must_name_the_proofs_challenge() -> None:
    memo = hashlib.sha256(NONCE.encode()).hexdigest()
    for named in (NONCE, memo):
        ref = f"ton:{TON_ACCOUNT}|{named}"
        assert canonical_tx_ref("tvm:-239", ref, nonce=NONCE) == ref
    with pytest.raises(InvalidProof, match="another challenge"):
        canonical_tx_ref("tvm:-239", f"ton:{TON_ACCOUNT}|{'00' * 32}", nonce=NONCE)


def test_an_undeclared_namespace_is_only_bounded() -> None:
    assert canonical_tx_ref("acme:1", "  Any-Id.42  ", nonce=NONCE) == "Any-Id.42"


def test_a_third_party_declares_its_shape_by_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "acme_shape.py").write_text(
        "def shape(ref):\n"
        "    if not ref.startswith('acme-'):\n"
        "        raise ValueError('an acme id starts with acme-')\n"
        "    return ref.lower()\n"
    )
    info = tmp_path / "acme_chain-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-chain\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[verifier.txid]\nacme = acme_shape:shape\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    txid._declared.cache_clear()
    try:
        assert canonical_tx_ref("acme:1", "acme-ABC", nonce=NONCE) == "acme-abc"
        with pytest.raises(InvalidProof, match="starts with acme-"):
            canonical_tx_ref("acme:1", "ABC", nonce=NONCE)
    finally:
        txid._declared.cache_clear()
