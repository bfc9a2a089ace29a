"""Text encodings that the per-namespace syntax checks (``verifier.addresses`` for addresses,
``verifier.txid`` for transaction ids) decode, without a chain SDK."""

from __future__ import annotations

import base64
import binascii

B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def b58decode(text: str) -> bytes:
    """The bytes of base58 (Bitcoin alphabet) ``text``, leading ``1``s as zero bytes.

    The caller has checked that ``text`` uses only the alphabet.
    """
    number = 0
    for char in text:
        number = number * 58 + B58_ALPHABET.index(char)
    zeros = len(text) - len(text.lstrip("1"))
    return bytes(zeros) + number.to_bytes((number.bit_length() + 7) // 8, "big")


def b64decode_either(text: str) -> bytes | None:
    """The bytes of standard or URL-safe base64 ``text``, padded or not; ``None`` if it is not
    base64."""
    body = text.rstrip("=").replace("+", "-").replace("/", "_")
    try:
        return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        return None
