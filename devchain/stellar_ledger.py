"""A tiny Stellar ledger model that turns signed envelopes into Horizon's JSON records.

There is no installable local Stellar network, so this is the honest substitute: transactions are
real signed envelopes (``stellar-sdk``), their hashes are real (SHA-256 under the configured
network passphrase), and the JSON is derived from the envelope XDR and a result XDR in the shape
Horizon serves (checked against recorded Horizon responses by the tests). Each applied
transaction closes its own ledger. No balances are kept: what an operation moves is what its
envelope says, except a strict-send path payment, whose delivered amount (set by the DEX on a
real network) is chosen by the caller and written into the result XDR, where Horizon reads it.

Recorded real transactions can be added too (``add_recorded``); their operations are derived the
same way from their own envelope and result XDR.
"""

from __future__ import annotations

import base64
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from stellar_sdk import (
    AccountMerge,
    Asset,
    CreateAccount,
    CreateClaimableBalance,
    FeeBumpTransaction,
    FeeBumpTransactionEnvelope,
    Keypair,
    MuxedAccount,
    PathPaymentStrictReceive,
    PathPaymentStrictSend,
    Payment,
    TransactionEnvelope,
)
from stellar_sdk import xdr as X
from stellar_sdk.operation import Operation

Envelope = TransactionEnvelope | FeeBumpTransactionEnvelope
BASE = "http://horizon.local"
TYPE_NAMES: dict[type[Operation], str] = {
    CreateAccount: "create_account",
    Payment: "payment",
    PathPaymentStrictReceive: "path_payment_strict_receive",
    PathPaymentStrictSend: "path_payment_strict_send",
    AccountMerge: "account_merge",
    CreateClaimableBalance: "create_claimable_balance",
}


def _units(amount: str | Decimal) -> int:
    return int(Decimal(str(amount)).scaleb(7))


