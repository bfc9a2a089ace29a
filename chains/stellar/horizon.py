"""Horizon's JSON shapes and what a payment verifier reads from them, without I/O.

Raw shapes stay ``TypedDict``s at this edge. Everything here is a pure function of one
``/transactions/{hash}/operations?join=transactions`` page (or the root endpoint), so it is
tested directly against real recorded Horizon responses.

* Counted as payments: ``payment``, ``path_payment_strict_send``, ``path_payment_strict_receive``
  (their ``amount``: what the destination received, never ``source_amount``) and
  ``create_account`` (``starting_balance`` in XLM). ``create_claimable_balance`` is not a payment
  (the payee has to claim it, and may never), nor is ``account_merge`` (its amount is not in the
  operation), nor anything else.
* Amounts are 7-decimal strings, read with ``Decimal`` into integer stroops; anything that is not
  exactly that is a malformed reply, not a number to round.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import TypedDict

from stellar_sdk import MuxedAccount, StrKey

from verifier.adapter import NATIVE, RpcUnavailable, Transfer

STROOPS = 10**7
_AMOUNT = re.compile(r"^[0-9]{1,12}\.[0-9]{7}$")
_CODE = re.compile(r"^[A-Za-z0-9]{1,12}$")
PAYMENT_TYPES = frozenset({"payment", "path_payment_strict_send", "path_payment_strict_receive"})


class HorizonRoot(TypedDict, total=False):
    network_passphrase: str
    history_latest_ledger: int


class HorizonInner(TypedDict, total=False):
    hash: str
    signatures: list[str]
    max_fee: str


class HorizonTransaction(TypedDict, total=False):
    id: str
    hash: str
    ledger: int
    created_at: str
    successful: bool
    source_account: str
    fee_account: str
    envelope_xdr: str
    result_xdr: str
    memo_type: str
    memo: str
    memo_bytes: str
    operation_count: int
    fee_bump_transaction: HorizonInner
    inner_transaction: HorizonInner


class HorizonOperation(TypedDict, total=False):
    id: str
    type: str
    transaction_hash: str
    transaction_successful: bool
    source_account: str
    asset_type: str
    asset_code: str
    asset_issuer: str
    # payment and path payments
    to: str
    to_muxed: str
    to_muxed_id: str
    amount: str
    source_amount: str
    # create_account
    funder: str
    account: str
    starting_balance: str
    transaction: HorizonTransaction  # with join=transactions


class HorizonEmbedded(TypedDict, total=False):
    records: list[HorizonOperation]


class HorizonPage(TypedDict, total=False):
    _embedded: HorizonEmbedded


def stroops(amount: object) -> int:
    """Horizon's decimal amount string as integer stroops; ``RpcUnavailable`` if malformed."""
    if not isinstance(amount, str) or not _AMOUNT.match(amount):
        raise RpcUnavailable(f"malformed amount in Horizon reply: {amount!r}")
    try:
        return int(Decimal(amount).scaleb(7))
    except InvalidOperation as exc:  # unreachable after the regex, kept as the mapping edge
        raise RpcUnavailable(f"malformed amount in Horizon reply: {amount!r}") from exc


def format_stroops(value: int) -> str:
    return f"{value // STROOPS}.{value % STROOPS:07d}"


def normalize_account(address: str) -> str:
    """A G account as is, an M account re-encoded from (G, id); ``ValueError`` otherwise."""
    address = address.strip()
    if address.startswith("G"):
        if not StrKey.is_valid_ed25519_public_key(address):
            raise ValueError(f"{address!r} is not a Stellar account")
        return address
    if address.startswith("M"):
        try:
            muxed = MuxedAccount.from_account(address)
        except ValueError as exc:  # the SDK's strkey errors are ValueErrors
            raise ValueError(f"{address!r} is not a Stellar muxed account") from exc
        canonical = MuxedAccount(muxed.account_id, muxed.account_muxed_id).account_muxed
        if canonical is None:
            raise ValueError(f"{address!r} is not a Stellar muxed account")
        return canonical
    raise ValueError(f"{address!r} is not a Stellar account (G…) or muxed account (M…)")


