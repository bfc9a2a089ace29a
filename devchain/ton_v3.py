"""TL-B ``Transaction`` cells, and the toncenter v3 JSON that describes them.

``pytoniq-core`` parses every part of a transaction but does not serialize transaction
descriptions, so the cells are assembled here field by field after ``block.tlb``; the tests parse
them back with ``pytoniq_core.Transaction`` to prove they are well formed. The v3 view follows the
shape of real toncenter v3 replies (see ``tests/fixtures/ton/``): standard base64 hashes, decimal
strings for amounts and logical times, upper-case raw addresses.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from pytoniq_core import HashMap, Slice, begin_cell

from chains.ton.codec import comment_of

SHARD = "8000000000000000"
GAS_FEES = 3_308_000
GAS_USED = 8_270


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _upper(address: str) -> str:
    wc, _, hex_part = address.partition(":")
    return f"{wc}:{hex_part.upper()}"


def _description(credit: int, success: bool, exit_code: int) -> Any:
    """``trans_ord$0000`` with storage, credit and a VM compute phase, no action phase."""
    d = begin_cell().store_uint(0, 4).store_bool(False)  # credit_first
    d.store_bit(1).store_coins(1_000).store_bit(0).store_bit(0)  # storage_ph, acst_unchanged
    d.store_bit(1).store_bit(0).store_coins(credit).store_bit(0)  # credit_ph
    vm = begin_cell().store_var_uint(GAS_USED, 3).store_var_uint(1_000_000, 3).store_bit(0)
    vm.store_int(0, 8).store_int(exit_code, 32).store_bit(0).store_uint(88, 32)
    vm.store_bytes(bytes(32)).store_bytes(bytes(32))
    d.store_bit(1).store_bool(success).store_bool(False).store_bool(False).store_coins(GAS_FEES)
    d.store_ref(vm.end_cell())
    d.store_bit(0)  # no action phase
    d.store_bool(not success)  # aborted
    d.store_bit(0).store_bool(False)  # no bounce phase, not destroyed
    return d.end_cell()


def _credit(in_msg: Any) -> int:
    from pytoniq_core.tlb.transaction import MessageAny

    info = MessageAny.deserialize(in_msg.begin_parse()).info
    return int(getattr(info, "value_coins", 0) or 0)


def transaction_cell(
    account: str,
    lt: int,
    prev: Any,
    now: int,
    in_msg: Any,
    out_msgs: list[Any],
    *,
    success: bool,
    exit_code: int,
) -> Any:
    """A ``transaction$0111`` cell for ``account`` receiving ``in_msg``."""
    msgs = begin_cell().store_bit(1).store_ref(in_msg)
    outs = HashMap(15, value_serializer=lambda src, dest: dest.store_ref(src))
    for i, out in enumerate(out_msgs):
        outs.set_int_key(i, out)
    msgs.store_dict(outs.serialize() if out_msgs else None)
    state = hashlib.sha256(f"{account}:{lt}".encode()).digest()
    b = begin_cell().store_bits("0111").store_bytes(bytes.fromhex(account.partition(":")[2]))
    b.store_uint(lt, 64)
    b.store_bytes(bytes.fromhex(prev.hash_hex) if prev else bytes(32))
    b.store_uint(prev.lt if prev else 0, 64)
    b.store_uint(now, 32).store_uint(len(out_msgs), 15)
    b.store_uint(2, 2).store_uint(2, 2)  # acc_state_active -> acc_state_active
    b.store_ref(msgs.end_cell())
    b.store_coins(GAS_FEES + 1_000).store_bit(0)  # total_fees:CurrencyCollection
    b.store_ref(
        begin_cell().store_uint(0x72, 8).store_bytes(bytes(32)).store_bytes(state).end_cell()
    )
    b.store_ref(_description(_credit(in_msg), success, exit_code))
    return b.end_cell()


def message_v3(msg_cell: Any) -> dict[str, Any]:
    """A message as toncenter v3 shows it, read back from its cell."""
    from pytoniq_core.tlb.transaction import MessageAny

    msg = MessageAny.deserialize(Slice.one_from_boc(msg_cell.to_boc()))
    info = msg.info
    body = msg.body
    head = body.begin_parse()
    opcode = f"0x{head.load_uint(32):08x}" if head.remaining_bits >= 32 else None
    comment = comment_of(body)
    decoded = None if comment is None else {"type": "text_comment", "comment": comment}
    return {
        "hash": _b64(msg_cell.hash),
        "source": _upper(f"{info.src.wc}:{info.src.hash_part.hex()}"),
        "destination": _upper(f"{info.dest.wc}:{info.dest.hash_part.hex()}"),
        "value": str(info.value_coins),
        "value_extra_currencies": {},
        "fwd_fee": str(info.fwd_fee),
        "ihr_fee": str(info.ihr_fee),
        "created_lt": str(info.created_lt),
        "created_at": str(info.created_at),
        "opcode": opcode,
        "ihr_disabled": bool(info.ihr_disabled),
        "bounce": bool(info.bounce),
        "bounced": bool(info.bounced),
        "import_fee": None,
        "message_content": {
            "hash": _b64(body.hash),
            "body": _b64(body.to_boc()),
            "decoded": decoded,
        },
        "init_state": None,
    }


def _state(seed: str, balance: int) -> dict[str, Any]:
    digest = hashlib.sha256(seed.encode()).digest()
    return {
        "hash": _b64(digest),
        "balance": str(balance),
        "extra_currencies": {},
        "account_status": "active",
        "frozen_hash": None,
        "data_hash": _b64(hashlib.sha256(digest).digest()),
        "code_hash": _b64(hashlib.sha256(b"wallet-v4r2").digest()),
    }


def compute_phase_v3(compute: Any) -> dict[str, Any]:
    """toncenter v3's ``compute_ph`` of a parsed compute phase, every field read from it."""
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


def transaction_v3(
    cell: Any, account: str, in_msg: Any, out_msgs: list[Any], mc_seqno: int | None, block: int
) -> dict[str, Any]:
    """The toncenter v3 view of a transaction cell (``mc_seqno`` None: not in a masterchain
    block yet). Every field is read back from the cell, so the two cannot disagree."""
    from pytoniq_core import Transaction

    tx = Transaction.deserialize(Slice.one_from_boc(cell.to_boc()))
    return {
        "account": _upper(account),
        "hash": _b64(cell.hash),
        "lt": str(tx.lt),
        "now": tx.now,
        "mc_block_seqno": mc_seqno,
        "trace_id": _b64(cell.hash),
        "prev_trans_hash": _b64(tx.prev_trans_hash),
        "prev_trans_lt": str(tx.prev_trans_lt),
        "orig_status": "active",
        "end_status": "active",
        "total_fees": str(tx.total_fees.grams),
        "total_fees_extra_currencies": {},
        "description": {
            "type": "ord",
            "aborted": bool(tx.description.aborted),
            "destroyed": bool(tx.description.destroyed),
            "credit_first": bool(tx.description.credit_first),
            "storage_ph": {"storage_fees_collected": "1000", "status_change": "unchanged"},
            "credit_ph": {"credit": str(tx.description.credit_ph.credit.grams)},
            "compute_ph": compute_phase_v3(tx.description.compute_ph),
        },
        "block_ref": {"workchain": 0, "shard": SHARD, "seqno": block},
        "in_msg": message_v3(in_msg),
        "out_msgs": [message_v3(m) for m in out_msgs],
        "account_state_before": _state(f"{account}:{tx.prev_trans_lt}", 10**10),
        "account_state_after": _state(f"{account}:{tx.lt}", 10**10),
        "emulated": False,
    }
