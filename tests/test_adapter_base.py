"""The adapter base, through a complete small adapter for a made-up chain; what chains/ imports
from the core; and that the family extras install nothing chains/ does not import.

``ToyAdapter`` is what a new family over a REST API costs on ``chains.base.RpcAdapter``: the
network pin, the head read and ``observe``; the rest (start, failover, pinning on first use,
shared head reads, close) is the base's, and is what these tests check. Its node is a transport
callable, the boundary the base lets tests replace.
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path
from typing import Any, ClassVar

import pytest

import verifier.adapter as face
from chains.base import RpcAdapter, lowercase_txid
from chains.endpoints import Endpoints
from chains.http import HttpReply, HttpRequest, Transport
from chains.rest import RestClient
from verifier.adapter import NATIVE, Finality, NetworkSettings, Observation, Query, Transfer

CHAINS = Path(__file__).resolve().parent.parent / "chains"


class ToyAdapter(RpcAdapter[RestClient]):
    namespace: ClassVar[str] = "toy"
    network_pattern = re.compile(r"toy:([a-z]+)")

    def open_api(self, endpoints: Endpoints, transport: Transport) -> RestClient:
        return RestClient(endpoints, transport, not_found=face.TxNotFound)

    async def pin(self, url: str) -> None:
        served = (await self.api.request_url(url, "/info")).get("chain")
        if served != self.reference:
            raise face.WrongChain(f"{url} serves {served!r}, configured {self.network}")

    async def read_head(self, key: str) -> int:
        return int((await self.api.request("/head"))["height"])

    def canonical_txid(self, tx_ref: str) -> str:
        return lowercase_txid(tx_ref, re.compile("[0-9a-fA-F]{8}"), "a toy id is 8 hex digits")

    def normalize_address(self, address: str) -> str:
        return address.strip().lower()

    def normalize_asset(self, asset: str) -> str:
        return NATIVE if asset == NATIVE else self.normalize_address(asset)

    async def observe(self, query: Query) -> Observation:
        tx = await self.api.request(f"/tx/{query.txid}")
        head = await self.head("latest", at_least=tx["height"])
        return Observation(
            txid=query.txid,
            success=tx["ok"],
            block_ref=str(tx["height"]),
            block_time=tx["time"],
            confirmations=head - tx["height"] + 1,
            finality=Finality.CONFIRMED,
            transfers=(Transfer(NATIVE, tx["from"], tx["to"], tx["amount"]),),
            memos=(tx["memo"],),
        )

    async def verify_signature(self, account: str, message: bytes, signature: str) -> bool:
        return False


class ToyNode:
    """The toy chain's nodes, one per URL: each may serve another chain, or be down."""

    def __init__(self) -> None:
        self.chain: dict[str, str] = {}
        self.down: set[str] = set()
        self.height = 10
        self.txs = {"0000abcd": {"height": 8, "time": 1_700_000_000, "ok": True, "memo": "m"}}
        self.requests: list[str] = []

    async def __call__(self, request: HttpRequest) -> HttpReply:
        base, _, path = request.url.partition("/api")
        self.requests.append(request.url)
        await asyncio.sleep(0)  # let concurrent callers meet
        if base in self.down:
            return HttpReply(503, b"")
        if path == "/info":
            return self._json({"chain": self.chain.get(base, "main")})
        if path == "/head":
            return self._json({"height": self.height})
        tx = self.txs.get(path.removeprefix("/tx/"))
        if tx is None:
            return HttpReply(404, b"{}")
        return self._json({**tx, "from": "alice", "to": "bob", "amount": 5})

    @staticmethod
    def _json(value: Any) -> HttpReply:
        return HttpReply(200, json.dumps(value).encode())


A, B = "http://a.test", "http://b.test"
QUERY = Query("0000abcd", NATIVE, "bob", 1)


def toy(node: ToyNode, *urls: str, **config: Any) -> ToyAdapter:
    settings = NetworkSettings(rpc_urls=[u + "/api" for u in urls], **config)
    return ToyAdapter.create("toy:main", settings, transport=node)


