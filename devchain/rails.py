"""Extra payment rails for the demo: one local chain per family besides the EVM one.

A module ``devchain/<family>_rail.py`` takes part by defining ``rail()``, a context manager
that starts the family's local chain (a real node, or real transactions behind a local server in
the chain's API shape) and yields an object with the ``Rail`` attributes. The demo sells one
resource per rail and pays for it through the real HTTP flow.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any, Protocol


class Rail(Protocol):
    slug: str  # the demo route is /<slug>/item
    title: str  # shown in the demo's output, e.g. "Solana (LiteSVM)"
    network: str  # CAIP-2
    network_settings: dict[str, Any]  # the [networks."<network>"] table
    assets: list[dict[str, Any]]  # [[assets]] entries the offer needs (may be empty)
    accept: dict[str, Any]  # the [[routes.accepts]] entry: asset, pay_to, price or amount, …

    def pay(self, accept: dict[str, Any]) -> str:
        """Pay the wire ``accept`` (camelCase JSON) with its memo; return the tx reference."""
        ...

    def requests(self) -> int:
        """HTTP requests the rail's local chain API has served so far (the benchmark counts)."""
        ...


class LocalRail:
    """What the rails here share: the settings that point the worker at the rail's one local
    chain server, the offer's terms, and the assets that are not in the built-in registry."""

    slug: str
    title: str
    network: str

    def __init__(
        self,
        url: str,
        accept: dict[str, Any],
        assets: list[dict[str, Any]] | None = None,
        **settings: Any,
    ) -> None:
        self.network_settings: dict[str, Any] = {"rpc_urls": [url], **settings}
        self.accept = accept
        self.assets = assets or []


def rail_modules() -> Iterator[str]:
    import devchain

    for info in pkgutil.iter_modules(devchain.__path__):
        if info.name.endswith("_rail"):
            yield f"devchain.{info.name}"


def load_rails() -> list[AbstractContextManager[Rail]]:
    """A context manager per available rail module (not entered yet)."""
    return [importlib.import_module(name).rail() for name in sorted(rail_modules())]
