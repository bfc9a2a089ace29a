"""Adapter discovery: built-ins and a third-party distribution, through entry points only."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import KEY, SettingsFactory, connected_gate, running_worker
from verifier import registry
from verifier.errors import ConfigError, PluginError
from verifier.models import Failure, PaymentPayload, ProofBody, ReasonCode, Receipt, ResourceInfo
from verifier.registry import build_adapters, load_plugins
from verifier.settings import AcceptSettings
from verifier.wire import decode_payment_required, encode_json

PLUGIN = '''
"""A third-party adapter: its transactions are strings "<payer>.<payee>.<amount>.<memo>"."""
import pathlib
import time
from verifier.adapter import Finality, InvalidProof, Observation, Transfer, TxNotFound

# Leaves a mark next to the module, so a test sees whether the registry imported it at all.
pathlib.Path(__file__).with_name("acme_chain.imported").touch()

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
            transfers=(Transfer("coin", payer, payee, int(amount)),), memos=(memo,),
        )

    async def verify_signature(self, account, message, signature):
        return False
'''


class Site:
    """A directory on sys.path that real (if tiny) distributions are installed into."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.modules: list[str] = []

    def install(self, name: str, modules: dict[str, str], chains: dict[str, str]) -> None:
        """Write ``modules`` (name -> source) and a dist-info with the ``chains`` entry points."""
        for module, source in modules.items():
            (self.root / f"{module}.py").write_text(textwrap.dedent(source))
            self.modules.append(module)
        info = self.root / f"{name.replace('-', '_')}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        lines = "".join(f"{namespace} = {target}\n" for namespace, target in chains.items())
        (info / "entry_points.txt").write_text(f"[verifier.chains]\n{lines}")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    installed_site = Site(root)
    yield installed_site
    # Every test writes its own copy of these modules: drop the imported one, or the next test
    # would be handed this one from sys.modules instead of importing its own.
    for module in installed_site.modules:
        sys.modules.pop(module, None)


@pytest.fixture
def acme_distribution(site: Site) -> Path:
    """The ``acme`` adapter, shipped by the distribution ``acme-chain``."""
    site.install("acme-chain", {"acme_chain": PLUGIN}, {"acme": "acme_chain:AcmeAdapter"})
    return site.root


#: Entry points of the distribution ``broken-chain``, each broken in its own way, and the words
#: its error must carry.
BROKEN = {
    "ghost": ("broken_chain_gone:GhostAdapter", "ModuleNotFoundError: No module named"),
    "hollow": ("broken_chain:Missing", "AttributeError"),
    "boom": ("boom_chain:BoomAdapter", "RuntimeError: boom at import"),
}


@pytest.fixture
def broken_distribution(site: Site) -> Path:
    site.install(
        "broken-chain",
        {
            "broken_chain": "class NotAnAdapter:\n    namespace = 'hollow'\n",
            "boom_chain": "raise RuntimeError('boom at import')\n",
        },
        {namespace: target for namespace, (target, _) in BROKEN.items()},
    )
    return site.root


def network(namespace: str) -> dict[str, dict[str, list[str]]]:
    return {f"{namespace}:1": {"rpc_urls": ["http://127.0.0.1:1"]}}


def test_builtin_evm_adapter_is_registered() -> None:
    plugins = load_plugins()
    assert plugins["eip155"].adapter.__name__ == "EVMAdapter"
    assert plugins["eip155"].distribution == "x402-verifier"


def test_third_party_plugin_is_found(acme_distribution: Path) -> None:
    plugins = load_plugins()
    assert plugins["acme"].distribution == "acme-chain"
    assert "eip155" in plugins


def test_malformed_plugin_names_itself(site: Site) -> None:
    site.install(
        "broken-chain",
        {"broken_chain": "class NotAnAdapter:\n    namespace = 'broken'\n"},
        {"broken": "broken_chain:NotAnAdapter"},
    )
    with pytest.raises(PluginError, match=r"'broken'.*broken-chain.*missing"):
        load_plugins()


def test_namespace_must_match_the_class(site: Site) -> None:
    site.install("acme-chain", {"acme_chain": PLUGIN}, {"acme2": "acme_chain:AcmeAdapter"})
    with pytest.raises(PluginError, match=r"'acme2'.*acme-chain.*namespace \('acme'\)"):
        load_plugins()


def test_broken_plugins_do_not_stop_other_namespaces(
    broken_distribution: Path, acme_distribution: Path, make_settings: SettingsFactory
) -> None:
    adapters = build_adapters(make_settings(networks=network("acme") | network("eip155")))
    assert {n: type(a).__name__ for n, a in adapters.items()} == {
        "acme:1": "AcmeAdapter",
        "eip155:1": "EVMAdapter",
    }
    assert "boom_chain" not in sys.modules and "broken_chain" not in sys.modules


@pytest.mark.parametrize("namespace", sorted(BROKEN))
def test_configured_broken_plugin_is_one_plugin_error(
    namespace: str, broken_distribution: Path, make_settings: SettingsFactory
) -> None:
    target, what = BROKEN[namespace]
    with pytest.raises(PluginError) as caught:
        build_adapters(make_settings(networks=network(namespace)))
    message = str(caught.value)
    assert message.startswith(f"adapter plugin {namespace!r} ({target}) from broken-chain ")
    assert what in message and "\n" not in message


def test_namespace_registered_twice_is_refused_when_configured(
    acme_distribution: Path, site: Site, make_settings: SettingsFactory
) -> None:
    site.install("acme-fork", {}, {"acme": "acme_fork:AcmeAdapter"})
    assert build_adapters(make_settings(networks=network("eip155")))  # unaffected
    with pytest.raises(PluginError, match=r"'acme'.*acme-chain.*acme-fork"):
        build_adapters(make_settings(networks=network("acme")))


