"""A canned chain API for the benchmark: fast, with an added latency, counting what it serves.

One small asyncio HTTP/1.1 server (keep-alive, JSON bodies) that speaks EVM JSON-RPC at ``/evm``
with responses in the real shapes (``eth_getTransactionByHash``, ``eth_getTransactionReceipt``
with ERC-20 ``Transfer`` logs, ``eth_getBlockByNumber``, ``eth_blockNumber``, ``eth_chainId``),
each answered after an added latency (``POST /_admin/latency``: seconds, and an optional jitter).
Transactions are registered by the benchmark before a run (``POST /_admin/evm``) so that every
proof it sends pays what its challenge asks, ``TXS_PER_BLOCK`` to a block unless
``POST /_admin/blocks`` says otherwise. ``GET /_admin/stats`` returns request counts.

Run it in its own process (``python -m devchain.stub PORT``) so that it does not take CPU from
the processes being measured.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from typing import Any

import orjson

TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
CHAIN_ID = 31337
TXS_PER_BLOCK = 20


def _word(address: str) -> str:
    return "0x" + "0" * 24 + address.lower().removeprefix("0x")


class EvmBook:
    """Registered transactions, grouped into blocks; the head is always deep enough."""

    def __init__(self) -> None:
        self.txs: dict[str, dict[str, Any]] = {}
        self.receipts: dict[str, dict[str, Any]] = {}
        self.blocks: dict[int, dict[str, Any]] = {}
        self.head = 100
        self.txs_per_block = TXS_PER_BLOCK

    def register(self, entries: list[dict[str, Any]]) -> None:
        now = int(time.time())
        for entry in entries:
            number = self.head + 1 + len(self.txs) // self.txs_per_block
            block_hash = "0x" + number.to_bytes(32, "big").hex()
            self.blocks.setdefault(
                number,
                {
                    "number": hex(number),
                    "hash": block_hash,
                    "timestamp": hex(now),
                    "transactions": [],
                },
            )
            tx_hash = entry["hash"]
            data = (
                "0xa9059cbb"
                + _word(entry["to"])[2:]
                + entry["amount"].to_bytes(32, "big").hex()
                + entry["memo"]
            )
            self.txs[tx_hash] = {
                "hash": tx_hash,
                "blockNumber": hex(number),
                "blockHash": block_hash,
                "from": entry["from"],
                "to": entry["token"],
                "value": "0x0",
                "input": data,
                "chainId": hex(CHAIN_ID),
                "nonce": hex(len(self.txs)),
                "gas": "0x186a0",
                "type": "0x2",
            }
            self.receipts[tx_hash] = {
                "transactionHash": tx_hash,
                "blockNumber": hex(number),
                "blockHash": block_hash,
                "status": "0x1",
                "from": entry["from"],
                "to": entry["token"],
                "gasUsed": "0xb411",
                "logs": [
                    {
                        "address": entry["token"],
                        "topics": [TRANSFER_TOPIC, _word(entry["from"]), _word(entry["to"])],
                        "data": "0x" + entry["amount"].to_bytes(32, "big").hex(),
                        "blockNumber": hex(number),
                        "transactionHash": tx_hash,
                        "logIndex": "0x0",
                        "removed": False,
                    }
                ],
            }
        self.head = max(self.blocks, default=self.head) + 5

    def answer(self, method: str, params: list[Any]) -> Any:
        if method == "eth_getTransactionByHash":
            return self.txs.get(params[0])
        if method == "eth_getTransactionReceipt":
            return self.receipts.get(params[0])
        if method == "eth_blockNumber":
            return hex(self.head)
        if method == "eth_getBlockByNumber":
            tag = params[0]
            number = self.head if tag in ("latest", "safe", "finalized") else int(tag, 16)
            return self.blocks.get(number) or {
                "number": hex(number),
                "hash": "0x" + number.to_bytes(32, "big").hex(),
                "timestamp": hex(int(time.time())),
            }
        if method == "eth_chainId":
            return hex(CHAIN_ID)
        raise KeyError(method)


class Stub:
    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency
        self.jitter = 0.0  # each request waits latency x uniform(1 - jitter, 1 + jitter)
        self.evm = EvmBook()
        self.requests: dict[str, int] = {}
        self.calls: dict[str, int] = {}

    def _rpc(self, body: Any) -> Any:
        def one(call: dict[str, Any]) -> dict[str, Any]:
            self.calls[call["method"]] = self.calls.get(call["method"], 0) + 1
            try:
                return {
                    "jsonrpc": "2.0",
                    "id": call["id"],
                    "result": self.evm.answer(call["method"], call["params"]),
                }
            except KeyError:
                return {
                    "jsonrpc": "2.0",
                    "id": call["id"],
                    "error": {"code": -32601, "message": "method not found"},
                }

        return [one(c) for c in body] if isinstance(body, list) else one(body)

    async def handle(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        if path == "/_admin/stats":
            return 200, orjson.dumps({"requests": self.requests, "calls": self.calls})
        if path == "/_admin/reset":
            self.requests.clear()
            self.calls.clear()
            return 200, b"{}"
        if path == "/_admin/latency":
            settings = orjson.loads(body)
            self.latency = float(settings["seconds"])
            self.jitter = float(settings.get("jitter", 0.0))
            return 200, b"{}"
        if path == "/_admin/blocks":
            self.evm.txs_per_block = int(orjson.loads(body)["txs_per_block"])
            return 200, b"{}"
        if path == "/_admin/evm":
            self.evm.register(orjson.loads(body))
            return 200, b"{}"
        self.requests[path] = self.requests.get(path, 0) + 1
        if self.latency:
            await asyncio.sleep(self.latency * random.uniform(1 - self.jitter, 1 + self.jitter))
        if path == "/evm" and method == "POST":
            return 200, orjson.dumps(self._rpc(orjson.loads(body)))
        return 404, b'{"error": "not found"}'

    async def serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                length = 0
                for line in lines[1:]:
                    if line[:15].lower() == "content-length:":
                        length = int(line[15:].strip())
                body = await reader.readexactly(length) if length else b""
                status, payload = await self.handle(method, path.split("?", 1)[0], body)
                head_out = b"HTTP/1.1 %d OK\r\ncontent-type: application/json\r\n" % status
                writer.write(head_out + b"content-length: %d\r\n\r\n" % len(payload) + payload)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def serve(port: int, latency: float = 0.0) -> None:
    stub = Stub(latency)
    server = await asyncio.start_server(stub.serve_client, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
