"""TON encodings and the local server's shape, checked against real recorded chain data."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from pytoniq_core import Cell, Slice, Transaction

from chains.ton import TONAdapter, codec
from devchain.ton_chain import TonLedger, account_for, notification_body
from devchain.toncenter import ToncenterServer
from tests.harness_ton import MASTER, PAYEE, PAYER, friendly
from tests.support import RECORDED, shape
from verifier.adapter import InvalidProof
from verifier.settings import NetworkSettings

BOCS = RECORDED / "ton" / "ton-core-boc"
SAMPLE = Path(__file__).parent / "fixtures" / "ton" / "toncenter_v3_transactions.json"


def real_tx(name: str) -> Any:
    cell = Cell.one_from_boc(base64.b64decode((BOCS / name).read_text().strip()))
    return cell, Transaction.deserialize(cell.begin_parse())


def test_real_wallet_transfer_boc() -> None:
    _, tx = real_tx("wallet_external_out_10000TON.boc.b64")
    assert tx.in_msg.is_external and len(tx.out_msgs) == 1
    out = tx.out_msgs[0]
    assert out.is_internal and out.info.value_coins == 10_000 * 10**9
    assert tx.description.compute_ph.success and not tx.description.aborted


def test_real_deploy_and_masterchain_bocs() -> None:
    _, deploy = real_tx("state_init_deploy_wallet_out_0.05TON.boc.b64")
    assert deploy.in_msg.init is not None  # the external message deploys the wallet
    assert deploy.out_msgs[0].info.value_coins == 50_000_000
    _, master = real_tx("masterchain_external_src_address_out_100TON.boc.b64")
    assert master.out_msgs[0].info.value_coins == 100 * 10**9
    _, ticktock = real_tx("tick_tock_masterchain.boc.b64")
    assert ticktock.in_msg is None and ticktock.description.__class__.__name__.endswith("TickTock")


def test_real_toncenter_body_hashes_match() -> None:
    """The body check the adapter makes holds on real toncenter data."""
    tx = json.loads(SAMPLE.read_text())["transactions"][0]
    for msg in [tx["in_msg"], *tx["out_msgs"]]:
        content = msg["message_content"]
        body = codec.cell_from_b64(content["body"])
        assert codec.cell_hash_hex(body) == codec.canonical_hash(content["hash"])
        assert codec.comment_of(body) is None  # op 9 / 0x18: not comments


def test_local_server_speaks_the_real_v3_shape() -> None:
    real = json.loads(SAMPLE.read_text())
    ledger = TonLedger()
    h = ledger.pay_ton(PAYER, PAYEE, 10**7, "hello")
    wallet_tx, _ = ledger.pay_jetton(MASTER, PAYER, PAYEE, 5, "x")
    server = ToncenterServer(ledger, masters={MASTER}).start()
    try:
        local = httpx.get(f"{server.url}/api/v3/transactions", params={"hash": h}).json()
        jetton = httpx.get(f"{server.url}/api/v3/transactions", params={"hash": wallet_tx}).json()
    finally:
        server.stop()
    real_tx, local_tx = real["transactions"][0], local["transactions"][0]
    assert set(real) <= set(local)  # real replies also carry an address_book
    assert set(local_tx) == set(real_tx)
    for key in ("account", "hash", "lt", "now", "mc_block_seqno", "block_ref"):
        assert shape(local_tx[key]) == shape(real_tx[key]), key
    # decoded is null for bodies toncenter does not render (a jetton transfer, like the sample's)
    assert shape(jetton["transactions"][0]["in_msg"]) == shape(real_tx["in_msg"])
    assert local_tx["in_msg"]["message_content"]["decoded"]["comment"] == "hello"
    real_descr, local_descr = real_tx["description"], local_tx["description"]
    assert set(local_descr) <= set(real_descr)
    assert shape(local_descr["compute_ph"]) == shape(real_descr["compute_ph"])
    out = jetton["transactions"][0]["out_msgs"][0]
    assert shape(out) == shape(real_tx["out_msgs"][1])
    # and the transaction cell behind it is a real TL-B Transaction
    parsed = Transaction.deserialize(Slice.one_from_boc(ledger.txs[h].cell.to_boc()))
    assert parsed.in_msg.info.value_coins == 10**7 and parsed.now == local_tx["now"]
    assert base64.b64decode(local_tx["hash"]).hex() == h


def test_address_forms_normalize_to_one() -> None:
    # an account whose user-friendly forms differ between url-safe and standard base64
    raw = next(
        a
        for a in (account_for(f"acct{i}") for i in range(100))
        if friendly(a) != friendly(a, url_safe=False)
    )
    forms = [
        raw,
        raw.upper().replace("0X", "0x"),
        friendly(raw),
        friendly(raw, bounceable=False),
        friendly(raw, testnet=True),
        friendly(raw, bounceable=False, testnet=True),
        friendly(raw, url_safe=False),
    ]
    assert len(set(forms)) == len(forms)
    assert {codec.normalize_address(f) for f in forms} == {raw}
    assert codec.normalize_address(friendly(account_for("m", -1))).startswith("-1:")


@pytest.mark.parametrize(
    "bad",
    ["", "0:abc", "2:" + "00" * 32, "EQ" + "A" * 46, friendly(PAYEE)[:-1] + "A", "0x" + "11" * 20],
)
def test_malformed_addresses_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        codec.normalize_address(bad)


def test_hash_forms_and_locators() -> None:
    raw = bytes(range(32))
    expected = raw.hex()
    for form in (
        expected.upper(),
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
    ):
        assert codec.canonical_hash(form) == expected
    assert codec.canonical_hash("ab" * 31) is None and codec.canonical_hash("!" * 44) is None
    adapter = TONAdapter("tvm:-3", NetworkSettings(rpc_urls=["http://127.0.0.1:9"]))
    loc = adapter.canonical_txid(f"ton:{friendly(PAYEE)}|n1.k1.nonce")
    assert loc == f"ton:{PAYEE}|n1.k1.nonce"
    assert codec.parse_locator(loc) is not None and codec.parse_locator(expected) is None
    for bad in ("ton:nope|x", f"ton:{PAYEE}|", "deadbeef"):
        with pytest.raises(InvalidProof):
            adapter.canonical_txid(bad)


def test_jetton_bodies_parse_with_forward_comment() -> None:
    body = notification_body(1_500_000, PAYER, "the memo")
    parsed = codec.jetton_message(body)
    assert parsed is not None
    assert (parsed.amount, parsed.sender, parsed.forward_comment) == (1_500_000, PAYER, "the memo")
    assert codec.jetton_message(Cell.one_from_boc(Cell.empty().to_boc())) is None
