"""TON family (``tvm:-239`` mainnet, ``tvm:-3`` testnet): TON coin and jetton payments.

The transaction is read on the *receiving* side, through toncenter API v3: the payee's own
transaction (native TON, or the ``transfer_notification`` its jetton wallet sends it) or the
transaction of the payee's jetton wallet (``internal_transfer``). A proof names it by hash (hex,
base64 or base64url; canonical form lowercase hex) or by a locator ``ton:<account>|<nonce>``, which
is resolved by scanning the payee's transactions since the challenge was issued for the earliest
that carries the challenge's commitment as its comment and pays the offer. The commitment is public,
so anyone may send dust carrying it first; that dust is judged only when no candidate pays enough.

* Native TON counts when the inbound message is internal, not bounced, and the transaction's
  compute phase succeeded and it was not aborted. The comment is parsed from the body BOC here.
* Jettons count only when the jetton wallet involved is the one the configured jetton master
  derives for the owner (``get_wallet_address``, cached for good: the derivation never changes).
  A notification from any other wallet is reported as an ``unverified-jetton:<wallet>`` asset, so
  that a look-alike token someone deployed never passes for the real one. The binding is the
  comment in the transfer's forward payload.
* Final means included in a masterchain block (``mc_block_seqno`` set); until then ``NotFinal``.
  Confirmations are 1 once included, or masterchain blocks since then when an offer asks for more.
* Requests per verification: one (the transaction), plus one per jetton wallet never derived
  before, plus one shared masterchain read when more than one confirmation is asked for.
"""

from __future__ import annotations

import asyncio
import base64
import re
from typing import ClassVar

from pytoniq_core import Address, begin_cell

from chains.base import RpcAdapter, SharedReads
from chains.endpoints import Endpoints
from chains.http import Transport
from chains.ton.codec import (
    _PARSE_ERRORS,
    OP_TRANSFER_NOTIFICATION,
    JettonMessage,
    canonical_hash,
    cell_from_b64,
    comment_of,
    jetton_message,
    normalize_address,
    parse_locator,
    raw_form,
)
from chains.ton.messages import b64_hex, in_comments, message_body, nanotons, notified_owners
from chains.ton.toncenter import Toncenter, V3Message, V3StackEntry, V3Transaction
from verifier.adapter import (
    NATIVE,
    ConfigError,
    Finality,
    InvalidProof,
    NetworkSettings,
    NotFinal,
    Observation,
    Query,
    RpcUnavailable,
    Transfer,
    TxNotFound,
    WrongChain,
)

UNVERIFIED_JETTON = "unverified-jetton:"
_WALLET_TTL = 7 * 86400.0


def _pays(obs: Observation, query: Query) -> bool:
    """Whether ``obs`` succeeded and moved at least the offer's amount of its asset to the payee."""
    to_payee = [
        t.amount for t in obs.transfers if t.asset == query.asset and t.recipient == query.pay_to
    ]
    return obs.success and bool(to_payee) and sum(to_payee) >= query.amount


