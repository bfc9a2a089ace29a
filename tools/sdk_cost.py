"""What web3.py and solana-py would cost a worker next to our own transport: the figures behind
the README's dependency table.

1. Import time and resident memory of a fresh process that loads the worker and an adapter, with
   and without the SDK client it could use instead (median of 7 runs).
2. HTTP requests and client CPU per EVM verification, the same reads (transaction, receipt, head,
   block) against the benchmark's canned node (``devchain.stub``, in its own process), 400
   verifications 40 at a time: our adapter, web3.py call by call, and web3.py with its
   ``batch_requests`` for the transaction and its receipt.

Nothing in the project installs web3 or solana; run ``pip install web3 solana`` into the dev
virtualenv first, then ``python tools/sdk_cost.py`` from the repository root.
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from chains.evm import EVMAdapter
from verifier.adapter import NetworkSettings, Query

IMPORTS = {
    "worker + EVM adapter": "import verifier.worker, chains.evm",
    "  + web3 (AsyncWeb3, AsyncHTTPProvider)": (
        "import verifier.worker, chains.evm; from web3 import AsyncWeb3, AsyncHTTPProvider"
    ),
    "worker + Solana adapter": "import verifier.worker, chains.solana",
    "  + solana-py (AsyncClient)": (
        "import verifier.worker, chains.solana; from solana.rpc.async_api import AsyncClient"
    ),
}
PROBE = """
import time
start = time.perf_counter()
{code}
elapsed = time.perf_counter() - start
rss = next(line for line in open("/proc/self/status") if line.startswith("VmRSS:"))
print(elapsed, int(rss.split()[1]) / 1024)
"""
N, CONCURRENCY = 400, 40
TOKEN, PAYER, PAYEE = "0x" + "33" * 20, "0x" + "11" * 20, "0x" + "22" * 20


def import_cost() -> None:
    print(f"{'process':45} {'import s':>9} {'RSS MB':>8}")
    for label, code in IMPORTS.items():
        runs = []
        for _ in range(7):
            out = subprocess.run(
                [sys.executable, "-c", PROBE.format(code=code)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.split()
            runs.append((float(out[0]), float(out[1])))
        seconds = statistics.median(r[0] for r in runs)
        rss = statistics.median(r[1] for r in runs)
        print(f"{label:45} {seconds:9.3f} {rss:8.1f}")


Observe = Callable[[str], Awaitable[Any]]
Close = Callable[[], Awaitable[Any]]


async def ours(url: str) -> tuple[Observe, Close]:
    adapter = EVMAdapter.create("eip155:31337", NetworkSettings(rpc_urls=[url]))
    await adapter.start()
    return lambda tx: adapter.observe(Query(tx, TOKEN, PAYEE, 1)), adapter.close


async def web3_calls(url: str) -> tuple[Observe, Close]:
    from web3 import AsyncHTTPProvider, AsyncWeb3

    w3 = AsyncWeb3(AsyncHTTPProvider(url))

    async def observe(tx: str) -> Any:
        found = await w3.eth.get_transaction(tx)  # type: ignore[arg-type]
        receipt = await w3.eth.get_transaction_receipt(tx)  # type: ignore[arg-type]
        head = await w3.eth.block_number
        block = await w3.eth.get_block(receipt["blockNumber"])
        return found, receipt, head, block

    return observe, w3.provider.disconnect


async def web3_batched(url: str) -> tuple[Observe, Close]:
    from web3 import AsyncHTTPProvider, AsyncWeb3

    w3 = AsyncWeb3(AsyncHTTPProvider(url))

    async def observe(tx: str) -> Any:
        async with w3.batch_requests() as batch:
            batch.add(w3.eth.get_transaction(tx))  # type: ignore[arg-type]
            batch.add(w3.eth.get_transaction_receipt(tx))  # type: ignore[arg-type]
            found, receipt = await batch.async_execute()
        head = await w3.eth.block_number
        block = await w3.eth.get_block(receipt["blockNumber"])
        return found, receipt, head, block

    return observe, w3.provider.disconnect


async def run_all(observe: Observe, txs: list[str]) -> None:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(tx: str) -> None:
        async with gate:
            await observe(tx)

    await asyncio.gather(*(one(tx) for tx in txs))


async def requests_per_verification(base: str) -> None:
    print(f"\n{'EVM client':45} {'requests':>9} {'CPU ms':>8}   (per verification)")
    admin = httpx.AsyncClient(base_url=base)
    clients = {
        "ours (chains.evm, batched, shared head/block)": ours,
        "web3.py, one call per read": web3_calls,
        "web3.py, batch_requests for tx + receipt": web3_batched,
    }
    for round_, (label, make) in enumerate(clients.items()):
        txs = [f"0x{round_:02x}{i:062x}" for i in range(N)]
        entries = [
            {"hash": h, "from": PAYER, "to": PAYEE, "token": TOKEN, "amount": 5, "memo": "ab" * 32}
            for h in txs
        ]
        await admin.post("/_admin/evm", json=entries)
        observe, close = await make(base + "/evm")
        await observe(txs[0])  # connections and caches warm
        before = (await admin.get("/_admin/stats")).json()["requests"].get("/evm", 0)
        cpu = time.process_time()
        await run_all(observe, txs[1:])
        cpu = time.process_time() - cpu
        await close()
        after = (await admin.get("/_admin/stats")).json()["requests"].get("/evm", 0)
        print(f"{label:45} {(after - before) / (N - 1):9.2f} {cpu * 1000 / (N - 1):8.2f}")
    await admin.aclose()


def main() -> None:
    import_cost()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    stub = subprocess.Popen([sys.executable, "-m", "devchain.stub", str(port)])
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                httpx.get(base + "/_admin/stats")
                break
            except httpx.TransportError:
                time.sleep(0.05)
        asyncio.run(requests_per_verification(base))
    finally:
        stub.terminate()
        stub.wait()


if __name__ == "__main__":
    main()
