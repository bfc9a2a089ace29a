"""The dev chain toolkit: on a real anvil, the test contracts do what the verifier tests need;
the local HTTP servers' base stays quiet when a client goes away."""

from __future__ import annotations

import socket
import struct
import sys
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from eth_abi import encode
from eth_account import Account
from eth_utils import keccak, to_checksum_address

from devchain.anvil import ANVIL_ACCOUNTS, ANVIL_KEYS, Anvil, DevChain, RpcError
from devchain.http_server import LocalHTTPServer, Reply, Request
from tests.support import started

TRANSFER_TOPIC = "0x" + keccak(text="Transfer(address,address,uint256)").hex()
MAGIC, INVALID = bytes.fromhex("1626ba7e"), bytes.fromhex("ffffffff")
ALICE, BOB, CAROL = ANVIL_ACCOUNTS[5], ANVIL_ACCOUNTS[6], ANVIL_ACCOUNTS[7]
OWNER, OWNER_KEY = ANVIL_ACCOUNTS[8], ANVIL_KEYS[8]


@pytest.fixture(scope="module")
def chain() -> Iterator[DevChain]:
    with started(Anvil()) as node, DevChain(node.url) as client:
        yield client


@pytest.fixture(scope="module")
def token(chain: DevChain) -> str:
    address = chain.deploy_token()
    chain.mint(address, ALICE, 10**12)
    return address


def topic(address: str) -> str:
    return "0x" + address[2:].lower().rjust(64, "0")


def data_bytes(log: dict[str, str]) -> bytes:
    return bytes.fromhex(log["data"][2:])


def test_keys_match_accounts() -> None:
    assert [Account.from_key(k).address for k in ANVIL_KEYS] == list(ANVIL_ACCOUNTS)


def test_chain_basics(chain: DevChain, token: str) -> None:
    assert chain.chain_id() == 31337
    assert chain.read(token, "decimals", [], [], ["uint8"]) == (6,)
    before = chain.block_number()
    chain.mine(3)
    assert chain.block_number() == before + 3
    chain.set_automine(False)
    try:
        tx = chain.token_transfer(token, ALICE, BOB, 1)
        assert chain.rpc("eth_getTransactionReceipt", [tx]) is None
        chain.mine()
        assert chain.receipt(tx)["status"] == "0x1"
    finally:
        chain.set_automine(True)


def test_transfer_with_suffix(chain: DevChain, token: str) -> None:
    suffix = keccak(b"memo")
    before = chain.balance_of(token, BOB)
    tx = chain.token_transfer(token, ALICE, BOB, 1234, suffix=suffix)
    receipt = chain.receipt(tx)
    assert receipt["status"] == "0x1"
    [log] = receipt["logs"]
    assert log["address"].lower() == token.lower()
    assert log["topics"] == [TRANSFER_TOPIC, topic(ALICE), topic(BOB)]
    assert data_bytes(log) == (1234).to_bytes(32, "big")
    tx_input = chain.rpc("eth_getTransactionByHash", [tx])["input"]
    assert tx_input.endswith(suffix.hex()) and len(tx_input) == 2 + 2 * (4 + 64 + 32)
    assert chain.balance_of(token, BOB) == before + 1234


def test_multi_transfer_emits_one_log_per_element(chain: DevChain, token: str) -> None:
    receipt = chain.receipt(chain.multi_transfer(token, ALICE, [BOB, CAROL], [5, 7]))
    assert [(log["topics"][2], data_bytes(log)) for log in receipt["logs"]] == [
        (topic(BOB), (5).to_bytes(32, "big")),
        (topic(CAROL), (7).to_bytes(32, "big")),
    ]


def test_malformed_transfer_has_everything_in_data(chain: DevChain, token: str) -> None:
    before = chain.balance_of(token, BOB)
    receipt = chain.receipt(chain.emit_malformed_transfer(token, ALICE, BOB, 999))
    [log] = receipt["logs"]
    assert log["topics"] == [TRANSFER_TOPIC]
    assert data_bytes(log) == encode(["address", "address", "uint256"], [ALICE, BOB, 999])
    assert chain.balance_of(token, BOB) == before


