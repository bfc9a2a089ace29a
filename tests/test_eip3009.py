"""``chains.evm.eip3009`` against the reference x402 client's signatures and a real anvil running
``Eip3009Token`` (USDC's EIP-3009 interface): what we recover and encode is what the token does.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, replace
from types import ModuleType
from typing import Any

import pytest
from eth_abi import decode, encode
from eth_account import Account
from hypothesis import given
from hypothesis import strategies as st
from x402.schemas import PaymentRequirements

from chains.evm.eip3009 import (
    AUTHORIZATION_USED_TOPIC,
    Authorization,
    Domain,
    authorization_key,
    authorization_state_calldata,
    balance_of_calldata,
    decode_eip712_domain,
    decode_string,
    digest,
    recover,
    transfer_with_authorization_calldata,
)
from devchain.anvil import ANVIL_ACCOUNTS, ANVIL_KEYS, DevChain, RpcError, selector
from tests.evm_fixtures import NETWORK, PAYEE, PAYER, PAYER_KEY, STRANGER, EvmEnv

FACILITATOR = ANVIL_ACCOUNTS[5]  # submits the authorizations; never a payer or payee here
STRANGER_KEY = ANVIL_KEYS[3]
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
FUNDS = 10**12
AUTH_ARGS = "address,address,uint256,uint256,uint256,bytes32"


def reference(module: str) -> ModuleType:
    """A module of the reference x402 EVM mechanism, imported without running the ``__init__``
    of ``x402.mechanisms.evm`` and ``.exact``: those import its web3 signers, and web3 is not
    installed (README, Dependencies). The modules used here do not import web3."""
    inserted = []
    for package in ("x402.mechanisms.evm", "x402.mechanisms.evm.exact"):
        if package not in sys.modules:
            spec = importlib.util.find_spec(package)
            assert spec is not None and spec.submodule_search_locations is not None
            bare = ModuleType(package)
            bare.__path__ = list(spec.submodule_search_locations)
            sys.modules[package] = bare
            inserted.append(package)
    try:
        return importlib.import_module(f"x402.mechanisms.evm.{module}")
    finally:
        for package in inserted:
            del sys.modules[package]


EIP712 = reference("eip712")
REF_TYPES = reference("types")
ExactEvmScheme = reference("exact.client").ExactEvmScheme


class PayerSigner:
    """The reference client's ``ClientEvmSigner`` over an eth_account key, as its
    ``EthAccountSigner`` (in the web3 module) does it: eth_account's EIP-712 signing."""

    def __init__(self, key: str) -> None:
        self._account = Account.from_key(key)
        self.address: str = self._account.address

    def sign_typed_data(
        self, domain: Any, types: dict[str, list[Any]], primary_type: str, message: dict[str, Any]
    ) -> bytes:
        fields = {
            name: [f if isinstance(f, dict) else {"name": f.name, "type": f.type} for f in group]
            for name, group in types.items()
        }
        domain_data = {
            "name": domain.name,
            "version": domain.version,
            "chainId": domain.chain_id,
            "verifyingContract": domain.verifying_contract,
        }
        return bytes(self._account.sign_typed_data(domain_data, fields, message).signature)


@dataclass(frozen=True)
class Usdc:
    chain: DevChain
    address: str
    domain: Domain


@pytest.fixture(scope="module")
def usdc(evm: EvmEnv) -> Usdc:
    address = evm.chain.deploy_eip3009_token()
    evm.chain.mint(address, PAYER, FUNDS)
    return Usdc(evm.chain, address, Domain("USD Coin", "2", 31337, address))


def sign(auth: Authorization, domain: Domain, key: str = PAYER_KEY) -> bytes:
    """The signature the reference client makes: its typed data, signed as it signs."""
    reference_auth = REF_TYPES.ExactEIP3009Authorization(
        from_address=auth.sender,
        to=auth.to,
        value=str(auth.value),
        valid_after=str(auth.valid_after),
        valid_before=str(auth.valid_before),
        nonce="0x" + auth.nonce.hex(),
    )
    typed = EIP712.build_typed_data_for_signing(
        reference_auth, domain.chain_id, domain.verifying_contract, domain.name, domain.version
    )
    signature: bytes = PayerSigner(key).sign_typed_data(*typed)
    return signature


