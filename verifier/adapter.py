"""The protocol every chain adapter implements, and all an adapter may use of the core.

Modules under ``chains/`` (and third-party adapters) import from the core only this module: the
protocol, the ``Query`` they answer, the ``Observation`` and ``Transfer`` they report, the
errors they raise, ``NetworkSettings`` (their configuration) and ``NATIVE`` (the asset id of a
chain's own coin). ``tests/test_adapter_base.py`` holds ``chains/`` to it.

An adapter *observes*: it turns one transaction of its chain into an ``Observation`` (or raises a
``TransientError`` when the chain cannot tell yet). It never decides whether a payment counts; the
core does that once, for every chain, in ``verifier.matching``.

Adapters are found through the entry point group ``verifier.chains``; the entry point's name is
the CAIP-2 namespace it serves (``eip155``, ``solana``, ...) and its object is the adapter class.
One instance is created per configured network at worker start, ``start()`` pins the network
(rule 8) and opens connection pools, ``close()`` releases them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

from verifier.assets import NATIVE
from verifier.errors import (
    ConfigError,
    FinalError,
    InvalidProof,
    NotFinal,
    RpcUnavailable,
    TransientError,
    TxNotFound,
    WrongChain,
)
from verifier.metrics import rpc_observed, settlement_observed
from verifier.models import Finality, Observation, ReasonCode, Transfer
from verifier.settings import NetworkSettings, SettlementSettings
from verifier.settlement import Authorizations, ExactPayment, SettlementRecord

__all__ = [
    "NATIVE",
    "Authorizations",
    "ChainAdapter",
    "ConfigError",
    "ExactPayment",
    "FinalError",
    "Finality",
    "InvalidProof",
    "NetworkSettings",
    "NotFinal",
    "Observation",
    "Query",
    "ReasonCode",
    "RpcUnavailable",
    "SettlementRecord",
    "SettlementSettings",
    "Transfer",
    "TransientError",
    "TxNotFound",
    "WrongChain",
    "rpc_observed",
    "settlement_observed",
]


@dataclass(frozen=True, slots=True)
class Query:
    """What the worker asks an adapter about: a canonical txid, and what it is looking for.

    ``asset`` and ``pay_to`` are already normalized by the same adapter, so an adapter can use them
    to fetch only what matters (a payee's token account, a jetton wallet). ``memo`` (the
    challenge's public commitment), ``issued_at`` and ``amount`` let an adapter resolve a locator
    that names no transaction (TON's ``ton:<account>|<nonce>``) by scanning the payee's recent
    transactions for the one that carries the commitment and pays the offer.
    """

    txid: str
    asset: str
    pay_to: str
    min_confirmations: int
    memo: str = ""
    issued_at: int = 0
    amount: int = 0


@runtime_checkable
class ChainAdapter(Protocol):
    """One chain family's view of transactions, for one network."""

    namespace: ClassVar[str]
    network: str

    @classmethod
    def create(cls, network: str, config: NetworkSettings) -> ChainAdapter:
        """Build the adapter for ``network`` (a CAIP-2 id in this namespace)."""
        ...

    async def start(self) -> None:
        """Open clients and pin the network; raise ``WrongChain`` if the RPC serves another."""
        ...

    async def close(self) -> None: ...

    def canonical_txid(self, tx_ref: str) -> str:
        """The canonical form of a client's transaction reference; ``InvalidProof`` if garbage."""
        ...

    def normalize_address(self, address: str) -> str:
        """Canonical form of an account address; ``InvalidProof`` (or ``ValueError``) if bad."""
        ...

    def normalize_asset(self, asset: str) -> str:
        """Canonical form of an asset id (``native`` stays ``native``)."""
        ...

    async def observe(self, query: Query) -> Observation:
        """What the chain says about ``query.txid``; ``TransientError`` when it cannot say yet."""
        ...

    async def verify_signature(self, account: str, message: bytes, signature: str) -> bool:
        """Whether ``signature`` over ``message`` was made by ``account``.

        ``account`` is the normalized sender of a transfer (an owner whose funds paid); the core
        decides which accounts are asked. Any malformed signature (wrong length, encoding, a
        point or scalar out of range) is ``False``, never an exception; only a failure to ask
        the chain (a contract wallet's EIP-1271 call) raises, as a ``TransientError``.
        """
        ...
