"""The EVM parsing and the benchmark's canned node, held against real recorded responses."""

from __future__ import annotations

import json
from typing import Any

from chains.evm import transfers_from_logs
from devchain.stub import EvmBook
from tests.support import RECORDED

EVM = RECORDED / "evm"


def recorded(method: str, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EVM / "execution-apis" / method / name).read_text())
    result: dict[str, Any] = data["response"]["result"]
    return result


def test_transfer_logs_from_a_real_receipt() -> None:
    logs = json.loads((EVM / "safe-eth-py" / "mock_log_receipts.json").read_text())["log_receipts"]
    found = transfers_from_logs(logs)
    # Three ERC-20 Transfers; the Approval, the ERC-721 Transfers (four topics, no data) and the
    # Transfer with everything in its data are not payments.
    assert len(found) == 3
    assert {t.asset for t in found} == {"0x39c4bfa00b6edeccdd00fa9589e1be76de63e862"}
    assert found[0].sender == "0x94e01661ebaef430fe862f958c03200b0f483f27"
    assert found[1].recipient == "0x64da772dd84965f0ee58174941d78a9dfbccca2e"
    assert [t.amount for t in found] == [67_600_000_000_000_000_000] + [30 * 10**18] * 2


def _same_shape(ours: Any, real: Any, where: str) -> None:
    if isinstance(ours, dict):
        assert isinstance(real, dict), where
        for key, value in ours.items():
            assert key in real, f"{where}.{key} is not in the real response"
            _same_shape(value, real[key], f"{where}.{key}")
    elif isinstance(ours, list):
        assert isinstance(real, list), where
        if ours and real:
            _same_shape(ours[0], real[0], f"{where}[0]")
    elif ours is not None and real is not None:
        assert type(ours) is type(real), f"{where}: {type(ours).__name__} vs {type(real).__name__}"


def test_bench_node_speaks_the_real_shapes() -> None:
    book = EvmBook()
    tx = "0x" + "ab" * 32
    book.register(
        [
            {
                "hash": tx,
                "from": "0x" + "11" * 20,
                "to": "0x" + "22" * 20,
                "token": "0x" + "33" * 20,
                "amount": 5,
                "memo": "cd" * 32,
            }
        ]
    )
    real_receipt = recorded("eth_getTransactionReceipt", "get-dynamic-fee.json")
    real_receipt_with_logs = json.loads(
        (EVM / "safe-eth-py" / "mock_log_receipts.json").read_text()
    )["log_receipts"][0]
    receipt = book.answer("eth_getTransactionReceipt", [tx])
    _same_shape({k: v for k, v in receipt.items() if k != "logs"}, real_receipt, "receipt")
    log = {k: v for k, v in receipt["logs"][0].items() if k not in ("blockNumber", "logIndex")}
    _same_shape(log, real_receipt_with_logs, "log")
    _same_shape(
        book.answer("eth_getTransactionByHash", [tx]),
        recorded("eth_getTransactionByHash", "get-dynamic-fee.json"),
        "transaction",
    )
    block = book.answer("eth_getBlockByNumber", [receipt["blockNumber"], False])
    _same_shape(block, recorded("eth_getBlockByNumber", "get-block-london-fork.json"), "block")
    assert book.answer("eth_getTransactionReceipt", ["0x" + "00" * 32]) is None


def test_what_the_adapter_reads_is_in_real_responses() -> None:
    receipt = recorded("eth_getTransactionReceipt", "get-dynamic-fee.json")
    assert {"blockNumber", "blockHash", "status", "logs"} <= receipt.keys()
    tx = recorded("eth_getTransactionByHash", "get-dynamic-fee.json")
    assert {"from", "to", "value", "input", "chainId", "blockNumber"} <= tx.keys()
    block = recorded("eth_getBlockByNumber", "get-block-london-fork.json")
    assert {"hash", "number", "timestamp"} <= block.keys()
    assert recorded("eth_getTransactionReceipt", "get-notfound-tx.json") is None
