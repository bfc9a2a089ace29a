"""Adapter discovery: built-ins and a third-party distribution, through entry points only."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.support import SettingsFactory, connected_gate, running_worker
from verifier.errors import ConfigError, PluginError
from verifier.models import Failure, PaymentPayload, ProofBody, ReasonCode, Receipt, ResourceInfo
from verifier.registry import build_adapters, load_plugins
from verifier.settings import AcceptSettings
from verifier.wire import decode_payment_required, encode_json

PLUGIN = '''
"""A third-party adapter: its transactions are strings "<payer>.<payee>.<amount>.<memo>"."""
import time
from verifier.adapter import Finality, InvalidProof, Observation, Transfer, TxNotFound

class AcmeAdapter:
    namespace = "acme"

    def __init__(self, network, config):
        self.network = network
        self.started = False

    @classmethod
    def create(cls, network, config):
        return cls(network, config)

    async def start(self):
        self.started = True

    async def close(self):
        self.started = False

    def canonical_txid(self, tx_ref):
        if tx_ref.count(".") != 3:
            raise InvalidProof("acme transactions have four parts")
        return tx_ref

    def normalize_address(self, address):
        return address.lower()

    def normalize_asset(self, asset):
        return asset.lower()

    async def observe(self, query):
        payer, payee, amount, memo = query.txid.split(".")
        if payer == "unknown":
            raise TxNotFound("not yet")
        return Observation(
            txid=query.txid, success=True, block_ref="1", block_time=int(time.time()),
            confirmations=1, finality=Finality.FINALIZED,
            transfers=(Transfer("coin", payer, payee, int(amount)),), payer=payer, memos=(memo,),
        )

    async def verify_payer_signature(self, observation, message, signature):
        return False
'''


@pytest.fixture
def acme_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Install a real (if tiny) distribution on sys.path: a module and its dist-info."""
    (tmp_path / "acme_chain.py").write_text(textwrap.dedent(PLUGIN))
    info = tmp_path / "acme_chain-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-chain\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[verifier.chains]\nacme = acme_chain:AcmeAdapter\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_builtin_evm_adapter_is_registered() -> None:
    plugins = load_plugins()
    assert plugins["eip155"].adapter.__name__ == "EVMAdapter"
    assert plugins["eip155"].distribution == "x402-verifier"


def test_third_party_plugin_is_found(acme_distribution: Path) -> None:
    plugins = load_plugins()
    assert plugins["acme"].distribution == "acme-chain"
    assert "eip155" in plugins


def test_broken_plugin_names_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken_chain.py").write_text("class NotAnAdapter:\n    namespace = 'broken'\n")
    info = tmp_path / "broken_chain-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-chain\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[verifier.chains]\nbroken = broken_chain:NotAnAdapter\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError, match=r"'broken'.*broken-chain.*missing"):
        load_plugins()


def test_unserved_namespace_is_a_config_error(make_settings: SettingsFactory) -> None:
    settings = make_settings(networks={"cosmos:hub": {"rpc_urls": ["http://127.0.0.1:1"]}})
    with pytest.raises(ConfigError, match="no adapter for cosmos:hub"):
        build_adapters(settings)


async def test_third_party_adapter_verifies_end_to_end(
    acme_distribution: Path, make_settings: SettingsFactory
) -> None:
    settings = make_settings(
        networks={"acme:1": {"rpc_urls": ["http://127.0.0.1:1"]}},
        assets=[{"network": "acme:1", "symbol": "COIN", "asset": "coin", "decimals": 2}],
    )
    async with connected_gate(settings) as gate, running_worker(settings):
        offers = gate.offers(
            [AcceptSettings(network="acme:1", asset="COIN", pay_to="shop", price="1.50")]
        )
        required = gate.challenge(ResourceInfo(url="/r"), offers)
        accept = decode_payment_required(encode_json(required)).accepts[0]
        assert accept.amount == "150" and accept.extra.amount_formatted == "1.50"

        def proof(tx: str) -> str:
            body = ProofBody(nonce=accept.extra.nonce, txHash=tx)
            return encode_json(PaymentPayload(accepted=accept, payload=body))

        outcome = await gate.settle(
            proof(f"alice.shop.150.{accept.extra.memo}"), resource="/r", offers=offers, timeout=5
        )
        assert isinstance(outcome, Receipt), outcome
        assert outcome.payer == "alice"
        bad = await gate.settle(proof("alice.shop.oops"), resource="/r", offers=offers, timeout=5)
        assert isinstance(bad, Failure) and bad.error_reason is ReasonCode.INVALID_PAYLOAD
