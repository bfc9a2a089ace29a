"""What the conformance suite and the demo ask of a local chain: to be paid on, and tested.

``PaymentRail`` is a local chain (a real node, or real transactions served by a local server in
the chain's real API shape) and a way to pay on it for an offer: the demo and the benchmark of
this repository pay through it. ``Harness`` is a rail that the conformance suite can also feed
wrong things: another payee and asset, unknown and malformed transaction references, the payer's
signature and malformed ones, another network of the family.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from verifier.assets import NATIVE
from verifier.models import Accept


@dataclass(frozen=True)
class Payment:
    """What ``PaymentRail.pay`` sends: the challenge's terms, but for what the caller changed."""

    amount: int  # base units
    to: str
    asset: str
    memo: str | None  # the commitment to carry as the chain allows, None for none
    fail: bool  # a transaction that is included but fails

    @classmethod
    def of(
        cls,
        accept: Accept,
        *,
        amount: int | None = None,
        memo: bool = True,
        to: str | None = None,
        asset: str | None = None,
        fail: bool = False,
    ) -> Payment:
        """``memo``: carry the challenge's commitment as the chain allows; ``to``/``asset``:
        pay someone or something else; ``fail``: a transaction that is included but fails."""
        return cls(
            amount=int(accept.amount) if amount is None else amount,
            to=to or accept.pay_to,
            asset=asset or accept.asset,
            memo=accept.extra.memo if memo else None,
            fail=fail,
        )


class PaymentRail(ABC):
    """A local chain a payer pays on: the network it serves, the asset offered on it and the
    payee, the worker's settings for it, and ``pay``."""

    network: str  # CAIP-2 id the local chain serves
    asset: str  # the asset offered (an id the registry knows, or "native")
    symbol: str
    decimals: int
    pay_to: str  # the payee
    min_confirmations: int = 1

    async def pay(self, accept: Accept, **how: Any) -> str:
        """Pay for ``accept`` on the local chain (``how``: what ``Payment.of`` changes) and
        return the transaction reference for the proof. The transaction must be final enough
        for ``min_confirmations`` when this returns."""
        return await self.send(Payment.of(accept, **how))

    @abstractmethod
    async def send(self, payment: Payment) -> str:
        """Make ``payment`` on the local chain, as ``pay`` does."""

    @abstractmethod
    def network_settings(self) -> dict[str, Any]:
        """``[networks."<network>"]`` for the local chain (``rpc_urls`` …)."""

    def asset_settings(self) -> list[dict[str, Any]]:
        """The ``[[assets]]`` entries an offer of ``asset`` needs: the asset itself, unless it
        is the chain's native coin."""
        if self.asset == NATIVE:
            return []
        entry = {"symbol": self.symbol, "asset": self.asset, "decimals": self.decimals}
        return [{"network": self.network, **entry}]


class Harness(PaymentRail):
    """A rail the conformance suite (``verifier.testing.AdapterConformance``) runs against."""

    stranger: str  # another valid account, not the payee
    other_asset: str  # another asset the payer holds (for wrong_asset)

    @abstractmethod
    def wrong_network(self) -> str:
        """Another network id of the same family, which the local chain does not serve."""

    @abstractmethod
    def sign(self, accept: Accept, tx: str) -> str | None:
        """The payer's signature of the proof message for ``accept`` and ``tx`` (a payment
        made by ``pay``), in this chain's signature encoding; None where proofs on this chain
        cannot be bound by a signature."""

    @abstractmethod
    def malformed_signatures(self, accept: Accept, tx: str) -> list[str]:
        """Proof signatures that are malformed in this chain's signature encoding: garbage, the
        wrong length, and ``sign``'s signature with a scalar out of range."""

    @abstractmethod
    def unknown_tx(self) -> str:
        """A well-formed transaction reference that the chain does not know."""

    @abstractmethod
    def garbage_tx(self) -> str:
        """A transaction reference that is malformed for this chain."""


# The order of the ed25519 base point: a signature whose scalar s is not below it is malformed.
ED25519_ORDER = 2**252 + 27742317777372353535851937790883648493


def ed25519_high_s(signature: bytes) -> bytes:
    """``signature`` (R || s, s little-endian) with s raised by the group order: the same
    equation, but a scalar out of range, which strict ed25519 verification refuses."""
    s = int.from_bytes(signature[32:], "little") + ED25519_ORDER
    return signature[:32] + s.to_bytes(32, "little")
