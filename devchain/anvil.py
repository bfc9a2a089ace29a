"""A throwaway anvil node and a small sync JSON-RPC client for it, for tests and the demo.

``Anvil`` runs the binary from ``find_anvil()`` on 127.0.0.1 and a free port. ``DevChain`` talks
to any node by URL and sends transactions from anvil's unlocked dev accounts (``ANVIL_ACCOUNTS``)
with ``eth_sendTransaction``, so no key handling is needed. The test contracts are compiled by
``npm run build:contracts`` into ``contracts/artifacts/*.json``, which are committed.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, NoReturn, Self

import httpx
from eth_abi import decode, encode
from eth_utils import keccak, to_checksum_address

from devchain.service import NotInstalled, Service, end_process, free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO_ROOT / "contracts" / "artifacts"

#: Private keys of anvil's first 10 dev accounts ("test test ... junk", m/44'/60'/0'/0/i).
ANVIL_KEYS: tuple[str, ...] = (
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
    "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
    "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
    "0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97",
    "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6",
)
#: Their checksummed addresses, in the same order.
ANVIL_ACCOUNTS: tuple[str, ...] = (
    "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
    "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
    "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
    "0x90F79bf6EB2c4f870365E785982E1f101E93b906",
    "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65",
    "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc",
    "0x976EA74026E726554dB657fA54763abd0C3a0aa9",
    "0x14dC79964da2C08b23698B3D3cc7Ca32193d9955",
    "0x23618e81E3f5cdF7f54C3d65f7FBc0aBf5B21E8f",
    "0xa0Ee7A142d267C1f36714E4a8F75612F20a79720",
)

_OS = {"linux": "linux", "darwin": "darwin"}
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
_TO_AMOUNT = ("address", "uint256")


class AnvilNotFound(NotInstalled):
    pass


class RpcError(RuntimeError):
    """A JSON-RPC error answer; ``str()`` is the node's message."""

    def __init__(self, method: str, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.method, self.code, self.message, self.data = method, code, message, data


def find_anvil() -> str:
    """``$X402_ANVIL``, else the npm platform binary under the repo root, else ``anvil`` on PATH."""
    explicit = os.environ.get("X402_ANVIL")
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise AnvilNotFound(f"X402_ANVIL={explicit} is not an executable file")
        return explicit
    os_name, arch = _OS.get(sys.platform), _ARCH.get(platform.machine().lower())
    if os_name and arch:
        pkg = REPO_ROOT / "node_modules" / "@foundry-rs" / f"anvil-{os_name}-{arch}"
        binary = pkg / "bin" / "anvil"
        if binary.is_file() and os.access(binary, os.X_OK):
            return str(binary)
    found = shutil.which("anvil")
    if found:
        return found
    raise AnvilNotFound(
        f"anvil not found: run `npm ci` in {REPO_ROOT} (installs @foundry-rs/anvil into "
        "node_modules), put anvil on PATH, or set X402_ANVIL to the binary"
    )


def selector(signature: str) -> bytes:
    """The 4-byte function selector of e.g. ``"transfer(address,uint256)"``."""
    return keccak(text=signature)[:4]


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


class Anvil(Service):
    """An anvil process on 127.0.0.1; ``start()`` returns once it answers JSON-RPC."""

    START_TIMEOUT = 20.0

    def __init__(
        self, port: int | None = None, chain_id: int = 31337, block_time: float | None = None
    ) -> None:
        self.chain_id, self.block_time = chain_id, block_time
        self._port, self._fixed_port = port, port is not None
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("anvil has no port until start()")
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        if self._proc is not None:
            return self
        if not self._fixed_port:
            self._port = free_port()
        cmd = [
            find_anvil(),
            "--silent",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--chain-id",
            str(self.chain_id),
        ]
        if self.block_time is not None:
            cmd += ["--block-time", f"{self.block_time:g}"]
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop())
        try:
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr
            )
        except OSError:
            self.stop()
            raise
        deadline = time.monotonic() + self.START_TIMEOUT
        with httpx.Client(timeout=1.0) as http:
            while True:
                if self._proc.poll() is not None:
                    self._fail(f"anvil exited with code {self._proc.returncode}")
                try:
                    body = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}
                    answered = "result" in http.post(self.url, json=body).json()
                    if answered and self._proc.poll() is None:  # ours, not another node's
                        return self
                except (httpx.HTTPError, ValueError):
                    pass
                if time.monotonic() > deadline:
                    self._fail(f"anvil did not answer on {self.url} within {self.START_TIMEOUT:g}s")
                time.sleep(0.05)

    def _fail(self, why: str) -> NoReturn:
        tail = b""
        if self._stderr is not None:
            self._stderr.seek(0)
            tail = self._stderr.read()[-2000:]
        self.stop()
        raise RuntimeError(f"{why}; stderr tail:\n{tail.decode(errors='replace')}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            end_process(proc)
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


class DevChain:
    """A sync JSON-RPC client for one node, with helpers for the test contracts."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url
        self._http = httpx.Client(timeout=timeout)
        self._next_id = 0

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- plumbing ------------------------------------------------------------------------

    def rpc(self, method: str, params: Sequence[Any] = ()) -> Any:
        self._next_id += 1
        body = {"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": list(params)}
        answer = self._http.post(self.url, json=body).raise_for_status().json()
        if "error" in answer:
            err = answer["error"]
            message = err.get("message", str(err))
            raise RpcError(method, err.get("code", 0), message, err.get("data"))
        return answer["result"]

    def chain_id(self) -> int:
        return int(self.rpc("eth_chainId"), 16)

    def block_number(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)

    def mine(self, n: int = 1) -> None:
        self.rpc("anvil_mine", [hex(n)])

    def set_automine(self, enabled: bool) -> None:
        self.rpc("evm_setAutomine", [enabled])

    def transaction_count(self, address: str, block: str = "latest") -> int:
        """``eth_getTransactionCount``: the account's nonce at ``block`` (a tag or hex number)."""
        return int(self.rpc("eth_getTransactionCount", [address, block]), 16)

    def timestamp(self, block: str = "latest") -> int:
        """The timestamp of ``block`` (a tag or hex number), in seconds."""
        return int(self.rpc("eth_getBlockByNumber", [block, False])["timestamp"], 16)

    def call(self, to: str, data: bytes) -> bytes:
        return bytes.fromhex(self.rpc("eth_call", [{"to": to, "data": _hex(data)}, "latest"])[2:])

    def send_transaction(
        self, sender: str, to: str | None, data: bytes = b"", value: int = 0, gas: int | None = None
    ) -> str:
        """Sends from an unlocked account; with automine on, returns once the tx is mined.

        Without ``gas`` it is estimated first (against the pending state), and a tx that would
        revert raises RpcError. With an explicit ``gas`` nothing is checked, so a reverting tx
        is mined with status 0. (Left to itself, anvil's eth_sendTransaction falls back to the
        block gas limit when its estimate fails and mines the revert anyway.)
        """
        tx: dict[str, Any] = {"from": sender, "data": _hex(data), "value": hex(value)}
        if to is not None:
            tx["to"] = to
        tx["gas"] = hex(gas) if gas is not None else self.rpc("eth_estimateGas", [tx, "pending"])
        tx_hash: str = self.rpc("eth_sendTransaction", [tx])
        if self.rpc("anvil_getAutomine"):
            self.receipt(tx_hash)
        return tx_hash

    def receipt(self, tx_hash: str, timeout: float = 10.0) -> dict[str, Any]:
        """The tx receipt, polling until it is mined (TimeoutError after ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        while True:
            found: dict[str, Any] | None = self.rpc("eth_getTransactionReceipt", [tx_hash])
            if found is not None:
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f"no receipt for {tx_hash} after {timeout:g}s")
            time.sleep(0.05)

    def deploy(
        self,
        artifact_name: str,
        ctor_types: Sequence[str],
        ctor_args: Sequence[Any],
        sender: str = ANVIL_ACCOUNTS[0],
    ) -> str:
        artifact = json.loads((ARTIFACTS / f"{artifact_name}.json").read_text())
        code = bytes.fromhex(artifact["bytecode"].removeprefix("0x"))
        tx = self.send_transaction(sender, None, code + encode(list(ctor_types), list(ctor_args)))
        receipt = self.receipt(tx)
        if receipt["status"] != "0x1" or not receipt.get("contractAddress"):
            raise RuntimeError(f"deploying {artifact_name} failed: {receipt}")
        return to_checksum_address(receipt["contractAddress"])

    def transact(
        self,
        sender: str,
        to: str,
        fn: str,
        types: Sequence[str],
        args: Sequence[Any],
        *,
        value: int = 0,
        gas: int | None = None,
        suffix: bytes = b"",
    ) -> str:
        """Calls ``fn(types...)`` with ``args``; ``suffix`` is appended raw to the calldata."""
        data = selector(f"{fn}({','.join(types)})") + encode(list(types), list(args))
        return self.send_transaction(sender, to, data + suffix, value=value, gas=gas)

    def read(
        self, to: str, fn: str, types: Sequence[str], args: Sequence[Any], out: Sequence[str]
    ) -> tuple[Any, ...]:
        """``eth_call`` of ``fn(types...)``, decoded as ``out``."""
        data = selector(f"{fn}({','.join(types)})") + encode(list(types), list(args))
        return tuple(decode(list(out), self.call(to, data)))

    # ---- TestToken -----------------------------------------------------------------------

    def deploy_token(
        self, name: str = "Test USD Coin", symbol: str = "USDC", decimals: int = 6
    ) -> str:
        return self.deploy("TestToken", ["string", "string", "uint8"], [name, symbol, decimals])

    def mint(self, token: str, to: str, amount: int) -> str:
        return self.transact(ANVIL_ACCOUNTS[0], token, "mint", _TO_AMOUNT, [to, amount])

    def token_transfer(
        self,
        token: str,
        sender: str,
        to: str,
        amount: int,
        suffix: bytes = b"",
        gas: int | None = None,
    ) -> str:
        """``transfer(to, amount)`` with ``suffix`` appended raw to the calldata."""
        return self.transact(
            sender, token, "transfer", _TO_AMOUNT, [to, amount], suffix=suffix, gas=gas
        )

    def multi_transfer(
        self, token: str, sender: str, tos: Sequence[str], amounts: Sequence[int]
    ) -> str:
        types = ["address[]", "uint256[]"]
        return self.transact(sender, token, "multiTransfer", types, [list(tos), list(amounts)])

    def emit_malformed_transfer(self, token: str, sender: str, to: str, value: int) -> str:
        return self.transact(sender, token, "emitMalformedTransfer", _TO_AMOUNT, [to, value])

    def approve(self, token: str, owner: str, spender: str, amount: int = 2**256 - 1) -> str:
        return self.transact(owner, token, "approve", ["address", "uint256"], [spender, amount])

    def balance_of(self, token: str, who: str) -> int:
        balance: int = self.read(token, "balanceOf", ["address"], [who], ["uint256"])[0]
        return balance

    def native_transfer(self, sender: str, to: str, value: int, data: bytes = b"") -> str:
        return self.send_transaction(sender, to, data, value=value)

    # ---- Eip3009Token (TestToken's ERC-20 helpers apply to it too) ------------------------

    def deploy_eip3009_token(
        self, name: str = "USD Coin", version: str = "2", symbol: str = "USDC", decimals: int = 6
    ) -> str:
        """A token with USDC's EIP-3009 interface; its EIP-712 domain is (name, version)."""
        types = ["string", "string", "string", "uint8"]
        return self.deploy("Eip3009Token", types, [name, version, symbol, decimals])

    def authorization_state(self, token: str, authorizer: str, nonce: bytes) -> bool:
        """Whether ``authorizer``'s 32-byte ``nonce`` is used or canceled on ``token``."""
        types = ["address", "bytes32"]
        used: bool = self.read(token, "authorizationState", types, [authorizer, nonce], ["bool"])[0]
        return used

    # ---- ContractWallet ------------------------------------------------------------------

    def deploy_wallet(self, owner: str) -> str:
        return self.deploy("ContractWallet", ["address"], [owner])

    def wallet_execute(
        self, wallet: str, owner: str, target: str, value: int, data: bytes, gas: int | None = None
    ) -> str:
        types = ["address", "uint256", "bytes"]
        return self.transact(owner, wallet, "execute", types, [target, value, data], gas=gas)

    def is_valid_signature(self, wallet: str, hash32: bytes, signature: bytes) -> bytes:
        """The bytes4 EIP-1271 ``isValidSignature`` returns (0x1626ba7e when valid)."""
        types = ["bytes32", "bytes"]
        magic: bytes = self.read(
            wallet, "isValidSignature", types, [hash32, signature], ["bytes4"]
        )[0]
        return magic

    # ---- Batcher -------------------------------------------------------------------------

    def deploy_batcher(self) -> str:
        return self.deploy("Batcher", [], [])

    def batch_pull(
        self,
        batcher: str,
        bundler: str,
        token: str,
        owners: Sequence[str],
        amounts: Sequence[int],
        to: str,
    ) -> str:
        """One transaction from ``bundler``: ``transferFrom`` of each owner's amount to ``to``
        (each owner must have approved ``batcher``)."""
        types = ["address", "address[]", "uint256[]", "address"]
        args = [token, list(owners), list(amounts), to]
        return self.transact(bundler, batcher, "pull", types, args)
