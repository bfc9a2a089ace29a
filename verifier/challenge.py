"""Challenges the client cannot forge or edit (rule 1 of the design).

A nonce is stateless: it carries its key id, issue time and expiry, 128 random bits, and an HMAC
over all of them and over the terms of the offer (scheme, network, asset, amount, payee, timeout,
confirmations, binding) and the resource. Issuing one costs no Redis write; a proof whose
``accepted`` was edited (a lower amount, another payee) no longer matches its MAC and is refused
with ``nonce_unknown``. Keys have ids so they rotate: sign with the active key, accept every key
still configured.

Format (ASCII, dot separated)::

    n1.<kid>.<issued_at>.<expires_at>.<random:b64url 16 bytes>.<mac:b64url 16 bytes>

The memo commitment that goes on-chain is ``sha256(nonce)`` in lowercase hex: public, and useless
to anyone who has not seen the nonce, so a watcher of the chain cannot race the payer to the gate.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import time
from dataclasses import dataclass

from verifier.assets import normalize_network
from verifier.errors import ConfigError, FinalError
from verifier.models import SCHEMES, Accept, Binding, PaymentPayload, ReasonCode

NONCE_VERSION = "n1"
_KID = re.compile(r"^[A-Za-z0-9_-]{1,16}$")
_NONCE = re.compile(
    r"^n1\.([A-Za-z0-9_-]{1,16})\.([0-9]{1,12})\.([0-9]{1,12})\.([A-Za-z0-9_-]{22})\.([A-Za-z0-9_-]{22})$"
)


def memo_for(nonce: str) -> str:
    """The public commitment to a nonce: lowercase hex SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(nonce.encode()).hexdigest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class Terms:
    """What a challenge commits the gate to check. Built from the gate's own offer."""

    scheme: str
    network: str
    asset: str
    amount: int
    pay_to: str
    max_timeout_seconds: int
    min_confirmations: int
    binding: Binding
    resource: str

    @classmethod
    def of(cls, accept: Accept, resource: str, *, network: str | None = None) -> Terms:
        return cls(
            scheme=accept.scheme,
            network=network or accept.network,
            asset=accept.asset,
            amount=int(accept.amount),
            pay_to=accept.pay_to,
            max_timeout_seconds=accept.max_timeout_seconds,
            min_confirmations=accept.extra.min_confirmations,
            binding=accept.extra.binding,
            resource=resource,
        )

    def canonical(self) -> bytes:
        fields = (
            self.scheme,
            self.network,
            self.asset,
            str(self.amount),
            self.pay_to,
            str(self.max_timeout_seconds),
            str(self.min_confirmations),
            self.binding.value,
            self.resource,
        )
        # Length-prefixed so that no two different term lists share an encoding.
        return b"".join(len(f.encode()).to_bytes(4, "big") + f.encode() for f in fields)


@dataclass(frozen=True, slots=True)
class Challenge:
    """An authenticated challenge: the nonce, when it was issued, until when it holds, its terms."""

    nonce: str
    kid: str
    issued_at: int
    expires_at: int
    terms: Terms

    @property
    def memo(self) -> str:
        return memo_for(self.nonce)


