"""EIP-3009 ``transferWithAuthorization`` for the x402 ``exact`` scheme on EVM, without I/O.

An x402 ``exact`` payment on EVM is an authorization the payer signed (EIP-712, primary type
``TransferWithAuthorization``) that anyone may submit to the token: ``Authorization`` reads it
from the wire, ``digest`` and ``recover`` check an ECDSA signature off-chain, and the
``*_calldata`` functions and decoders are what a settling worker sends and reads back. The token
side follows USDC (FiatTokenV2_2): it takes ``v`` only as 27 or 28, rejects ``s`` in the upper
half of the curve order, and validates a signature with EIP-1271 when ``from`` has code.

Addresses are kept lowercase. Malformed input is a ``ValueError`` with the field in its message,
except in ``recover``, where any malformed signature is ``None``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_abi.exceptions import DecodingError
from eth_keys.datatypes import Signature
from eth_keys.exceptions import BadSignature
from eth_utils import is_checksum_address, keccak

TRANSFER_WITH_AUTHORIZATION_TYPEHASH = keccak(
    text="TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,"
    "uint256 validBefore,bytes32 nonce)"
)
EIP712_DOMAIN_TYPEHASH = keccak(
    text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
#: topic0 of ``AuthorizationUsed(address indexed authorizer, bytes32 indexed nonce)``.
AUTHORIZATION_USED_TOPIC = "0x" + keccak(text="AuthorizationUsed(address,bytes32)").hex()

_AUTH_ARGS = "address,address,uint256,uint256,uint256,bytes32"
_TRANSFER_VRS = keccak(text=f"transferWithAuthorization({_AUTH_ARGS},uint8,bytes32,bytes32)")[:4]
_TRANSFER_BYTES = keccak(text=f"transferWithAuthorization({_AUTH_ARGS},bytes)")[:4]
_AUTHORIZATION_STATE = keccak(text="authorizationState(address,bytes32)")[:4]
_BALANCE_OF = keccak(text="balanceOf(address)")[:4]
_AUTH_TYPES = ["address", "address", "uint256", "uint256", "uint256", "bytes32"]
_DOMAIN_RETURN = ["bytes1", "string", "string", "uint256", "address", "bytes32", "uint256[]"]
# eip712Domain() fields bitmap: name, version, chainId and verifyingContract, nothing else.
_DOMAIN_FIELDS = b"\x0f"

_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_HALF_N = _SECP256K1_N // 2
_UINT256_MAX = 2**256 - 1
_WIRE_FIELDS = ("from", "to", "value", "validAfter", "validBefore", "nonce")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_NONCE = re.compile(r"0x[0-9a-fA-F]{64}")
_DECIMAL = re.compile(r"0|[1-9][0-9]*")


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _address(value: object, what: str) -> str:
    """``value`` as a lowercase address; mixed case must be a valid EIP-55 checksum."""
    if not isinstance(value, str) or not _ADDRESS.fullmatch(value):
        raise ValueError(f"{what} must be 0x and 40 hex digits, got {_show(value)}")
    body = value[2:]
    if body != body.lower() and body != body.upper() and not is_checksum_address(value):
        raise ValueError(f"{what} has a wrong EIP-55 checksum: {value}")
    return value.lower()


def _uint256(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _UINT256_MAX:
        raise ValueError(f"{what} must be an integer in the uint256 range, got {_show(value)}")
    return value


def _decimal(value: object, what: str) -> int:
    """A uint256 written as a decimal string without sign, spaces or leading zeros."""
    if not isinstance(value, str) or not _DECIMAL.fullmatch(value):
        raise ValueError(f"{what} must be a decimal string of a uint256, got {_show(value)}")
    return _uint256(int(value), what)


@dataclass(frozen=True, slots=True)
class Authorization:
    """The signed fields of a ``TransferWithAuthorization``; addresses are lowercase.

    ``sender`` is the authorizer whose tokens move (``from`` on the wire and in the contract),
    not the account that submits the transaction.
    """

    sender: str
    to: str
    value: int
    valid_after: int
    valid_before: int
    nonce: bytes

    def __post_init__(self) -> None:
        object.__setattr__(self, "sender", _address(self.sender, "authorization.from"))
        object.__setattr__(self, "to", _address(self.to, "authorization.to"))
        _uint256(self.value, "authorization.value")
        _uint256(self.valid_after, "authorization.validAfter")
        _uint256(self.valid_before, "authorization.validBefore")
        if not isinstance(self.nonce, bytes) or len(self.nonce) != 32:
            raise ValueError(f"authorization.nonce must be 32 bytes, got {_show(self.nonce)}")

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> Authorization:
        """Reads the x402 ``payload.authorization`` object: exactly the keys ``from``, ``to``,
        ``value``, ``validAfter``, ``validBefore``, ``nonce``, all strings; addresses ``0x`` and
        40 hex digits, the nonce ``0x`` and 64, the integers decimal. ``ValueError`` otherwise.
        """
        if not isinstance(wire, Mapping):
            raise ValueError(f"authorization must be an object, got {_show(wire)}")
        missing = [key for key in _WIRE_FIELDS if key not in wire]
        if missing:
            raise ValueError(f"authorization lacks {', '.join(missing)}")
        unknown = sorted(str(key) for key in wire if key not in _WIRE_FIELDS)
        if unknown:
            raise ValueError(f"authorization has unknown fields: {', '.join(unknown)}")
        nonce = wire["nonce"]
        if not isinstance(nonce, str) or not _NONCE.fullmatch(nonce):
            raise ValueError(
                f"authorization.nonce must be 0x and 64 hex digits, got {_show(nonce)}"
            )
        return cls(
            sender=_address(wire["from"], "authorization.from"),
            to=_address(wire["to"], "authorization.to"),
            value=_decimal(wire["value"], "authorization.value"),
            valid_after=_decimal(wire["validAfter"], "authorization.validAfter"),
            valid_before=_decimal(wire["validBefore"], "authorization.validBefore"),
            nonce=bytes.fromhex(nonce[2:]),
        )


@dataclass(frozen=True, slots=True)
class Domain:
    """A token's EIP-712 domain (name, version, chainId, verifyingContract), as USDC's."""

    name: str
    version: str
    chain_id: int
    verifying_contract: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not isinstance(self.version, str):
            raise ValueError("domain name and version must be strings")
        _uint256(self.chain_id, "domain.chainId")
        address = _address(self.verifying_contract, "domain.verifyingContract")
        object.__setattr__(self, "verifying_contract", address)

    def separator(self) -> bytes:
        """The 32-byte EIP-712 domain separator (the token's ``DOMAIN_SEPARATOR()``)."""
        return keccak(
            abi_encode(
                ["bytes32", "bytes32", "bytes32", "uint256", "address"],
                [
                    EIP712_DOMAIN_TYPEHASH,
                    keccak(text=self.name),
                    keccak(text=self.version),
                    self.chain_id,
                    self.verifying_contract,
                ],
            )
        )


def _auth_values(auth: Authorization) -> list[Any]:
    return [auth.sender, auth.to, auth.value, auth.valid_after, auth.valid_before, auth.nonce]


def digest(auth: Authorization, domain: Domain) -> bytes:
    """The 32-byte EIP-712 hash the payer signs: ``keccak(0x1901 || separator || structHash)``."""
    struct_hash = keccak(
        abi_encode(
            ["bytes32", *_AUTH_TYPES], [TRANSFER_WITH_AUTHORIZATION_TYPEHASH, *_auth_values(auth)]
        )
    )
    return keccak(b"\x19\x01" + domain.separator() + struct_hash)


def recover(auth: Authorization, domain: Domain, signature: bytes) -> str | None:
    """The lowercase address whose key made the 65-byte ``r || s || v`` ``signature`` of
    ``digest(auth, domain)``; ``None`` for a signature that is not 65 bytes, a ``v`` other than
    27, 28, 0 or 1, ``r`` or ``s`` zero or not below the curve order, ``s`` in the upper half
    (a malleable twin, which the token rejects) or an ``r`` that is no point on the curve.
    """
    if not isinstance(signature, bytes | bytearray) or len(signature) != 65:
        return None
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    v = signature[64]
    if v in (27, 28):
        v -= 27
    if v not in (0, 1) or not 0 < r < _SECP256K1_N or not 0 < s <= _HALF_N:
        return None
    try:
        public_key = Signature(vrs=(v, r, s)).recover_public_key_from_msg_hash(digest(auth, domain))
    except (BadSignature, ValueError):
        return None
    return "0x" + public_key.to_canonical_address().hex()


def transfer_with_authorization_calldata(
    auth: Authorization, signature: bytes, *, bytes_overload: bool = False
) -> bytes:
    """Calldata of ``transferWithAuthorization`` carrying ``signature``.

    A 65-byte signature goes to the ``(…, uint8 v, bytes32 r, bytes32 s)`` overload, the one
    every EIP-3009 token has, with a ``v`` of 0 or 1 raised to 27 or 28 as the token requires.
    Any other length, or ``bytes_overload=True``, goes to the ``(…, bytes signature)`` overload
    (USDC v2.2 and later), which passes the bytes unchanged to an EIP-1271 wallet.
    """
    if len(signature) == 65 and not bytes_overload:
        v = signature[64] + 27 if signature[64] in (0, 1) else signature[64]
        vrs = [v, bytes(signature[:32]), bytes(signature[32:64])]
        return _TRANSFER_VRS + abi_encode(
            [*_AUTH_TYPES, "uint8", "bytes32", "bytes32"], [*_auth_values(auth), *vrs]
        )
    return _TRANSFER_BYTES + abi_encode(
        [*_AUTH_TYPES, "bytes"], [*_auth_values(auth), bytes(signature)]
    )


def authorization_state_calldata(authorizer: str, nonce: bytes) -> bytes:
    """Calldata of ``authorizationState(authorizer, nonce)``: true once used or canceled."""
    if len(nonce) != 32:
        raise ValueError(f"nonce must be 32 bytes, got {len(nonce)}")
    authorizer = _address(authorizer, "authorizer")
    return _AUTHORIZATION_STATE + abi_encode(["address", "bytes32"], [authorizer, nonce])


def balance_of_calldata(who: str) -> bytes:
    """Calldata of ERC-20 ``balanceOf(who)``."""
    return _BALANCE_OF + abi_encode(["address"], [_address(who, "address")])


def decode_eip712_domain(returndata: bytes) -> Domain:
    """The domain in the return data of EIP-5267 ``eip712Domain()``. ``ValueError`` unless it
    decodes and declares exactly name, version, chainId and verifyingContract (fields 0x0f,
    no extensions): a domain with a salt or fewer fields is not the one ``digest`` uses.
    """
    try:
        fields, name, version, chain_id, contract, _salt, extensions = abi_decode(
            _DOMAIN_RETURN, returndata
        )
    except (DecodingError, UnicodeDecodeError) as exc:
        raise ValueError(f"malformed eip712Domain() return data: {exc}") from exc
    if fields != _DOMAIN_FIELDS or extensions:
        raise ValueError(
            f"eip712Domain() declares fields 0x{fields.hex()} and {len(extensions)} extensions, "
            "not 0x0f (name, version, chainId, verifyingContract) and none"
        )
    return Domain(name=name, version=version, chain_id=chain_id, verifying_contract=contract)


def decode_string(returndata: bytes) -> str:
    """The ABI ``string`` in return data such as that of ``name()`` or ``version()``."""
    try:
        (text,) = abi_decode(["string"], returndata)
    except (DecodingError, UnicodeDecodeError) as exc:
        raise ValueError(f"malformed string return data: {exc}") from exc
    return str(text)


def authorization_key(network: str, token: str, auth: Authorization) -> str:
    """``<network>:<token>:<from>:<nonce 0x-hex>``, lowercase: the authorization as the token
    tells it apart, since a nonce is spent once per token and authorizer whatever the rest says.
    """
    return f"{network}:{_address(token, 'token')}:{auth.sender}:0x{auth.nonce.hex()}"
