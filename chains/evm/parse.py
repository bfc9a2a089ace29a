"""Reading EVM JSON-RPC replies and signatures, without I/O: the raw shapes as ``TypedDict``s,
ERC-20 ``Transfer`` logs, calldata commitments and EIP-191 recovery (rules: ``chains.evm.adapter``).

Every malformed value in a reply is ``RpcUnavailable`` (transient): a node's bad answer is not a
verdict on the payment.
"""

from __future__ import annotations

import re
from typing import Any, TypedDict

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_keys.exceptions import BadSignature
from eth_utils import keccak

from verifier.adapter import RpcUnavailable, Transfer

TRANSFER_TOPIC = "0x" + keccak(text="Transfer(address,address,uint256)").hex()
_TRANSFER = keccak(text="transfer(address,uint256)")[:4]
_TRANSFER_FROM = keccak(text="transferFrom(address,address,uint256)")[:4]
_WORD_ADDRESS = re.compile(r"^0x0{24}([0-9a-f]{40})$")


class RpcLog(TypedDict, total=False):
    address: str
    topics: list[str]
    data: str
    removed: bool


class RpcReceipt(TypedDict, total=False):
    transactionHash: str
    blockHash: str
    blockNumber: str
    status: str
    logs: list[RpcLog]


class RpcTransaction(TypedDict, total=False):
    hash: str
    blockNumber: str | None
    to: str | None
    value: str
    input: str
    chainId: str


class RpcBlock(TypedDict, total=False):
    hash: str
    number: str
    timestamp: str


def hex_int(value: Any, what: str) -> int:
    try:
        return int(value, 16)
    except (TypeError, ValueError) as exc:
        raise RpcUnavailable(f"malformed {what} in RPC reply: {value!r}") from exc


def hex_bytes(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise RpcUnavailable(f"malformed {what} in RPC reply")
    try:
        return bytes.fromhex(value[2:])
    except ValueError as exc:
        raise RpcUnavailable(f"malformed {what} in RPC reply") from exc


def eip191_hash(message: bytes) -> bytes:
    """keccak256 of the EIP-191 ``personal_sign`` envelope of ``message``."""
    return keccak(b"\x19Ethereum Signed Message:\n" + str(len(message)).encode() + message)


def transfers_from_logs(logs: list[RpcLog]) -> list[Transfer]:
    """Well-formed ERC-20 Transfer logs as transfers; anything else is ignored."""
    found = []
    for log in logs:
        topics = log.get("topics") or []
        if log.get("removed") or len(topics) != 3 or topics[0].lower() != TRANSFER_TOPIC:
            continue
        data = log.get("data", "")
        sender = _WORD_ADDRESS.match(topics[1].lower())
        recipient = _WORD_ADDRESS.match(topics[2].lower())
        if sender is None or recipient is None or len(data) != 66:
            continue
        found.append(
            Transfer(
                asset=str(log.get("address", "")).lower(),
                sender="0x" + sender.group(1),
                recipient="0x" + recipient.group(1),
                amount=hex_int(data, "log data"),
            )
        )
    return found


def signature_bytes(signature: str) -> bytes | None:
    """The 65 bytes of an ``r || s || v`` hex signature (``0x`` optional), or None."""
    try:
        sig = bytes.fromhex(signature.strip().removeprefix("0x"))
    except ValueError:
        return None
    return sig if len(sig) == 65 else None


def recover_personal(message: bytes, sig: bytes) -> str:
    """The lowercase address whose key made the EIP-191 signature ``sig``, or ``""``.

    eth_keys raises ``BadSignature`` (not a ``ValueError``) for r or s out of range, and
    ``ValueError``/``TypeError`` for a bad v: all of them mean "not a valid signature".
    """
    try:
        recovered = Account.recover_message(encode_defunct(primitive=message), signature=sig)
    except (BadSignature, ValueError, TypeError):
        return ""
    return str(recovered).lower()


def calldata_memos(calldata: bytes, native: bool, memo: str) -> tuple[str, ...]:
    """The commitment a transaction's input carries, where the input says so for certain.

    A 32-byte suffix after the arguments of ``transfer`` or ``transferFrom``, or the whole
    32-byte input of a native payment, is a memo. The input of any other call is ABI words of
    unknown meaning, so its last 32 bytes only count when they are this challenge's commitment
    (``memo``): it binds, but another tail is not read as another challenge's commitment.
    """
    tail = calldata[-32:].hex() if len(calldata) >= 32 else ""
    if (
        (native and len(calldata) == 32)
        or (calldata[:4] == _TRANSFER and len(calldata) == 4 + 64 + 32)
        or (calldata[:4] == _TRANSFER_FROM and len(calldata) == 4 + 96 + 32)
    ):
        return (tail,)
    return (tail,) if tail and tail == memo else ()
