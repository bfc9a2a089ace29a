"""TON native payments executed for real by ``@ton/sandbox``, verified through the adapter.

``tests/fixtures/ton_sandbox/transactions.json`` holds receiving-side transactions that the TVM
emulator of ``@ton/sandbox`` produced (``tools/ton-sandbox/export.mjs``): treasury wallets paying
each other with and without a text comment, and a payment to an undeployed bounceable address that
aborts there and bounces back. Each BOC is parsed here with ``pytoniq-core``; its toncenter v3 view
is derived from the parsed cell, put in the local ledger as is, and read back by ``TONAdapter``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pytoniq_core import Cell, Transaction

from chains.ton import TONAdapter
from chains.ton.codec import comment_of, normalize_address
from devchain.ton_chain import TonLedger
from devchain.ton_v3 import SHARD, message_v3
from devchain.toncenter import ToncenterServer
from verifier.adapter import Observation, Query
from verifier.assets import NATIVE
from verifier.settings import NetworkSettings

FIXTURE = Path(__file__).parent / "fixtures" / "ton_sandbox" / "transactions.json"
DATA: dict[str, Any] = json.loads(FIXTURE.read_text())
NETWORK = f"tvm:{DATA['global_id']}"
PAYER = normalize_address(DATA["payer"])
PAYEE = normalize_address(DATA["payee"])
COMMENT: str = DATA["comment"]
AMOUNT = int(DATA["amount"])


def record(name: str) -> dict[str, Any]:
    return next(t for t in DATA["transactions"] if t["name"] == name)


def parse(rec: dict[str, Any]) -> tuple[Any, Any]:
    cell = Cell.one_from_boc(base64.b64decode(rec["boc"]))
    return cell, Transaction.deserialize(cell.begin_parse())


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _upper(address: str) -> str:
    wc, _, hex_part = address.partition(":")
    return f"{wc}:{hex_part.upper()}"


def _compute_v3(compute: Any) -> dict[str, Any]:
    if not hasattr(compute, "success"):  # tr_phase_compute_skipped$0
        return {"skipped": True, "reason": str(getattr(compute.reason, "type_", compute.reason))}
    return {
        "skipped": False,
        "success": bool(compute.success),
        "msg_state_used": bool(compute.msg_state_used),
        "account_activated": bool(compute.account_activated),
        "gas_fees": str(compute.gas_fees),
        "gas_used": str(compute.gas_used),
        "gas_limit": str(compute.gas_limit),
        "mode": compute.mode,
        "exit_code": compute.exit_code,
        "vm_steps": compute.vm_steps,
        "vm_init_state_hash": _b64(compute.vm_init_state_hash),
        "vm_final_state_hash": _b64(compute.vm_final_state_hash),
    }


def toncenter_v3(cell: Any, tx: Any, account: str) -> dict[str, Any]:
    """What toncenter v3 shows for an ordinary transaction, every field read from its cell."""
    descr = tx.description
    in_msg = cell.refs[0].refs[0]  # ^[ in_msg:(Maybe ^Message) out_msgs ]
    return {
        "account": _upper(account),
        "hash": _b64(cell.hash),
        "lt": str(tx.lt),
        "now": tx.now,
        "mc_block_seqno": None,  # set by the ledger
        "trace_id": _b64(cell.hash),
        "prev_trans_hash": _b64(tx.prev_trans_hash),
        "prev_trans_lt": str(tx.prev_trans_lt),
        "orig_status": tx.orig_status.type_,
        "end_status": tx.end_status.type_,
        "total_fees": str(tx.total_fees.grams),
        "total_fees_extra_currencies": {},
        "description": {
            "type": "ord",
            "aborted": bool(descr.aborted),
            "destroyed": bool(descr.destroyed),
            "credit_first": bool(descr.credit_first),
            "compute_ph": _compute_v3(descr.compute_ph),
        },
        "block_ref": {"workchain": 0, "shard": SHARD, "seqno": 1},
        "in_msg": message_v3(in_msg),
        "out_msgs": [],
        "emulated": False,
    }


def test_sandbox_bocs_parse_and_hash() -> None:
    """Each exported BOC is a real ``Transaction`` whose cell hash is the exported hash and whose
    inbound message is the exported one."""
    assert DATA["global_id"] == -239
    assert len(DATA["transactions"]) == 4
    for rec in DATA["transactions"]:
        cell, tx = parse(rec)
        assert bytes(cell.hash).hex() == rec["hash"]
        assert (tx.now, str(tx.lt)) == (rec["now"], rec["lt"])
        assert f"0:{tx.account_addr_hex}" == rec["account"]
        assert bool(tx.description.aborted) == rec["aborted"]
        msg, exported = tx.in_msg, rec["in_msg"]
        assert msg.is_internal
        info = msg.info
        assert f"{info.src.wc}:{info.src.hash_part.hex()}" == exported["source"]
        assert f"{info.dest.wc}:{info.dest.hash_part.hex()}" == exported["destination"]
        assert str(info.value_coins) == exported["value"]
        assert bool(info.bounced) == exported["bounced"]
        body = Cell.one_from_boc(base64.b64decode(exported["body_boc"]))
        assert bytes(body.hash).hex() == exported["body_hash"] == bytes(msg.body.hash).hex()

    comment = parse(record("comment"))[1]
    assert comment_of(comment.in_msg.body) == COMMENT
    assert comment.description.compute_ph.success
    assert comment_of(parse(record("no_comment"))[1].in_msg.body) is None
    failed = parse(record("bounced_at_payee"))[1]
    assert failed.description.aborted and not hasattr(failed.description.compute_ph, "success")
    assert failed.end_status.type_ == "nonexist"  # no account there: the value bounced back
    assert parse(record("bounce_back"))[1].in_msg.info.bounced


@pytest.fixture
async def sandbox() -> AsyncIterator[tuple[TONAdapter, dict[str, str]]]:
    ledger = TonLedger(global_id=DATA["global_id"])
    hashes = {}
    for rec in DATA["transactions"]:
        cell, tx = parse(rec)
        hashes[rec["name"]] = ledger.insert(cell, toncenter_v3(cell, tx, rec["account"]))
    server = ToncenterServer(ledger).start()
    adapter = TONAdapter(NETWORK, NetworkSettings(rpc_urls=[server.url], head_cache_seconds=0))
    try:
        await adapter.start()  # pins the server to the sandbox's global id
        yield adapter, hashes
    finally:
        await adapter.close()
        server.stop()


async def observe(adapter: TONAdapter, txid: str, pay_to: str = PAYEE) -> Observation:
    query = Query(
        txid=adapter.canonical_txid(txid),
        asset=NATIVE,
        pay_to=pay_to,
        min_confirmations=1,
        memo=COMMENT,
        issued_at=DATA["transactions"][0]["now"],
    )
    return await adapter.observe(query)


async def test_sandbox_comment_payment_verifies(sandbox: tuple[TONAdapter, dict[str, str]]) -> None:
    adapter, hashes = sandbox
    assert hashes["comment"] == record("comment")["hash"]
    obs = await observe(adapter, hashes["comment"])
    assert obs.success and obs.txid == hashes["comment"]
    assert [(t.asset, t.sender, t.recipient, t.amount) for t in obs.transfers] == [
        (NATIVE, PAYER, PAYEE, AMOUNT)
    ]
    assert obs.memos == (COMMENT,) and obs.payer == PAYER
    assert obs.block_time == record("comment")["now"]
    # The same payment found by the payee's locator (the nonce is the commitment itself).
    located = await observe(adapter, f"ton:{PAYEE}|{COMMENT}")
    assert located.txid == hashes["comment"] and located.transfers == obs.transfers


async def test_sandbox_bounced_payment_is_no_payment(
    sandbox: tuple[TONAdapter, dict[str, str]],
) -> None:
    adapter, hashes = sandbox
    nowhere = normalize_address(DATA["undeployed"])
    failed = await observe(adapter, hashes["bounced_at_payee"], pay_to=nowhere)
    assert not failed.success and failed.transfers == ()
    assert failed.memos == (COMMENT,)  # the comment alone proves nothing
    back = await observe(adapter, hashes["bounce_back"], pay_to=PAYER)
    assert back.transfers == () and back.memos == ()


async def test_sandbox_payment_without_comment(sandbox: tuple[TONAdapter, dict[str, str]]) -> None:
    adapter, hashes = sandbox
    obs = await observe(adapter, hashes["no_comment"])
    assert obs.success and obs.memos == ()
    assert [(t.sender, t.recipient, t.amount) for t in obs.transfers] == [(PAYER, PAYEE, AMOUNT)]
