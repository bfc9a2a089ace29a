"""A small client for toncenter API v3, and the raw shapes it returns (as ``TypedDict``s).

Everything that goes wrong at this edge (transport errors, timeouts, HTTP 429 and 5xx, replies
that are not the expected JSON) becomes ``RpcUnavailable``, a transient error (``chains.rest``).
Only idempotent reads go through it, so trying the next base URL after a failure is always safe.

Shapes, as toncenter v3 serves them (``GET /api/v3/transactions``, ``GET
/api/v3/transactionsByMessage``, ``GET /api/v3/masterchainInfo``, ``POST
/api/v3/runGetMethod``): hashes are standard base64, amounts and logical times are decimal
strings, raw addresses are ``<wc>:<HEX>`` in upper case.
"""

from __future__ import annotations

from typing import Any, TypedDict

from chains.rest import RestClient
from verifier.adapter import RpcUnavailable


class MessageContent(TypedDict, total=False):
    hash: str
    body: str  # base64 BOC of the body cell
    decoded: dict[str, Any] | None  # the indexer's rendering: never trusted here


class V3Message(TypedDict, total=False):
    hash: str
    source: str | None  # None for an external inbound message
    destination: str | None
    value: str | None
    fwd_fee: str | None
    ihr_fee: str | None
    created_lt: str | None
    created_at: str | None
    opcode: str | None
    ihr_disabled: bool | None
    bounce: bool | None
    bounced: bool | None
    import_fee: str | None
    message_content: MessageContent | None
    init_state: dict[str, Any] | None


class ComputePhase(TypedDict, total=False):
    skipped: bool
    reason: str
    success: bool
    exit_code: int


class Description(TypedDict, total=False):
    type: str  # "ord" for ordinary transactions
    aborted: bool
    destroyed: bool
    credit_first: bool
    compute_ph: ComputePhase
    action: dict[str, Any]
    bounce: dict[str, Any]


class BlockRef(TypedDict, total=False):
    workchain: int
    shard: str
    seqno: int


class V3Transaction(TypedDict, total=False):
    account: str
    hash: str
    lt: str
    now: int
    mc_block_seqno: int | None  # None until a masterchain block includes the shard block
    trace_id: str
    orig_status: str
    end_status: str
    total_fees: str
    description: Description
    block_ref: BlockRef
    in_msg: V3Message | None
    out_msgs: list[V3Message]
    emulated: bool


class V3Transactions(TypedDict, total=False):
    transactions: list[V3Transaction]
    address_book: dict[str, Any]


class V3Block(TypedDict, total=False):
    workchain: int
    shard: str
    seqno: int
    root_hash: str
    file_hash: str
    global_id: int
    gen_utime: str


class V3MasterchainInfo(TypedDict, total=False):
    first: V3Block
    last: V3Block


class V3StackEntry(TypedDict, total=False):
    type: str  # "num" | "cell" | "slice"
    value: str


class V3GetMethodResult(TypedDict, total=False):
    gas_used: int
    exit_code: int
    stack: list[V3StackEntry]


class Toncenter(RestClient):
    """toncenter v3's reads, on ``chains.rest.RestClient`` (failover across base URLs)."""

    async def transactions(self, **params: Any) -> list[V3Transaction]:
        return await self._transactions("/api/v3/transactions", params)

    async def transactions_by_message(self, msg_hash: str, direction: str) -> list[V3Transaction]:
        """The transactions that received (``in``) or sent (``out``) the message ``msg_hash``."""
        params = {"msg_hash": msg_hash, "direction": direction, "limit": 8}
        return await self._transactions("/api/v3/transactionsByMessage", params)

    async def _transactions(self, path: str, params: dict[str, Any]) -> list[V3Transaction]:
        data: V3Transactions = await self.request(path, params=params)
        txs = data.get("transactions")
        if not isinstance(txs, list):
            raise RpcUnavailable(f"toncenter {path} reply has no list")
        return txs

    async def masterchain_info(self, url: str | None = None) -> V3MasterchainInfo:
        path = "/api/v3/masterchainInfo"
        data: V3MasterchainInfo = (
            await self.request(path) if url is None else await self.request_url(url, path)
        )
        return data

    async def run_get_method(
        self, address: str, method: str, stack: list[V3StackEntry]
    ) -> V3GetMethodResult:
        body = {"address": address, "method": method, "stack": stack}
        data: V3GetMethodResult = await self.request("/api/v3/runGetMethod", body=body)
        return data
