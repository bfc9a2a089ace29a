"""Networks and the asset registry: which token id and how many decimals a symbol means.

The built-in entries are checked facts (a wrong address here is a wrong payment accepted); the
configuration can add assets or override these. Lookups by id are case-insensitive on EVM
networks only, where addresses are hex.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from verifier.errors import ConfigError

NATIVE = "native"

_CAIP2 = re.compile(r"^([-a-z0-9]{3,8}):([-_a-zA-Z0-9]{1,32})$")
_ALIASES = {"ton": "tvm"}


def normalize_network(network: str) -> str:
    """Canonical CAIP-2 id; ``ton:<id>`` is taken as ``tvm:<id>``. Raises ``ValueError``."""
    m = _CAIP2.match(network.strip())
    if m is None:
        raise ValueError(f"{network!r} is not a CAIP-2 network id")
    namespace, reference = m.groups()
    return f"{_ALIASES.get(namespace, namespace)}:{reference}"


def namespace_of(network: str) -> str:
    return network.split(":", 1)[0]


@dataclass(frozen=True, slots=True)
class AssetInfo:
    network: str
    symbol: str
    asset: str  # chain-native id, or "native"
    decimals: int
    # The token's EIP-712 domain (name, version), for the exact scheme; None when not known.
    eip712: tuple[str, str] | None = None


_USDC_DOMAIN = ("USD Coin", "2")  # ASSETS.md; Base Sepolia's token is named "USDC"

BUILTIN_ASSETS: tuple[AssetInfo, ...] = (
    AssetInfo(
        "eip155:8453", "USDC", "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913", 6, ("USD Coin", "2")
    ),
    AssetInfo(
        "eip155:84532", "USDC", "0x036CbD53842c5426634e7929541eC2318f3dCF7e", 6, ("USDC", "2")
    ),
    AssetInfo(
        "eip155:43114", "USDC", "0xB97EF9Ef8734C71904D8002F8b6Bc66Dd9c48a6E", 6, ("USD Coin", "2")
    ),
    AssetInfo("eip155:43113", "USDC", "0x5425890298aed601595a70AB815c96711a31Bc65", 6),
    AssetInfo(
        "eip155:137", "USDC", "0x3c499c542cEF5E3811e1192ce70d8cC03d5c3359", 6, ("USD Coin", "2")
    ),
    AssetInfo("eip155:80002", "USDC", "0x41E94Eb019C0762f9Bfcf9Fb1E58725BfB0e7582", 6),
    AssetInfo(
        "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp",
        "USDC",
        "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v",
        6,
    ),
    AssetInfo(
        "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1",
        "USDC",
        "4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU",
        6,
    ),
    AssetInfo(
        "stellar:pubnet",
        "USDC",
        "USDC:GA5ZSEJYB37JRC5AVCIA5MOP4RHTM335X2KGX3IHOJAPP5RE34K4KZVN",
        7,
    ),
    AssetInfo(
        "stellar:testnet",
        "USDC",
        "USDC:GBBD47IF6LWK7P7MDEVSCWR7DPUWV3NY3DTQEVFL4NAT4AQH3ZLLFLA5",
        7,
    ),
    AssetInfo(
        "tvm:-239",
        "USDT",
        "0:b113a994b5024a16719f69139328eb759596c38a25f59028b146fecdc3621dfe",
        6,
    ),
    AssetInfo(
        "tvm:-3",
        "USDT",
        "0:f418a04cf196ebc959366844a6cdf53a6fd6fff1eadafc892f05210bba31593e",
        6,
    ),
)

_EVM_NATIVE_SYMBOL = {"43114": "AVAX", "43113": "AVAX", "137": "POL", "80002": "POL"}
_NATIVE = {"eip155": ("ETH", 18), "solana": ("SOL", 9), "stellar": ("XLM", 7), "tvm": ("TON", 9)}


def native_asset(network: str) -> AssetInfo | None:
    namespace, _, reference = network.partition(":")
    if namespace not in _NATIVE:
        return None
    symbol, decimals = _NATIVE[namespace]
    if namespace == "eip155":
        symbol = _EVM_NATIVE_SYMBOL.get(reference, symbol)
    return AssetInfo(network, symbol, NATIVE, decimals)


def _id_key(network: str, asset: str) -> str:
    return asset.lower() if namespace_of(network) == "eip155" else asset


class AssetRegistry:
    """Assets by network, found by symbol or by id. Later entries override earlier ones."""

    def __init__(self, extra: tuple[AssetInfo, ...] | list[AssetInfo] = ()) -> None:
        self._by_id: dict[tuple[str, str], AssetInfo] = {}
        self._by_symbol: dict[tuple[str, str], AssetInfo] = {}
        for info in (*BUILTIN_ASSETS, *extra):
            net = normalize_network(info.network)
            info = AssetInfo(net, info.symbol, info.asset, info.decimals, info.eip712)
            old = self._by_symbol.get((net, info.symbol.upper()))
            if old is not None:
                self._by_id.pop((net, _id_key(net, old.asset)), None)
            self._by_id[(net, _id_key(net, info.asset))] = info
            self._by_symbol[(net, info.symbol.upper())] = info

    def find(self, network: str, asset: str) -> AssetInfo | None:
        """The asset named by id (or ``native``) or by symbol on ``network``, if known."""
        if asset == NATIVE:
            return native_asset(network)
        found = self._by_id.get((network, _id_key(network, asset)))
        if found is None:
            found = self._by_symbol.get((network, asset.upper()))
            if found is None:
                native = native_asset(network)
                if native is not None and native.symbol == asset.upper():
                    return native
        return found

    def resolve(self, network: str, asset: str) -> AssetInfo:
        found = self.find(network, asset)
        if found is None:
            raise ConfigError(f"unknown asset {asset!r} on {network}: add it to [[assets]]")
        return found


def format_amount(amount: int, decimals: int) -> str:
    """Base units as a decimal string, exact: ``format_amount(100000, 6) == "0.10"``."""
    whole, frac = divmod(amount, 10**decimals)
    if decimals == 0:
        return str(whole)
    digits = str(frac).rjust(decimals, "0").rstrip("0").ljust(min(2, decimals), "0")
    return f"{whole}.{digits}"
