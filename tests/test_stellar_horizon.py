"""The local Horizon against real recorded Horizon responses, and the adapter on real data."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from stellar_sdk import Asset, HashMemo, MuxedAccount, Network, Payment, TextMemo

from chains.http import AiohttpTransport, HttpReply, HttpRequest
from chains.stellar import StellarAdapter
from chains.stellar.horizon import stroops
from devchain.horizon import HorizonServer
from devchain.stellar_ledger import StellarLedger
from tests.harness_stellar import PAYEE, PAYER, SPONSOR, StellarEnv
from tests.support import RECORDED, shape
from verifier.adapter import InvalidProof, Query, RpcUnavailable, TxNotFound
from verifier.matching import Expectation, judge
from verifier.models import Binding, ReasonCode
from verifier.settings import NetworkSettings

FIXTURES = RECORDED / "stellar"
RECORDED_TXS = ["transaction", "transaction_fee_bump", "transaction_muxed_id", "transaction_failed"]


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


def same_shape(
    mine: dict[str, Any], real: dict[str, Any], skip: frozenset[str] | set[str] = frozenset()
) -> None:
    assert set(mine) - skip == set(real) - skip, set(mine) ^ set(real)
    for key in set(real) - skip - {"_links", "preconditions", "claimants"}:
        assert shape(mine[key]) == shape(real[key]), key


def test_local_transactions_have_the_recorded_shape() -> None:
    env = StellarEnv()
    usdc = Asset("USDC", SPONSOR.public_key)
    text, _ = env.wallet.submit(PAYER, [Payment(PAYEE, usdc, "1")], memo=TextMemo("hi"))
    text_record = env.ledger.find(text)
    assert text_record is not None
    same_shape(text_record.tx, load("transaction"), skip={"memo_bytes", "memo"})
    assert text_record.tx["memo"] == "hi"
    bump, _ = env.wallet.submit(PAYER, [Payment(PAYEE, usdc, "1")], fee_bump_by=SPONSOR)
    bump_record = env.ledger.find(bump)
    assert bump_record is not None
    # The recorded fee bump has no upper time bound, ours has one (valid_before)
    same_shape(bump_record.tx, load("transaction_fee_bump"), skip={"valid_before"})
    same_shape(text_record.ops[0], load("operations/payment"))
    mux = MuxedAccount(PAYEE, 9).account_muxed
    assert mux is not None
    hashed, _ = env.wallet.submit(PAYER, [Payment(mux, usdc, "1")], memo=HashMemo(b"\x07" * 32))
    record = env.ledger.find(hashed)
    assert record is not None and record.tx["memo"] == base64.b64encode(b"\x07" * 32).decode()
    muxed_keys = {"to_muxed", "to_muxed_id"}
    same_shape(record.ops[0], load("operations/payment"), skip=muxed_keys)
    assert record.ops[0]["to_muxed"] == mux and record.ops[0]["to_muxed_id"] == "9"


def test_recorded_operations_are_rebuilt_from_their_xdr() -> None:
    ledger = StellarLedger(Network.PUBLIC_NETWORK_PASSPHRASE)
    for name in RECORDED_TXS:
        ledger.add_recorded(load(name))
    bump = ledger.find("01f25077d5924dc2381055b22befacfdb7d6466325e2511d9cc0739d23bf14f0")
    assert bump is not None and bump.ops[0]["type"] == "path_payment_strict_receive"
    same_shape(bump.ops[0], load("operations/path_payment_strict_receive"))
    failed = ledger.find("ced549af061dc39758ce222f78f027e82b5077176a4e2efbeb4dc04086150b7d")
    assert failed is not None and failed.ops[0]["transaction_successful"] is False


def test_amounts_are_exact_stroops() -> None:
    assert stroops("99999999959.9999700") == 999999999599999700
    assert stroops("0.0000001") == 1
    for bad in ("1.5", "1e3", "-1.0000000", 1.5):
        with pytest.raises(Exception, match="malformed"):
            stroops(bad)


class Pages:
    """The real transport, with ``mangle`` (if set) applied to each operations page it reads."""

    def __init__(self) -> None:
        self.real = AiohttpTransport(timeout=5)
        self.mangle: Callable[[Any], object] | None = None

    async def __call__(self, request: HttpRequest) -> HttpReply:
        reply = await self.real(request)
        if self.mangle is None or not request.url.endswith("/operations"):
            return reply
        page = json.loads(reply.body)
        self.mangle(page)
        return HttpReply(reply.status, json.dumps(page).encode())


@pytest.fixture
async def pages() -> AsyncIterator[Pages]:
    transport = Pages()
    yield transport
    await transport.real.aclose()


@pytest.fixture
async def pubnet(pages: Pages) -> AsyncIterator[StellarAdapter]:
    ledger = StellarLedger(Network.PUBLIC_NETWORK_PASSPHRASE)
    for name in RECORDED_TXS:
        ledger.add_recorded(load(name))
    with HorizonServer(ledger) as server:
        config = NetworkSettings(rpc_urls=[server.url])
        adapter = StellarAdapter.create("stellar:pubnet", config, transport=pages)
        await adapter.start()
        yield adapter
        await adapter.close()


def expect(asset: str, pay_to: str, amount: int, at: int, binding: Binding) -> Expectation:
    return Expectation(asset, pay_to, amount, 1, binding, "00" * 32, at - 10, at + 600, 5)


async def test_recorded_text_memo_payment(pubnet: StellarAdapter) -> None:
    tx = load("transaction")
    asset = "HUN:GBRKXS2UKIV66OXIXDTJ5WF5TEE4VQMWH5DB74LBALZCTNX3PPV6J6C5"
    payee = "GAWKQ5X65RGMP7WOIBWXUN4TVR3JLD4XIZDETYGIK2KZBKWDSXNQEZOA"
    obs = await pubnet.observe(Query(tx["hash"], asset, payee, 1))
    assert obs.memos == ("0,075% Daily for Holders",) and obs.block_time == 1720158691
    verdict = judge(obs, expect(asset, payee, 1511739800, obs.block_time, Binding.NONE))
    assert verdict.accepted and verdict.paid == 1511739800 and not verdict.bound
    assert verdict.payer == "GBBZFXPKXQEQKIA46BANKEZC4VMDXKK2SFRA77VGCWNKQ4FJMJRCP7WB"
    required = judge(obs, expect(asset, payee, 1, obs.block_time, Binding.REQUIRED))
    assert required.reason is ReasonCode.BINDING_MISSING  # a text memo cannot bind


async def test_recorded_fee_bumps_resolve_to_the_inner_hash(pubnet: StellarAdapter) -> None:
    for name in ("transaction_fee_bump", "transaction_muxed_id"):
        tx = load(name)
        inner = tx["inner_transaction"]["hash"]
        dest = "GA4QH4AJGERVYX4PBY55JYTQJ4RTLJIBYV7OCYIV56LWZE5MVDH3R3UQ"
        if name == "transaction_muxed_id":
            dest = "GCUCLPMVO4Q4M32VCPDPQBYCRCTZDA4RYGXZCL7ZA3TOUFPM6ROQRDMI"
        by_outer = await pubnet.observe(Query(tx["hash"], "native", dest, 1))
        by_inner = await pubnet.observe(Query(inner, "native", dest, 1))
        assert by_outer.txid == by_inner.txid == inner
        assert by_outer.transfers == by_inner.transfers
        verdict = judge(by_outer, expect("native", dest, 1, by_outer.block_time, Binding.NONE))
        assert verdict.accepted, verdict
    assert await pubnet.observe(Query(load("transaction_fee_bump")["hash"], "native", "", 1))


async def test_recorded_failed_transaction(pubnet: StellarAdapter) -> None:
    tx = load("transaction_failed")
    obs = await pubnet.observe(Query(tx["hash"], "native", PAYEE, 1))
    assert obs.success is False and obs.transfers == ()
    verdict = judge(obs, expect("native", PAYEE, 1, obs.block_time, Binding.NONE))
    assert verdict.reason is ReasonCode.TX_REVERTED


async def test_unknown_and_garbage_hashes(pubnet: StellarAdapter) -> None:
    with pytest.raises(TxNotFound):
        await pubnet.observe(Query("cd" * 32, "native", PAYEE, 1))
    for bad in ("0x" + "ab" * 32, "ab" * 31, "zz" * 32):
        with pytest.raises(InvalidProof):
            pubnet.canonical_txid(bad)
    assert pubnet.canonical_txid(" " + "AB" * 32) == "ab" * 32
    with pytest.raises(ValueError):
        pubnet.normalize_asset("USDC:GNOTANACCOUNT")


@pytest.mark.parametrize(
    "mangle",
    [
        lambda page: page["_embedded"]["records"][0]["transaction"].update(ledger="12"),
        lambda page: page["_embedded"]["records"][0].update(to=None, to_muxed=7),
        lambda page: page["_embedded"].update(records=["not an operation"]),
        lambda page: page["_embedded"]["records"].append("not an operation"),
        lambda page: page.update(_embedded=[]),
    ],
)
async def test_malformed_horizon_pages_are_transient(
    pubnet: StellarAdapter, pages: Pages, mangle: Any
) -> None:
    tx = load("transaction")
    payee = "GAWKQ5X65RGMP7WOIBWXUN4TVR3JLD4XIZDETYGIK2KZBKWDSXNQEZOA"
    muxed = MuxedAccount(payee, 7).account_muxed
    assert muxed is not None
    pages.mangle = mangle
    with pytest.raises(RpcUnavailable):
        await pubnet.observe(Query(tx["hash"], "native", muxed, 1))


async def test_null_fee_bump_fields_are_read_as_absent(
    pubnet: StellarAdapter, pages: Pages
) -> None:
    tx = load("transaction")

    def nulled(page: Any) -> None:
        page["_embedded"]["records"][0]["transaction"]["fee_bump_transaction"] = None

    pages.mangle = nulled
    obs = await pubnet.observe(Query(tx["hash"], "native", PAYEE, 1))
    assert obs.txid == tx["hash"] and obs.aliases == ()


async def test_a_root_answering_404_does_not_stop_the_worker() -> None:
    from chains.stellar import StellarAdapter
    from devchain.http_server import LocalHTTPServer, Reply, Request
    from verifier.settings import NetworkSettings

    class NotFound(LocalHTTPServer):
        methods = ("GET",)

        def handle(self, request: Request) -> Reply:
            return Reply(404)

    with NotFound() as server:
        adapter = StellarAdapter.create("stellar:testnet", NetworkSettings(rpc_urls=[server.url]))
        try:
            await adapter.start()  # logged and pinned on first use, like a Horizon that is down
        finally:
            await adapter.close()