def amount_text(stroops: int) -> str:
    """An amount as Horizon and the SDK's operations write it: units with seven decimals."""
    return format(Decimal(stroops).scaleb(-7), "f")


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _asset_fields(asset: Asset, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {f"{prefix}asset_type": asset.type}
    if asset.type != "native":
        out[f"{prefix}asset_code"] = asset.code
        out[f"{prefix}asset_issuer"] = asset.issuer
    return out


def _account_fields(account: MuxedAccount, key: str) -> dict[str, Any]:
    out: dict[str, Any] = {key: account.account_id}
    if account.account_muxed_id is not None:
        out[f"{key}_muxed"] = account.account_muxed
        out[f"{key}_muxed_id"] = str(account.account_muxed_id)
    return out


def _op_result(op: Operation, success: bool, delivered: int | None) -> X.OperationResult:
    """The result XDR of one operation (what Horizon reads a strict send's amount from)."""
    kind = op._XDR_OPERATION_TYPE
    if not success:
        if isinstance(op, Payment):
            tr = X.OperationResultTr(
                kind, payment_result=X.PaymentResult(X.PaymentResultCode.PAYMENT_UNDERFUNDED)
            )
            return X.OperationResult(X.OperationResultCode.opINNER, tr)
        return X.OperationResult(X.OperationResultCode.opNO_ACCOUNT)
    if isinstance(op, PathPaymentStrictSend | PathPaymentStrictReceive):
        amount = _units(op.dest_amount) if isinstance(op, PathPaymentStrictReceive) else delivered
        last = X.SimplePaymentResult(
            Keypair.from_public_key(op.destination.account_id).xdr_account_id(),
            op.dest_asset.to_xdr_object(),
            X.Int64(amount or 0),
        )
        if isinstance(op, PathPaymentStrictSend):
            tr = X.OperationResultTr(
                kind,
                path_payment_strict_send_result=X.PathPaymentStrictSendResult(
                    X.PathPaymentStrictSendResultCode.PATH_PAYMENT_STRICT_SEND_SUCCESS,
                    X.PathPaymentStrictSendResultSuccess([], last),
                ),
            )
        else:
            tr = X.OperationResultTr(
                kind,
                path_payment_strict_receive_result=X.PathPaymentStrictReceiveResult(
                    X.PathPaymentStrictReceiveResultCode.PATH_PAYMENT_STRICT_RECEIVE_SUCCESS,
                    X.PathPaymentStrictReceiveResultSuccess([], last),
                ),
            )
        return X.OperationResult(X.OperationResultCode.opINNER, tr)
    if isinstance(op, Payment):
        tr = X.OperationResultTr(
            kind, payment_result=X.PaymentResult(X.PaymentResultCode.PAYMENT_SUCCESS)
        )
    elif isinstance(op, CreateAccount):
        tr = X.OperationResultTr(
            kind,
            create_account_result=X.CreateAccountResult(
                X.CreateAccountResultCode.CREATE_ACCOUNT_SUCCESS
            ),
        )
    else:  # the model does not need other results to be specific
        return X.OperationResult(X.OperationResultCode.opNOT_SUPPORTED)
    return X.OperationResult(X.OperationResultCode.opINNER, tr)


def result_xdr(env: Envelope, success: bool, delivered: dict[int, int]) -> str:
    _, inner = _split(env)
    ops = inner.transaction.operations
    results = [_op_result(op, success, delivered.get(i)) for i, op in enumerate(ops)]
    fee = X.Int64(100 * len(ops))
    code = X.TransactionResultCode.txSUCCESS if success else X.TransactionResultCode.txFAILED
    if not _is_bump(env):
        body = X.TransactionResultResult(code, results=results)
    else:
        inner_result = X.InnerTransactionResult(
            fee, X.InnerTransactionResultResult(code, results), X.InnerTransactionResultExt(0)
        )
        pair = X.InnerTransactionResultPair(X.Hash(inner.hash()), inner_result)
        outer_code = (
            X.TransactionResultCode.txFEE_BUMP_INNER_SUCCESS
            if success
            else X.TransactionResultCode.txFEE_BUMP_INNER_FAILED
        )
        body = X.TransactionResultResult(outer_code, inner_result_pair=pair)
    return X.TransactionResult(fee, body, X.TransactionResultExt(0)).to_xdr()


def _is_bump(env: Envelope) -> bool:
    return isinstance(env, FeeBumpTransactionEnvelope)


def _split(env: Envelope) -> tuple[FeeBumpTransaction | None, TransactionEnvelope]:
    """(the fee bump, if any; the envelope of the transaction that carries the operations)."""
    if isinstance(env, FeeBumpTransactionEnvelope):
        return env.transaction, env.transaction.inner_transaction_envelope
    return None, env


def _delivered_from_result(result: str) -> dict[int, int]:
    """What each path payment delivered, read from a result XDR as Horizon does."""
    parsed = X.TransactionResult.from_xdr(result).result
    if parsed.inner_result_pair is not None:
        results = parsed.inner_result_pair.result.result.results or []
    else:
        results = parsed.results or []
    out = {}
    for i, r in enumerate(results):
        tr = r.tr
        send = tr and tr.path_payment_strict_send_result
        recv = tr and tr.path_payment_strict_receive_result
        for res in (send, recv):
            if res and res.success is not None:
                out[i] = res.success.last.amount.int64
    return out


@dataclass
class Record:
    tx: dict[str, Any]  # the /transactions/{hash} JSON under the outer hash
    ops: list[dict[str, Any]]
    hashes: set[str] = field(default_factory=set)


def operations_json(
    env: Envelope, tx: dict[str, Any], ledger: int, index: int, delivered: dict[int, int]
) -> list[dict[str, Any]]:
    _, inner = _split(env)
    body = inner.transaction
    ok = bool(tx["successful"])
    out = []
    for i, op in enumerate(body.operations):
        op_id = str((ledger << 32) | (index << 12) | (i + 1))
        source = op.source or body.source
        rec: dict[str, Any] = {
            "_links": {
                "self": {"href": f"{BASE}/operations/{op_id}"},
                "transaction": {"href": f"{BASE}/transactions/{tx['hash']}"},
                "effects": {"href": f"{BASE}/operations/{op_id}/effects"},
                "succeeds": {"href": f"{BASE}/effects?order=desc&cursor={op_id}"},
                "precedes": {"href": f"{BASE}/effects?order=asc&cursor={op_id}"},
            },
            "id": op_id,
            "paging_token": op_id,
            "transaction_successful": ok,
            **_account_fields(source, "source_account"),
            "type": TYPE_NAMES.get(type(op), _snake(type(op).__name__)),
            "type_i": op._XDR_OPERATION_TYPE.value,
            "created_at": tx["created_at"],
            "transaction_hash": tx["hash"],
        }
        if isinstance(op, Payment | PathPaymentStrictSend | PathPaymentStrictReceive):
            rec.update(_asset_fields(op.asset if isinstance(op, Payment) else op.dest_asset))
            rec.update(_account_fields(source, "from"))
            rec.update(_account_fields(op.destination, "to"))
        if isinstance(op, Payment):
            rec["amount"] = amount_text(_units(op.amount))
        elif isinstance(op, PathPaymentStrictSend):
            rec["amount"] = amount_text(delivered.get(i, _units(op.dest_min)))
            rec["path"] = [_asset_fields(a) for a in op.path]
            rec["source_amount"] = amount_text(_units(op.send_amount))
            rec["destination_min"] = amount_text(_units(op.dest_min))
            rec.update(_asset_fields(op.send_asset, "source_"))
        elif isinstance(op, PathPaymentStrictReceive):
            rec["amount"] = amount_text(_units(op.dest_amount))
            rec["path"] = [_asset_fields(a) for a in op.path]
            rec["source_amount"] = amount_text(_units(op.send_max) if ok else 0)
            rec["source_max"] = amount_text(_units(op.send_max))
            rec.update(_asset_fields(op.send_asset, "source_"))
        elif isinstance(op, CreateAccount):
            rec["starting_balance"] = amount_text(_units(op.starting_balance))
            rec["funder"] = source.account_id
            rec["account"] = op.destination
        elif isinstance(op, CreateClaimableBalance):
            rec["sponsor"] = source.account_id
            rec["asset"] = (
                "native" if op.asset.is_native() else f"{op.asset.code}:{op.asset.issuer}"
            )
            rec["amount"] = amount_text(_units(op.amount))
            rec["claimants"] = [
                {"destination": c.destination, "predicate": {"unconditional": True}}
                for c in op.claimants
            ]
        elif isinstance(op, AccountMerge):
            rec.update(_account_fields(source, "account"))
            rec.update(_account_fields(op.destination, "into"))
        out.append(rec)
    return out


def transaction_json(
    env: Envelope, result: str, ledger: int, index: int, created: int, success: bool
) -> dict[str, Any]:
    bump, inner = _split(env)
    body = inner.transaction
    outer_hash = env.hash_hex()
    token = str((ledger << 32) | (index << 12))
    link = f"{BASE}/transactions/{outer_hash}"
    tx: dict[str, Any] = {
        "_links": {
            "self": {"href": link},
            "account": {"href": f"{BASE}/accounts/{body.source.account_id}"},
            "ledger": {"href": f"{BASE}/ledgers/{ledger}"},
            "operations": {"href": link + "/operations{?cursor,limit,order}", "templated": True},
            "effects": {"href": link + "/effects{?cursor,limit,order}", "templated": True},
            "precedes": {"href": f"{BASE}/transactions?order=asc&cursor={token}"},
            "succeeds": {"href": f"{BASE}/transactions?order=desc&cursor={token}"},
            "transaction": {"href": link},
        },
        "id": outer_hash,
        "paging_token": token,
        "successful": success,
        "hash": outer_hash,
        "ledger": ledger,
        "created_at": _iso(created),
    }
    tx.update(_account_fields(body.source, "source_account"))
    if body.source.account_muxed_id is not None:  # Horizon's names for a muxed tx source
        tx["account_muxed"] = tx.pop("source_account_muxed")
        tx["account_muxed_id"] = tx.pop("source_account_muxed_id")
    fee_source = bump.fee_source if bump is not None else body.source
    tx["source_account_sequence"] = str(body.sequence)
    tx.update(_account_fields(fee_source, "fee_account"))
    tx["fee_charged"] = str(X.TransactionResult.from_xdr(result).fee_charged.int64)
    tx["max_fee"] = str(bump.fee if bump is not None else body.fee)
    tx["operation_count"] = len(body.operations)
    meta = X.TransactionMeta(
        2,
        v2=X.TransactionMetaV2(
            X.LedgerEntryChanges([]),
            [X.OperationMeta(X.LedgerEntryChanges([])) for _ in body.operations],
            X.LedgerEntryChanges([]),
        ),
    )
    tx["envelope_xdr"] = env.to_xdr()
    tx["result_xdr"] = result
    tx["result_meta_xdr"] = meta.to_xdr()
    tx["fee_meta_xdr"] = X.LedgerEntryChanges([]).to_xdr()
    memo = body.memo.to_xdr_object()
    kind = memo.type
    if kind == X.MemoType.MEMO_TEXT and memo.text is not None:
        tx["memo"] = memo.text.decode("utf-8", errors="replace")
        tx["memo_bytes"] = base64.b64encode(memo.text).decode()
    elif kind == X.MemoType.MEMO_ID and memo.id is not None:
        tx["memo"] = str(memo.id.uint64)
    elif kind in (X.MemoType.MEMO_HASH, X.MemoType.MEMO_RETURN):
        raw = (memo.hash or memo.ret_hash).hash  # type: ignore[union-attr]
        tx["memo"] = base64.b64encode(raw).decode()
    tx["memo_type"] = {0: "none", 1: "text", 2: "id", 3: "hash", 4: "return"}[kind.value]
    signatures = [base64.b64encode(s.signature).decode() for s in env.signatures]
    tx["signatures"] = signatures
    bounds = body.preconditions.time_bounds if body.preconditions else None
    tx["valid_after"] = _iso(bounds.min_time if bounds else 0)
    timebounds: dict[str, str] = {"min_time": str(bounds.min_time if bounds else 0)}
    if bounds and bounds.max_time:
        tx["valid_before"] = _iso(bounds.max_time)
        timebounds["max_time"] = str(bounds.max_time)
    tx["preconditions"] = {"timebounds": timebounds}
    if bump is not None:
        tx["fee_bump_transaction"] = {"hash": outer_hash, "signatures": signatures}
        tx["inner_transaction"] = {
            "hash": inner.hash_hex(),
            "signatures": [base64.b64encode(s.signature).decode() for s in inner.signatures],
            "max_fee": str(body.fee),
        }
    return tx


class StellarLedger:
    """Applied transactions, by every hash they answer to (outer and inner for fee bumps)."""

    def __init__(self, passphrase: str, first_ledger: int = 1_000) -> None:
        self.passphrase = passphrase
        self.latest = first_ledger
        self._by_hash: dict[str, Record] = {}

    def apply(
        self, env: Envelope, *, success: bool = True, delivered: dict[int, int] | None = None
    ) -> str:
        """Close a ledger holding ``env``; returns the (outer) hash."""
        self.latest += 1
        result = result_xdr(env, success, delivered or {})
        tx = transaction_json(env, result, self.latest, 1, int(time.time()), success)
        self._store(env, tx)
        return env.hash_hex()

    def add_recorded(self, tx: dict[str, Any]) -> None:
        """Serve a real recorded Horizon transaction (its operations derived from its XDR)."""
        env = _parse(tx["envelope_xdr"], self.passphrase)
        self.latest = max(self.latest, int(tx["ledger"]))
        self._store(env, tx)

    def _store(self, env: Envelope, tx: dict[str, Any]) -> None:
        delivered = _delivered_from_result(tx["result_xdr"])
        token = int(tx["paging_token"])
        index = (token >> 12) & 0xFFFFF
        ops = operations_json(env, tx, int(tx["ledger"]), index, delivered)
        record = Record(tx, ops, {tx["hash"]})
        if "inner_transaction" in tx:
            record.hashes.add(tx["inner_transaction"]["hash"])
        for h in record.hashes:
            self._by_hash[h] = record

    def find(self, tx_hash: str) -> Record | None:
        return self._by_hash.get(tx_hash.lower())


def view(record: Record, requested: str) -> dict[str, Any]:
    """The transaction as Horizon shows it when asked by ``requested`` (an inner hash of a fee
    bump becomes the record's ``id`` and ``hash``, as Horizon does)."""
    tx = dict(record.tx)
    if requested != tx["hash"]:
        tx["id"] = tx["hash"] = requested
    return tx


def _parse(envelope_xdr: str, passphrase: str) -> Envelope:
    if FeeBumpTransactionEnvelope.is_fee_bump_transaction_envelope(envelope_xdr):
        return FeeBumpTransactionEnvelope.from_xdr(envelope_xdr, passphrase)
    return TransactionEnvelope.from_xdr(envelope_xdr, passphrase)
