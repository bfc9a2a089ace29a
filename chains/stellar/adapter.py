"""Stellar family (``stellar:pubnet``, ``stellar:testnet``) through Horizon.

One Horizon request per verification: ``/transactions/{hash}/operations?limit=200&
join=transactions&include_failed=true`` returns every operation (a transaction has at most 100)
and, joined into each, the transaction itself (``successful``, ``ledger``, ``created_at``, memo,
fee-bump hashes). A Horizon that ignores ``join`` costs a second request for
``/transactions/{hash}``. Horizon answers 404 for a hash it does not know.

The client is ``chains.rest.RestClient`` (one pooled session for all the configured Horizon URLs,
failover between them), not the SDK's ``ServerAsync``: Horizon's answers are plain JSON read as
the ``TypedDict``s of ``chains.stellar.horizon``, and the SDK client adds a request builder and
its own error tree on top. 404 -> ``TxNotFound``; 429, 5xx, other 4xx, transport errors and
timeouts -> ``RpcUnavailable`` (the next URL is tried first). The network is pinned at
``start()`` by the root endpoint's ``network_passphrase``.

* Finality: Horizon serves only transactions of closed ledgers, and a closed ledger is final
  (SCP has no reorganisations), so an observed transaction is ``FINALIZED``. Its confirmations
  are 1, unless the offer asks for more: then the latest ledger is read from the root endpoint
  (shared by concurrent jobs for ``head_cache_seconds``) and the depth ``latest - ledger + 1`` is
  reported.
* Fee bumps: the outer and the inner hash both find the transaction; ``Observation.txid`` is
  always the inner hash, so both proofs lead to one consumption key.
* Binding: ``MEMO_HASH`` whose 32 bytes are the memo commitment (reported as hex). A text memo
  holds 28 bytes and cannot carry the 64-character commitment, so it is reported but never
  binds. Or an ed25519 signature of the proof message by the paying account (the ``from`` of
  the paying operation, never the fee-bump fee account), hex or base64.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import ClassVar

from stellar_sdk import Keypair, Network
from stellar_sdk.exceptions import BadSignatureError, Ed25519PublicKeyInvalidError

from chains.base import RpcAdapter, lowercase_txid
from chains.endpoints import Endpoints
from chains.http import Transport
from chains.rest import RestClient
from chains.stellar import horizon
from chains.stellar.horizon import HorizonOperation, HorizonPage, HorizonRoot, HorizonTransaction
from verifier.adapter import (
    Finality,
    Observation,
    Query,
    RpcUnavailable,
    TxNotFound,
    WrongChain,
)

PASSPHRASES = {
    "pubnet": Network.PUBLIC_NETWORK_PASSPHRASE,
    "testnet": Network.TESTNET_NETWORK_PASSPHRASE,
}
_ACCEPT = {"accept": "application/hal+json, application/json"}
_TXID = re.compile(r"[0-9a-fA-F]{64}")


class StellarAdapter(RpcAdapter[RestClient]):
    """Adapter for one Stellar network, over one or more Horizon servers with failover."""

    namespace: ClassVar[str] = "stellar"
    network_pattern = re.compile(r"stellar:(pubnet|testnet)")

    @property
    def passphrase(self) -> str:
        return PASSPHRASES[self.reference]

    def open_api(self, endpoints: Endpoints, transport: Transport) -> RestClient:
        # A 404 is an answer, not a failure: the transaction may reach a lagging server later,
        # and ``TxNotFound`` is retried by the job anyway; so the next URL is not tried.
        return RestClient(endpoints, transport, headers=_ACCEPT, not_found=TxNotFound)

    async def pin(self, url: str) -> None:
        """The root endpoint's ``network_passphrase`` must be the configured network's."""
        try:
            root = await self.api.request_url(url, "/")
        except TxNotFound as exc:  # a root that answers 404 is no Horizon we can use (yet)
            raise RpcUnavailable(f"{url}: no Horizon root endpoint") from exc
        served = root.get("network_passphrase")
        if served != self.passphrase:
            raise WrongChain(f"{url} serves {served!r}, configured {self.network}")

    # -- normalization -------------------------------------------------------------------

    def canonical_txid(self, tx_ref: str) -> str:
        return lowercase_txid(tx_ref, _TXID, "a Stellar transaction hash is 64 hex digits")

    def normalize_address(self, address: str) -> str:
        return horizon.normalize_account(address)

    def normalize_asset(self, asset: str) -> str:
        return horizon.normalize_asset(asset)

    # -- reads ---------------------------------------------------------------------------

    async def read_head(self, key: str) -> int:
        """The latest ledger in Horizon's history (``key`` is always ``latest``)."""
        root: HorizonRoot = await self.api.request("/")
        latest = root.get("history_latest_ledger")
        if not isinstance(latest, int):
            raise RpcUnavailable(f"malformed history_latest_ledger: {latest!r}")
        return latest

    async def _operations(self, txid: str) -> tuple[HorizonTransaction, list[HorizonOperation]]:
        page: HorizonPage = await self.api.request(
            f"/transactions/{txid}/operations",
            params={"include_failed": "true", "join": "transactions", "limit": 200},
        )
        ops = list(page.get("_embedded", {}).get("records") or [])
        if not ops:
            raise TxNotFound(f"{txid}: Horizon lists no operations for it")
        tx = ops[0].get("transaction")
        if tx is None:  # a Horizon without join support
            tx = await self.api.request(f"/transactions/{txid}")
        if txid not in horizon.hashes_of(tx):
            raise RpcUnavailable(f"Horizon answered for another transaction than {txid}")
        return tx, ops

    async def observe(self, query: Query) -> Observation:
        """What Horizon says; a reply that does not have Horizon's shape is ``RpcUnavailable``."""
        try:
            return await self._observe(query)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            raise RpcUnavailable(f"{query.txid}: malformed Horizon reply: {exc!r:.200}") from exc

    async def _observe(self, query: Query) -> Observation:
        tx, ops = await self._operations(query.txid)
        ledger = tx.get("ledger")
        if not isinstance(ledger, int):
            raise RpcUnavailable(f"malformed ledger in Horizon reply: {ledger!r}")
        confirmations = 1
        if query.min_confirmations > 1:
            latest = await self.head("latest", at_least=ledger)
            confirmations = max(1, latest - ledger + 1)
        success = tx.get("successful") is True and all(
            op.get("transaction_successful") is True for op in ops
        )
        canonical = horizon.canonical_hash(tx)
        return Observation(
            txid=canonical,
            success=success,
            block_ref=str(ledger),
            block_time=horizon.unix_time(tx.get("created_at")),
            confirmations=confirmations,
            finality=Finality.FINALIZED,
            transfers=tuple(horizon.transfers_of(ops, query.pay_to)),
            memos=horizon.memos_of(tx),
            aliases=tuple(sorted(horizon.hashes_of(tx) - {canonical})),
        )

    async def verify_signature(self, account: str, message: bytes, signature: str) -> bool:
        """ed25519 over ``message`` by the G account ``account`` (hex or base64 signature)."""
        sig = _signature_bytes(signature)
        if sig is None:
            return False
        try:
            Keypair.from_public_key(account).verify(message, sig)
        except (BadSignatureError, Ed25519PublicKeyInvalidError, ValueError):
            return False
        return True


def _signature_bytes(signature: str) -> bytes | None:
    """64 signature bytes from hex (optionally 0x) or base64; None if neither."""
    text = signature.strip()
    try:
        raw = bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            return None
    return raw if len(raw) == 64 else None
