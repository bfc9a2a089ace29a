"""The conformance suite every chain adapter passes, through the real gate, Redis and worker.

A chain family takes part by providing ``tests/harness_<family>.py`` with an async context
manager ``harness(request: pytest.FixtureRequest)`` that yields a ``Harness``: a local chain
(a real node, or real transactions served by a local server in the chain's real API shape) and
a way to pay on it.
``tests/test_conformance.py`` runs every case below against every harness it finds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from verifier.models import Accept


@dataclass(frozen=True, slots=True)
class Pay:
    """How ``Harness.pay`` pays for an offer; by default exactly as the offer asks.

    ``memo``: carry the challenge's commitment as the chain allows; ``to``/``asset``: pay
    someone or something else; ``fail``: a transaction that is included but fails.
    """

    amount: int | None = None
    memo: bool = True
    to: str | None = None
    asset: str | None = None
    fail: bool = False


AS_OFFERED = Pay()


class Harness(Protocol):
    network: str  # CAIP-2 id the local chain serves
    asset: str  # the asset offered (an id the registry knows, or "native")
    symbol: str
    decimals: int
    pay_to: str  # the payee
    stranger: str  # another valid account, not the payee
    other_asset: str  # another asset the payer holds (for wrong_asset)
    min_confirmations: int
    unknown_tx: str  # a well-formed transaction reference that the chain does not know
    garbage_tx: str  # a transaction reference that is malformed for this chain

    def network_settings(self) -> dict[str, Any]:
        """``[networks."<network>"]`` for the local chain (``rpc_urls`` …)."""
        ...

    def wrong_network(self) -> str:
        """Another network id of the same family, which the local chain does not serve."""
        ...

    async def pay(self, accept: Accept, how: Pay = AS_OFFERED) -> str:
        """Pay for ``accept`` on the local chain as ``how`` says; the transaction reference.

        The transaction must be final enough for ``min_confirmations`` when this returns.
        """
        ...

    def sign(self, accept: Accept, tx: str) -> str | None:
        """The payer's signature of the proof message for ``accept`` and ``tx`` (a payment
        made by ``pay``), in this chain's signature encoding; None where proofs on this chain
        cannot be bound by a signature."""
        ...

    def malformed_signatures(self, accept: Accept, tx: str) -> list[str]:
        """Proof signatures that are malformed in this chain's signature encoding: garbage, the
        wrong length, and ``sign``'s signature with a scalar out of range."""
        ...


# The order of the ed25519 base point: a signature whose scalar s is not below it is malformed.
ED25519_ORDER = 2**252 + 27742317777372353535851937790883648493


def ed25519_high_s(signature: bytes) -> bytes:
    """``signature`` (R || s, s little-endian) with s raised by the group order: the same
    equation, but a scalar out of range, which strict ed25519 verification refuses."""
    s = int.from_bytes(signature[32:], "little") + ED25519_ORDER
    return signature[:32] + s.to_bytes(32, "little")
