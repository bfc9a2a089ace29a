"""Pure readers of toncenter v3 messages: values, bodies (hash-checked), comments, notices.

Kept apart from the adapter so that the adapter module holds the I/O and the decisions on what
a transaction shows, and these stay small, pure and separately testable.
"""

from __future__ import annotations

from typing import Any

from pytoniq_core import begin_cell

from chains.ton.codec import (
    _PARSE_ERRORS,
    OP_TRANSFER_NOTIFICATION,
    body_op,
    canonical_hash,
    cell_from_b64,
    cell_hash_hex,
    comment_of,
    jetton_message,
    normalize_address,
)
from chains.ton.toncenter import V3Message, V3Transaction
from verifier.adapter import RpcUnavailable


def b64_hex(value: Any) -> str | None:
    return canonical_hash(value) if isinstance(value, str) else None


def nanotons(value: Any) -> int:
    """A message value (toncenter: a decimal string); ``ValueError`` if it is anything else."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if value is None:
        return 0
    if not isinstance(value, str) or not value.isascii() or not value.isdigit():
        raise ValueError(f"malformed message value {value!r}")
    return int(value)


def message_body(msg: V3Message) -> Any:
    """The message body cell, checked against the hash the indexer reports for it."""
    content = msg.get("message_content") or {}
    boc = content.get("body")
    if not isinstance(boc, str):
        return begin_cell().end_cell()
    cell = cell_from_b64(boc)
    reported = b64_hex(content.get("hash"))
    if reported is not None and reported != cell_hash_hex(cell):
        raise RpcUnavailable("toncenter message body does not match its hash")
    return cell


def in_comments(msg: V3Message | None) -> tuple[str, ...]:
    if not msg:
        return ()
    try:
        cell = message_body(msg)
    except (AttributeError, *_PARSE_ERRORS) as exc:
        raise RpcUnavailable(f"malformed toncenter message: {exc!r:.200}") from exc
    comment = comment_of(cell)
    jetton = jetton_message(cell)
    found = [c for c in (comment, jetton.forward_comment if jetton else None) if c is not None]
    return tuple(found)


def notified_owners(tx: V3Transaction, wallet: str) -> list[str]:
    """Owners this jetton wallet sent a ``transfer_notification`` to in ``tx``."""
    owners = []
    for out in tx.get("out_msgs") or []:
        dest = out.get("destination")
        if not dest or normalize_address(str(out.get("source"))) != wallet:
            continue
        if body_op(message_body(out)) == OP_TRANSFER_NOTIFICATION:
            owners.append(normalize_address(dest))
    return owners