def authorization(sender: str = PAYER, value: int = 1_000, **fields: Any) -> Authorization:
    """Payer to payee, valid from 0 until an hour from now, with a fresh nonce."""
    base: dict[str, Any] = {
        "sender": sender,
        "to": PAYEE,
        "value": value,
        "valid_after": 0,
        "valid_before": int(time.time()) + 3600,
        "nonce": os.urandom(32),
    }
    return Authorization(**{**base, **fields})


def settle(usdc: Usdc, calldata: bytes) -> dict[str, Any]:
    receipt = usdc.chain.receipt(usdc.chain.send_transaction(FACILITATOR, usdc.address, calldata))
    assert receipt["status"] == "0x1"
    return receipt


def revert_reason(usdc: Usdc, calldata: bytes) -> str:
    """The node's message for a call that reverts; nothing is sent."""
    sent_before = usdc.chain.transaction_count(FACILITATOR)
    with pytest.raises(RpcError) as raised:
        usdc.chain.send_transaction(FACILITATOR, usdc.address, calldata)
    assert usdc.chain.transaction_count(FACILITATOR) == sent_before
    return str(raised.value)


def used_logs(receipt: dict[str, Any]) -> list[list[str]]:
    return [
        log["topics"] for log in receipt["logs"] if log["topics"][0] == AUTHORIZATION_USED_TOPIC
    ]


def word(address: str) -> str:
    return "0x" + "00" * 12 + address.lower()[2:]


# ---- the reference client's payment, settled ------------------------------------------------


def test_a_reference_client_payment_recovers_and_settles(usdc: Usdc) -> None:
    requirements = PaymentRequirements(
        scheme="exact",
        network=NETWORK,
        asset=usdc.address,
        amount="123456",
        pay_to=PAYEE,
        max_timeout_seconds=600,
        extra={"name": "USD Coin", "version": "2"},
    )
    payload = ExactEvmScheme(PayerSigner(PAYER_KEY)).create_payment_payload(requirements)
    auth = Authorization.from_wire(payload["authorization"])
    signature = bytes.fromhex(payload["signature"].removeprefix("0x"))

    reference_hash = EIP712.hash_eip3009_authorization(
        REF_TYPES.ExactEIP3009Authorization(
            from_address=PAYER,
            to=PAYEE,
            value="123456",
            valid_after="0",
            valid_before=str(auth.valid_before),
            nonce=payload["authorization"]["nonce"],
        ),
        31337,
        usdc.address,
        "USD Coin",
        "2",
    )
    assert digest(auth, usdc.domain) == reference_hash
    assert recover(auth, usdc.domain, signature) == PAYER.lower()
    assert (auth.sender, auth.to, auth.value) == (PAYER.lower(), PAYEE.lower(), 123456)

    payer_before, payee_before = (usdc.chain.balance_of(usdc.address, a) for a in (PAYER, PAYEE))
    receipt = settle(usdc, transfer_with_authorization_calldata(auth, signature))
    assert usdc.chain.balance_of(usdc.address, PAYER) == payer_before - 123456
    assert usdc.chain.balance_of(usdc.address, PAYEE) == payee_before + 123456
    assert used_logs(receipt) == [[AUTHORIZATION_USED_TOPIC, word(PAYER), "0x" + auth.nonce.hex()]]
    assert usdc.chain.authorization_state(usdc.address, PAYER, auth.nonce) is True
    state = usdc.chain.call(usdc.address, authorization_state_calldata(PAYER, auth.nonce))
    assert decode(["bool"], state) == (True,)

    again = revert_reason(usdc, transfer_with_authorization_calldata(auth, signature))
    assert "FiatTokenV2: authorization is used or canceled" in again


def test_balance_of_calldata_reads_the_balance(usdc: Usdc) -> None:
    returned = usdc.chain.call(usdc.address, balance_of_calldata(PAYER))
    assert decode(["uint256"], returned) == (usdc.chain.balance_of(usdc.address, PAYER),)
    assert usdc.chain.call(usdc.address, balance_of_calldata(STRANGER)) == bytes(32)


