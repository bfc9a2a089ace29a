"""TON encodings, parsed with ``pytoniq-core``: addresses, hashes, locators and message bodies.

Message bodies are read from their BOC here, never from an indexer's ``decoded`` field: what
binds a payment to its challenge is the comment the chain recorded, not a service's rendering.

Layouts (TL-B, from the TON block and jetton standards):

* text comment: ``op:uint32 = 0`` followed by UTF-8 text, continued in the first reference
  ("snake" format);
* ``internal_transfer#178d4519 query_id:uint64 amount:(VarUInteger 16) from:MsgAddress
  response_address:MsgAddress forward_ton_amount:(VarUInteger 16)
  forward_payload:(Either Cell ^Cell)``
  (what a jetton wallet receives);
* ``transfer_notification#7362d09c query_id:uint64 amount:(VarUInteger 16) sender:MsgAddress
  forward_payload:(Either Cell ^Cell)`` (what the jetton wallet tells its owner).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from typing import Any

from pytoniq_core import Address, Cell, Slice
from pytoniq_core.boc.address import AddressError
from pytoniq_core.boc.cell import CellError
from pytoniq_core.boc.deserialize import BocError
from pytoniq_core.boc.slice import SliceError

OP_COMMENT = 0
OP_INTERNAL_TRANSFER = 0x178D4519
OP_TRANSFER_NOTIFICATION = 0x7362D09C
OP_BOUNCED = 0xFFFFFFFF
LOCATOR_PREFIX = "ton:"
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_B64_HASH = re.compile(r"^[A-Za-z0-9+/_-]{43}=?$")
_RAW = re.compile(r"^-?[0-9]{1,3}:[0-9a-fA-F]{64}$")
_FRIENDLY = re.compile(r"^[A-Za-z0-9+/_-]{48}$")
# What pytoniq-core raises on a cell that is shorter than, or shaped unlike, what is read.
_PARSE_ERRORS = (
    ValueError,
    IndexError,
    TypeError,
    AssertionError,
    SliceError,
    AddressError,
    CellError,
    BocError,
)


def normalize_address(address: str) -> str:
    """``<workchain>:<64 lowercase hex>`` from the raw or any user-friendly form.

    User-friendly forms (bounceable or not, testnet flag or not, url-safe or standard base64)
    all name the same ``(workchain, hash)``; their CRC16 is checked. Raises ``ValueError``.
    """
    text = address.strip()
    if not (_RAW.match(text) or _FRIENDLY.match(text)):
        raise ValueError(f"{address!r} is not a TON address")
    if _FRIENDLY.match(text):
        text = text.replace("+", "-").replace("/", "_")
    try:
        parsed = Address(text)
    except (AddressError, ValueError, IndexError, binascii.Error) as exc:
        raise ValueError(f"{address!r} is not a TON address: {exc}") from exc
    return raw_form(parsed)


def raw_form(address: Any) -> str:
    """The canonical string of a ``pytoniq_core.Address``."""
    wc = int(address.wc)
    if wc not in (0, -1):
        raise ValueError(f"workchain {wc} is not served")
    return f"{wc}:{bytes(address.hash_part).hex()}"


def canonical_hash(ref: str) -> str | None:
    """Lowercase hex of a 32-byte hash given in hex, base64 or base64url; None if not one."""
    text = ref.strip()
    if _HEX64.match(text):
        return text.lower()
    if _B64_HASH.match(text):
        padded = text.rstrip("=") + "="
        try:
            raw = base64.urlsafe_b64decode(padded.replace("+", "-").replace("/", "_"))
        except (binascii.Error, ValueError):
            return None
        return raw.hex() if len(raw) == 32 else None
    return None


@dataclass(frozen=True, slots=True)
class Locator:
    """``ton:<account>|<nonce>``: a payment named by its payee and challenge, not by its hash."""

    account: str
    nonce: str

    def __str__(self) -> str:
        return f"{LOCATOR_PREFIX}{self.account}|{self.nonce}"

    def names(self, memo: str) -> bool:
        """Whether this locator names the challenge whose commitment is ``memo``."""
        return self.nonce == memo or hashlib.sha256(self.nonce.encode()).hexdigest() == memo


def parse_locator(ref: str) -> Locator | None:
    """The locator in ``ref``, None if ``ref`` is not one; ``ValueError`` if malformed."""
    text = ref.strip()
    if not text.startswith(LOCATOR_PREFIX) or "|" not in text:
        return None
    account, _, nonce = text.removeprefix(LOCATOR_PREFIX).partition("|")
    if not nonce or len(nonce) > 200 or not nonce.isprintable():
        raise ValueError("a TON locator is ton:<account>|<nonce>")
    return Locator(normalize_address(account), nonce)


def cell_from_b64(boc: str) -> Any:
    """The root cell of a base64 BOC; ``ValueError`` if it is not one."""
    try:
        return Cell.one_from_boc(base64.b64decode(boc, validate=True))
    except (binascii.Error, *_PARSE_ERRORS) as exc:
        raise ValueError(f"not a BOC: {exc}") from exc


def cell_hash_hex(cell: Any) -> str:
    return bytes(cell.hash).hex()


def _comment_from(body: Any) -> str | None:
    """The text of a comment payload (``op = 0`` then snake text), or None."""
    if body.remaining_bits < 32 or body.load_uint(32) != OP_COMMENT:
        return None
    try:
        data: bytes = body.load_snake_bytes()
        return data.decode("utf-8")
    except (UnicodeDecodeError, *_PARSE_ERRORS):
        return None


def comment_of(cell: Any) -> str | None:
    """The text comment a message body carries, or None (binary bodies, other ops)."""
    try:
        return _comment_from(cell.begin_parse())
    except _PARSE_ERRORS:
        return None


@dataclass(frozen=True, slots=True)
class JettonMessage:
    """A jetton ``internal_transfer`` or ``transfer_notification`` body, in base units."""

    op: int
    amount: int
    sender: str | None  # the owner the jettons come from, normalized; None if addr_none
    forward_comment: str | None


def _either_payload(body: Slice) -> Any:
    if body.remaining_bits < 1:
        return None
    if body.load_bit():
        return body.load_ref().begin_parse() if body.remaining_refs else None
    return body


def _optional_address(body: Slice) -> str | None:
    loaded = body.load_address()
    return raw_form(loaded) if isinstance(loaded, Address) else None


def jetton_message(cell: Any) -> JettonMessage | None:
    """The jetton transfer a body describes, or None if it is not a well-formed one."""
    try:
        body = cell.begin_parse()
        if body.remaining_bits < 32:
            return None
        op = body.load_uint(32)
        if op not in (OP_INTERNAL_TRANSFER, OP_TRANSFER_NOTIFICATION):
            return None
        body.load_uint(64)  # query_id
        amount = int(body.load_coins())
        sender = _optional_address(body)
        if op == OP_INTERNAL_TRANSFER:
            _optional_address(body)  # response_address
            body.load_coins()  # forward_ton_amount
        payload = _either_payload(body)
        comment = _comment_from(payload) if payload is not None else None
    except _PARSE_ERRORS:  # a body that does not follow the layout is not a jetton transfer
        return None
    return JettonMessage(op, amount, sender, comment)


def body_op(cell: Any) -> int | None:
    """The 32-bit op code a body starts with, None if it is shorter."""
    body = cell.begin_parse()
    return int(body.load_uint(32)) if body.remaining_bits >= 32 else None
