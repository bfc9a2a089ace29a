"""The asset registry pins checked facts: a wrong address here is a wrong payment accepted."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from verifier.assets import AssetInfo, AssetRegistry, format_amount, normalize_network
from verifier.errors import ConfigError
from verifier.settings import parse_price

PINNED = [
    ("eip155:8453", "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913", 6),
    ("eip155:84532", "0x036CbD53842c5426634e7929541eC2318f3dCF7e", 6),
    ("eip155:43114", "0xB97EF9Ef8734C71904D8002F8b6Bc66Dd9c48a6E", 6),
    ("eip155:43113", "0x5425890298aed601595a70AB815c96711a31Bc65", 6),
    ("eip155:137", "0x3c499c542cEF5E3811e1192ce70d8cC03d5c3359", 6),
    ("eip155:80002", "0x41E94Eb019C0762f9Bfcf9Fb1E58725BfB0e7582", 6),
    ("solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp", "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v", 6),
    ("solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1", "4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU", 6),
    ("stellar:pubnet", "USDC:GA5ZSEJYB37JRC5AVCIA5MOP4RHTM335X2KGX3IHOJAPP5RE34K4KZVN", 7),
    ("stellar:testnet", "USDC:GBBD47IF6LWK7P7MDEVSCWR7DPUWV3NY3DTQEVFL4NAT4AQH3ZLLFLA5", 7),
]


@pytest.mark.parametrize(("network", "address", "decimals"), PINNED)
def test_usdc_is_pinned(network: str, address: str, decimals: int) -> None:
    info = AssetRegistry().resolve(network, "USDC")
    assert (info.asset, info.decimals) == (address, decimals)
    assert AssetRegistry().find(network, address) == info


def test_usdt_on_ton_and_native_coins() -> None:
    reg = AssetRegistry()
    usdt = reg.resolve("tvm:-239", "USDT")
    assert usdt.asset == "0:b113a994b5024a16719f69139328eb759596c38a25f59028b146fecdc3621dfe"
    assert usdt.decimals == 6
    assert reg.resolve("eip155:137", "native").symbol == "POL"
    assert reg.resolve("eip155:8453", "ETH").decimals == 18
    assert reg.resolve("tvm:-3", "native").decimals == 9


def test_evm_lookup_by_id_ignores_case_and_overrides_win() -> None:
    reg = AssetRegistry(
        [AssetInfo("eip155:31337", "USDC", "0xAbC0000000000000000000000000000000000001", 6)]
    )
    assert reg.find("eip155:31337", "0xabc0000000000000000000000000000000000001") is not None
    over = AssetRegistry([AssetInfo("eip155:8453", "USDC", "0x" + "11" * 20, 6)])
    assert over.resolve("eip155:8453", "USDC").asset == "0x" + "11" * 20
    assert over.find("eip155:8453", "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913") is None
    with pytest.raises(ConfigError):
        reg.resolve("eip155:8453", "DOGE")


def test_networks() -> None:
    assert normalize_network("ton:-239") == "tvm:-239"
    assert normalize_network("eip155:1") == "eip155:1"
    for bad in ["", "eip155", "x:y:z", "EIP155:1", "eip155:" + "1" * 40]:
        with pytest.raises(ValueError):
            normalize_network(bad)


@pytest.mark.parametrize(
    ("amount", "decimals", "text"),
    [
        (100000, 6, "0.10"),
        (1, 6, "0.000001"),
        (0, 6, "0.00"),
        (15, 1, "1.5"),
        (7, 0, "7"),
        (10**18, 18, "1.00"),
    ],
)
def test_format_amount(amount: int, decimals: int, text: str) -> None:
    assert format_amount(amount, decimals) == text


@given(st.integers(min_value=1, max_value=10**30), st.integers(min_value=0, max_value=18))
def test_price_roundtrip(amount: int, decimals: int) -> None:
    assert parse_price(format_amount(amount, decimals), decimals) == amount


def test_price_refuses_sub_unit_and_garbage() -> None:
    assert parse_price("0.10", 6) == 100000
    assert parse_price("10000000000000000000000000001", 0) == 10**28 + 1  # beyond 28 digits
    assert (
        parse_price("123456789012345678901234567890.123456", 6)
        == 123456789012345678901234567890123456
    )
    for bad in ["0.0000001", "abc", "-1", "0", "nan", "inf"]:
        with pytest.raises(ConfigError):
            parse_price(bad, 6)