class ChallengeSigner:
    """Issues and authenticates nonces with a set of HMAC keys identified by key id."""

    def __init__(self, keys: dict[str, bytes], active_kid: str) -> None:
        if active_kid not in keys:
            raise ConfigError(f"active challenge key id {active_kid!r} is not among the keys")
        for kid, key in keys.items():
            if not _KID.match(kid):
                raise ConfigError(f"challenge key id {kid!r} must match {_KID.pattern}")
            if len(key) < 32:
                raise ConfigError(f"challenge key {kid!r} must be at least 32 bytes")
        self._keys = dict(keys)
        self._active = active_kid

    def _mac(self, key: bytes, head: str, terms: Terms) -> str:
        digest = hmac.new(key, head.encode() + b"\x00" + terms.canonical(), hashlib.sha256)
        return _b64(digest.digest()[:16])

    def issue(self, terms: Terms, now: float | None = None) -> Challenge:
        issued = int(time.time() if now is None else now)
        expires = issued + terms.max_timeout_seconds
        head = f"{NONCE_VERSION}.{self._active}.{issued}.{expires}.{_b64(os.urandom(16))}"
        nonce = f"{head}.{self._mac(self._keys[self._active], head, terms)}"
        return Challenge(
            nonce=nonce, kid=self._active, issued_at=issued, expires_at=expires, terms=terms
        )

    def derive(self, terms: Terms, expires_at: int, seed: bytes) -> Challenge:
        """The challenge a payment that came without one answers (the facilitator endpoint's
        ``exact`` payments, ``verifier.facilitator_api``): its random part is a keyed hash of
        ``seed``, so the same payment derives the same nonce and the same verification job.
        Authenticated like any other (its MAC covers ``terms``)."""
        key = self._keys[self._active]
        random = hmac.new(key, b"x402-derived-nonce\x00" + seed, hashlib.sha256).digest()[:16]
        issued = expires_at - terms.max_timeout_seconds
        head = f"{NONCE_VERSION}.{self._active}.{issued}.{expires_at}.{_b64(random)}"
        nonce = f"{head}.{self._mac(key, head, terms)}"
        return Challenge(
            nonce=nonce, kid=self._active, issued_at=issued, expires_at=expires_at, terms=terms
        )

    def authenticate(self, nonce: str, terms: Terms) -> Challenge:
        """The challenge behind ``nonce`` if this gate issued it for exactly ``terms``.

        Raises ``FinalError(nonce_unknown)`` otherwise. Expiry is the caller's to judge, since
        the gate and the worker apply different grace periods.
        """
        m = _NONCE.match(nonce)
        if m is None:
            raise FinalError("nonce is malformed", ReasonCode.NONCE_UNKNOWN)
        kid, issued, expires = m.group(1), int(m.group(2)), int(m.group(3))
        key = self._keys.get(kid)
        if key is None:
            raise FinalError(f"nonce signed with unknown key id {kid!r}", ReasonCode.NONCE_UNKNOWN)
        head, _, mac = nonce.rpartition(".")
        if not hmac.compare_digest(mac, self._mac(key, head, terms)):
            raise FinalError(
                "nonce was not issued for these terms (edited offer or forged nonce)",
                ReasonCode.NONCE_UNKNOWN,
            )
        if expires - issued != terms.max_timeout_seconds:
            raise FinalError("nonce lifetime does not match the offer", ReasonCode.NONCE_UNKNOWN)
        return Challenge(nonce=nonce, kid=kid, issued_at=issued, expires_at=expires, terms=terms)


def nonce_expiry(nonce: str) -> int | None:
    """The expiry a well-formed nonce carries (unauthenticated: only for scheduling)."""
    m = _NONCE.match(nonce)
    return None if m is None else int(m.group(3))


def proof_message(network: str, nonce: str, txid: str) -> bytes:
    """The bytes a payer signs to bind a proof to its challenge (documented in the README)."""
    return f"x402 onchain-proof\nnetwork: {network}\nnonce: {nonce}\ntransaction: {txid}".encode()


def authenticate_proof(
    signer: ChallengeSigner,
    proof: PaymentPayload,
    resource: str,
    *,
    now: float | None,
    grace: int = 0,
) -> Challenge:
    """Authenticate a proof's challenge against the gate's keys; final errors otherwise.

    ``grace`` extends the challenge past its expiry for proofs whose payment was made in time
    but is still gathering confirmations (the block time itself is checked against the expiry).
    ``now=None`` leaves the expiry to the caller (the gate, which answers an expired proof
    that already counted with its stored outcome).
    """
    accepted = proof.accepted
    if accepted.scheme not in SCHEMES:
        raise FinalError(
            f"scheme {accepted.scheme!r} is not one of {', '.join(SCHEMES)}",
            ReasonCode.INVALID_SCHEME,
        )
    try:
        network = normalize_network(accepted.network)
    except ValueError as exc:
        raise FinalError(str(exc), ReasonCode.INVALID_NETWORK) from exc
    terms = Terms.of(accepted, resource, network=network)
    challenge = signer.authenticate(proof.nonce, terms)
    if now is not None and now > challenge.expires_at + grace:
        raise FinalError(
            f"the challenge expired at {challenge.expires_at}", ReasonCode.PAYMENT_EXPIRED
        )
    return challenge