def normalize_asset(asset: str) -> str:
    """``native``, or ``CODE:ISSUER`` (the code is case sensitive on Stellar, as issued)."""
    asset = asset.strip()
    if asset == NATIVE:
        return NATIVE
    code, sep, issuer = asset.partition(":")
    if not sep or not _CODE.match(code) or not StrKey.is_valid_ed25519_public_key(issuer):
        raise ValueError(f"{asset!r} is not a Stellar asset (CODE:ISSUER or native)")
    return f"{code}:{issuer}"


def asset_of(op: HorizonOperation) -> str:
    if op.get("asset_type") == "native":
        return NATIVE
    return f"{op.get('asset_code', '')}:{op.get('asset_issuer', '')}"


def recipient_of(op: HorizonOperation, pay_to: str) -> str:
    """The destination as the offer names payees.

    A payment to M(G, id) lands in G's balance: it pays an offer that names G, and it pays an
    offer that names M(G, id) only with the same id. So the muxed form is reported only when the
    offer itself names a muxed payee; a plain G destination never equals an M offer.
    """
    to = str(op.get("to", ""))
    muxed = op.get("to_muxed")
    if muxed and pay_to.startswith("M"):
        try:
            return normalize_account(muxed)
        except ValueError as exc:
            raise RpcUnavailable(f"malformed to_muxed in Horizon reply: {muxed!r}") from exc
    return to


def transfers_of(ops: list[HorizonOperation], pay_to: str) -> list[Transfer]:
    """The value movements that count as payments, from operations of successful transactions."""
    found = []
    for op in ops:
        if op.get("transaction_successful") is not True:
            continue
        kind = op.get("type")
        if kind in PAYMENT_TYPES:
            found.append(
                Transfer(
                    asset=asset_of(op),
                    sender=str(op.get("from", "")),
                    recipient=recipient_of(op, pay_to),
                    amount=stroops(op.get("amount")),
                )
            )
        elif kind == "create_account":
            found.append(
                Transfer(
                    asset=NATIVE,
                    sender=str(op.get("funder", "")),
                    recipient=str(op.get("account", "")),
                    amount=stroops(op.get("starting_balance")),
                )
            )
    return found


def memos_of(tx: HorizonTransaction) -> tuple[str, ...]:
    """``MEMO_HASH`` as lowercase hex (the binding); a text memo as its text (never binds)."""
    kind = tx.get("memo_type")
    memo = tx.get("memo")
    if kind == "hash" and isinstance(memo, str):
        try:
            raw = base64.b64decode(memo, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise RpcUnavailable(f"malformed hash memo in Horizon reply: {memo!r}") from exc
        return (raw.hex(),) if len(raw) == 32 else ()
    if kind == "text" and isinstance(memo, str):
        return (memo,)
    return ()


def unix_time(created_at: object) -> int:
    if not isinstance(created_at, str):
        raise RpcUnavailable(f"malformed created_at in Horizon reply: {created_at!r}")
    try:
        return int(datetime.fromisoformat(created_at.replace("Z", "+00:00")).timestamp())
    except ValueError as exc:
        raise RpcUnavailable(f"malformed created_at in Horizon reply: {created_at!r}") from exc


def canonical_hash(tx: HorizonTransaction) -> str:
    """The inner hash of a fee bump, the hash otherwise: one payment, one consumption key."""
    inner = tx.get("inner_transaction")
    if inner and inner.get("hash"):
        return str(inner["hash"]).lower()
    return str(tx.get("hash", "")).lower()


def hashes_of(tx: HorizonTransaction) -> set[str]:
    """Every hash this transaction answers to (outer and inner for a fee bump)."""
    found = {str(tx.get("hash", "")).lower(), canonical_hash(tx)}
    outer = tx.get("fee_bump_transaction")
    if outer and outer.get("hash"):
        found.add(str(outer["hash"]).lower())
    return found
