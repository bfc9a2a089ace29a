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
from functools import cached_property
from typing import TYPE_CHECKING, ClassVar

from eth_abi import encode as abi_encode
from eth_utils import is_checksum_address, keccak

from chains.base import SharedReads, lowercase_txid
from chains.evm.parse import (
    RpcBlock,
    RpcReceipt,
    RpcTransaction,
    calldata_memos,
    eip191_hash,
    hex_bytes,
    hex_int,
    recover_personal,
    signature_bytes,
    transfers_from_logs,
)
from chains.jsonrpc import JsonRpcAdapter, RpcError
from verifier.adapter import (
    NATIVE,
    Finality,
    NotFinal,
    Observation,
    Transfer,
    TxNotFound,
    WrongChain,
)

if TYPE_CHECKING:
    from chains.evm.settle import LocalSettler
    from verifier.adapter import (
        Authorizations,
        ExactPayment,
        Query,
        SettlementRecord,
        SettlementSettings,
    )

EIP1271_MAGIC = bytes.fromhex("1626ba7e")
_SELECTOR_1271 = keccak(text="isValidSignature(bytes32,bytes)")[:4]
_TXID = re.compile(r"0x[0-9a-fA-F]{64}")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")


class EVMAdapter(JsonRpcAdapter):
    """Adapter for one EVM network, over JSON-RPC."""

    namespace: ClassVar[str] = "eip155"
    network_pattern = re.compile(r"eip155:([0-9]+)")

    @property
    def chain_id(self) -> int:
        return int(self.reference)

    @cached_property
    def _blocks(self) -> SharedReads[RpcBlock | None]:
        """Blocks by number, shared by concurrent jobs for ``head_cache_seconds`` like heads."""
        return SharedReads(self.config.head_cache_seconds)

    async def pin(self, url: str) -> None:
        """The URL must answer ``eth_chainId`` with the configured chain id."""
        served = hex_int(await self.api.call_url(url, "eth_chainId", []), "eth_chainId")
        if served != self.chain_id:
            raise WrongChain(f"{url} serves chain {served}, configured {self.network}")

    # -- normalization -------------------------------------------------------------------

    def canonical_txid(self, tx_ref: str) -> str:
        return lowercase_txid(tx_ref, _TXID, "an EVM transaction hash is 0x and 64 hex digits")

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
            return hex_int(await self.api.call("eth_blockNumber", []), "eth_blockNumber")
        block = await self.api.call("eth_getBlockByNumber", [key, False])
        return -1 if block is None else hex_int(block.get("number"), "block number")

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
        number = hex_int(receipt.get("blockNumber"), "receipt blockNumber")
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
        if chain_id is not None and hex_int(chain_id, "chainId") != self.chain_id:
            raise WrongChain(f"{query.txid} was signed for chain {hex_int(chain_id, 'chainId')}")
        sender = str(tx.get("from", "")).lower()
        transfers = transfers_from_logs(receipt.get("logs") or [])
        value = hex_int(tx.get("value", "0x0"), "value")
        success = hex_int(receipt.get("status", "0x0"), "status") == 1
        if value and tx.get("to") and success:
            transfers.insert(0, Transfer(NATIVE, sender, str(tx["to"]).lower(), value))
        calldata = hex_bytes(tx.get("input", "0x"), "input")
        return Observation(
            txid=query.txid,
            success=success,
            block_ref=f"{number}:{block.get('hash')}",
            block_time=hex_int(block.get("timestamp"), "timestamp"),
            confirmations=confirmations,
            finality=finality,
            transfers=tuple(transfers),
            memos=calldata_memos(calldata, bool(value), query.memo),
        )

    async def verify_signature(self, account: str, message: bytes, signature: str) -> bool:
        """EIP-191 ``personal_sign`` by ``account``, or EIP-1271 when ``account`` is a contract."""
        sig = signature_bytes(signature)
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
        raw = hex_bytes(result, "eth_call result")
        return len(raw) >= 4 and raw[:4] == EIP1271_MAGIC

    # -- the exact scheme (``chains.evm.settle``) -------------------------------------------

    def local_settler(
        self,
        settlement: SettlementSettings,
        relayer_key: str,
        authorizations: Authorizations,
        tokens: dict[str, tuple[str, str] | None],
    ) -> LocalSettler:
        """A settler that sends exact payments' authorizations from ``relayer_key``."""
        from chains.evm.settle import LocalSettler

        return LocalSettler(self, settlement, relayer_key, authorizations, tokens)

    async def authorization_used_by(
        self, payment: ExactPayment, record: SettlementRecord
    ) -> str | None:
        """The transaction that used ``payment``'s EIP-3009 authorization, if it was used."""
        from chains.evm.settle import authorization_used_by

        return await authorization_used_by(self, payment, record)

    async def check_authorization(
        self, payment: ExactPayment, tokens: dict[str, tuple[str, str] | None]
    ) -> None:
        """What an authorization must pass that needs the chain but no relayer key (signature,
        unused, balance); ``FinalError`` with the reason otherwise. Sends nothing."""
        from chains.evm.settle import check_authorization

        await check_authorization(self, payment, tokens)

    async def check_token_domains(
        self, tokens: dict[str, tuple[str, str] | None]
    ) -> dict[str, tuple[str, str]]:
        """Each token's EIP-712 domain on chain; ``ConfigError`` when one is not the given one."""
        from chains.evm.settle import check_domains

        return await check_domains(self, tokens)
