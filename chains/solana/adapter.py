"""Solana family (``solana:<first 32 chars of the genesis hash>``): SOL and SPL tokens.

Transport: our ``JsonRpcClient`` rather than ``solana.rpc.async_api.AsyncClient``. The SDK client
talks to one endpoint (no failover between ``rpc_urls``), cannot send a JSON-RPC batch, and turns
``jsonParsed`` replies into typed objects that we would have to turn back into dicts; the plain
client gives failover, batching, lazy per-URL network pinning and one error edge
(``RpcUnavailable``) shared with the EVM adapter. ``solders`` supplies the key, signature, PDA and
ed25519 primitives.

Per verification, on the happy path, one call: ``getTransaction`` (``jsonParsed``,
``maxSupportedTransactionVersion: 0``) at commitment ``confirmed`` or ``finalized`` (the network's
``finality``), plus the slot at that commitment for the confirmation count, shared by every
concurrent job for ``head_cache_seconds``. Only when the transaction is not returned does the
adapter ask ``getSignatureStatuses`` whether it is merely not deep enough yet (``processed``, or
``confirmed`` when ``finalized`` is required: ``NotFinal``) or unknown (``TxNotFound``).

* SPL payments come from ``meta.preTokenBalances``/``postTokenBalances``: per token account, the
  post amount minus the pre amount (a missing pre entry is zero: the account was created in the
  same transaction). Net credits are reported with the account's owner as recipient only when the
  account is the owner's associated token account for that mint and token program; any other
  credited account is reported under its own address, so it never counts as paying the owner.
  The sender is the one owner whose balance of the mint fell (unknown when several fell).
  Balances are what the payee got, so Token-2022 transfer fees are already deducted.
* Native SOL: every positive lamport delta (``postBalances - preBalances``) is a transfer to that
  account, from the one account that lost lamports beyond the fee (unknown when several did).
* Memos: the text of each top-level SPL Memo instruction (v1 and v2/v3 program ids).
* Signature binding: ed25519 over the proof message by an account the core asks about: the
  owner whose token (or lamport) balance paid the transfer, never the fee payer as such.
"""

from __future__ import annotations

import base64
import contextlib
import re
from dataclasses import replace
from typing import TYPE_CHECKING, ClassVar

from solders.pubkey import Pubkey
from solders.signature import Signature

from chains.jsonrpc import JsonRpcAdapter
from chains.solana.parse import (
    RpcSignatureStatus,
    RpcTransaction,
    normalize_pubkey,
    observe_transaction,
)
from verifier.adapter import (
    NATIVE,
    Finality,
    InvalidProof,
    NotFinal,
    RpcUnavailable,
    TxNotFound,
    WrongChain,
)

if TYPE_CHECKING:
    from verifier.adapter import Observation, Query