def test_only_configured_plugins_are_imported(
    acme_distribution: Path, make_settings: SettingsFactory
) -> None:
    mark = acme_distribution / "acme_chain.imported"
    build_adapters(make_settings(networks=network("eip155")))
    assert not mark.exists()
    assert registry.installed()["acme"] == ("acme-chain",)  # listed from metadata ...
    assert not mark.exists()  # ... without importing it
    build_adapters(make_settings(networks=network("acme")))
    assert mark.exists()


def write_config(path: Path, networks: str) -> Path:
    path.write_text(
        f'redis_url = "redis://127.0.0.1:1/0"\n[challenge]\nkeys = {{ k1 = "{KEY}" }}\n{networks}'
    )
    return path


def run_python(*args: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter: its sys.modules shows what loading imported, unlike this process's."""
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=60, env=env
    )


CHAIN_MODULES = (
    "chains.evm",
    "chains.solana",
    "chains.stellar",
    "chains.ton",
    "eth_account",
    "solders",
    "stellar_sdk",
    "pytoniq_core",
    "acme_chain",
)


def test_an_evm_only_configuration_imports_only_the_evm_adapter(
    acme_distribution: Path, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "evm.toml", '[networks."eip155:31337"]\nrpc_urls = ["http://127.0.0.1:1"]\n'
    )
    script = (
        "import sys\n"
        "from verifier.registry import build_adapters\n"
        "from verifier.settings import load_settings\n"
        "print(sorted(build_adapters(load_settings(sys.argv[1]))))\n"
        f"print([m for m in {CHAIN_MODULES!r} if m in sys.modules])\n"
    )
    done = run_python("-c", script, str(config), pythonpath=acme_distribution)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["['eip155:31337']", "['chains.evm', 'eth_account']"]


# Each built-in namespace, a network of it, the extra that ships its SDK and a module of that SDK
# the adapter imports.
BUILTINS = [
    ("eip155", "eip155:31337", "evm", "eth_account"),
    ("solana", "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp", "solana", "solders"),
    ("stellar", "stellar:testnet", "stellar", "stellar_sdk"),
    ("tvm", "tvm:-3", "ton", "pytoniq_core"),
]


@pytest.mark.parametrize(("namespace", "net", "extra", "sdk"), BUILTINS)
def test_missing_sdk_names_the_extra_to_install(
    namespace: str, net: str, extra: str, sdk: str, tmp_path: Path
) -> None:
    # A module of the SDK's name, ahead of site-packages, that fails the way an absent one does:
    # the worker process then sees the install as one without this extra.
    shadow = tmp_path / "without-sdk"
    shadow.mkdir()
    (shadow / f"{sdk}.py").write_text(
        f"raise ModuleNotFoundError(\"No module named '{sdk}'\", name={sdk!r})\n"
    )
    config = write_config(
        tmp_path / "one.toml", f'[networks."{net}"]\nrpc_urls = ["http://127.0.0.1:1"]\n'
    )
    done = run_python("-m", "verifier.cli", "worker", "--config", str(config), pythonpath=shadow)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr  # one line, no traceback
    assert lines[0].startswith(f"x402-verifier: adapter plugin {namespace!r} (chains.")
    assert (
        f"from x402-verifier cannot be loaded: ModuleNotFoundError: No module named '{sdk}'"
        in (lines[0])
    )
    assert lines[0].endswith(f"pip install 'x402-verifier[{extra}]'")


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
            body = ProofBody(nonce=accept.extra.nonce, tx_hash=tx)
            return encode_json(PaymentPayload(accepted=accept, payload=body))

        outcome = await gate.settle(
            proof(f"alice.shop.150.{accept.extra.memo}"), resource="/r", offers=offers, timeout=5
        )
        assert isinstance(outcome, Receipt), outcome
        assert outcome.payer == "alice"
        bad = await gate.settle(proof("alice.shop.oops"), resource="/r", offers=offers, timeout=5)
        assert isinstance(bad, Failure) and bad.error_reason is ReasonCode.INVALID_PAYLOAD


@pytest.mark.parametrize("namespace", ["hollow", "boom"])
def test_broken_third_party_plugin_is_one_line_at_the_command_line(
    namespace: str, broken_distribution: Path, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "one.toml", f'[networks."{namespace}:1"]\nrpc_urls = ["http://127.0.0.1:1"]\n'
    )
    done = run_python(
        "-m", "verifier.cli", "worker", "--config", str(config), pythonpath=broken_distribution
    )
    assert done.returncode == 2, done.stdout + done.stderr
    target, what = BROKEN[namespace]
    assert done.stderr.splitlines() == [
        f"x402-verifier: adapter plugin {namespace!r} ({target}) from broken-chain cannot be "
        f"loaded: {done.stderr.split('cannot be loaded: ', 1)[1].strip()}"
    ]
    assert what in done.stderr


def test_broken_plugins_do_not_stop_a_command_that_does_not_use_them(
    broken_distribution: Path, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "evm.toml", '[networks."eip155:1"]\nrpc_urls = ["http://127.0.0.1:1"]\n'
    )
    done = run_python(
        "-m", "verifier.cli", "doctor", "--config", str(config), pythonpath=broken_distribution
    )
    assert "Traceback" not in done.stderr and "x402-verifier:" not in done.stderr, done.stderr
    assert "adapters    ok    eip155 (x402-verifier)" in done.stdout
    assert "not imported: boom (broken-chain), " in done.stdout
