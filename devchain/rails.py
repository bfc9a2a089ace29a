"""Extra payment rails for the demo: one local chain per family besides the EVM one.

A rail is a ``verifier.testing.PaymentRail`` (the paying half of the conformance suite's
harness: the network, the asset offered and the payee, the worker's settings, ``pay``) with what
the demo and the benchmark add: a route slug, a title and a request counter. A module
``devchain/<family>_rail.py`` takes part by defining ``rail()``, a context manager that starts
the family's local chain (a real node, or real transactions behind a local server in the
chain's API shape) and yields its ``Rail``. The demo sells one resource per rail and pays for it
through the real HTTP flow.
"""

from __future__ import annotations

import importlib
import pkgutil
from abc import abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

from verifier.testing import PaymentRail


class Rail(PaymentRail):
    """A rail the demo sells on, pointing the worker at its one local chain server."""

    slug: str  # the demo route is /<slug>/item
    title: str  # shown in the demo's output, e.g. "Solana (LiteSVM)"
    price = "0.05"  # the demo route's price, in the asset's units

    def __init__(self, url: str, **settings: Any) -> None:
        self._network_settings: dict[str, Any] = {"rpc_urls": [url], **settings}

    def network_settings(self) -> dict[str, Any]:
        return dict(self._network_settings)

    def route_accept(self) -> dict[str, Any]:
        """The ``[[routes.accepts]]`` entry of the demo's route on this rail."""
        terms = {"asset": self.asset, "pay_to": self.pay_to, "price": self.price}
        return {"network": self.network, **terms}

    @abstractmethod
    def requests(self) -> int:
        """HTTP requests the rail's local chain API has served so far (the benchmark counts)."""


def rail_modules() -> Iterator[str]:
    import devchain

    for info in pkgutil.iter_modules(devchain.__path__):
        if info.name.endswith("_rail"):
            yield f"devchain.{info.name}"


def load_rails() -> list[AbstractContextManager[Rail]]:
    """A context manager per available rail module (not entered yet)."""
    return [importlib.import_module(name).rail() for name in sorted(rail_modules())]
