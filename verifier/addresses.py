"""The shape of an address and of an asset id per CAIP-2 namespace, checked when settings load.

Pure syntax, no chain SDK (as ``verifier.txid`` for transaction ids): a ``pay_to`` that is no
address of its network, or an asset id that names no token, would make every payment to that
offer fail, so the configuration refuses it at start, with the key named. What is accepted here
is what the built-in adapters' ``normalize_address`` / ``normalize_asset`` accept
(``tests/test_addresses.py`` checks both ways).

=========  ==========================================================  ==========================
namespace  address                                                     asset id
=========  ==========================================================  ==========================
eip155     ``0x`` and 40 hex digits; mixed case must be valid EIP-55   ``native`` or an address
solana     base58 of 32 bytes                                          ``native`` or a mint
stellar    a G account or M muxed account strkey (version byte, CRC)   ``native`` or ``CODE:G…``
tvm        raw ``<workchain>:<64 hex>`` (workchain 0 or -1), or the     ``native`` or a jetton
           48-character user-friendly form (tag, workchain, CRC)        master address
=========  ==========================================================  ==========================

Other namespaces (third-party adapters) are not checked here: their adapter refuses a bad
address when it verifies.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable

from verifier.encodings import b58decode, b64decode_either

NATIVE = "native"

_EVM = re.compile(r"^0x[0-9a-fA-F]{40}$")
_B58_TEXT = re.compile(r"^[1-9A-HJ-NP-Za-km-z]{32,44}$")
_STELLAR_CODE = re.compile(r"^[A-Za-z0-9]{1,12}$")
_TON_RAW = re.compile(r"^(-?[0-9]{1,3}):[0-9a-fA-F]{64}$")
_TON_FRIENDLY = re.compile(r"^[A-Za-z0-9+/_-]{48}$")
# User-friendly TON tags: bounceable 0x11, non-bounceable 0x51, each with the testnet bit 0x80.
_TON_TAGS = {0x11, 0x51, 0x91, 0xD1}
_STELLAR_G = 6 << 3  # strkey version byte of an ed25519 public key
_STELLAR_M = 12 << 3  # ... of a muxed account


def _keccak256(data: bytes) -> bytes:
    """Keccak-256 as Ethereum uses it (not SHA3-256: the padding differs)."""
    rate = 136
    state = [0] * 25
    padded = bytearray(data) + b"\x01" + bytes(-(len(data) + 1) % rate)
    padded[-1] |= 0x80
    for block in range(0, len(padded), rate):
        for i in range(rate // 8):
            state[i] ^= int.from_bytes(padded[block + 8 * i : block + 8 * i + 8], "little")
        _keccak_f(state)
    return b"".join(lane.to_bytes(8, "little") for lane in state[:4])


_MASK = (1 << 64) - 1
_RC = (
    0x0000000000000001, 0x0000000000008082, 0x800000000000808A, 0x8000000080008000,
    0x000000000000808B, 0x0000000080000001, 0x8000000080008081, 0x8000000000008009,
    0x000000000000008A, 0x0000000000000088, 0x0000000080008009, 0x000000008000000A,
    0x000000008000808B, 0x800000000000008B, 0x8000000000008089, 0x8000000000008003,
    0x8000000000008002, 0x8000000000000080, 0x000000000000800A, 0x800000008000000A,
    0x8000000080008081, 0x8000000000008080, 0x0000000080000001, 0x8000000080008008,
)  # fmt: skip
# Lane rotation offsets, indexed x + 5 * y.
_ROTATIONS = (
    0, 1, 62, 28, 27, 36, 44, 6, 55, 20, 3, 10, 43, 25, 39, 41, 45, 15, 21, 8, 18, 2, 61, 56, 14,
)  # fmt: skip


def _rol(x: int, n: int) -> int:
    return ((x << n) | (x >> (64 - n))) & _MASK if n else x


def _keccak_f(a: list[int]) -> None:
    for rc in _RC:
        c = [a[x] ^ a[x + 5] ^ a[x + 10] ^ a[x + 15] ^ a[x + 20] for x in range(5)]
        d = [c[(x - 1) % 5] ^ _rol(c[(x + 1) % 5], 1) for x in range(5)]
        for i in range(25):
            a[i] ^= d[i % 5]
        b = [0] * 25
        for x in range(5):
            for y in range(5):
                b[y + 5 * ((2 * x + 3 * y) % 5)] = _rol(a[x + 5 * y], _ROTATIONS[x + 5 * y])
        for x in range(5):
            for y in range(5):
                a[x + 5 * y] = b[x + 5 * y] ^ (~b[(x + 1) % 5 + 5 * y] & b[(x + 2) % 5 + 5 * y])
        a[0] ^= rc


def eip55(address: str) -> str:
    """The EIP-55 checksummed spelling of a ``0x`` + 40 hex digit address."""
    body = address[2:].lower()
    digest = _keccak256(body.encode()).hex()
    return "0x" + "".join(
        ch.upper() if int(digest[i], 16) >= 8 else ch for i, ch in enumerate(body)
    )


def _evm(address: str) -> None:
    if not _EVM.match(address):
        raise ValueError("an EVM address is 0x and 40 hex digits")
    body = address[2:]
    if body != body.lower() and body != body.upper() and eip55(address) != address:
        raise ValueError(f"mixed case, but not its EIP-55 checksum spelling {eip55(address)}")


def _solana(address: str) -> None:
    if not _B58_TEXT.match(address) or len(b58decode(address)) != 32:
        raise ValueError("a Solana address is base58 of 32 bytes")


def _crc16_xmodem(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021 if crc & 0x8000 else crc << 1) & 0xFFFF
    return crc


def _strkey(text: str) -> tuple[int, bytes] | None:
    """The version byte and payload of a Stellar strkey whose checksum holds, else ``None``."""
    if not re.fullmatch(r"[A-Z2-7]+", text):
        return None
    try:
        raw = base64.b32decode(text + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError):
        return None
    # A strkey is canonical: re-encoding gives the same text (no stray bits in the last char).
    if len(raw) < 3 or base64.b32encode(raw).decode().rstrip("=") != text:
        return None
    body, crc = raw[:-2], int.from_bytes(raw[-2:], "little")
    return (body[0], body[1:]) if _crc16_xmodem(body) == crc else None


def _stellar(address: str) -> None:
    key = _strkey(address)
    if key is not None and (key[0], len(key[1])) in ((_STELLAR_G, 32), (_STELLAR_M, 40)):
        return
    raise ValueError("a Stellar address is a G account or an M muxed account strkey")


def _stellar_account(address: str) -> bool:
    key = _strkey(address)
    return key is not None and key[0] == _STELLAR_G and len(key[1]) == 32


def _tvm(address: str) -> None:
    raw_form = _TON_RAW.match(address)
    if raw_form is not None and int(raw_form.group(1)) in (0, -1):
        return
    raw = b64decode_either(address) if _TON_FRIENDLY.match(address) else None
    if raw is not None and (
        raw[0] in _TON_TAGS
        and raw[1] in (0x00, 0xFF)
        and _crc16_xmodem(raw[:34]) == int.from_bytes(raw[34:], "big")
    ):
        return
    raise ValueError(
        "a TON address is raw (0:<64 hex> or -1:<64 hex>) or user-friendly "
        "(48 characters of base64, checksum included)"
    )


_ADDRESS: dict[str, Callable[[str], None]] = {
    "eip155": _evm,
    "solana": _solana,
    "stellar": _stellar,
    "tvm": _tvm,
}


def check_address(network: str, address: str) -> None:
    """``ValueError`` unless ``address`` is an account address on ``network`` (CAIP-2)."""
    check = _ADDRESS.get(network.partition(":")[0])
    if check is not None:
        check(address)


def check_asset(network: str, asset: str) -> None:
    """``ValueError`` unless ``asset`` is an asset id on ``network``: ``native`` or a token."""
    namespace = network.partition(":")[0]
    if asset == NATIVE or namespace not in _ADDRESS:
        return
    if namespace == "stellar":
        code, sep, issuer = asset.partition(":")
        if sep and _STELLAR_CODE.match(code) and _stellar_account(issuer):
            return
        raise ValueError("a Stellar asset is native or CODE:ISSUER (a G account)")
    try:
        _ADDRESS[namespace](asset)
    except ValueError as exc:
        raise ValueError(f"not native, nor a token address: {exc}") from None
