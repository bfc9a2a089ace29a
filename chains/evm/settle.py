"""Local settlement of ``exact`` payments on EVM: the worker is its own facilitator.

``LocalSettler`` checks an EIP-3009 authorization the way the reference facilitator does, and
not looser (the EIP-712 signature of ``from``, or EIP-1271 when ``from`` is a contract; the
authorization unused; the balance; a simulation of the transfer from the relayer), then sends
``transferWithAuthorization`` from the relayer key.

**Relayer nonces** are allocated in Redis, one per authorization, by one script that never
goes below the chain's count of the relayer's transactions (``SettlementRecord.relayer_nonce``):
any number of worker processes on any number of machines share one relayer key without a
collision, and the next try of a settlement reuses its nonce. The signed transaction and its
hash are written to the settlement record *before* the broadcast, so a worker killed between
the two leaves what the next try needs: it sends the same bytes again (a node answers "already
known" or takes it) instead of a second transaction.

**Stuck transactions**: each try that does not find the settlement on chain sends the last
signed transaction again (a node that lost its mempool takes it back); once it has been out
``replace_after`` seconds, it is replaced at the same nonce with fees raised by
``gas_bump_percent`` (never above ``max_fee_per_gas``). Every version's hash is kept, and the
first one the chain includes is the settlement.

**Fees**: EIP-1559, ``maxPriorityFeePerGas`` from the node and ``maxFeePerGas`` = twice the
latest base fee plus that tip; the gas limit is the node's estimate (the simulation) plus a
quarter. What a merchant pays per settlement is this transaction's gas (about 60,000-80,000 gas
for USDC's ``transferWithAuthorization``) at the network's price.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from eth_abi import encode as abi_encode
from eth_account import Account
from eth_utils import keccak

import chains.evm.eip3009 as eip3009
from chains.evm.parse import hex_bytes, hex_int
from chains.jsonrpc import RpcError
from verifier.adapter import (
    ConfigError,
    FinalError,
    ReasonCode,
    RpcUnavailable,
    TransientError,
    settlement_observed,
)

if TYPE_CHECKING:
    from chains.evm.adapter import EVMAdapter
    from verifier.adapter import Authorizations, ExactPayment, SettlementRecord, SettlementSettings

log = logging.getLogger(__name__)

# How far back a settlement is looked for when its record does not say where it began.
LOOKBACK_BLOCKS = 10_000
_SELECTOR_1271 = keccak(text="isValidSignature(bytes32,bytes)")[:4]
_EIP712_DOMAIN = keccak(text="eip712Domain()")[:4]
_NAME = keccak(text="name()")[:4]
_VERSION = keccak(text="version()")[:4]
_MAGIC_1271 = bytes.fromhex("1626ba7e")
# Revert reasons of USDC's FiatTokenV2 (and of contracts/Eip3009Token.sol), mapped to ours.
_REVERTS = (
    ("not yet valid", ReasonCode.AUTHORIZATION_NOT_YET_VALID),
    ("expired", ReasonCode.AUTHORIZATION_EXPIRED),
    ("used or canceled", ReasonCode.AUTHORIZATION_ALREADY_USED),
    ("invalid signature", ReasonCode.AUTHORIZATION_INVALID),
    ("exceeds balance", ReasonCode.INSUFFICIENT_BALANCE),
)


def _revert_reason(exc: RpcError) -> ReasonCode | None:
    """The refusal a reverted simulation means; ``None`` when the node did not say revert."""
    message = exc.rpc_message.lower()
    if exc.code != 3 and "revert" not in message:
        return None
    for fragment, reason in _REVERTS:
        if fragment in message:
            return reason
    return ReasonCode.SETTLEMENT_REFUSED


class LocalSettler:
    """Settles exact payments on one EVM network from one relayer key (module docstring)."""

    def __init__(
        self,
        adapter: EVMAdapter,
        settlement: SettlementSettings,
        relayer_key: str,
        authorizations: Authorizations,
        tokens: dict[str, tuple[str, str] | None],
    ) -> None:
        self.network = adapter.network
        self._adapter = adapter
        self._settings = settlement
        try:
            self._account = Account.from_key(relayer_key)
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"{settlement.relayer_key_env} is not a private key (32 bytes of hex)"
            ) from exc
        self.relayer = self._account.address.lower()
        self._authorizations = authorizations
        self._tokens = {t.lower(): d for t, d in tokens.items()}
        self._domains_checked = False
        # Gas estimates of checks, for the broadcast that follows in the same try.
        self._estimates: dict[str, int] = {}

    async def start(self) -> None:
        """Each exact token's EIP-712 domain on chain must be the registry's (``ConfigError``).

        A node that cannot be reached now does not stop the worker (adapters start the same
        way): the domains are read again before the first settlement.
        """
        try:
            await self._check_domains()
        except RpcUnavailable as exc:
            log.warning(
                "%s: token domains not read (%s); read before the first settlement",
                self.network,
                exc,
            )
        log.info("local settlement on %s from relayer %s", self.network, self.relayer)

    async def _check_domains(self) -> None:
        if not self._domains_checked:
            self._tokens.update(await check_domains(self._adapter, self._tokens))
            self._domains_checked = True

    async def close(self) -> None:
        return None

    async def read_domain(self, token: str) -> tuple[str, str] | None:
        return await read_domain(self._adapter, token)

    # -- the Settler protocol ------------------------------------------------------------

    async def used_by(self, payment: ExactPayment, record: SettlementRecord) -> str | None:
        return await authorization_used_by(self._adapter, payment, record)

    async def check(self, payment: ExactPayment) -> None:
        try:
            await self._check_domains()
        except ConfigError as exc:
            raise FinalError(str(exc), ReasonCode.SETTLEMENT_REFUSED) from exc
        await check_authorization(self._adapter, payment, self._tokens)
        # The simulation: a revert is a final refusal. Its estimate serves the broadcast next.
        if len(self._estimates) > 4096:  # checks whose try ended before its broadcast
            self._estimates.clear()
        self._estimates[payment.key] = await self._estimate(payment)

    async def settle(self, payment: ExactPayment, record: SettlementRecord) -> str:
        if record.get("from_block") is None:
            await record.note(from_block=await self._adapter.head("latest"))
        count = hex_int(
            await self._adapter.api.call("eth_getTransactionCount", [self.relayer, "pending"]),
            "eth_getTransactionCount",
        )
        nonce = await record.relayer_nonce(
            self._authorizations.relayer_key(self.network, self.relayer), count
        )
        gas = self._estimates.pop(payment.key, None) or await self._estimate(payment)
        tip, max_fee = await self._fees()
        return await self._send(payment, record, nonce, gas, tip, max_fee)

    async def unstick(self, payment: ExactPayment, record: SettlementRecord) -> None:
        raw, nonce = record.get("raw"), int(record.get("relayer_nonce") or -1)
        if not raw or nonce < 0:
            return
        done = hex_int(
            await self._adapter.api.call("eth_getTransactionCount", [self.relayer, "latest"]),
            "eth_getTransactionCount",
        )
        if done > nonce:
            return  # a version is in a block: the next observation finds it
        await self._broadcast(raw, record.txids[-1])  # a node that lost it takes it back
        if time.time() - float(record.get("sent_at") or 0) < self._settings.replace_after:
            return
        bump = 100 + self._settings.gas_bump_percent
        tip = int(record.get("tip") or 0) * bump // 100 + 1
        max_fee = int(record.get("max_fee") or 0) * bump // 100 + 1
        _, fresh_fee = await self._fees()
        max_fee = max(max_fee, fresh_fee)
        cap = self._settings.max_fee_per_gas
        if cap is not None and max_fee > cap:
            log.warning(
                "settlement %s on %s is stuck below max_fee_per_gas (%d wei); not replaced",
                record.txids[-1],
                self.network,
                cap,
            )
            return
        log.info(
            "replacing settlement %s at nonce %d (fees +%d%%)",
            record.txids[-1],
            nonce,
            self._settings.gas_bump_percent,
        )
        await self._send(payment, record, nonce, int(record.get("gas") or 0), tip, max_fee)
        settlement_observed(self.network, "replaced")

    # -- helpers ---------------------------------------------------------------------------

    def _calldata(self, payment: ExactPayment) -> bytes:
        auth, signature, _ = _parts(self._adapter, payment, self._tokens)
        return eip3009.transfer_with_authorization_calldata(auth, signature)

    def _tx(self, to: str, data: bytes) -> dict[str, str]:
        return {"from": self.relayer, "to": to, "data": "0x" + data.hex()}

    async def _estimate(self, payment: ExactPayment) -> int:
        tx = self._tx(payment.token, self._calldata(payment))
        try:
            gas = hex_int(await self._adapter.api.call("eth_estimateGas", [tx]), "eth_estimateGas")
        except RpcError as exc:
            reason = _revert_reason(exc)
            if reason is None:
                raise
            raise FinalError(
                f"the transfer would fail on chain: {exc.rpc_message[:200]}", reason
            ) from exc
        return gas + gas // 4

    async def _fees(self) -> tuple[int, int]:
        tip_raw, block = await self._adapter.api.batch(
            [("eth_maxPriorityFeePerGas", []), ("eth_getBlockByNumber", ["latest", False])]
        )
        tip = hex_int(tip_raw, "eth_maxPriorityFeePerGas")
        base = hex_int((block or {}).get("baseFeePerGas", "0x0"), "baseFeePerGas")
        max_fee = 2 * base + tip
        cap = self._settings.max_fee_per_gas
        if cap is not None and base > cap:
            raise RpcUnavailable(
                f"{self.network}'s base fee ({base} wei) is above max_fee_per_gas ({cap})"
            )
        if cap is not None:
            max_fee = min(max_fee, cap)
            tip = min(tip, max_fee)
        return tip, max_fee

    async def _send(
        self,
        payment: ExactPayment,
        record: SettlementRecord,
        nonce: int,
        gas: int,
        tip: int,
        max_fee: int,
    ) -> str:
        tx: dict[str, Any] = {
            "type": 2,
            "chainId": self._adapter.chain_id,
            "nonce": nonce,
            "to": self._checksum(payment.token),
            "data": self._calldata(payment),
            "value": 0,
            "gas": gas,
            "maxFeePerGas": max_fee,
            "maxPriorityFeePerGas": tip,
        }
        signed = self._account.sign_transaction(tx)
        raw = "0x" + bytes(signed.raw_transaction).hex()
        txid = "0x" + bytes(signed.hash).hex()
        # Written before the broadcast: a worker that dies after it leaves what finds it.
        await record.add_txid(txid, raw=raw, sent_at=time.time(), gas=gas, tip=tip, max_fee=max_fee)
        await self._broadcast(raw, txid)
        return txid

    async def _broadcast(self, raw: str, txid: str) -> None:
        try:
            await self._adapter.api.call("eth_sendRawTransaction", [raw])
        except RpcError as exc:
            message = exc.rpc_message.lower()
            # geth "already known", erigon/nethermind "known transaction", anvil "transaction
            # already imported": the node has it.
            if any(
                m in message for m in ("already known", "known transaction", "already imported")
            ):
                return
            if "nonce too low" in message:
                return  # a version is in a block, or will be found missing: observed next
            if "insufficient funds" in message:
                log.error(
                    "relayer %s on %s cannot pay for gas: fund it (settlement %s waits)",
                    self.relayer,
                    self.network,
                    txid,
                )
            raise TransientError(f"broadcast of {txid}: {exc.rpc_message[:200]}") from exc

    @staticmethod
    def _checksum(address: str) -> str:
        from eth_utils import to_checksum_address

        return str(to_checksum_address(address))


async def authorization_used_by(
    adapter: EVMAdapter, payment: ExactPayment, record: SettlementRecord
) -> str | None:
    """The transaction that used ``payment``'s authorization on chain, or ``None`` if unused.

    ``authorizationState`` first (one call); when used, the ``AuthorizationUsed`` log of the
    token for this authorizer and nonce, since the record's first block (or the last
    ``LOOKBACK_BLOCKS``). Used but with no such log (canceled, or used long ago) is final.
    """
    auth = payment.authorization
    data = eip3009.authorization_state_calldata(
        auth.from_.lower(), bytes.fromhex(auth.nonce.removeprefix("0x"))
    )
    state = await adapter.api.call(
        "eth_call", [{"to": payment.token, "data": "0x" + data.hex()}, "latest"]
    )
    if hex_int(state, "authorizationState") == 0:
        return None
    since = record.get("from_block")
    head = await adapter.head("latest")
    from_block = int(since) if since is not None else max(0, head - LOOKBACK_BLOCKS)
    logs = await adapter.api.call(
        "eth_getLogs",
        [
            {
                "address": payment.token,
                "fromBlock": hex(from_block),
                "toBlock": "latest",
                "topics": [
                    eip3009.AUTHORIZATION_USED_TOPIC,
                    "0x" + "00" * 12 + auth.from_.lower().removeprefix("0x"),
                    auth.nonce.lower(),
                ],
            }
        ],
    )
    for entry in logs or []:
        if isinstance(entry, dict) and not entry.get("removed") and entry.get("transactionHash"):
            return str(entry["transactionHash"]).lower()
    raise FinalError(
        f"the authorization was used or canceled on chain, in no transaction since block "
        f"{from_block}",
        ReasonCode.AUTHORIZATION_ALREADY_USED,
    )


async def read_domain(adapter: EVMAdapter, token: str) -> tuple[str, str] | None:
    """The token's EIP-712 (name, version): ``eip712Domain()`` (EIP-5267), else ``name()`` and
    ``version()``; ``None`` when it answers neither (a revert), ``RpcUnavailable`` when the node
    does not answer."""

    async def call(data: bytes) -> bytes:
        result = await adapter.api.call(
            "eth_call", [{"to": token, "data": "0x" + data.hex()}, "latest"]
        )
        raw: bytes = hex_bytes(result, "eth_call result")
        return raw

    try:
        domain = eip3009.decode_eip712_domain(await call(_EIP712_DOMAIN))
        return domain.name, domain.version
    except RpcError as exc:
        if _revert_reason(exc) is None:
            raise  # the node failed, not the call: transient
    except ValueError:
        pass
    try:
        name = eip3009.decode_string(await call(_NAME))
        version = eip3009.decode_string(await call(_VERSION))
    except RpcError as exc:
        if _revert_reason(exc) is None:
            raise
        return None
    except ValueError:
        return None
    return name, version


async def check_domains(
    adapter: EVMAdapter, tokens: dict[str, tuple[str, str] | None]
) -> dict[str, tuple[str, str]]:
    """Each token's domain on chain, which must be the registry's (``ConfigError``)."""
    found: dict[str, tuple[str, str]] = {}
    for token, expected in tokens.items():
        domain = await read_domain(adapter, token)
        if domain is None:
            raise ConfigError(
                f"{adapter.network}: token {token} answers neither eip712Domain() nor "
                "name()/version(): it cannot take EIP-3009 authorizations"
            )
        if expected is not None and domain != expected:
            raise ConfigError(
                f"{adapter.network}: token {token}'s EIP-712 domain is {domain}, the asset "
                f"registry says {expected}: fix eip712_name / eip712_version in [[assets]]"
            )
        found[token] = domain
    return found


async def check_authorization(
    adapter: EVMAdapter, payment: ExactPayment, tokens: dict[str, tuple[str, str] | None]
) -> None:
    """The checks of an authorization that need the chain but no relayer: the signature is
    ``from``'s (EIP-712, or EIP-1271 when ``from`` is a contract), the authorization is unused,
    ``from`` holds the amount. ``FinalError`` with the reason otherwise; nothing is sent."""
    auth, signature, domain = _parts(adapter, payment, tokens)
    digest = eip3009.digest(auth, domain)
    signed = eip3009.recover(auth, domain, signature) == payment.payer
    if not signed and not await _valid_1271(adapter, payment.payer, digest, signature):
        raise FinalError(
            f"the signature is not {payment.payer}'s over {payment.token}'s EIP-712 "
            f"domain on {adapter.network}",
            ReasonCode.AUTHORIZATION_INVALID,
        )
    used, balance = await adapter.api.batch(
        [
            (
                "eth_call",
                [
                    _view(
                        payment.token,
                        eip3009.authorization_state_calldata(auth.sender, auth.nonce),
                    ),
                    "latest",
                ],
            ),
            (
                "eth_call",
                [_view(payment.token, eip3009.balance_of_calldata(auth.sender)), "latest"],
            ),
        ]
    )
    if hex_int(used, "authorizationState") != 0:
        raise FinalError(
            "the authorization was used or canceled on chain",
            ReasonCode.AUTHORIZATION_ALREADY_USED,
        )
    if hex_int(balance, "balanceOf") < auth.value:
        raise FinalError(
            f"{payment.payer} holds less than {auth.value} of {payment.token}",
            ReasonCode.INSUFFICIENT_BALANCE,
        )


def _view(to: str, data: bytes) -> dict[str, str]:
    return {"to": to, "data": "0x" + data.hex()}


def _parts(
    adapter: EVMAdapter, payment: ExactPayment, tokens: dict[str, tuple[str, str] | None]
) -> tuple[eip3009.Authorization, bytes, eip3009.Domain]:
    name_version = payment.domain or tokens.get(payment.token.lower())
    if name_version is None:
        raise FinalError(f"{payment.token} has no known EIP-712 domain", ReasonCode.WRONG_ASSET)
    try:
        auth = eip3009.Authorization.from_wire(payment.authorization.model_dump(by_alias=True))
        signature = bytes.fromhex(payment.signature.removeprefix("0x"))
    except ValueError as exc:
        raise FinalError(str(exc), ReasonCode.AUTHORIZATION_INVALID) from exc
    name, version = name_version
    domain = eip3009.Domain(name, version, adapter.chain_id, payment.token.lower())
    return auth, signature, domain


async def _valid_1271(adapter: EVMAdapter, account: str, digest: bytes, signature: bytes) -> bool:
    code = await adapter.api.call("eth_getCode", [account, "latest"])
    if not isinstance(code, str) or code in ("0x", "0x0"):
        return False
    data = _SELECTOR_1271 + abi_encode(["bytes32", "bytes"], [digest, signature])
    try:
        result = await adapter.api.call("eth_call", [_view(account, data), "latest"])
    except RpcError as exc:
        if _revert_reason(exc) is not None:
            return False
        raise
    return hex_bytes(result, "eth_call result")[:4] == _MAGIC_1271
