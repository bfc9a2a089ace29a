"""Several URLs for one network: failover, and the network pinned on each URL (rule 8).

Every adapter's API client (JSON-RPC, toncenter) keeps an ``Endpoints``: the first URL that
works stays preferred; when it fails the next one is tried within the same call. ``pin(url)``
is awaited once per URL before its first use and raises ``WrongChain`` if that URL serves
another network; such a URL is never used again. ``pin_all`` runs at worker start: a mismatch
refuses to start, an unreachable URL is only logged and pinned on first use.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from verifier.adapter import RpcUnavailable, WrongChain

T = TypeVar("T")
log = logging.getLogger(__name__)


class Endpoints:
    def __init__(
        self, urls: Sequence[str], pin: Callable[[str], Awaitable[None]] | None = None
    ) -> None:
        if not urls:
            raise ValueError("at least one url is needed")
        self.urls = list(urls)
        self._preferred = 0
        self._pin = pin
        self._pinned: set[str] = set()
        self._wrong: set[str] = set()

    async def pin_url(self, url: str) -> None:
        """Check ``url`` with the pin callback now; ``WrongChain`` and ``RpcUnavailable`` pass."""
        if self._pin is not None and url not in self._pinned:
            try:
                await self._pin(url)
            except WrongChain:
                self._wrong.add(url)
                raise
            self._pinned.add(url)

    async def pin_all(self, network: str) -> None:
        """At start: ``WrongChain`` for a URL serving another network; others pinned later."""
        for url in self.urls:
            try:
                await self.pin_url(url)
            except RpcUnavailable as exc:
                log.warning(
                    "%s: %s is unreachable at start; checked on first use (%s)", network, url, exc
                )

    async def first(self, attempt: Callable[[str], Awaitable[T]]) -> T:
        """``attempt(url)`` on the preferred URL, then the others, until one succeeds.

        ``RpcUnavailable`` from every URL becomes one ``RpcUnavailable`` naming the last
        failure; when that failure is a subclass (a node's JSON-RPC error, say) it is passed on
        as it is, since it is the node's answer.
        """
        last: RpcUnavailable | None = None
        for offset in range(len(self.urls)):
            index = (self._preferred + offset) % len(self.urls)
            url = self.urls[index]
            if url in self._wrong:
                continue
            try:
                await self.pin_url(url)
                result = await attempt(url)
            except RpcUnavailable as exc:
                last = exc
                continue
            except WrongChain as exc:
                log.error("url skipped for good: %s", exc)
                last = RpcUnavailable(str(exc))
                continue
            self._preferred = index
            return result
        if last is not None and type(last) is not RpcUnavailable:
            raise last
        raise RpcUnavailable(f"every url failed; last: {last}") from last
