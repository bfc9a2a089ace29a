"""The shape of a transaction id per CAIP-2 namespace, checked by the gate before it queues a job.

Pure syntax, no chain SDK and no adapter import: the gate refuses an id that cannot name a
transaction on the proof's network (``invalid_payload``) without spending a job on it, and keys
the job by the id's canonical form, so that ``0xAB..`` and ``0xab..`` are one verification, not
two. What a worker's adapter accepts (its ``canonical_txid``) is a superset of nothing here: the
gate's canonical form equals the adapter's for every id both accept (``tests/test_txid.py``).

=========  ==========================================================  ====================
namespace  accepted                                                    canonical form
=========  ==========================================================  ====================
eip155     ``0x`` and 64 hex digits                                    lowercase
solana     base58 of a 64-byte signature                               as given
stellar    64 hex digits                                               lowercase
tvm        a 32-byte hash in hex, base64 or base64url; or a locator    lowercase hex; the
           ``ton:<account>|<nonce>`` naming this proof's challenge     locator as given
=========  ==========================================================  ====================

A third-party chain family declares its shape with an entry point in the group
``verifier.txid`` named after its namespace, whose value is a function ``(ref: str) -> str``
that returns the canonical id or raises ``ValueError``. It must import no chain SDK: the gate
loads it. A namespace with neither is only bounded: 1 to ``MAX_TX_REF`` printable ASCII
characters without spaces.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable
from importlib.metadata import entry_points

from verifier.encodings import b58decode, b64decode_either
from verifier.errors import InvalidProof, PluginError

ENTRY_POINT_GROUP = "verifier.txid"
MAX_TX_REF = 256

_EVM = re.compile(r"^0x[0-9a-fA-F]{64}$")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_B58_TEXT = re.compile(r"^[1-9A-HJ-NP-Za-km-z]{64,88}$")
_B64_HASH = re.compile(r"^[A-Za-z0-9+/_-]{43}=?$")
_BOUNDED = re.compile(rf"^[\x21-\x7e]{{1,{MAX_TX_REF}}}$")
_TON_ACCOUNT = re.compile(r"^(-?[0-9]{1,3}:[0-9a-fA-F]{64}|[A-Za-z0-9+/_-]{48})$")
TON_LOCATOR_PREFIX = "ton:"

Shape = Callable[[str], str]


def _evm(ref: str) -> str:
    if not _EVM.match(ref):
        raise ValueError("an EVM transaction hash is 0x and 64 hex digits")
    return ref.lower()


def _solana(ref: str) -> str:
    if not _B58_TEXT.match(ref) or len(b58decode(ref)) != 64:
        raise ValueError("a Solana transaction signature is base58 of 64 bytes")
    return ref


def _stellar(ref: str) -> str:
    if not _HEX64.match(ref):
        raise ValueError("a Stellar transaction hash is 64 hex digits")
    return ref.lower()


def _ton_hash(ref: str) -> str | None:
    if _HEX64.match(ref):
        return ref.lower()
    if _B64_HASH.match(ref):
        raw = b64decode_either(ref)
        return raw.hex() if raw is not None and len(raw) == 32 else None
    return None


def _tvm(ref: str) -> str:
    found = _ton_hash(ref)
    if found is not None:
        return found
    account, bar, nonce = ref.removeprefix(TON_LOCATOR_PREFIX).partition("|")
    if ref.startswith(TON_LOCATOR_PREFIX) and bar and _TON_ACCOUNT.match(account) and nonce:
        return ref
    raise ValueError(
        "a TON transaction is a 32-byte hash (hex, base64 or base64url) "
        "or a locator ton:<account>|<nonce>"
    )


BUILTIN: dict[str, Shape] = {"eip155": _evm, "solana": _solana, "stellar": _stellar, "tvm": _tvm}


@functools.cache
def _declared(namespace: str) -> Shape | None:
    for ep in entry_points(group=ENTRY_POINT_GROUP, name=namespace):
        try:
            shape = ep.load()
        except Exception as exc:  # a broken plugin is a configuration error, said once
            message = f"txid shape {ep.value!r} for {namespace} cannot load: {exc}"
            raise PluginError(message) from exc
        if not callable(shape):
            raise PluginError(f"txid shape {ep.value!r} for {namespace} is not callable")
        return shape  # type: ignore[no-any-return]
    return None


def canonical_tx_ref(network: str, ref: str, *, nonce: str) -> str:
    """The canonical form of ``ref`` on ``network`` (CAIP-2), or ``InvalidProof``.

    ``nonce`` is the proof's challenge: a TON locator must name it (by the nonce or its memo).
    """
    text = ref.strip()
    if not _BOUNDED.match(text):
        raise InvalidProof(
            f"a transaction id is 1 to {MAX_TX_REF} printable characters without spaces"
        )
    namespace = network.partition(":")[0]
    shape = BUILTIN.get(namespace) or _declared(namespace)
    if shape is None:
        return text
    try:
        canonical = shape(text)
    except ValueError as exc:
        raise InvalidProof(str(exc)) from exc
    if not isinstance(canonical, str) or not _BOUNDED.match(canonical):
        raise InvalidProof(f"the {namespace} shape gave no usable transaction id for {text!r}")
    if namespace == "tvm" and canonical.startswith(TON_LOCATOR_PREFIX):
        named = canonical.rpartition("|")[2]
        if named not in (nonce, hashlib.sha256(nonce.encode()).hexdigest()):
            raise InvalidProof("the TON locator names another challenge than the proof's")
    return canonical
