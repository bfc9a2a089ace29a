"""The conformance suite every chain adapter passes, through the real gate, Redis and worker.

A chain family takes part by providing ``tests/harness_<family>.py`` with an async context
manager ``harness(request: pytest.FixtureRequest)`` that yields a ``Harness``: a local chain
(a real node, or real transactions served by a local server in the chain's real API shape) and
a way to pay on it.
``tests/test_conformance.py`` runs every case below against every harness it finds.
"""

from __future__ import annotations

from typing import Any, Protocol

from verifier.models import Accept


class Harness(Protocol):
    network: str  # CAIP-2 id the local chain serves
    asset: str  # the asset offered (an id the registry knows, or "native")
    symbol: str
    decimals: int
    pay_to: str  # the payee
    stranger: str  # another valid account, not the payee
    other_asset: str  # another asset the payer holds (for wrong_asset)
    min_confirmations: int

    def network_settings(self) -> dict[str, Any]:
        """``[networks."<network>"]`` for the local chain (``rpc_urls`` …)."""
        ...

    def wrong_network(self) -> str:
        """Another network id of the same family, which the local chain does not serve."""
        ...

    async def pay(
        self,
        accept: Accept,
        *,
        amount: int | None = None,
        memo: bool = True,
        to: str | None = None,
        asset: str | None = None,
        fail: bool = False,
    ) -> str:
        """Pay for ``accept`` on the local chain and return the transaction reference.

        ``memo``: carry the challenge's commitment as the chain allows; ``to``/``asset``:
        pay someone or something else; ``fail``: a transaction that is included but fails.
        The transaction must be final enough for ``min_confirmations`` when this returns.
        """
        ...

    def unknown_tx(self) -> str:
        """A well-formed transaction reference that the chain does not know."""
        ...

    def garbage_tx(self) -> str:
        """A transaction reference that is malformed for this chain."""
        ...
