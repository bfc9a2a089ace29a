"""Reading one jsonParsed (or json) ``getTransaction`` result: transfers and memos.

Pure functions over the raw RPC shapes (``TypedDict`` below); the rules are in the docstring
of ``chains.solana.adapter``. The tests also run them on real recorded responses.
"""

from __future__ import annotations

import functools
from typing import Any, TypedDict

from solders.pubkey import Pubkey

from verifier.adapter import (
    NATIVE,
    Finality,
    Observation,
    Query,
    RpcUnavailable,
    Transfer,
)

TOKEN_PROGRAM = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"
TOKEN_2022_PROGRAM = "TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb"
ATA_PROGRAM = Pubkey.from_string("ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL")
MEMO_PROGRAMS = frozenset(
    {"Memo1UhkJRfHyvLMcVucJwxXeuD728EqVDDwQDxFMNo", "MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr"}
)


class UiTokenAmount(TypedDict, total=False):
    amount: str
    decimals: int


class RpcTokenBalance(TypedDict, total=False):
    accountIndex: int
    mint: str
    owner: str
    programId: str
    uiTokenAmount: UiTokenAmount


class RpcLoadedAddresses(TypedDict, total=False):
    writable: list[str]
    readonly: list[str]


class RpcMeta(TypedDict, total=False):
    err: Any
    fee: int
    preBalances: list[int]
    postBalances: list[int]
    preTokenBalances: list[RpcTokenBalance]
    postTokenBalances: list[RpcTokenBalance]
    innerInstructions: list[dict[str, Any]]
    loadedAddresses: RpcLoadedAddresses


class RpcMessage(TypedDict, total=False):
    # jsonParsed: objects {pubkey, signer, writable, source}; json encoding: plain strings
    accountKeys: list[Any]
    instructions: list[dict[str, Any]]
    header: dict[str, int]


class RpcInnerTx(TypedDict, total=False):
    signatures: list[str]
    message: RpcMessage


class RpcTransaction(TypedDict, total=False):
    slot: int | None
    blockTime: int | None
    meta: RpcMeta | None
    transaction: RpcInnerTx
    version: int | str


class RpcSignatureStatus(TypedDict, total=False):
    slot: int
    confirmations: int | None
    err: Any
    confirmationStatus: str | None


@functools.lru_cache(maxsize=4096)
def associated_token_account(owner: str, mint: str, token_program: str) -> str:
    """The associated token account of ``owner`` for ``mint`` under ``token_program``."""
    seeds = [bytes(Pubkey.from_string(s)) for s in (owner, token_program, mint)]
    return str(Pubkey.find_program_address(seeds, ATA_PROGRAM)[0])


def normalize_pubkey(value: str) -> str:
    """Canonical base58 of a 32-byte key; ``ValueError`` otherwise."""
    if not isinstance(value, str) or not 32 <= len(value.strip()) <= 44:
        raise ValueError(f"{value!r} is not a base58 32-byte Solana address")
    try:
        return str(Pubkey.from_string(value.strip()))
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a base58 32-byte Solana address") from exc


def _account_keys(tx: RpcTransaction) -> list[str]:
    """All account keys in index order (static, then loaded writable, then loaded readonly).
    jsonParsed lists loaded keys itself; json encoding leaves them in ``meta``."""
    message = tx.get("transaction", {}).get("message", {})
    raw = message.get("accountKeys") or []
    if raw and isinstance(raw[0], dict):
        keys = [k.get("pubkey") for k in raw]
        if not all(isinstance(k, str) for k in keys):
            raise RpcUnavailable("malformed accountKeys in RPC reply")
        return keys
    if not all(isinstance(k, str) for k in raw):
        raise RpcUnavailable("malformed accountKeys in RPC reply")
    keys = [str(k) for k in raw]
    loaded = (tx.get("meta") or {}).get("loadedAddresses") or {}
    keys += list(loaded.get("writable") or []) + list(loaded.get("readonly") or [])
    return keys


def _amount(balance: RpcTokenBalance) -> int:
    try:
        return int(balance.get("uiTokenAmount", {}).get("amount", "0"))
    except (TypeError, ValueError) as exc:
        raise RpcUnavailable("malformed token balance in RPC reply") from exc


def _program_of(ix: dict[str, Any], keys: list[str]) -> str:
    if "programId" in ix:
        return str(ix["programId"])
    index = ix.get("programIdIndex")
    return keys[index] if isinstance(index, int) and 0 <= index < len(keys) else ""


def memos_of(tx: RpcTransaction) -> tuple[str, ...]:
    """Texts of the top-level SPL Memo instructions (parsed, or base58 data in json encoding)."""
    keys = _account_keys(tx)
    found = []
    for ix in tx.get("transaction", {}).get("message", {}).get("instructions") or []:
        if _program_of(ix, keys) not in MEMO_PROGRAMS:
            continue
        parsed = ix.get("parsed")
        if isinstance(parsed, str):
            found.append(parsed)
        elif isinstance(ix.get("data"), str):
            try:
                found.append(_b58decode(ix["data"]).decode())
            except (ValueError, UnicodeDecodeError):
                continue
    return tuple(found)


_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def _b58decode(text: str) -> bytes:
    number = 0
    for char in text:
        digit = _B58.find(char)
        if digit < 0:
            raise ValueError("not base58")
        number = number * 58 + digit
    body = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return b"\0" * (len(text) - len(text.lstrip("1"))) + body


