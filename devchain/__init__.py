"""Local dev services for tests, the demo and the benchmark: an anvil EVM node with the test
contracts (``devchain.anvil``), a throwaway redis-server (``devchain.redis_server``), the local
chain servers of the other families, the demo and the benchmark.

This is tooling, not product: it is not in the wheel, it runs from the repository root
(``make demo``, ``make bench``, the tests), and ``verifier`` and ``chains`` never import it.

The anvil names below are re-exported lazily, so importing ``devchain.redis_server`` does not
need the EVM extras (eth-abi).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devchain.anvil import (
        ANVIL_ACCOUNTS,
        ANVIL_KEYS,
        Anvil,
        AnvilNotFound,
        DevChain,
        RpcError,
        find_anvil,
    )

__all__ = [
    "ANVIL_ACCOUNTS",
    "ANVIL_KEYS",
    "Anvil",
    "AnvilNotFound",
    "DevChain",
    "RpcError",
    "find_anvil",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from devchain import anvil

        return getattr(anvil, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