def test_v_as_0_or_1_is_sent_as_27_or_28(usdc: Usdc) -> None:
    auth = authorization()
    signature = sign(auth, usdc.domain)
    parity = signature[:64] + bytes([signature[64] - 27])
    assert recover(auth, usdc.domain, parity) == PAYER.lower()
    calldata = transfer_with_authorization_calldata(auth, parity)
    v = decode([*AUTH_ARGS.split(","), "uint8", "bytes32", "bytes32"], calldata[4:])[6]
    assert v == signature[64]
    assert used_logs(settle(usdc, calldata))[0][1] == word(PAYER)


# ---- what the token refuses, with USDC's reasons ----------------------------------------------


def high_s(signature: bytes) -> bytes:
    """The malleable twin: the same signature with ``s`` mirrored and the parity flipped."""
    s = int.from_bytes(signature[32:64], "big")
    v = 28 if signature[64] == 27 else 27
    return signature[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes([v])


REFUSALS = {
    "expired": "FiatTokenV2: authorization is expired",
    "not yet valid": "FiatTokenV2: authorization is not yet valid",
    "more than the balance": "ERC20: transfer amount exceeds balance",
    "wrong signer": "FiatTokenV2: invalid signature",
    "another domain": "FiatTokenV2: invalid signature",
    "high s": "ECRecover: invalid signature 's' value",
    "v of 29": "ECRecover: invalid signature 'v' value",
}
# The token refuses these for the authorization's fields: the signature itself is the payer's.
PAYER_SIGNED = ("expired", "not yet valid", "more than the balance")


def refused(usdc: Usdc, case: str) -> tuple[Authorization, bytes]:
    now = usdc.chain.timestamp()
    auth = {
        "expired": authorization(valid_before=now),
        "not yet valid": authorization(valid_after=now + 3600),
        "more than the balance": authorization(value=FUNDS + 1),
    }.get(case) or authorization()
    match case:
        case "wrong signer":
            return auth, sign(auth, usdc.domain, STRANGER_KEY)
        case "another domain":
            return auth, sign(auth, replace(usdc.domain, version="1"))
        case "high s":
            return auth, high_s(sign(auth, usdc.domain))
        case "v of 29":
            return auth, sign(auth, usdc.domain)[:64] + b"\x1d"
    return auth, sign(auth, usdc.domain)


@pytest.mark.parametrize("case", REFUSALS)
def test_the_token_refuses(usdc: Usdc, case: str) -> None:
    auth, signature = refused(usdc, case)
    reason = revert_reason(usdc, transfer_with_authorization_calldata(auth, signature))
    assert REFUSALS[case] in reason
    assert usdc.chain.authorization_state(usdc.address, PAYER, auth.nonce) is False
    signer = recover(auth, usdc.domain, signature)
    assert (signer == PAYER.lower()) is (case in PAYER_SIGNED)


def test_a_canceled_authorization_is_refused(usdc: Usdc) -> None:
    auth = authorization()
    cancel = Account.from_key(PAYER_KEY).sign_typed_data(
        {"name": "USD Coin", "version": "2", "chainId": 31337, "verifyingContract": usdc.address},
        {
            "CancelAuthorization": [
                {"name": "authorizer", "type": "address"},
                {"name": "nonce", "type": "bytes32"},
            ]
        },
        {"authorizer": PAYER, "nonce": auth.nonce},
    )
    usdc.chain.transact(
        FACILITATOR,
        usdc.address,
        "cancelAuthorization",
        ["address", "bytes32", "bytes"],
        [PAYER, auth.nonce, bytes(cancel.signature)],
    )
    assert usdc.chain.authorization_state(usdc.address, PAYER, auth.nonce) is True
    calldata = transfer_with_authorization_calldata(auth, sign(auth, usdc.domain))
    assert "FiatTokenV2: authorization is used or canceled" in revert_reason(usdc, calldata)


def test_receive_with_authorization_is_for_the_payee_only(usdc: Usdc) -> None:
    auth = authorization(value=42)
    fields = [
        {"name": n, "type": t}
        for n, t in zip(
            ("from", "to", "value", "validAfter", "validBefore", "nonce"),
            AUTH_ARGS.split(","),
            strict=True,
        )
    ]
    message = {
        "from": auth.sender,
        "to": auth.to,
        "value": auth.value,
        "validAfter": auth.valid_after,
        "validBefore": auth.valid_before,
        "nonce": auth.nonce,
    }
    domain_data = {
        "name": "USD Coin",
        "version": "2",
        "chainId": 31337,
        "verifyingContract": usdc.address,
    }
    signed = Account.from_key(PAYER_KEY).sign_typed_data(
        domain_data, {"ReceiveWithAuthorization": fields}, message
    )
    types = [*AUTH_ARGS.split(","), "bytes"]
    args = [*message.values(), bytes(signed.signature)]
    with pytest.raises(RpcError, match="FiatTokenV2: caller must be the payee"):
        usdc.chain.transact(FACILITATOR, usdc.address, "receiveWithAuthorization", types, args)
    before = usdc.chain.balance_of(usdc.address, PAYEE)
    usdc.chain.transact(PAYEE, usdc.address, "receiveWithAuthorization", types, args)
    assert usdc.chain.balance_of(usdc.address, PAYEE) == before + 42
    assert usdc.chain.authorization_state(usdc.address, PAYER, auth.nonce) is True


# ---- an EIP-1271 contract wallet as the payer ------------------------------------------------


@pytest.fixture(scope="module")
def wallet(usdc: Usdc) -> str:
    """A ContractWallet owned by the payer, holding tokens."""
    address = usdc.chain.deploy_wallet(PAYER)
    usdc.chain.mint(usdc.address, address, FUNDS)
    return address


def test_a_contract_wallet_pays_through_the_bytes_overload(usdc: Usdc, wallet: str) -> None:
    auth = authorization(sender=wallet, value=777)
    signature = sign(auth, usdc.domain)  # the owner's key signs the wallet's authorization
    assert recover(auth, usdc.domain, signature) == PAYER.lower()  # the owner, not the wallet
    calldata = transfer_with_authorization_calldata(auth, signature, bytes_overload=True)
    assert calldata[:4] == selector(f"transferWithAuthorization({AUTH_ARGS},bytes)")
    before = usdc.chain.balance_of(usdc.address, wallet)
    receipt = settle(usdc, calldata)
    assert usdc.chain.balance_of(usdc.address, wallet) == before - 777
    assert used_logs(receipt) == [[AUTHORIZATION_USED_TOPIC, word(wallet), "0x" + auth.nonce.hex()]]


def test_a_contract_wallet_pays_through_the_vrs_overload(usdc: Usdc, wallet: str) -> None:
    """USDC v2.2 checks EIP-1271 for a contract ``from`` whichever overload carries the bytes."""
    auth = authorization(sender=wallet, value=5)
    calldata = transfer_with_authorization_calldata(auth, sign(auth, usdc.domain))
    assert calldata[:4] == selector(f"transferWithAuthorization({AUTH_ARGS},uint8,bytes32,bytes32)")
    assert used_logs(settle(usdc, calldata))[0][1] == word(wallet)


def test_a_contract_wallet_refuses_what_its_owner_did_not_sign(usdc: Usdc, wallet: str) -> None:
    auth = authorization(sender=wallet)
    stranger = sign(auth, usdc.domain, STRANGER_KEY)
    assert "FiatTokenV2: invalid signature" in revert_reason(
        usdc, transfer_with_authorization_calldata(auth, stranger, bytes_overload=True)
    )
    # 66 bytes go to the bytes overload by themselves and reach the wallet (which wants 65):
    # through ECDSA the token would have said "ECRecover: invalid signature length".
    longer = transfer_with_authorization_calldata(auth, sign(auth, usdc.domain) + b"\x00")
    assert longer[:4] == selector(f"transferWithAuthorization({AUTH_ARGS},bytes)")
    assert "FiatTokenV2: invalid signature" in revert_reason(usdc, longer)


# ---- recover: malformed signatures ---------------------------------------------------------


def _not_on_curve() -> int:
    """The smallest x with no secp256k1 point (x³ + 7 not a square mod p)."""
    p = 2**256 - 2**32 - 977
    return next(x for x in range(1, 100) if pow(x**3 + 7, (p - 1) // 2, p) != 1)


def malformed(good: bytes) -> dict[str, bytes]:
    r, s = good[:32], good[32:64]
    n = SECP256K1_N.to_bytes(32, "big")
    return {
        "empty": b"",
        "64 bytes": good[:64],
        "66 bytes": good + b"\x00",
        "v=29": good[:64] + b"\x1d",
        "v=26": good[:64] + b"\x1a",
        "v=2": good[:64] + b"\x02",
        "s high": high_s(good),
        "r=0": bytes(32) + s + good[64:],
        "s=0": r + bytes(32) + good[64:],
        "r=n": n + s + good[64:],
        "s=n": r + n + good[64:],
        "r off the curve": _not_on_curve().to_bytes(32, "big") + s + good[64:],
        "all 0xff": b"\xff" * 65,
        "all zero": bytes(65),
    }


def test_recover_returns_none_for_every_malformed_signature(usdc: Usdc) -> None:
    auth = authorization()
    good = sign(auth, usdc.domain)
    assert recover(auth, usdc.domain, good) == PAYER.lower()
    found = {name: recover(auth, usdc.domain, sig) for name, sig in malformed(good).items()}
    assert found == dict.fromkeys(found)


@given(st.binary(max_size=130))
def test_recover_never_raises(signature: bytes) -> None:
    auth = Authorization(PAYER, PAYEE, 1, 0, 1, bytes(32))
    found = recover(auth, Domain("USD Coin", "2", 1, PAYEE), signature)
    assert found is None or (len(signature) == 65 and len(found) == 42 and found == found.lower())


# ---- the domain, read from the token ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "version"), [("USD Coin", "2"), ("Eurø Coin with a long name " * 3, "10")]
)
def test_the_domain_decodes_to_what_the_token_was_deployed_with(
    usdc: Usdc, name: str, version: str
) -> None:
    address = usdc.chain.deploy_eip3009_token(name=name, version=version, symbol="X")
    expected = Domain(name, version, 31337, address)
    returned = usdc.chain.call(address, selector("eip712Domain()"))
    assert decode_eip712_domain(returned) == expected
    assert decode_string(usdc.chain.call(address, selector("name()"))) == name
    assert decode_string(usdc.chain.call(address, selector("version()"))) == version
    assert usdc.chain.call(address, selector("DOMAIN_SEPARATOR()")) == expected.separator()


def test_decoders_reject_malformed_return_data(usdc: Usdc) -> None:
    returned = usdc.chain.call(usdc.address, selector("eip712Domain()"))
    with pytest.raises(ValueError, match="malformed eip712Domain"):
        decode_eip712_domain(returned[:-32])
    with_salt = b"\x1f" + returned[1:]
    with pytest.raises(ValueError, match="fields 0x1f"):
        decode_eip712_domain(with_salt)
    with pytest.raises(ValueError, match="malformed string"):
        decode_string(b"\x00" * 31)
    bad_utf8 = encode(["bytes"], [b"\xff\xfe"])
    with pytest.raises(ValueError, match="malformed string"):
        decode_string(bad_utf8)


# ---- the wire form and the key ---------------------------------------------------------------

WIRE = {
    "from": PAYER,
    "to": PAYEE,
    "value": "1000",
    "validAfter": "0",
    "validBefore": str(2**256 - 1),
    "nonce": "0x" + "ab" * 32,
}


def test_from_wire_reads_every_field() -> None:
    auth = Authorization.from_wire(WIRE)
    assert asdict(auth) == {
        "sender": PAYER.lower(),
        "to": PAYEE.lower(),
        "value": 1000,
        "valid_after": 0,
        "valid_before": 2**256 - 1,
        "nonce": b"\xab" * 32,
    }
    upper = {**WIRE, "from": "0x" + PAYER[2:].upper(), "nonce": "0x" + "AB" * 32}
    assert Authorization.from_wire(upper) == auth


def _without(key: str) -> dict[str, Any]:
    return {k: v for k, v in WIRE.items() if k != key}


BAD_WIRE: dict[str, tuple[Any, str]] = {
    "not an object": (["from"], "must be an object"),
    "no nonce": (_without("nonce"), "lacks nonce"),
    "an extra field": ({**WIRE, "signature": "0x"}, "unknown fields: signature"),
    "from as a number": ({**WIRE, "from": int(PAYER, 16)}, "authorization.from must be 0x"),
    "from of 39 digits": ({**WIRE, "from": PAYER[:-1]}, "authorization.from must be 0x"),
    "from without 0x": ({**WIRE, "from": PAYER[2:]}, "authorization.from must be 0x"),
    "from with a newline": ({**WIRE, "from": PAYER + "\n"}, "authorization.from must be 0x"),
    "bad checksum": ({**WIRE, "from": "0x" + PAYER[2:].swapcase()}, "checksum"),
    "to not hex": ({**WIRE, "to": "0x" + "g" * 40}, "authorization.to must be 0x"),
    "value negative": ({**WIRE, "value": "-1"}, "authorization.value must be a decimal"),
    "value zero-padded": ({**WIRE, "value": "01"}, "authorization.value must be a decimal"),
    "value spaced": ({**WIRE, "value": " 1"}, "authorization.value must be a decimal"),
    "value fraction": ({**WIRE, "value": "1.0"}, "authorization.value must be a decimal"),
    "value exponent": ({**WIRE, "value": "1e6"}, "authorization.value must be a decimal"),
    "value as a number": ({**WIRE, "value": 1000}, "authorization.value must be a decimal"),
    "value non-ASCII": ({**WIRE, "value": "\u0661\u0660"}, "authorization.value must be a decimal"),
    "value over uint256": ({**WIRE, "value": str(2**256)}, "authorization.value must be an"),
    "validAfter empty": ({**WIRE, "validAfter": ""}, "authorization.validAfter must be"),
    "validBefore hex": ({**WIRE, "validBefore": "0x10"}, "authorization.validBefore must be"),
    "nonce short": ({**WIRE, "nonce": "0x" + "ab" * 31}, "authorization.nonce must be 0x"),
    "nonce without 0x": ({**WIRE, "nonce": "ab" * 33}, "authorization.nonce must be 0x"),
    "nonce not hex": ({**WIRE, "nonce": "0x" + "zz" * 32}, "authorization.nonce must be 0x"),
    "nonce newline": ({**WIRE, "nonce": WIRE["nonce"] + "\n"}, "authorization.nonce must be 0x"),
}


@pytest.mark.parametrize("case", BAD_WIRE)
def test_from_wire_rejects(case: str) -> None:
    wire, message = BAD_WIRE[case]
    with pytest.raises(ValueError, match=re.escape(message)):
        Authorization.from_wire(wire)


def test_authorization_key_names_token_authorizer_and_nonce() -> None:
    auth = Authorization.from_wire(WIRE)
    token = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
    key = authorization_key(NETWORK, token, auth)
    assert key == f"{NETWORK}:{token.lower()}:{PAYER.lower()}:0x{'ab' * 32}"
    assert authorization_key(NETWORK, token, replace(auth, value=1, to=STRANGER)) == key
    assert authorization_key(NETWORK, token, replace(auth, nonce=b"\xac" * 32)) != key


def test_authorization_rejects_bad_fields_when_built_directly() -> None:
    with pytest.raises(ValueError, match="nonce must be 32 bytes"):
        Authorization(PAYER, PAYEE, 1, 0, 1, b"\x00" * 31)
    with pytest.raises(ValueError, match="value must be an integer in the uint256 range"):
        Authorization(PAYER, PAYEE, -1, 0, 1, bytes(32))
    with pytest.raises(ValueError, match=r"domain\.verifyingContract"):
        Domain("USD Coin", "2", 1, "0x12")