class TONAdapter(RpcAdapter[Toncenter]):
    """Adapter for one TON network, over toncenter API v3."""

    namespace: ClassVar[str] = "tvm"
    network_pattern = re.compile(r"tvm:(-?[0-9]{1,10})")

    def __init__(
        self, network: str, config: NetworkSettings, *, transport: Transport | None = None
    ) -> None:
        super().__init__(network, config, transport=transport)
        self.global_id = int(self.reference)
        self.scan_limit = int(config.options.get("scan_limit", 100))
        # A locator scan starts this long before the challenge's issue time (clock skew).
        self.scan_skew = int(config.options.get("scan_skew", 120))
        self.scan_pages = int(config.options.get("scan_pages", 20))
        # How many locator scans run at once. A scan holds a page of up to scan_limit
        # transactions, each parsed: with hundreds of jobs in flight on one payee, unbounded
        # scans were what grew the worker's memory most (make bench row 9: +30 MB for 200 TON
        # proofs at once). A scan waits for a free one; a hash needs none.
        self.scan_concurrency = config.options.get("scan_concurrency", 8)
        n = self.scan_concurrency
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ConfigError(
                f"networks.{network}.options.scan_concurrency: a whole number of at least 1, "
                f"not {self.scan_concurrency!r}"
            )
        self._scans = asyncio.Semaphore(self.scan_concurrency)
        self._wallets: SharedReads[str] = SharedReads(_WALLET_TTL, max_entries=4096)

    def open_api(self, endpoints: Endpoints, transport: Transport) -> Toncenter:
        headers = {"accept": "application/json"}
        api_key = self.config.options.get("api_key")
        if api_key:
            headers["X-API-Key"] = str(api_key)
        return Toncenter(endpoints, transport, headers=headers)

    async def pin(self, url: str) -> None:
        """The URL's ``masterchainInfo`` must report the configured global id."""
        info = await self.api.masterchain_info(url)
        served = (info.get("last") or {}).get("global_id")
        if not isinstance(served, int):
            raise RpcUnavailable(f"{url}: masterchainInfo has no global_id")
        if served != self.global_id:
            raise WrongChain(f"{url} serves global id {served}, configured {self.network}")

    # -- normalization -------------------------------------------------------------------

    def canonical_txid(self, tx_ref: str) -> str:
        try:
            locator = parse_locator(tx_ref)
        except ValueError as exc:
            raise InvalidProof(str(exc)) from exc
        if locator is not None:
            return str(locator)
        txid = canonical_hash(tx_ref)
        if txid is None:
            raise InvalidProof(
                "a TON transaction is a 32-byte hash (hex, base64 or base64url) "
                "or a locator ton:<account>|<nonce>"
            )
        return txid

    def normalize_address(self, address: str) -> str:
        return normalize_address(address)

    def normalize_asset(self, asset: str) -> str:
        return NATIVE if asset == NATIVE else normalize_address(asset)

    # -- reads ---------------------------------------------------------------------------

    async def jetton_wallet(self, master: str, owner: str) -> str:
        """The wallet ``master`` derives for ``owner`` (its ``get_wallet_address``), cached."""

        async def fetch() -> str:
            arg = begin_cell().store_address(Address(owner)).end_cell().to_boc()
            stack: list[V3StackEntry] = [{"type": "slice", "value": base64.b64encode(arg).decode()}]
            result = await self.api.run_get_method(master, "get_wallet_address", stack)
            entries = result.get("stack") or []
            if result.get("exit_code") != 0 or not entries:
                raise RpcUnavailable(f"get_wallet_address on {master} failed: {result!r:.200}")
            try:
                loaded = cell_from_b64(str(entries[0].get("value"))).begin_parse().load_address()
                return raw_form(loaded)
            except (ValueError, AttributeError) as exc:
                raise RpcUnavailable(f"get_wallet_address on {master}: bad stack") from exc

        return await self._wallets.get((master, owner), fetch)

    async def read_head(self, key: str) -> int:
        """The last masterchain block's seqno (``key`` is always ``last``)."""
        seqno = ((await self.api.masterchain_info()).get("last") or {}).get("seqno")
        if not isinstance(seqno, int):
            raise RpcUnavailable("masterchainInfo has no last seqno")
        return seqno

    async def observe(self, query: Query) -> Observation:
        try:
            locator = parse_locator(query.txid)
        except ValueError as exc:
            raise InvalidProof(str(exc)) from exc
        if locator is not None:
            if not locator.names(query.memo):
                raise InvalidProof("the locator names another challenge")
            tx = await self._locate(query)
        else:
            txs = await self.api.transactions(hash=query.txid, limit=1)
            if not txs:
                raise TxNotFound(f"{query.txid} is not indexed (yet)")
            tx = txs[0]
            if b64_hex(tx.get("hash")) != query.txid:
                raise RpcUnavailable("toncenter answered with another transaction")
        return await self._observation(tx, query)

    async def _locate(self, query: Query) -> V3Transaction:
        """The payee-side transaction since the challenge that carries its commitment.

        Among the candidates, the earliest that pays the offer (``_pays``): a 1-unit transfer
        someone sent with the same public comment must not stand in for the payment. When none
        pays, and none is still waiting for a masterchain block, the best of the rest is judged,
        so the verdict is an honest ``amount_too_low``.
        """
        account = query.pay_to
        if query.asset != NATIVE:
            account = await self.jetton_wallet(query.asset, query.pay_to)
        async with self._scans:
            found, pending = await self._scan(account, query)
        if not found:
            if pending:
                raise NotFinal("the payment is not in a masterchain block yet")
            raise TxNotFound(f"no transaction of {account} carries the commitment yet")
        paying = [tx for obs, tx in found if _pays(obs, query)]
        if paying:
            return paying[0]
        if pending:
            # A final short candidate is not the verdict while one with the commitment may
            # still pay: a final amount_too_low could not be undone once that one is final.
            raise NotFinal("a transaction with the commitment is not in a masterchain block yet")
        # A failed or bounced attempt may carry the same comment as the payment that followed:
        # prefer a successful transaction that moved value, then the earliest.
        found.sort(key=lambda pair: (not pair[0].success, not pair[0].transfers))
        return found[0][1]

    async def _scan(
        self, account: str, query: Query
    ) -> tuple[list[tuple[Observation, V3Transaction]], bool]:
        """The account's final transactions since the challenge that carry its commitment,
        oldest first, and whether one that carries it is not final yet.

        Pages through the account's transactions, up to ``scan_pages`` pages of ``scan_limit``
        (a busy payee must not hide a payment made in time), until one pays the offer.
        """
        found: list[tuple[Observation, V3Transaction]] = []
        pending = False
        for page in range(self.scan_pages):
            txs = await self.api.transactions(
                account=account,
                start_utime=max(0, query.issued_at - self.scan_skew),
                limit=self.scan_limit,
                offset=page * self.scan_limit,
                sort="asc",
            )
            for tx in txs:
                try:
                    obs = await self._observation(tx, query)
                except NotFinal:
                    pending = pending or query.memo in in_comments(tx.get("in_msg"))
                    continue
                if query.memo in obs.memos:
                    found.append((obs, tx))
            if len(txs) < self.scan_limit or any(_pays(o, query) for o, _ in found):
                break
        return found, pending

    async def _observation(self, tx: V3Transaction, query: Query) -> Observation:
        """``_read`` with a malformed indexer reply mapped to ``RpcUnavailable`` (transient)."""
        try:
            return await self._read(tx, query)
        except (KeyError, AttributeError, *_PARSE_ERRORS) as exc:
            raise RpcUnavailable(f"malformed toncenter transaction: {exc!r:.200}") from exc

    async def _read(self, tx: V3Transaction, query: Query) -> Observation:
        txid = b64_hex(tx.get("hash"))
        if txid is None:
            raise RpcUnavailable("toncenter transaction without a hash")
        mc_seqno = tx.get("mc_block_seqno")
        if not isinstance(mc_seqno, int) or tx.get("emulated"):
            raise NotFinal(f"{txid} is not in a masterchain block yet")
        now = tx.get("now")
        if not isinstance(now, int) or isinstance(now, bool) or now <= 0:
            # never a block time of 0: that would be a final ``tx_before_challenge``
            raise RpcUnavailable(f"{txid}: toncenter transaction without a time ({now!r})")
        account = normalize_address(str(tx.get("account")))
        descr = tx.get("description") or {}
        compute = descr.get("compute_ph") or {}
        success = (
            descr.get("type") == "ord"
            and descr.get("aborted") is False
            and compute.get("skipped") is not True
            and compute.get("success") is True
        )
        transfers: list[Transfer] = []
        memos: list[str] = []
        canonical = txid
        in_msg = tx.get("in_msg")
        if in_msg and in_msg.get("source") and not in_msg.get("bounced"):
            if normalize_address(str(in_msg.get("destination"))) != account:
                raise RpcUnavailable(f"{txid}: inbound message for another account")
            source = normalize_address(str(in_msg.get("source")))
            body = message_body(in_msg)
            comment = comment_of(body)
            if comment is not None:
                memos.append(comment)
            value = nanotons(in_msg.get("value"))
            if success and value > 0:
                transfers.append(Transfer(NATIVE, source, account, value))
            jetton = jetton_message(body)
            if success and jetton is not None and query.asset != NATIVE:
                counted = await self._jetton_transfer(tx, query, account, source, jetton)
                if counted is not None:
                    transfers.append(counted)
                    if counted.asset == query.asset and jetton.op == OP_TRANSFER_NOTIFICATION:
                        # One jetton payment is two transactions (the payee wallet's
                        # internal_transfer, then its owner's notification): both name it, by
                        # the wallet's hash, so that it cannot be consumed once under each.
                        canonical = await self._sender_tx(in_msg, source)
                    if jetton.forward_comment is not None and counted.asset == query.asset:
                        memos.append(jetton.forward_comment)
        confirmations = 1
        if query.min_confirmations > 1:
            last = await self.head("last", at_least=mc_seqno)
            confirmations = max(1, last - mc_seqno + 1)
        ref = tx.get("block_ref") or {}
        return Observation(
            txid=canonical,
            success=success,
            block_ref=f"{mc_seqno}:{ref.get('workchain')}:{ref.get('shard')}:{ref.get('seqno')}",
            block_time=now,
            confirmations=confirmations,
            finality=Finality.FINALIZED,
            transfers=tuple(transfers),
            memos=tuple(memos),
            aliases=(txid,) if canonical != txid else (),
        )

    async def _sender_tx(self, msg: V3Message, sender: str) -> str:
        """The hash of ``sender``'s transaction that sent ``msg`` (a jetton notification)."""
        msg_hash = b64_hex(msg.get("hash"))
        if msg_hash is None:
            raise RpcUnavailable("toncenter message without a hash")
        for parent in await self.api.transactions_by_message(str(msg.get("hash")), "out"):
            outs = parent.get("out_msgs") or []
            if normalize_address(str(parent.get("account"))) == sender and any(
                b64_hex(out.get("hash")) == msg_hash for out in outs
            ):
                parent_hash = b64_hex(parent.get("hash"))
                if parent_hash is not None:
                    return parent_hash
        raise TxNotFound(f"the jetton wallet transaction that sent {msg_hash} is not indexed yet")

    async def _jetton_transfer(
        self, tx: V3Transaction, query: Query, account: str, source: str, jetton: JettonMessage
    ) -> Transfer | None:
        """The jetton movement ``jetton`` proves, if the wallet involved is a genuine one."""
        sender = jetton.sender or ""
        if jetton.op == OP_TRANSFER_NOTIFICATION:  # the owner's side: ``source`` is its wallet
            if source == await self.jetton_wallet(query.asset, account):
                return Transfer(query.asset, sender, account, jetton.amount)
            return Transfer(UNVERIFIED_JETTON + source, sender, account, jetton.amount)
        # internal_transfer: ``account`` is a jetton wallet; whose, the master must confirm.
        if account == await self.jetton_wallet(query.asset, query.pay_to):
            return Transfer(query.asset, sender, query.pay_to, jetton.amount)
        for owner in notified_owners(tx, account):
            if account == await self.jetton_wallet(query.asset, owner):
                return Transfer(query.asset, sender, owner, jetton.amount)
        return None

    async def verify_signature(self, account: str, message: bytes, signature: str) -> bool:
        """Always False: TON payers bind with the comment, not with a signature.

        A TON account is a contract; its public key is only readable through a wallet-specific
        get-method (``get_public_key``), which not every wallet has and which costs a request per
        proof. Offers on TON should use ``binding = "memo"`` (or ``required``/``none``).
        """
        return False
