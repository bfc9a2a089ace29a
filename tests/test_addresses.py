"""Address and asset id shapes checked at load: the same verdicts as the adapters' own parsers."""

from __future__ import annotations

import functools
import os
import random
from collections.abc import Callable

import pytest
from eth_utils import keccak, to_checksum_address
from pytoniq_core import Address
from solders.keypair import Keypair
from stellar_sdk import Keypair as StellarKeypair
from stellar_sdk import MuxedAccount

from chains.evm import EVMAdapter
from chains.solana.parse import normalize_pubkey
from chains.stellar.horizon import normalize_account, normalize_asset
from chains.ton.codec import normalize_address as ton_address
from verifier.addresses import _keccak256, check_address, check_asset, eip55
from verifier.settings import NetworkSettings

_evm = EVMAdapter.create("eip155:1", NetworkSettings(rpc_urls=["http://127.0.0.1:1"]))
_CHARS = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz+/-_:"


def accepts(check: Callable[[str], object], value: str) -> bool:
    try:
        check(value)
    except ValueError:
        return False
    return True


def variants(value: str, rng: random.Random) -> list[str]:
    """``value``, and spellings one edit away: most are no address, some still are."""
    out = [value, value[:-1], value + value[-1], value.lower(), value.upper()]
    for _ in range(8):
        at = rng.randrange(len(value))
        out.append(value[:at] + rng.choice(_CHARS) + value[at + 1 :])
    return out


def samples(rng: random.Random) -> list[tuple[str, str, Callable[[str], object]]]:
    found: list[tuple[str, str, Callable[[str], object]]] = []
    for _ in range(30):
        found.append(("eip155:1", to_checksum_address(os.urandom(20)), _evm.normalize_address))
        found.append(("solana:x", str(Keypair().pubkey()), normalize_pubkey))
        account = StellarKeypair.random().public_key
        muxed = MuxedAccount(account, rng.randrange(2**64)).account_muxed
        assert muxed is not None
        found += [("stellar:pubnet", a, normalize_account) for a in (account, muxed)]
        raw = f"{rng.choice([0, -1])}:{os.urandom(32).hex()}"
        found.append(("tvm:-239", raw, ton_address))
        for bounceable in (True, False):
            for testnet in (True, False):
                for url_safe in (True, False):
                    friendly = Address(raw).to_str(
                        is_user_friendly=True,
                        is_bounceable=bounceable,
                        is_test_only=testnet,
                        is_url_safe=url_safe,
                    )
                    found.append(("tvm:-239", friendly, ton_address))
    return found


def test_addresses_are_what_the_adapters_accept() -> None:
    rng = random.Random(7)
    disagreements = []
    for network, address, adapter in samples(rng):
        for value in variants(address, rng):
            mine = accepts(functools.partial(check_address, network), value)
            if mine != accepts(adapter, value):
                disagreements.append((network, value, mine))
    assert disagreements == []


def test_stellar_asset_ids_are_what_the_adapter_accepts() -> None:
    account = StellarKeypair.random().public_key
    muxed = MuxedAccount(account, 5).account_muxed
    for code in ("USDC", "A", "ABCDEFGHIJKL", "ABCDEFGHIJKLM", "US-D", ""):
        for asset in (f"{code}:{account}", f"{code}:{account[:-1]}", f"{code}{account}", "native"):
            mine = accepts(lambda a: check_asset("stellar:pubnet", a), asset)
            assert mine == accepts(normalize_asset, asset), asset
        assert not accepts(lambda a: check_asset("stellar:pubnet", a), f"{code}:{muxed}")


@pytest.mark.parametrize(
    ("network", "asset", "ok"),
    [
        ("eip155:8453", "native", True),
        ("eip155:8453", "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913", True),
        ("eip155:8453", "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913", True),
        ("eip155:8453", "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02912", False),
        ("eip155:8453", "USDC", False),
        ("solana:x", "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v", True),
        ("tvm:-239", "0:b113a994b5024a16719f69139328eb759596c38a25f59028b146fecdc3621dfe", True),
        ("tvm:-239", "1:b113a994b5024a16719f69139328eb759596c38a25f59028b146fecdc3621dfe", False),
        ("acme:1", "anything at all", True),  # a third-party namespace: its adapter's to judge
    ],
)
def test_asset_ids(network: str, asset: str, ok: bool) -> None:
    assert accepts(lambda a: check_asset(network, a), asset) is ok


def test_keccak_and_eip55_match_eth_utils() -> None:
    for size in (0, 1, 135, 136, 137, 272, 1000):
        data = os.urandom(size)
        assert _keccak256(data) == keccak(data), size
    for _ in range(50):
        address = "0x" + os.urandom(20).hex()
        assert eip55(address) == to_checksum_address(address)