def test_the_toy_adapter_is_a_chain_adapter() -> None:
    assert isinstance(toy(ToyNode(), A), face.ChainAdapter)
    with pytest.raises(ValueError, match=r"expected toy:\(\[a-z\]\+\)"):
        ToyAdapter.create("toy:Main1", NetworkSettings(rpc_urls=[A]))


async def test_start_pins_and_refuses_another_chain() -> None:
    node = ToyNode()
    node.chain[B] = "test"
    with pytest.raises(face.WrongChain, match="serves 'test'"):
        await toy(node, A, B).start()


async def test_a_url_down_at_start_is_pinned_on_first_use_and_failover() -> None:
    node = ToyNode()
    node.down.add(A)
    adapter = toy(node, A, B)
    await adapter.start()  # A is only logged
    assert (await adapter.observe(QUERY)).confirmations == 3  # answered by B
    node.down.clear()
    node.chain[A] = "test"  # A is back, serving another chain: pinned, then never used
    node.down.add(B)
    with pytest.raises(face.RpcUnavailable):
        await adapter.observe(QUERY)
    assert A + "/api/info" in node.requests and A + "/api/tx/0000abcd" not in node.requests
    await adapter.close()
    with pytest.raises(face.RpcUnavailable, match="not started"):
        await adapter.observe(QUERY)


async def test_a_404_is_an_answer_not_a_failover() -> None:
    node = ToyNode()
    adapter = toy(node, A, B)
    await adapter.start()
    with pytest.raises(face.TxNotFound):
        await adapter.observe(Query("ffffffff", NATIVE, "bob", 1))
    assert not [r for r in node.requests if r.startswith(B + "/api/tx")]


async def test_the_head_is_shared_and_read_again_when_older_than_the_block() -> None:
    node = ToyNode()
    adapter = toy(node, A, head_cache_seconds=60)
    await adapter.start()
    seen = await asyncio.gather(*(adapter.observe(QUERY) for _ in range(10)))
    assert {o.confirmations for o in seen} == {3}
    assert node.requests.count(A + "/api/head") == 1
    node.txs["0000beef"] = {**node.txs["0000abcd"], "height": 12}
    node.height = 12
    later = await adapter.observe(Query("0000beef", NATIVE, "bob", 1))
    assert later.confirmations == 1 and node.requests.count(A + "/api/head") == 2


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """Every ``import m`` and ``from m import a, b`` in ``path`` (under TYPE_CHECKING too)."""
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, [alias.name for alias in node.names]))
    return found


def test_chains_import_only_the_public_face_of_the_core() -> None:
    modules = sorted(CHAINS.rglob("*.py"))
    assert len(modules) > 10
    past: dict[str, list[str]] = {}
    for path in modules:
        for module, names in imports(path):
            if module.split(".")[0] not in ("verifier", "devchain", "tests"):
                continue
            if module != "verifier.adapter" or not set(names) <= set(face.__all__):
                past.setdefault(str(path.relative_to(CHAINS)), []).append(module)
    assert not past, past


def test_every_family_extra_installs_only_what_chains_import() -> None:
    extras = tomllib.loads((CHAINS.parent / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    imported = {
        module.split(".")[0] for path in CHAINS.rglob("*.py") for module, _ in imports(path)
    }
    providers: dict[str, set[str]] = {}  # distribution -> its top-level modules
    for module, dists in packages_distributions().items():
        for dist in dists:
            providers.setdefault(re.sub(r"[-_.]+", "-", dist).lower(), set()).add(module)
    unused = {}
    for extra in ("evm", "solana", "stellar", "ton"):
        for requirement in extras[extra]:
            dist = re.sub(r"[-_.]+", "-", re.split(r"[\[<>=!~; ]", requirement)[0]).lower()
            if not providers.get(dist, set()) & imported:
                unused[dist] = extra
    assert not unused, unused
