"""Stellar family (``stellar:pubnet``, ``stellar:testnet``) through Horizon.

One Horizon request per verification: ``/transactions/{hash}/operations?limit=200&
join=transactions&include_failed=true`` returns every operation (a transaction has at most 100)
and, joined into each, the transaction itself (``successful``, ``ledger``, ``created_at``, memo,
fee-bump hashes). A Horizon that ignores ``join`` costs a second request for
``/transactions/{hash}``. Horizon answers 404 for a hash it does not know.

The client is the SDK's ``ServerAsync`` over its ``AiohttpClient`` (one pooled session for all
the configured Horizon URLs); the SDK's request errors are mapped here: 404 -> ``TxNotFound``;
429, 5xx, other 4xx, transport errors and timeouts -> ``RpcUnavailable`` (the next URL is tried
first). The network is pinned at ``start()`` by the root endpoint's ``network_passphrase``.

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

import asyncio
import base64
import binascii
import re
from collections.abc import Awaitable, Callable
from typing import ClassVar, TypeVar, cast

from stellar_sdk import Keypair, Network
from stellar_sdk.client.aiohttp_client import AiohttpClient
from stellar_sdk.exceptions import (
    BadSignatureError,
    BaseRequestError,
    Ed25519PublicKeyInvalidError,
    NotFoundError,
)
from stellar_sdk.server_async import ServerAsync

from chains.endpoints import Endpoints
from chains.jsonrpc import SharedReads
from chains.stellar import horizon
from chains.stellar.horizon import HorizonOperation, HorizonPage, HorizonTransaction
from verifier.adapter import (
    Finality,
    InvalidProof,
    Observation,
    Query,
    RpcUnavailable,
    TxNotFound,
    WrongChain,
)
from verifier.settings import NetworkSettings

PASSPHRASES = {
    "pubnet": Network.PUBLIC_NETWORK_PASSPHRASE,
    "testnet": Network.TESTNET_NETWORK_PASSPHRASE,
}
_TXID = re.compile(r"^[0-9a-fA-F]{64}$")
T = TypeVar("T")


class StellarAdapter:
    """Adapter for one Stellar network, over one or more Horizon servers with failover."""

    namespace: ClassVar[str] = "stellar"

    def __init__(self, network: str, config: NetworkSettings) -> None:
        namespace, _, reference = network.partition(":")
        if namespace != self.namespace or reference not in PASSPHRASES:
            raise ValueError(f"{network} is not a Stellar network (stellar:pubnet|testnet)")
        self.network = network
        self.passphrase = PASSPHRASES[reference]
        self.config = config
        self._client: AiohttpClient | None = None
        self._servers: dict[str, ServerAsync] = {}
        self.endpoints = Endpoints(config.rpc_urls, self._pin)
        self._latest: SharedReads[int] = SharedReads(config.head_cache_seconds)
        self.requests_sent = 0  # Horizon round trips, for tests and the benchmark

    @classmethod
    def create(cls, network: str, config: NetworkSettings) -> StellarAdapter:
        return cls(network, config)

    async def start(self) -> None:
        """Pin every reachable Horizon by its network passphrase; a down one is pinned later."""
        if self._client is None:
            self._client = AiohttpClient(request_timeout=self.config.rpc_timeout)
            self._servers = {
                url: ServerAsync(url, client=self._client) for url in self.config.rpc_urls
            }
        try:
            await self.endpoints.pin_all(self.network)
        except WrongChain:
            await self.close()
            raise

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
            self._servers = {}

    async def _pin(self, url: str) -> None:
        try:
            root = await self._request(lambda s: s.root().call(), url)
        except TxNotFound as exc:  # a root that answers 404 is no Horizon we can use (yet)
            raise RpcUnavailable(f"{url}: no Horizon root endpoint") from exc
        served = root.get("network_passphrase")
        if served != self.passphrase:
            raise WrongChain(f"{url} serves {served!r}, configured {self.network}")

    async def _request(self, call: Callable[[ServerAsync], Awaitable[T]], url: str) -> T:
        """One Horizon GET on one URL, the SDK's errors mapped at this edge."""
        server = self._servers.get(url)
        if server is None:
            raise RpcUnavailable(f"{self.network} adapter is not started")
        self.requests_sent += 1
        try:
            async with asyncio.timeout(self.config.rpc_timeout):
                return await call(server)
        except NotFoundError as exc:
            raise TxNotFound(f"{url}: not found") from exc
        except BaseRequestError as exc:  # 429, 5xx, other 4xx, transport errors
            status = getattr(exc, "status", None)
            raise RpcUnavailable(f"{url}: {type(exc).__name__} {status or ''}".strip()) from exc
        except TimeoutError as exc:
            raise RpcUnavailable(f"{url}: no answer within {self.config.rpc_timeout}s") from exc
        except ValueError as exc:  # a body that is not JSON
            raise RpcUnavailable(f"{url}: malformed reply: {exc}") from exc

    async def _call(self, call: Callable[[ServerAsync], Awaitable[T]]) -> T:
        """``call`` on the preferred Horizon, failing over to the next on transient errors.

        A 404 is an answer, not a failure: the transaction may reach a lagging server later,
        and ``TxNotFound`` is retried by the job anyway.
        """
        return await self.endpoints.first(lambda url: self._request(call, url))

    # -- normalization -------------------------------------------------------------------

    def canonical_txid(self, tx_ref: str) -> str:
        ref = tx_ref.strip()
        if not _TXID.match(ref):
            raise InvalidProof("a Stellar transaction hash is 64 hex digits")
        return ref.lower()

    def normalize_address(self, address: str) -> str:
        return horizon.normalize_account(address)

    def normalize_asset(self, asset: str) -> str:
        return horizon.normalize_asset(asset)

    # -- reads ---------------------------------------------------------------------------

    async def _latest_ledger(self) -> int:
        async def fetch() -> int:
            root = await self._call(lambda s: s.root().call())
            latest = root.get("history_latest_ledger")
            if not isinstance(latest, int):
                raise RpcUnavailable(f"malformed history_latest_ledger: {latest!r}")
            return latest

        return await self._latest.get("latest", fetch)

    async def _operations(self, txid: str) -> tuple[HorizonTransaction, list[HorizonOperation]]:
        page = cast(
            HorizonPage,
            await self._call(
                lambda s: (
                    s.operations()
                    .for_transaction(txid)
                    .include_failed(True)
                    .join("transactions")
                    .limit(200)
                    .call()
                )
            ),
        )
        ops = list(page.get("_embedded", {}).get("records") or [])
        if not ops:
            raise TxNotFound(f"{txid}: Horizon lists no operations for it")
        tx = ops[0].get("transaction")
        if tx is None:  # a Horizon without join support
            tx = cast(
                HorizonTransaction,
                await self._call(lambda s: s.transactions().transaction(txid).call()),
            )
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
            latest = await self._latest_ledger()
            if latest < ledger:  # the shared value predates this ledger: read it again
                self._latest.forget("latest")
                latest = await self._latest_ledger()
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
