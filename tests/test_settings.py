"""Configuration: the example file, the environment, and mistakes caught at start."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from verifier.errors import ConfigError
from verifier.settings import Settings, load_settings

EXAMPLE = Path(__file__).parent.parent / "examples" / "config.toml"
EVM_PAYEE = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
SOLANA_PAYEE = "9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM"
STELLAR_PAYEE = "GA5ZSEJYB37JRC5AVCIA5MOP4RHTM335X2KGX3IHOJAPP5RE34K4KZVN"
TON_PAYEE = "EQCD39VS5jcptHL8vMjEXrzGaRcCVYto7HUn4bpAOg8xqB2N"
KEYS = '[challenge]\nkeys = { k1 = "' + "x" * 32 + '" }\n'


def test_example_config_loads() -> None:
    s = load_settings(EXAMPLE)
    assert s.networks["eip155:8453"].min_confirmations == 3
    assert s.routes[0].accepts[0].price == "0.01"
    assert s.routes[1].upstream == "http://127.0.0.1:9000/report"


def test_environment_overrides_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X402_REDIS_URL", "redis://elsewhere:6380/1")
    monkeypatch.setenv("X402_WORKER__MAX_JOBS", "42")
    s = load_settings(EXAMPLE)
    assert s.redis_url == "redis://elsewhere:6380/1"
    assert s.worker.max_jobs == 42
    assert s.networks["eip155:8453"].min_confirmations == 3  # the rest still comes from the file


def test_config_file_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X402_CONFIG", str(EXAMPLE))
    assert load_settings().gate.port == 8402


def _route(policy: str = "", accept: str = "", network: str = "eip155:8453") -> str:
    """A valid network and route, with ``policy`` lines in the route's table and ``accept``
    lines replacing those of its offer."""
    offer = accept or f'asset = "USDC"\npay_to = "{EVM_PAYEE}"\namount = 1'
    return (
        f'[networks."{network}"]\nrpc_urls = ["http://x"]\n[[routes]]\npath = "/x"\nbody = "y"\n'
        f"{policy}\n"
        f'[[routes.accepts]]\nnetwork = "{network}"\n{offer}\n'
    )


def _asset(network: str, symbol: str, asset: str) -> str:
    return (
        f'[[assets]]\nnetwork = "{network}"\nsymbol = "{symbol}"\nasset = "{asset}"\ndecimals = 6\n'
    )


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("redis_urll = 'x'\n", "redis_urll"),
        ("[worker]\nmax_job = 3\n", "max_job"),
        ("[challenge]\nkeys = {}\n", "no challenge keys"),
        ("[store]\nused_tx_retention = 3600\n[worker]\ngrace_seconds = 7200\n", "redeemed again"),
        (
            '[[routes]]\npath = "/x"\nbody = "y"\n[[routes.accepts]]\nnetwork = "eip155:1"\n'
            f'asset = "USDC"\npay_to = "{EVM_PAYEE}"\namount = 1\n',
            "no [networks] entry",
        ),
        (
            '[networks."eip155:1"]\nrpc_urls = ["http://x"]\n[[routes]]\npath = "/x"\nbody = "y"\n'
            f'[[routes.accepts]]\nnetwork = "eip155:1"\nasset = "USDC"\npay_to = "{EVM_PAYEE}"\n',
            "exactly one of amount",
        ),
        ('[networks."eip155:1"]\nrpc_urls = ["ftp://x"]\n', "http"),
        (_route('delivery = "entitlement"'), "needs access_period"),
        (_route('delivery = "entitlement"\naccess_period = 60\nreplay_window = 5'), "once' only"),
        (_route("access_period = 60"), "'entitlement' only"),
        (_route('delivery = "entitlement"\naccess_period = 864000'), "receipt_retention"),
        (_route("replay_window = 0"), "replay_window"),
        (_route('delivery = "forever"'), "delivery"),
    ],
)
def test_mistakes_are_errors(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "c.toml"
    keys = "" if "[challenge]" in text else KEYS
    path.write_text(text + "\n" + keys)
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        load_settings(path)


SOLANA = "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp"


# Settings that cannot work: each is refused when the configuration loads, in one line that
# names the key (the fragment), instead of failing every payment or the gate's start later.
@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        # EVM has no "confirmed": its adapter would wait for a tag that never comes, and every
        # payment would end payment_expired.
        (
            _route(network="eip155:1").replace(
                '"http://x"]', '"http://x"]\nfinality = "confirmed"'
            ),
            'networks."eip155:1".finality: "confirmed" is not a finality on EVM '
            "(one of latest, safe, finalized)",
        ),
        (
            f'[networks."{SOLANA}"]\nrpc_urls = ["http://x"]\nfinality = "safe"\n',
            f'networks."{SOLANA}".finality: "safe" is not a finality on Solana',
        ),
        (
            _route(accept='asset = "USDC"\npay_to = "0x1"\namount = 1'),
            "routes[0].accepts[0].pay_to: an EVM address is 0x and 40 hex digits",
        ),
        (
            _route(accept=f'asset = "USDC"\npay_to = "{EVM_PAYEE.replace("B", "b")}"\namount = 1'),
            "routes[0].accepts[0].pay_to: mixed case, but not its EIP-55 checksum spelling "
            + EVM_PAYEE,
        ),
        (
            _route(network=SOLANA, accept='asset = "USDC"\npay_to = "0OIl"\namount = 1'),
            "routes[0].accepts[0].pay_to: a Solana address is base58 of 32 bytes",
        ),
        (
            _route(
                network="stellar:pubnet",
                accept=f'asset = "USDC"\npay_to = "{STELLAR_PAYEE[:-1]}A"\namount = 1',
            ),
            "routes[0].accepts[0].pay_to: a Stellar address is a G account or an M muxed",
        ),
        (
            _route(
                network="tvm:-239",
                accept=f'asset = "USDT"\npay_to = "{TON_PAYEE[:-1]}M"\namount = 1',
            ),
            "routes[0].accepts[0].pay_to: a TON address is raw",
        ),
        ('[challenge]\nkeys = { k1 = "short" }\n', "challenge.keys: key 'k1' is 5 bytes"),
        (
            '[challenge]\nactive = "k2"\nkeys = { k1 = "' + "x" * 32 + '" }\n',
            "challenge.active: 'k2' is not one of the keys (k1)",
        ),
        ('[challenge]\nkeys = { "k 1" = "' + "x" * 32 + '" }\n', "challenge.keys: key id 'k 1'"),
        (
            "[worker]\nretry_base = 5\nretry_max = 2\n",
            "worker.retry_max: 2.0 is less than retry_base",
        ),
        (
            "[worker]\nmax_jobs = 10\nretry_slots = 11\n",
            "worker.retry_slots: 11 is more than max_jobs (10)",
        ),
        ('[webhooks]\nurl = "https://b.example/h"\n', "webhooks: url needs secrets_env"),
        (
            '[webhooks]\nurl = "https://b.example/h"\nsecrets_env = { k1 = "S1" }\nactive = "k2"\n',
            "active must be one of the key ids of secrets_env (k1)",
        ),
        ('[gate]\npublic_url = "api.example.com"\n', "gate.public_url: 'api.example.com' is not"),
        ('[gate]\npublic_url = "https://api.example.com/?x=1"\n', "gate.public_url"),
        (
            _route().replace('body = "y"', 'upstream = "localhost:9000/report"'),
            "routes[0].upstream: 'localhost:9000/report' is not",
        ),
        (
            _route().replace('body = "y"', 'upstream = "http://127.0.0.1:9000/r?v=1"'),
            "routes[0].upstream: 'http://127.0.0.1:9000/r?v=1' has a query",
        ),
        ('[networks."eip155:1"]\nrpc_urls = ["http://"]\n', 'networks."eip155:1".rpc_urls'),
        (
            _asset("eip155:8453", "DAI", "0x50c5725949"),
            "assets[0].asset: not native, nor a token address",
        ),
        (
            _asset("stellar:pubnet", "USDC", "USDC-GA5Z"),
            "assets[0].asset: a Stellar asset is native or CODE:ISSUER",
        ),
        (
            _asset("eip155:8453", "DAI", "0x50c5725949A6F0c72E6C4a641F24049A917DB0Cb")
            + _asset("eip155:8453", "dai", "0x" + "11" * 20),
            "assets[1].symbol: 'dai' is already assets[0] on eip155:8453",
        ),
        (
            _asset("eip155:8453", "DAI", "0x" + "11" * 20)
            + _asset("eip155:8453", "USDT", "0x" + "11" * 20),
            f"assets[1].asset: '0x{'11' * 20}' is already assets[0] on eip155:8453",
        ),
        (
            _route(accept=f'asset = "0x{"22" * 20}"\npay_to = "{EVM_PAYEE}"\namount = 1'),
            f"routes[0].accepts[0].asset: unknown asset '0x{'22' * 20}' on eip155:8453: "
            "add it to [[assets]]",
        ),
        (
            _route(accept=f'asset = "USDC"\npay_to = "{EVM_PAYEE}"\nprice = "0.0000001"'),
            "routes[0].accepts[0].price: price '0.0000001' is not a positive multiple of 10^-6",
        ),
        (
            _route() + "[[routes]]" + _route().split("[[routes]]")[1],
            "routes[1].path: '/x' is already routes[0]",
        ),
        (
            _route().replace('path = "/x"', 'path = "/healthz"'),
            "routes[0].path: '/healthz' is the gate's",
        ),
        (
            _route().replace('path = "/x"', 'path = "/x402/receipts"'),
            "routes[0].path: '/x402/receipts' is gate.receipts_path (the status read)",
        ),
        ('[gate]\nreceipts_path = "/metrics"\n', "gate.receipts_path: it is gate.metrics_path"),
        ('[gate]\nreceipts_path = "/healthz"\n', "gate.receipts_path: '/healthz' is the gate's"),
        ('[gate]\nmetrics_path = "/healthz"\n', "gate.metrics_path: '/healthz' is the gate's"),
        ('[gate]\nreceipts_path = "x402/receipts"\n', "gate.receipts_path"),
        (
            _route(
                accept=f'asset = "USDC"\npay_to = "{EVM_PAYEE}"\namount = 1\n'
                "max_timeout_seconds = 5"
            ),
            "routes[0].accepts[0].max_timeout_seconds",
        ),
    ],
)
def test_settings_that_cannot_work_are_refused(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text + "\n" + ("" if "[challenge]" in text else KEYS))
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert fragment in message and "\n" not in message, message


@pytest.mark.parametrize(
    "text",
    [
        _route().replace('"http://x"]', '"http://x"]\nfinality = "safe"'),
        _route(
            network=SOLANA, accept=f'asset = "USDC"\npay_to = "{SOLANA_PAYEE}"\nprice = "0.01"'
        ).replace('"http://x"]', '"http://x"]\nfinality = "confirmed"'),
        _route(
            network="stellar:pubnet",
            accept=f'asset = "native"\npay_to = "{STELLAR_PAYEE}"\namount = 1',
        ),
        _route(network="tvm:-239", accept=f'asset = "USDT"\npay_to = "{TON_PAYEE}"\namount = 1'),
        _route(
            network="tvm:-239",
            accept='asset = "native"\npay_to = "0:' + "ab" * 32 + '"\namount = 1',
        ),
        _route(accept=f'asset = "0x{"22" * 20}"\npay_to = "{EVM_PAYEE.lower()}"\namount = 1')
        + _asset("eip155:8453", "TOK", "0x" + "22" * 20),
        # A built-in token by its address, in any case: no [[assets]] entry needed.
        _route(
            accept='asset = "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913"\n'
            f'pay_to = "{EVM_PAYEE}"\namount = 1'
        ),
        # The built-in USDC on Base overridden by [[assets]]: allowed, it is not a duplicate.
        _route() + _asset("eip155:8453", "USDC", "0x" + "33" * 20),
        _route(network="acme:1", accept='asset = "COIN"\npay_to = "shop"\namount = 1')
        + _asset("acme:1", "COIN", "coin"),
        # The status read turned off: its default path is free for a route.
        _route().replace('path = "/x"', 'path = "/x402/receipts"') + '[gate]\nreceipts_path = ""\n',
    ],
)
def test_settings_that_work_load(tmp_path: Path, text: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text + "\n" + KEYS)
    assert load_settings(path).routes


def test_library_offers_check_the_payee_too() -> None:
    from verifier.settings import AcceptSettings

    with pytest.raises(ValueError, match="pay_to"):
        AcceptSettings(network="eip155:8453", asset="USDC", pay_to="0xpayee", amount=1)


def test_a_toml_syntax_error_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[worker\nmax_jobs = 1\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert message.startswith(f"{path} is not valid TOML: ") and "line 1" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        # One underscore: not nested, so not a setting; pydantic-settings would ignore it.
        (
            "X402_WORKER_MAX_JOBS",
            "3",
            "X402_WORKER_MAX_JOBS names no setting (did you mean X402_WORKER__MAX_JOBS?)",
        ),
        ("X402_WORKER__MAX_JOB", "3", "X402_WORKER__MAX_JOB names no setting"),
        ("x402_redis_urll", "redis://x", "x402_redis_urll names no setting"),
        ("X402_GATE__PORT__X", "1", "X402_GATE__PORT__X names no setting"),
        ("X402_CHALLENGE__KEYS", "{k1: abc}", "X402_CHALLENGE__KEYS is not JSON"),
        ("X402_CHALLENGE", "[1", "X402_CHALLENGE is not JSON"),
        ("X402_WORKER__MAX_JOBS", "many", "worker.max_jobs: Input should be a valid integer"),
    ],
)
def test_environment_mistakes_are_errors(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, fragment: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings(EXAMPLE)
    message = str(caught.value)
    assert fragment in message and "\n" not in message, message
    assert "abc" not in message  # a secret's value is never repeated


def test_environment_that_names_settings_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X402_CHALLENGE__KEYS", '{"k1": "' + "y" * 32 + '"}')
    monkeypatch.setenv("X402_NETWORKS__eip155:8453__MIN_CONFIRMATIONS", "7")
    monkeypatch.setenv("x402_gate__port", "9000")
    s = load_settings(EXAMPLE)
    assert s.challenge.keys == {"k1": "y" * 32}
    assert s.networks["eip155:8453"].min_confirmations == 7 and s.gate.port == 9000
    monkeypatch.delenv("X402_NETWORKS__eip155:8453__MIN_CONFIRMATIONS")
    assert Settings(challenge={"keys": {"k1": "z" * 32}}).gate.port == 9000


def test_delivery_policy_defaults_and_entitlement(tmp_path: Path) -> None:
    s = load_settings(EXAMPLE)
    route = s.routes[1]
    assert (route.delivery, route.replay_window, route.access_period) == ("once", 300, None)
    assert s.gate.max_stored_response_bytes == 1 << 20
    path = tmp_path / "c.toml"
    keys = '[challenge]\nkeys = { k1 = "' + "x" * 32 + '" }\n'
    path.write_text(_route('delivery = "entitlement"\naccess_period = 86400') + keys)
    entitled = load_settings(path).routes[0]
    assert (entitled.delivery, entitled.access_period) == ("entitlement", 86400)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings("/nonexistent/verifier.toml")


def test_the_readme_library_sample_configuration_serves_its_offer(tmp_path: Path) -> None:
    from verifier.gate import resolve_offer
    from verifier.settings import AcceptSettings

    readme = (EXAMPLE.parent.parent / "README.md").read_text()
    section = readme.split("### The gate as a library", 1)[1]
    sample = section.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "verifier.toml"
    path.write_text(sample + KEYS)
    settings = load_settings(path)
    accept = AcceptSettings(network="eip155:8453", asset="USDC", pay_to=EVM_PAYEE, price="0.10")
    offer = resolve_offer(accept, settings, settings.asset_registry())
    assert (offer.amount, offer.min_confirmations) == (100_000, 3)
