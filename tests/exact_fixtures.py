"""The exact scheme on the local chain: an EIP-3009 token, a relayer, and payers who sign
authorizations the way the reference x402 client does (its own ``ExactEvmScheme``)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from eth_account import Account
from x402.mechanisms.evm.exact import ExactEvmScheme
from x402.mechanisms.evm.signers import EthAccountSigner
from x402.schemas import PaymentRequirements

from devchain.anvil import ANVIL_ACCOUNTS, ANVIL_KEYS
from tests.evm_fixtures import NETWORK, PAYEE, EvmEnv
from tests.support import SettingsFactory
from verifier.gate import Gate, Offer
from verifier.models import Accept, Failure, Receipt, ResourceInfo
from verifier.settings import AcceptSettings, Settings
from verifier.wire import decode_payment_required, encode_json

PAYER, PAYER_KEY = ANVIL_ACCOUNTS[6], ANVIL_KEYS[6]
RELAYER, RELAYER_KEY = ANVIL_ACCOUNTS[7], ANVIL_KEYS[7]
STRANGER_KEY = ANVIL_KEYS[3]
POOR_KEY = ANVIL_KEYS[8]  # holds none of the token
TOKEN_NAME, TOKEN_VERSION = "USD Coin", "2"
PRICE = 10_000  # 0.01 USDC
RESOURCE = "http://shop.test/exact"
RELAYER_ENV = "X402_RELAYER_KEY"


@dataclass(frozen=True)
class ExactEnv:
    evm: EvmEnv
    token: str

    @property
    def chain(self) -> Any:
        return self.evm.chain

    def balance(self, who: str) -> int:
        return int(self.chain.balance_of(self.token, who))

    def relayer_count(self) -> int:
        """Transactions the relayer sent: one per broadcast settlement."""
        return int(self.chain.rpc("eth_getTransactionCount", [RELAYER, "latest"]), 16)


@pytest.fixture(scope="module")
def exact_env(evm: EvmEnv) -> ExactEnv:
    token = evm.chain.deploy_eip3009_token(name=TOKEN_NAME, version=TOKEN_VERSION)
    evm.chain.mint(token, PAYER, 10**12)
    return ExactEnv(evm, token)


@pytest.fixture
def relayer_key(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv(RELAYER_ENV, RELAYER_KEY)
    yield RELAYER_KEY


def exact_settings(
    make_settings: SettingsFactory,
    env: ExactEnv,
    *,
    rpc_url: str | None = None,
    settlement: dict[str, Any] | None = None,
    **sections: Any,
) -> Settings:
    """Settings on the local chain with its EIP-3009 token registered as USDC (with its domain)
    and local settlement from the relayer, unless ``settlement`` says otherwise."""
    return make_settings(
        networks={
            NETWORK: {
                "rpc_urls": [rpc_url or env.evm.anvil.url],
                "head_cache_seconds": 0,
                "settlement": settlement or {"mode": "local"},
            }
        },
        assets=[
            {
                "network": NETWORK,
                "symbol": "USDC",
                "asset": env.token,
                "decimals": 6,
                "eip712_name": TOKEN_NAME,
                "eip712_version": TOKEN_VERSION,
            }
        ],
        **sections,
    )


def exact_route(path: str = "/exact", *, both: bool = False, **accept: Any) -> dict[str, Any]:
    rails = [{"network": NETWORK, "asset": "USDC", "pay_to": PAYEE, "amount": PRICE, **accept}]
    exact = [{**rails[0], "scheme": "exact"}]
    return {
        "path": path,
        "body": '{"paid": true}',
        "accepts": rails + exact if both else exact,
    }


def sign_inner(accept: Accept, key: str = PAYER_KEY) -> dict[str, Any]:
    """What the reference client's ExactEvmScheme puts in ``payload`` for ``accept``."""
    requirements = PaymentRequirements.model_validate(accept.model_dump(by_alias=True))
    scheme = ExactEvmScheme(EthAccountSigner(Account.from_key(key)))
    return dict(scheme.create_payment_payload(requirements))


def resign(
    inner: dict[str, Any],
    token: str,
    key: str = PAYER_KEY,
    *,
    chain_id: int = 31337,
    **changes: str,
) -> dict[str, Any]:
    """``inner`` with its authorization changed by ``changes`` and signed again by ``key``."""
    auth = {**inner["authorization"], **changes}
    signed = Account.sign_typed_data(
        key,
        domain_data={
            "name": TOKEN_NAME,
            "version": TOKEN_VERSION,
            "chainId": chain_id,
            "verifyingContract": token,
        },
        message_types={
            "TransferWithAuthorization": [
                {"name": "from", "type": "address"},
                {"name": "to", "type": "address"},
                {"name": "value", "type": "uint256"},
                {"name": "validAfter", "type": "uint256"},
                {"name": "validBefore", "type": "uint256"},
                {"name": "nonce", "type": "bytes32"},
            ]
        },
        message_data={
            **auth,
            "value": int(auth["value"]),
            "validAfter": int(auth["validAfter"]),
            "validBefore": int(auth["validBefore"]),
            "nonce": bytes.fromhex(auth["nonce"].removeprefix("0x")),
        },
    )
    return {"authorization": auth, "signature": "0x" + bytes(signed.signature).hex()}


def header(accept: Accept, inner: dict[str, Any]) -> str:
    body = {"x402Version": 2, "accepted": accept.model_dump(by_alias=True), "payload": inner}
    return base64.b64encode(json.dumps(body).encode()).decode()


class ExactShop:
    """A gate selling one resource for an exact payment on the local chain."""

    def __init__(self, gate: Gate, env: ExactEnv, **terms: Any) -> None:
        self.gate = gate
        self.env = env
        self.terms = {
            "network": NETWORK,
            "asset": "USDC",
            "pay_to": PAYEE,
            "amount": PRICE,
            "scheme": "exact",
            **terms,
        }

    def offer(self, **terms: Any) -> tuple[Accept, list[Offer]]:
        offers = self.gate.offers([AcceptSettings(**{**self.terms, **terms})])
        required = self.gate.challenge(ResourceInfo(url=RESOURCE), offers)
        return decode_payment_required(encode_json(required)).accepts[0], offers

    def paid_header(self, key: str = PAYER_KEY, **terms: Any) -> tuple[str, list[Offer]]:
        accept, offers = self.offer(**terms)
        return header(accept, sign_inner(accept, key)), offers

    async def settle(self, proof: str, offers: list[Offer], wait: float = 20) -> Receipt | Failure:
        return await self.gate.settle(proof, resource=RESOURCE, offers=offers, timeout=wait)


def later(seconds: int) -> str:
    return str(int(time.time()) + seconds)