class SolanaAdapter(JsonRpcAdapter):
    """Adapter for one Solana cluster, over JSON-RPC."""

    namespace: ClassVar[str] = "solana"
    network_pattern = re.compile(r"solana:(.{32})")

    @property
    def commitment(self) -> str:
        # "latest" is the settings default for every family; on Solana it means "confirmed".
        return "finalized" if self.config.finality == "finalized" else "confirmed"

    async def pin(self, url: str) -> None:
        """The URL's ``getGenesisHash`` must start with the configured reference."""
        served = await self.api.call_url(url, "getGenesisHash", [])
        if not isinstance(served, str):
            raise RpcUnavailable(f"{url}: malformed getGenesisHash reply")
        if served[:32] != self.reference:
            raise WrongChain(f"{url} serves genesis {served}, configured {self.network}")

    # -- normalization -------------------------------------------------------------------

    def canonical_txid(self, tx_ref: str) -> str:
        ref = tx_ref.strip()
        if not 64 <= len(ref) <= 88:
            raise InvalidProof("a Solana transaction signature is base58 of 64 bytes")
        try:
            return str(Signature.from_string(ref))
        except ValueError as exc:
            raise InvalidProof("a Solana transaction signature is base58 of 64 bytes") from exc

    def normalize_address(self, address: str) -> str:
        return normalize_pubkey(address)

    def normalize_asset(self, asset: str) -> str:
        return NATIVE if asset == NATIVE else normalize_pubkey(asset)

    # -- reads ---------------------------------------------------------------------------

    async def read_head(self, key: str) -> int:
        """The slot at commitment ``key``."""
        slot = await self.api.call("getSlot", [{"commitment": key}])
        if not isinstance(slot, int):
            raise RpcUnavailable("malformed getSlot reply")
        return slot

    async def _not_returned(self, txid: str) -> None:
        """Why ``getTransaction`` returned nothing: not deep enough yet, or not known."""
        reply = await self.api.call(
            "getSignatureStatuses", [[txid], {"searchTransactionHistory": False}]
        )
        values = reply.get("value") if isinstance(reply, dict) else None
        if not isinstance(values, list):
            raise RpcUnavailable(f"malformed getSignatureStatuses reply for {txid}")
        status: RpcSignatureStatus | None = values[0] if values else None
        if status is None:
            raise TxNotFound(f"{txid} is not known to the node")
        if not isinstance(status, dict):
            raise RpcUnavailable(f"malformed getSignatureStatuses reply for {txid}")
        raise NotFinal(
            f"{txid} is {status.get('confirmationStatus') or 'processed'}, "
            f"{self.commitment} is required"
        )

    async def observe(self, query: Query) -> Observation:
        config = {
            "encoding": "jsonParsed",
            "commitment": self.commitment,
            "maxSupportedTransactionVersion": 0,
        }
        tx: RpcTransaction | None = await self.api.call("getTransaction", [query.txid, config])
        if tx is None:
            await self._not_returned(query.txid)
        if not isinstance(tx, dict):
            raise RpcUnavailable(f"{query.txid}: malformed getTransaction reply")
        # The id of a transaction is its first signature: a reference by another of its
        # signatures, or in another encoding, is the same payment and one consumption key.
        inner = tx.get("transaction") if isinstance(tx, dict) else None
        signatures = inner.get("signatures") if isinstance(inner, dict) else None
        txid = query.txid
        if isinstance(signatures, list) and signatures:
            if query.txid not in signatures:
                raise RpcUnavailable(f"the node answered for another transaction than {query.txid}")
            try:
                txid = self.canonical_txid(str(signatures[0]))
            except InvalidProof as exc:
                raise RpcUnavailable(f"malformed signature in the reply for {query.txid}") from exc
        obs = observe_transaction(tx, txid, query)
        slot = tx.get("slot")
        if not isinstance(slot, int):
            raise RpcUnavailable(f"{query.txid}: getTransaction reply has no slot")
        head = await self.head(self.commitment, at_least=slot)
        finality = Finality.FINALIZED if self.commitment == "finalized" else Finality.CONFIRMED
        return replace(obs, confirmations=max(1, head - slot + 1), finality=finality)

    async def verify_signature(self, account: str, message: bytes, signature: str) -> bool:
        """ed25519 over ``message`` by ``account``.

        ``signature`` is base58 (Solana's usual form), hex (``0x`` optional) or base64 of the
        64 signature bytes.
        """
        raw = _signature_bytes(signature.strip())
        if raw is None:
            return False
        try:
            pubkey = Pubkey.from_string(account)
        except ValueError:
            return False
        return Signature.from_bytes(raw).verify(pubkey, message)


def _signature_bytes(text: str) -> bytes | None:
    candidates = []
    with contextlib.suppress(ValueError):
        candidates.append(bytes(Signature.from_string(text)))
    with contextlib.suppress(ValueError):
        candidates.append(bytes.fromhex(text.removeprefix("0x")))
    with contextlib.suppress(ValueError):
        candidates.append(base64.b64decode(text, validate=True))
    return next((c for c in candidates if len(c) == 64), None)


__all__ = ["SolanaAdapter"]
