"""Render a transaction that LiteSVM executed as a real ``getTransaction`` jsonParsed result.

Only the shape is ours: every number and key comes from the executed transaction and the account
states LiteSVM held before and after it. Instructions of the programs a payment uses (System,
SPL Token and Token-2022, Associated Token Account, Memo) are parsed the way the RPC parses them;
others keep the RPC's partially decoded form (``accounts``, base58 ``data``).
``tests/test_solana_server.py`` holds this shape against real recorded responses.
"""

from __future__ import annotations

import struct
from decimal import Decimal
from typing import Any

SYSTEM = "11111111111111111111111111111111"
TOKEN = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"
TOKEN_2022 = "TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb"
ATA = "ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL"
MEMO_V1 = "Memo1UhkJRfHyvLMcVucJwxXeuD728EqVDDwQDxFMNo"
MEMO = "MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr"
_AUTHORITY_TYPES = ("mintTokens", "freezeAccount", "accountOwner", "closeAccount")
_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def b58encode(raw: bytes) -> str:
    number = int.from_bytes(raw, "big")
    out = ""
    while number:
        number, digit = divmod(number, 58)
        out = _B58[digit] + out
    return "1" * (len(raw) - len(raw.lstrip(b"\0"))) + out


def ui_amount(amount: int, decimals: int) -> dict[str, Any]:
    """``uiTokenAmount`` as the RPC writes it (``uiAmount`` is null for zero)."""
    text = format(Decimal(amount).scaleb(-decimals), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return {
        "amount": str(amount),
        "decimals": decimals,
        "uiAmount": float(text) if amount else None,
        "uiAmountString": text,
    }


def _u64(data: bytes, offset: int) -> int:
    value: int = struct.unpack_from("<Q", data, offset)[0]
    return value


def _token(data: bytes, acc: list[str]) -> tuple[str, dict[str, Any]]:
    info: dict[str, Any]
    kind = data[0]
    if kind == 3:
        info = {"amount": str(_u64(data, 1)), "authority": acc[2], "destination": acc[1]}
        return "transfer", {**info, "source": acc[0]}
    if kind == 12:
        amount = ui_amount(_u64(data, 1), data[9])
        info = {"authority": acc[3], "destination": acc[2], "mint": acc[1], "source": acc[0]}
        return "transferChecked", {**info, "tokenAmount": amount}
    if kind == 6:
        authority_type = _AUTHORITY_TYPES[data[1]]
        target = "mint" if authority_type in ("mintTokens", "freezeAccount") else "account"
        new = b58(data[3:35]) if data[2] else None
        info = {target: acc[0], "authority": acc[1], "authorityType": authority_type}
        return "setAuthority", {**info, "newAuthority": new}
    if kind == 7:
        info = {"account": acc[1], "amount": str(_u64(data, 1)), "mint": acc[0]}
        return "mintTo", {**info, "mintAuthority": acc[2]}
    if kind == 18:
        return "initializeAccount3", {"account": acc[0], "mint": acc[1], "owner": b58(data[1:33])}
    if kind == 20:
        info = {
            "decimals": data[1],
            "mint": acc[0],
            "mintAuthority": b58(data[2:34]),
        }
        return "initializeMint2", info
    if kind == 21:
        return "getAccountDataSize", {"mint": acc[0]}
    if kind == 22:
        return "initializeImmutableOwner", {"account": acc[0]}
    if kind == 26 and data[1] == 0:
        return "initializeTransferFeeConfig", {"mint": acc[0]}
    if kind == 26 and data[1] == 1:
        mint_decimals = data[10]
        info = {"authority": acc[3], "destination": acc[2], "mint": acc[1], "source": acc[0]}
        return "transferCheckedWithFee", {
            **info,
            "feeAmount": ui_amount(_u64(data, 11), mint_decimals),
            "tokenAmount": ui_amount(_u64(data, 2), mint_decimals),
        }
    raise KeyError(kind)


def b58(raw: bytes) -> str:
    return b58encode(raw)


def parse_instruction(
    program: str, accounts: list[str], data: bytes, stack_height: int | None
) -> dict[str, Any]:
    """One instruction in the RPC's jsonParsed form."""
    try:
        if program in (MEMO, MEMO_V1):
            return {
                "parsed": data.decode(),
                "program": "spl-memo",
                "programId": program,
                "stackHeight": stack_height,
            }
        name: str
        info: dict[str, Any]
        if program == SYSTEM:
            kind = struct.unpack_from("<I", data)[0]
            if kind == 2:
                info = {
                    "destination": accounts[1],
                    "lamports": _u64(data, 4),
                    "source": accounts[0],
                }
                kind_name, program_name = "transfer", "system"
            elif kind == 0:
                info = {
                    "lamports": _u64(data, 4),
                    "newAccount": accounts[1],
                    "owner": b58(data[20:52]),
                    "source": accounts[0],
                    "space": _u64(data, 12),
                }
                kind_name, program_name = "createAccount", "system"
            else:
                raise KeyError(kind)
        elif program in (TOKEN, TOKEN_2022):
            kind_name, info = _token(data, accounts)
            program_name = "spl-token" if program == TOKEN else "spl-token-2022"
        elif program == ATA:
            kind_name = "createIdempotent" if data[:1] == b"\1" else "create"
            info = dict(
                zip(
                    ["source", "account", "wallet", "mint", "systemProgram", "tokenProgram"],
                    accounts,
                    strict=False,
                )
            )
            program_name = "spl-associated-token-account"
        else:
            raise KeyError(program)
        name = program_name
    except (KeyError, IndexError, struct.error, UnicodeDecodeError):
        return {
            "accounts": accounts,
            "data": b58encode(data),
            "programId": program,
            "stackHeight": stack_height,
        }
    return {
        "parsed": {"info": info, "type": kind_name},
        "program": name,
        "programId": program,
        "stackHeight": stack_height,
    }
