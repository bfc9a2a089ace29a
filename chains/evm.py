"""EVM family (``eip155:<chainId>``): native coin and ERC-20 payments.

Per verification: one batched request for the transaction and its receipt, the head block number
(shared by all concurrent jobs for ``head_cache_seconds``) and the receipt's block by number
(shared likewise), which gives the timestamp and proves the block hash is still canonical.

* ERC-20 transfers come only from well-formed ``Transfer(address,address,uint256)`` logs: three
  topics, 32 bytes of data, address words with zero padding, not ``removed``. Every such log is
  reported with its contract as the asset; the core counts only the offer's token.
* Native payments are the transaction's own ``value`` to its ``to`` (internal calls are not seen).
* Calldata binding: the memo commitment as 32 bytes appended after the ``transfer`` /
  ``transferFrom`` arguments, or as the whole input of a native transfer; for any other call,
  the input's last 32 bytes when they are the challenge's commitment (``calldata_memos``).
* Transfer senders: the ``from`` of each Transfer log (the owner debited, also when a spender or
  bundler sent the transaction) and the transaction's sender for its own value.
* Signature binding: EIP-191 ``personal_sign`` of the proof message by an account the core asks
  about (a transfer's sender); for a contract, EIP-1271
  ``isValidSignature(keccak(EIP-191 message), signature)`` at the latest block.
* Confirmations are ``head - block + 1``; with ``finality = "safe" | "finalized"`` the block must
  also be at or below that tag.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, TypedDict

from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_keys.exceptions import BadSignature
from eth_utils import is_checksum_address, keccak

from chains.base import RpcAdapter, SharedReads
from chains.endpoints import Endpoints
from chains.http import Transport
from chains.jsonrpc import JsonRpcClient, RpcError
from verifier.adapter import (
    NATIVE,
    Finality,
    InvalidProof,
    NetworkSettings,
    NotFinal,
    Observation,
    Query,
    RpcUnavailable,
    Transfer,
    TxNotFound,
    WrongChain,
)

TRANSFER_TOPIC = "0x" + keccak(text="Transfer(address,address,uint256)").hex()
EIP1271_MAGIC = bytes.fromhex("1626ba7e")
_SELECTOR_1271 = keccak(text="isValidSignature(bytes32,bytes)")[:4]
_TRANSFER = keccak(text="transfer(address,uint256)")[:4]
_TRANSFER_FROM = keccak(text="transferFrom(address,address,uint256)")[:4]
_TXID = re.compile(r"^0x[0-9a-fA-F]{64}$")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_WORD_ADDRESS = re.compile(r"^0x0{24}([0-9a-f]{40})$")


class RpcLog(TypedDict, total=False):
    address: str
    topics: list[str]
    data: str
    removed: bool


class RpcReceipt(TypedDict, total=False):
    transactionHash: str
    blockHash: str
    blockNumber: str
    status: str
    logs: list[RpcLog]


class RpcTransaction(TypedDict, total=False):
    hash: str
    blockNumber: str | None
    to: str | None
    value: str
    input: str
    chainId: str


class RpcBlock(TypedDict, total=False):
    hash: str
    number: str
    timestamp: str


def _int(value: Any, what: str) -> int:
    try:
        return int(value, 16)
    except (TypeError, ValueError) as exc:
        raise RpcUnavailable(f"malformed {what} in RPC reply: {value!r}") from exc


def _bytes(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise RpcUnavailable(f"malformed {what} in RPC reply")
    try:
        return bytes.fromhex(value[2:])
    except ValueError as exc:
        raise RpcUnavailable(f"malformed {what} in RPC reply") from exc


def eip191_hash(message: bytes) -> bytes:
    """keccak256 of the EIP-191 ``personal_sign`` envelope of ``message``."""
    return keccak(b"\x19Ethereum Signed Message:\n" + str(len(message)).encode() + message)


def transfers_from_logs(logs: list[RpcLog]) -> list[Transfer]:
    """Well-formed ERC-20 Transfer logs as transfers; anything else is ignored."""
    found = []
    for log in logs:
        topics = log.get("topics") or []
        if log.get("removed") or len(topics) != 3 or topics[0].lower() != TRANSFER_TOPIC:
            continue
        data = log.get("data", "")
        sender = _WORD_ADDRESS.match(topics[1].lower())
        recipient = _WORD_ADDRESS.match(topics[2].lower())
        if sender is None or recipient is None or len(data) != 66:
            continue
        found.append(
            Transfer(
                asset=str(log.get("address", "")).lower(),
                sender="0x" + sender.group(1),
                recipient="0x" + recipient.group(1),
                amount=_int(data, "log data"),
            )
        )
    return found


class EVMAdapter(RpcAdapter[JsonRpcClient]):
    """Adapter for one EVM network, over JSON-RPC."""

    namespace: ClassVar[str] = "eip155"
    network_pattern = re.compile(r"eip155:([0-9]+)")
    network_form = "eip155:<chain id>"

    def __init__(
        self, network: str, config: NetworkSettings, *, transport: Transport | None = None
    ) -> None:
        super().__init__(network, config, transport=transport)
        self.chain_id = int(self.reference)
        self._blocks: SharedReads[RpcBlock | None] = SharedReads(config.head_cache_seconds)

    def open_api(self, endpoints: Endpoints, transport: Transport) -> JsonRpcClient:
        return JsonRpcClient(endpoints, transport)

    async def pin(self, url: str) -> None:
        """The URL must answer ``eth_chainId`` with the configured chain id."""
        served = _int(await self.api.call_url(url, "eth_chainId", []), "eth_chainId")
        if served != self.chain_id:
            raise WrongChain(f"{url} serves chain {served}, configured {self.network}")

    # -- normalization -------------------------------------------------------------------

    def canonical_txid(self, tx_ref: str) -> str:
        ref = tx_ref.strip()
        if not _TXID.match(ref):
            raise InvalidProof("an EVM transaction hash is 0x and 64 hex digits")
        return ref.lower()

    def normalize_address(self, address: str) -> str:
        if not _ADDRESS.match(address):
            raise ValueError(f"{address!r} is not an EVM address")
        body = address[2:]
        if body != body.lower() and body != body.upper() and not is_checksum_address(address):
            raise ValueError(f"{address!r} has a wrong EIP-55 checksum")
        return address.lower()

    def normalize_asset(self, asset: str) -> str:
        return NATIVE if asset == NATIVE else self.normalize_address(asset)

    # -- reads ---------------------------------------------------------------------------

    async def read_head(self, key: str) -> int:
        """``latest``: the head block number; a tag (``safe``, ``finalized``): its number or -1."""
        if key == "latest":
            return _int(await self.api.call("eth_blockNumber", []), "eth_blockNumber")
        block = await self.api.call("eth_getBlockByNumber", [key, False])
        return -1 if block is None else _int(block.get("number"), "block number")

    async def _block(self, number: int) -> RpcBlock | None:
        async def fetch() -> RpcBlock | None:
            block: RpcBlock | None = await self.api.call(
                "eth_getBlockByNumber", [hex(number), False]
            )
            return block

        return await self._blocks.get(number, fetch)

    async def observe(self, query: Query) -> Observation:
        tx: RpcTransaction | None
        receipt: RpcReceipt | None
        tx, receipt = await self.api.batch(
            [
                ("eth_getTransactionByHash", [query.txid]),
                ("eth_getTransactionReceipt", [query.txid]),
            ]
        )
        if tx is None:
            raise TxNotFound(f"{query.txid} is not known to the node")
        if receipt is None or receipt.get("blockNumber") is None:
            raise NotFinal(f"{query.txid} is not in a block yet")
        number = _int(receipt.get("blockNumber"), "receipt blockNumber")
        head = await self.head("latest", at_least=number)
        block = await self._block(number)
        if block is None or block.get("hash") != receipt.get("blockHash"):
            self._blocks.forget(number)
            raise TxNotFound(f"block {number} of {query.txid} is no longer canonical")
        confirmations = max(0, head - number + 1)
        finality = Finality.CONFIRMED
        if self.config.finality != "latest" and number > await self.head(self.config.finality):
            finality = Finality.PENDING

        chain_id = tx.get("chainId")
        if chain_id is not None and _int(chain_id, "chainId") != self.chain_id:
            raise WrongChain(f"{query.txid} was signed for chain {_int(chain_id, 'chainId')}")
        sender = str(tx.get("from", "")).lower()
        transfers = transfers_from_logs(receipt.get("logs") or [])
        value = _int(tx.get("value", "0x0"), "value")
        success = _int(receipt.get("status", "0x0"), "status") == 1
        if value and tx.get("to") and success:
            transfers.insert(0, Transfer(NATIVE, sender, str(tx["to"]).lower(), value))
        calldata = _bytes(tx.get("input", "0x"), "input")
        return Observation(
            txid=query.txid,
            success=success,
            block_ref=f"{number}:{block.get('hash')}",
            block_time=_int(block.get("timestamp"), "timestamp"),
            confirmations=confirmations,
            finality=finality,
            transfers=tuple(transfers),
            memos=calldata_memos(calldata, bool(value), query.memo),
        )

    async def verify_signature(self, account: str, message: bytes, signature: str) -> bool:
        """EIP-191 ``personal_sign`` by ``account``, or EIP-1271 when ``account`` is a contract."""
        sig = _signature_bytes(signature)
        if sig is None:
            return False
        if recover_personal(message, sig) == account:
            return True
        code = await self.api.call("eth_getCode", [account, "latest"])
        if not isinstance(code, str) or code in ("0x", "0x0"):
            return False
        digest = eip191_hash(message)
        data = _SELECTOR_1271 + abi_encode(["bytes32", "bytes"], [digest, sig])
        try:
            result = await self.api.call(
                "eth_call", [{"to": account, "data": "0x" + data.hex()}, "latest"]
            )
        except RpcError as exc:
            if "revert" in exc.rpc_message.lower():
                return False
            raise
        raw = _bytes(result, "eth_call result")
        return len(raw) >= 4 and raw[:4] == EIP1271_MAGIC


def _signature_bytes(signature: str) -> bytes | None:
    """The 65 bytes of an ``r || s || v`` hex signature (``0x`` optional), or None."""
    try:
        sig = bytes.fromhex(signature.strip().removeprefix("0x"))
    except ValueError:
        return None
    return sig if len(sig) == 65 else None


def recover_personal(message: bytes, sig: bytes) -> str:
    """The lowercase address whose key made the EIP-191 signature ``sig``, or ``""``.

    eth_keys raises ``BadSignature`` (not a ``ValueError``) for r or s out of range, and
    ``ValueError``/``TypeError`` for a bad v: all of them mean "not a valid signature".
    """
    try:
        recovered = Account.recover_message(encode_defunct(primitive=message), signature=sig)
    except (BadSignature, ValueError, TypeError):
        return ""
    return str(recovered).lower()


def calldata_memos(calldata: bytes, native: bool, memo: str) -> tuple[str, ...]:
    """The commitment a transaction's input carries, where the input says so for certain.

    A 32-byte suffix after the arguments of ``transfer`` or ``transferFrom``, or the whole
    32-byte input of a native payment, is a memo. The input of any other call is ABI words of
    unknown meaning, so its last 32 bytes only count when they are this challenge's commitment
    (``memo``): it binds, but another tail is not read as another challenge's commitment.
    """
    tail = calldata[-32:].hex() if len(calldata) >= 32 else ""
    if (
        (native and len(calldata) == 32)
        or (calldata[:4] == _TRANSFER and len(calldata) == 4 + 64 + 32)
        or (calldata[:4] == _TRANSFER_FROM and len(calldata) == 4 + 96 + 32)
    ):
        return (tail,)
    return (tail,) if tail and tail == memo else ()
