"""What every adapter that reads a chain over HTTP shares: ``RpcAdapter``.

A family writes what is its own (network pin, head read, normalization, ``observe``,
``verify_signature``) and inherits the rest of the ``verifier.adapter.ChainAdapter`` protocol:

* ``create(network, config, *, transport=None)``: the network id checked against the class's
  ``network_pattern`` (its first group is ``self.reference``); ``transport`` replaces the HTTP
  transport (``chains.http.Transport``), for tests.
* ``start()``: opens the API client (``open_api``: a ``JsonRpcClient`` or a ``RestClient`` over
  the configured URLs) and pins every URL that answers to the configured network with
  ``pin(url)`` (rule 8). ``WrongChain`` refuses to start; a URL that is down at start is logged
  and pinned before its first use (``chains.endpoints``). ``close()`` releases the HTTP pool.
* ``api``: the started client (``RpcUnavailable`` before ``start``), with failover between URLs.
* ``head(key, at_least=n)``: the chain's head (block number, slot, ledger, masterchain seqno:
  whatever ``read_head(key)`` returns), shared by every concurrent job for
  ``head_cache_seconds`` and read again when the shared value is older than ``n`` (the block
  the job has just seen).

Over JSON-RPC, subclass ``chains.jsonrpc.JsonRpcAdapter`` (``open_api`` done) as ``EVMAdapter``
and ``SolanaAdapter`` do; over REST, as ``StellarAdapter`` and ``TONAdapter`` do, a new family is
about this much (``tests/test_adapter_base.py`` runs a complete small one)::

    class CosmosAdapter(RpcAdapter[RestClient]):
        namespace = "cosmos"
        network_pattern = re.compile(r"cosmos:([a-z0-9-]{1,32})")

        def open_api(self, endpoints, transport):
            return RestClient(endpoints, transport, not_found=TxNotFound)

        async def pin(self, url):
            info = await self.api.request_url(url, "/cosmos/base/tendermint/v1beta1/node_info")
            if info["default_node_info"]["network"] != self.reference:
                raise WrongChain(f"{url} serves another chain than {self.network}")

        async def read_head(self, key):
            block = await self.api.request("/cosmos/base/tendermint/v1beta1/blocks/latest")
            return int(block["block"]["header"]["height"])

        async def observe(self, query):
            tx = await self.api.request(f"/cosmos/tx/v1beta1/txs/{query.txid}")
            height = int(tx["tx_response"]["height"])
            head = await self.head("latest", at_least=height)
            return Observation(..., confirmations=head - height + 1, ...)

        # canonical_txid (``lowercase_txid`` for a hex hash), normalize_address and
        # normalize_asset are pure; verify_signature, as the chain's keys need
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import TYPE_CHECKING, ClassVar, Generic, Protocol, Self, TypeVar

from chains.endpoints import Endpoints
from chains.http import AiohttpTransport, Transport
from verifier.adapter import InvalidProof, RpcUnavailable, WrongChain

if TYPE_CHECKING:
    from verifier.adapter import NetworkSettings

T = TypeVar("T")


def lowercase_txid(tx_ref: str, pattern: re.Pattern[str], shape: str) -> str:
    """``tx_ref`` stripped and in lower case when it matches ``pattern`` (a hex hash), else
    ``InvalidProof`` saying what it should look like (``shape``)."""
    ref = tx_ref.strip()
    if not pattern.fullmatch(ref):
        raise InvalidProof(shape)
    return ref.lower()


class SharedReads(Generic[T]):
    """A short-lived cache with single flight: concurrent jobs asking for the same value (the
    chain head, one block) share one request, and reuse its answer for ``ttl`` seconds."""

    def __init__(self, ttl: float, max_entries: int = 512) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._values: dict[Hashable, tuple[float, T]] = {}
        self._inflight: dict[Hashable, asyncio.Future[T]] = {}

    def forget(self, key: Hashable) -> None:
        self._values.pop(key, None)

    async def get(self, key: Hashable, fetch: Callable[[], Awaitable[T]]) -> T:
        hit = self._values.get(key)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        running = self._inflight.get(key)
        if running is not None:
            return await asyncio.shield(running)
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            value = await fetch()
        except asyncio.CancelledError:
            fut.cancel()
            raise
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved: waiters, if any, get it through await
            raise
        else:
            fut.set_result(value)
            if self.ttl > 0:
                if len(self._values) >= self.max_entries:
                    self._values.clear()
                self._values[key] = (time.monotonic(), value)
            return value
        finally:
            del self._inflight[key]


class Api(Protocol):
    """What the base needs of a protocol client (``JsonRpcClient``, ``RestClient``)."""

    endpoints: Endpoints


A = TypeVar("A", bound=Api)


class RpcAdapter(Generic[A]):
    """The shared part of a chain adapter over an HTTP API ``A``; see the module docstring."""

    namespace: ClassVar[str]
    #: The whole CAIP-2 id this family serves; group 1 is the reference (a chain id, a hash).
    network_pattern: ClassVar[re.Pattern[str]]

    def __init__(
        self, network: str, config: NetworkSettings, *, transport: Transport | None = None
    ) -> None:
        m = self.network_pattern.fullmatch(network)
        if m is None:
            pattern = self.network_pattern.pattern
            raise ValueError(f"{network} is not a {self.namespace} network (expected {pattern})")
        self.network = network
        self.reference = m.group(1)
        self.config = config
        self._transport = transport
        self._own_transport: AiohttpTransport | None = None
        self._api: A | None = None
        self._heads: SharedReads[int] = SharedReads(config.head_cache_seconds)

    @classmethod
    def create(
        cls, network: str, config: NetworkSettings, *, transport: Transport | None = None
    ) -> Self:
        return cls(network, config, transport=transport)

    # -- what a family provides ------------------------------------------------------------

    def open_api(self, endpoints: Endpoints, transport: Transport) -> A:
        """The protocol client over ``endpoints`` (created at ``start``)."""
        raise NotImplementedError

    async def pin(self, url: str) -> None:
        """Raise ``WrongChain`` unless ``url`` serves ``self.network`` (``RpcUnavailable`` if it
        cannot tell now)."""
        raise NotImplementedError

    async def read_head(self, key: str) -> int:
        """The chain's head named ``key`` (a tag, a commitment), read now."""
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the client and pin every reachable URL; ``WrongChain`` refuses to start."""
        if self._api is None:
            transport = self._transport
            if transport is None:
                transport = self._own_transport = AiohttpTransport(self.config.rpc_timeout)
            self._api = self.open_api(Endpoints(self.config.rpc_urls, self.pin), transport)
        try:
            await self._api.endpoints.pin_all(self.network)
        except WrongChain:
            await self.close()
            raise

    async def close(self) -> None:
        self._api = None
        if self._own_transport is not None:
            await self._own_transport.aclose()
            self._own_transport = None

    @property
    def api(self) -> A:
        if self._api is None:
            raise RpcUnavailable(f"{self.network} adapter is not started")
        return self._api

    async def head(self, key: str, *, at_least: int = 0) -> int:
        """``read_head(key)``, shared for ``head_cache_seconds``; read again when older than
        ``at_least`` (a shared head from before the block a job has just seen)."""
        head = await self._heads.get(key, lambda: self.read_head(key))
        if head < at_least:
            self._heads.forget(key)
            head = await self._heads.get(key, lambda: self.read_head(key))
        return head
