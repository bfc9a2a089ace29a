"""Real recorded Solana responses: the adapter's verdicts on them, and the local server's shape."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from solders.compute_budget import set_compute_unit_limit
from solders.keypair import Keypair

from chains.http import HttpReply, HttpRequest, Transport
from chains.solana import SolanaAdapter, associated_token_account, observe_transaction
from devchain.solana_ledger import NETWORK, Recorded
from tests.harness_solana import solana_env
from tests.support import RECORDED
from verifier.adapter import NotFinal, Query, RpcUnavailable, TxNotFound
from verifier.models import Finality
from verifier.settings import NetworkSettings

FIXTURES = RECORDED / "solana"
EXTRACTS = sorted((FIXTURES / "solders" / "extracted_from_block").glob("*.json"))
WSOL = "So11111111111111111111111111111111111111112"
USDC_DEVNET = "4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    result: dict[str, Any] = data.get("result", data)
    return result


def observe(result: dict[str, Any], asset: str = "native", pay_to: str = "") -> Any:
    return observe_transaction(result, "x", Query("x", asset, pay_to, 1))  # type: ignore[arg-type]


def test_real_usdc_transfer_pays_its_recipient() -> None:
    tx = load("metamask_snap/send-usdc-transfer.json")
    recipient, sender = (
        "BXT1K8kzYXWMi6ihg7m9UqiHW4iJbJ69zumELHE9oBLe",
        "BLw3RweJmfbTapJRgnPRvd962YDjFYAnVGd1p5hmZ5tP",
    )
    # The credited account is the recipient's real associated token account.
    assert (
        associated_token_account(
            recipient, USDC_DEVNET, "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"
        )
        == (tx["transaction"]["message"]["accountKeys"][1])
    )
    obs = observe(tx, USDC_DEVNET, recipient)
    paid = [t for t in obs.transfers if t.asset == USDC_DEVNET and t.recipient == recipient]
    assert [(t.sender, t.amount) for t in paid] == [(sender, 10_000)]
    assert obs.success and obs.block_time == 1736502537 and obs.memos == ()


def test_real_token_2022_transfer_creating_the_payees_ata() -> None:
    tx = load("metamask_snap/send-spl-token-and-create-token-account.json")
    created = next(
        b
        for b in tx["meta"]["postTokenBalances"]
        if b["accountIndex"] not in {p["accountIndex"] for p in tx["meta"]["preTokenBalances"]}
    )
    obs = observe(tx, created["mint"], created["owner"])
    paid = [
        t for t in obs.transfers if t.recipient == created["owner"] and t.asset == created["mint"]
    ]
    assert [t.amount for t in paid] == [int(created["uiTokenAmount"]["amount"])]


def test_real_native_transfer_and_failures() -> None:
    native = observe(load("metamask_snap/native-sol-transfer.json"))
    assert any(t.asset == "native" and t.amount == 100_000_000 for t in native.transfers)
    raw_to_self = load("metamask_snap/native-sol-transfer-to-self.json")
    to_self = observe(raw_to_self)
    first_key = raw_to_self["transaction"]["message"]["accountKeys"][0]
    owner = first_key["pubkey"] if isinstance(first_key, dict) else first_key
    assert not [t for t in to_self.transfers if t.recipient == owner]
    assert observe(load("metamask_snap/failed-swap.json")).success is False
    assert observe(load("metamask_snap/swap-failed-transaction.json")).success is False


@pytest.mark.parametrize("path", EXTRACTS, ids=lambda p: p.stem[:4])
def test_real_block_extracts(path: Path) -> None:
    tx = json.loads(path.read_text())
    owners = {b["owner"] for b in tx["meta"]["postTokenBalances"] if b["mint"] == WSOL}
    obs = observe(tx, WSOL)
    # wrapped SOL moved between accounts of one owner: nobody was paid wrapped SOL
    assert not [t for t in obs.transfers if t.asset == WSOL and t.recipient in owners]
    assert obs.memos == (("ping",) if "memo" in path.stem else ())


async def test_adapter_reads_a_real_transaction_over_rpc() -> None:
    env = solana_env()
    tx = load("metamask_snap/send-usdc-transfer.json")
    signature = tx["transaction"]["signatures"][0]
    with env.ledger.lock:
        env.ledger.records[signature] = Recorded(signature, tx["slot"], tx, None)
        env.ledger.slot = max(env.ledger.slot, tx["slot"] + 40)
    adapter = SolanaAdapter(NETWORK, NetworkSettings(rpc_urls=[env.server.url]))
    await adapter.start()
    try:
        recipient = "BXT1K8kzYXWMi6ihg7m9UqiHW4iJbJ69zumELHE9oBLe"
        obs = await adapter.observe(Query(signature, USDC_DEVNET, recipient, 1))
    finally:
        await adapter.close()
    assert obs.finality is Finality.CONFIRMED and obs.confirmations >= 41
    assert sum(t.amount for t in obs.transfers if t.recipient == recipient) == 10_000


# -- the local server's shape against the real jsonParsed responses ------------------------

NEWER_FIELDS = {"source", "stackHeight", "computeUnitsConsumed", "version"}


def paths(
    value: Any, path: str = "", out: dict[str, set[str]] | None = None
) -> dict[str, set[str]]:
    """Every key path (list indices collapsed to ``[]``) with the JSON types seen there."""
    out = {} if out is None else out
    out.setdefault(path, set()).add(type(value).__name__)
    if isinstance(value, dict):
        for key, item in value.items():
            paths(item, f"{path}.{key}", out)
    elif isinstance(value, list):
        for item in value:
            paths(item, f"{path}[]", out)
    return out


def comparable(path: str) -> bool:
    # parsed.info depends on the instruction type; the vote program is not ours
    return ".parsed.info" not in path and not any(f".{f}" in path for f in NEWER_FIELDS)


def test_server_shape_matches_real_responses() -> None:
    env = solana_env()
    payee = Keypair().pubkey()
    # a compute budget instruction stays unparsed, as on a real node
    ixs = [
        set_compute_unit_limit(200_000),
        *env.token_payment(env.usdc, payee, 12_500, memo="ping"),
    ]
    ours = env.ledger.records[env.ledger.execute(ixs, [env.payer], legacy=True)].result
    real: dict[str, set[str]] = {}
    for tx in [
        load("solders/solders_get_transaction_json_parsed_encoding.json"),
        *map(lambda p: json.loads(p.read_text()), EXTRACTS),
    ]:
        paths(tx, out=real)
    mine = paths(ours)
    missing = {
        p
        for p in real
        if comparable(p)
        and p not in mine
        and "NoneType" not in real[p]
        and not (p.endswith("[]") and p[:-2] in mine)  # an empty list has no element type
    }
    assert not missing, missing
    for path, types in mine.items():
        if not comparable(path):
            continue
        assert path in real, f"{path} is not in any real response"
        assert types <= real[path] or "NoneType" in real[path], (path, types, real[path])
    # a parsed token transfer carries the same info fields as the real one
    real_transfer = json.loads(EXTRACTS[0].read_text())["meta"]["innerInstructions"][0][
        "instructions"
    ][0]
    token_ixs = [
        ix
        for ix in ours["transaction"]["message"]["instructions"]
        if ix.get("program") == "spl-token"
    ]
    assert token_ixs and set(token_ixs[0]["parsed"]["info"]) == {
        "authority",
        "destination",
        "mint",
        "source",
        "tokenAmount",
    }
    assert set(real_transfer["parsed"]["info"]) == {"amount", "authority", "destination", "source"}
    # meta has every field of a real recent (metamask) response, with the same types
    recent = load("metamask_snap/send-usdc-transfer.json")["meta"]
    for key, value in recent.items():
        assert type(ours["meta"][key]) is type(value), key


@pytest.mark.parametrize(
    "mangle",
    [
        lambda tx: tx["meta"].update(fee="5000"),
        lambda tx: tx["transaction"]["message"].update(instructions=[3]),
        lambda tx: tx["meta"].update(preBalances=["a"] * len(tx["meta"]["preBalances"])),
        lambda tx: tx["meta"].update(postTokenBalances=["not a balance"]),
        lambda tx: tx["meta"].update(preTokenBalances=[{"accountIndex": 1, "uiTokenAmount": 5}]),
        lambda tx: tx["transaction"]["message"].update(accountKeys=[None, 3]),
        lambda tx: tx.update(transaction=[]),
        lambda tx: tx.update(meta="ok"),
    ],
)
def test_malformed_transactions_are_transient(mangle: Any) -> None:
    tx = json.loads(json.dumps(load("metamask_snap/send-usdc-transfer.json")))
    mangle(tx)
    with pytest.raises(RpcUnavailable):
        observe(tx, USDC_DEVNET, "BXT1K8kzYXWMi6ihg7m9UqiHW4iJbJ69zumELHE9oBLe")


def node(replies: dict[str, Any]) -> Transport:
    """A transport in place of a node: each JSON-RPC method answered from ``replies``."""
    answers = {"getGenesisHash": NETWORK.partition(":")[2], **replies}

    async def send(request: HttpRequest) -> HttpReply:
        call = json.loads(request.body or b"{}")
        reply = {"jsonrpc": "2.0", "id": call["id"], "result": answers[call["method"]]}
        return HttpReply(200, json.dumps(reply).encode())

    return send


async def started(replies: dict[str, Any]) -> SolanaAdapter:
    config = NetworkSettings(rpc_urls=["http://127.0.0.1:9"])
    adapter = SolanaAdapter.create(NETWORK, config, transport=node(replies))
    await adapter.start()
    return adapter


@pytest.mark.parametrize(
    ("statuses", "raised"),
    [
        ({"value": []}, TxNotFound),
        ({"value": [None]}, TxNotFound),
        ({"value": ["garbage"]}, RpcUnavailable),
        ({"context": {}}, RpcUnavailable),
        ({"value": [{"confirmationStatus": "processed"}]}, NotFinal),
    ],
)
async def test_signature_status_replies(statuses: Any, raised: type[Exception]) -> None:
    adapter = await started({"getTransaction": None, "getSignatureStatuses": statuses})
    sig = "1" * 64
    with pytest.raises(raised):
        await adapter.observe(Query(sig, "native", str(Keypair().pubkey()), 1))


async def test_a_malformed_get_transaction_reply_is_transient() -> None:
    adapter = await started({"getTransaction": ["not", "a", "transaction"]})
    with pytest.raises(RpcUnavailable):
        await adapter.observe(Query("1" * 64, "native", str(Keypair().pubkey()), 1))


async def test_a_transaction_is_consumed_under_its_first_signature() -> None:
    tx = json.loads(json.dumps(load("metamask_snap/send-usdc-transfer.json")))
    first = tx["transaction"]["signatures"][0]
    second = str(Keypair().sign_message(b"co-signer"))
    tx["transaction"]["signatures"].append(second)
    adapter = await started({"getTransaction": tx, "getSlot": tx["slot"] + 5})
    recipient = "BXT1K8kzYXWMi6ihg7m9UqiHW4iJbJ69zumELHE9oBLe"
    by_first = await adapter.observe(Query(first, USDC_DEVNET, recipient, 1))
    by_second = await adapter.observe(Query(second, USDC_DEVNET, recipient, 1))
    assert by_first.txid == by_second.txid == first
    with pytest.raises(RpcUnavailable):  # a node answering about another transaction
        await adapter.observe(Query(str(Keypair().sign_message(b"x")), USDC_DEVNET, recipient, 1))