def test_reverted_transfer_is_mined_with_explicit_gas(chain: DevChain, token: str) -> None:
    too_much = chain.balance_of(token, ALICE) + 1
    with pytest.raises(RpcError, match="insufficient balance"):
        chain.token_transfer(token, ALICE, BOB, too_much)  # estimated first: refused
    tx = chain.token_transfer(token, ALICE, BOB, too_much, gas=100_000)
    receipt = chain.receipt(tx)
    assert receipt["status"] == "0x0" and receipt["logs"] == []
    assert int(receipt["blockNumber"], 16) == chain.block_number()


def test_wallet_validates_owner_signatures(chain: DevChain) -> None:
    wallet = chain.deploy_wallet(OWNER)
    digest = keccak(b"payment proof")
    good = Account.unsafe_sign_hash(digest, OWNER_KEY).signature
    other = Account.unsafe_sign_hash(digest, ANVIL_KEYS[9]).signature
    assert chain.is_valid_signature(wallet, digest, bytes(good)) == MAGIC
    assert chain.is_valid_signature(wallet, digest, bytes(other)) == INVALID
    assert chain.is_valid_signature(wallet, keccak(b"something else"), bytes(good)) == INVALID
    assert chain.is_valid_signature(wallet, digest, bytes(good)[:64]) == INVALID


def test_wallet_execute_moves_its_tokens(chain: DevChain, token: str) -> None:
    wallet = chain.deploy_wallet(OWNER)
    chain.mint(token, wallet, 500)
    chain.native_transfer(ANVIL_ACCOUNTS[0], wallet, 10**15)
    assert int(chain.rpc("eth_getBalance", [wallet, "latest"]), 16) == 10**15
    call = bytes.fromhex("a9059cbb") + encode(["address", "uint256"], [CAROL, 200])
    receipt = chain.receipt(chain.wallet_execute(wallet, OWNER, token, 0, call))
    [log] = receipt["logs"]
    assert log["topics"] == [TRANSFER_TOPIC, topic(wallet), topic(CAROL)]
    assert chain.balance_of(token, wallet) == 300
    assert to_checksum_address(receipt["from"]) == OWNER
    with pytest.raises(RpcError, match="not owner"):
        chain.wallet_execute(wallet, ALICE, token, 0, call)
    too_much = bytes.fromhex("a9059cbb") + encode(["address", "uint256"], [CAROL, 10**9])
    with pytest.raises(RpcError, match="insufficient balance"):  # the revert bubbles up
        chain.wallet_execute(wallet, OWNER, token, 0, too_much)


class Slow(LocalHTTPServer):
    """Answers a large body, but only once the test says the client has gone."""

    def __init__(self) -> None:
        super().__init__()
        self.gone = threading.Event()

    def handle(self, request: Request) -> Reply:
        if request.path == "/slow":
            self.gone.wait(10)
        return Reply(200, b"x" * 8_000_000, "text/plain")


def test_a_client_that_goes_away_leaves_no_traceback(capfd: pytest.CaptureFixture[str]) -> None:
    with Slow() as server:
        # Instrumented from outside: what the write failed with, and when the exchange ended.
        errors: list[BaseException | None] = []
        done = threading.Event()
        http = server._http
        handle_error, shutdown = http.handle_error, http.shutdown_request

        def record(request: Any, client_address: Any) -> None:
            errors.append(sys.exception())
            handle_error(request, client_address)

        def finished(request: Any) -> None:
            shutdown(request)
            done.set()

        http.handle_error, http.shutdown_request = record, finished  # type: ignore[method-assign]
        client = socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])))
        client.sendall(b"GET /slow HTTP/1.0\r\n\r\n")
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # a reset, as a killed process or a timed-out client leaves
        server.gone.set()
        assert done.wait(10)
        assert len(errors) == 1 and isinstance(errors[0], ConnectionError)
        assert httpx.get(server.url + "/again").status_code == 200  # still serving
    assert "Traceback" not in capfd.readouterr().err