def observe_transaction(tx: RpcTransaction, txid: str, query: Query) -> Observation:
    """Turn one ``getTransaction`` result into an ``Observation`` (finality is the caller's).

    A reply that does not have the RPC's shape is ``RpcUnavailable`` (transient), never an
    exception of another kind.
    """
    try:
        return _observe(tx, txid, query)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise RpcUnavailable(f"{txid}: malformed getTransaction reply: {exc!r:.200}") from exc


def _token_movements(
    meta: RpcMeta, keys: list[str]
) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], int], list[tuple[str, str, int]]]:
    """SPL balance changes: net change per (mint, owner), credits to owners' associated token
    accounts per (mint, owner), and credits to any other token account (mint, account, amount).

    A pre balance counts against the pre entry's (mint, owner) and a post balance for the post
    entry's: a token account that changes owner in the transaction (SetAuthority) debits its old
    owner and credits its new one, instead of charging the whole change to the new owner.
    """
    pre = {b.get("accountIndex"): b for b in meta.get("preTokenBalances") or []}
    post = {b.get("accountIndex"): b for b in meta.get("postTokenBalances") or []}
    net: dict[tuple[str, str], int] = {}
    to_ata: dict[tuple[str, str], int] = {}
    other_credits: list[tuple[str, str, int]] = []
    for index in {i for i in (*pre, *post) if isinstance(i, int) and 0 <= i < len(keys)}:
        before, after = pre.get(index), post.get(index)
        held: tuple[str, str] | None = None
        if before is not None:
            held = (str(before.get("mint", "")), str(before.get("owner", "")))
            net[held] = net.get(held, 0) - _amount(before)
        if after is None:
            continue
        mint, owner = str(after.get("mint", "")), str(after.get("owner", ""))
        net[(mint, owner)] = net.get((mint, owner), 0) + _amount(after)
        # Only a balance the same owner already held is subtracted: a new owner's credit is
        # everything the account holds after the transaction.
        kept = _amount(before) if before is not None and held == (mint, owner) else 0
        credit = _amount(after) - kept
        if credit <= 0:
            continue
        program = str(after.get("programId", TOKEN_PROGRAM))
        try:
            is_ata = keys[index] == associated_token_account(owner, mint, program)
        except ValueError:
            is_ata = False
        if is_ata:
            to_ata[(mint, owner)] = to_ata.get((mint, owner), 0) + credit
        else:
            other_credits.append((mint, keys[index], credit))
    return net, to_ata, other_credits


def _lamport_debits(meta: RpcMeta, keys: list[str], txid: str) -> tuple[set[str], list[Transfer]]:
    """Accounts whose lamports paid for something beyond the fee, and the native credits."""
    debited: set[str] = set()
    credits: list[tuple[str, int]] = []
    fee = meta.get("fee") or 0
    if not isinstance(fee, int):
        raise RpcUnavailable(f"{txid}: malformed fee in RPC reply")
    for index, (before, after) in enumerate(
        zip(meta.get("preBalances") or [], meta.get("postBalances") or [], strict=False)
    ):
        if not isinstance(before, int) or not isinstance(after, int) or index >= len(keys):
            raise RpcUnavailable(f"{txid}: malformed lamport balances in RPC reply")
        # The fee payer's balance also pays the fee: only what it lost beyond that paid anyone.
        change = after - before + (fee if index == 0 else 0)
        if change < 0:
            debited.add(keys[index])
        elif after > before:
            credits.append((keys[index], after - before))
    sender = next(iter(debited)) if len(debited) == 1 else ""
    return debited, [Transfer(NATIVE, sender, account, amount) for account, amount in credits]


def _observe(tx: RpcTransaction, txid: str, query: Query) -> Observation:
    meta = tx.get("meta")
    if meta is None:
        raise RpcUnavailable(f"{txid}: the node returned the transaction without its meta")
    keys = _account_keys(tx)
    transfers: list[Transfer] = []

    # SPL: net change per (mint, owner) over all its token accounts, so that moving tokens
    # between one's own accounts pays nobody; of a positive net change, only what reached the
    # owner's associated token account counts as paid to the owner. Credits to any other token
    # account are reported under that account's address. The sender is the one owner whose
    # balance of that mint fell, or unknown ("") when several fell: balances do not pair debits
    # with credits, and a guess could let the wrong owner's signature bind.
    net, to_ata, other_credits = _token_movements(meta, keys)
    debited: dict[str, set[str]] = {}
    for (mint, owner), change in net.items():
        if change < 0:
            debited.setdefault(mint, set()).add(owner)
    credited = [
        (mint, owner, min(net[(mint, owner)], amount))
        for (mint, owner), amount in sorted(to_ata.items())
        if net[(mint, owner)] > 0
    ]
    for mint, recipient, amount in [*credited, *other_credits]:
        sources = debited.get(mint, set())
        sender = next(iter(sources)) if len(sources) == 1 else ""
        transfers.append(Transfer(mint, sender, recipient, amount))

    # Native SOL from lamport deltas; the fee payer is a sender only for what it paid beyond
    # the fee (a relay that pays the fee for someone else's transfer is not a sender).
    transfers += _lamport_debits(meta, keys, txid)[1]

    block_time = tx.get("blockTime")
    if not isinstance(block_time, int):
        raise RpcUnavailable(f"{txid}: the node has no blockTime for this transaction yet")
    slot = tx.get("slot")
    return Observation(
        txid=txid,
        success=meta.get("err") is None,
        block_ref=str(slot),
        block_time=block_time,
        confirmations=0,
        finality=Finality.PENDING,
        transfers=tuple(transfers),
        memos=memos_of(tx),
    )
