"""Configuration: the example file, the environment, and mistakes caught at start."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from verifier.errors import ConfigError
from verifier.settings import load_settings

EXAMPLE = Path(__file__).parent.parent / "examples" / "config.toml"


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


def _route(policy: str) -> str:
    """A valid network and route, with ``policy`` lines in the route's table."""
    return (
        '[networks."eip155:1"]\nrpc_urls = ["http://x"]\n[[routes]]\npath = "/x"\nbody = "y"\n'
        f"{policy}\n"
        '[[routes.accepts]]\nnetwork = "eip155:1"\nasset = "USDC"\npay_to = "0x1"\namount = 1\n'
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
            'asset = "USDC"\npay_to = "0x1"\namount = 1\n',
            "no [networks] entry",
        ),
        (
            '[networks."eip155:1"]\nrpc_urls = ["http://x"]\n[[routes]]\npath = "/x"\nbody = "y"\n'
            '[[routes.accepts]]\nnetwork = "eip155:1"\nasset = "USDC"\npay_to = "0x1"\n',
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
    keys = "" if "[challenge]" in text else '[challenge]\nkeys = { k1 = "' + "x" * 32 + '" }\n'
    path.write_text(text + "\n" + keys)
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        load_settings(path)


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
