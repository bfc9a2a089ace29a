"""A local TON ledger: real TL-B transactions built with ``pytoniq-core``, shown as toncenter v3.

No TON node is installable here, so this module plays the chain: each payment becomes a real
``Transaction`` cell (``transaction$0111`` with its ``^[in_msg out_msgs]`` reference, hash update
and an ordinary ``TransactionDescr``) whose inbound message is a real ``Message Any`` cell; the
transaction hash is that cell's representation hash, as on chain. What toncenter v3 would show
for it (``devchain.ton_v3``) is derived from the same cells. Jetton payments follow the standard:
the sender's wallet sends ``internal_transfer`` to the payee's wallet, which notifies its owner with
``transfer_notification`` (both transactions are recorded). The local jetton master derives wallet
addresses deterministically; ``devchain.toncenter`` serves that as ``get_wallet_address``. A wallet
a real master derived elsewhere (e.g. in ``@ton/sandbox``) is registered with
``set_jetton_wallet`` and served instead.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from pytoniq_core import Address, CurrencyCollection, InternalMsgInfo, begin_cell
from pytoniq_core.boc.address import AddressError
from pytoniq_core.tlb.transaction import MessageAny

from devchain.ton_v3 import transaction_cell, transaction_v3

# Op codes of the jetton standard (TEP-74): what the payee's wallet receives, what it tells
# its owner.
OP_INTERNAL_TRANSFER = 0x178D4519
OP_TRANSFER_NOTIFICATION = 0x7362D09C
EXIT_JETTON_UNAUTHORIZED = 707  # what a jetton wallet throws for a transfer it does not trust


def raw_address(address: Any) -> str:
    """``<workchain>:<64 lowercase hex>`` of a ``pytoniq_core.Address``, or of an address in the
    raw or any user-friendly form (url-safe or standard base64); ``ValueError`` otherwise."""
    try:
        if not isinstance(address, Address):
            address = Address(str(address).strip().replace("+", "-").replace("/", "_"))
        hash_part = bytes(address.hash_part)
    except (AddressError, ValueError, IndexError) as exc:
        raise ValueError(f"{address!r} is not a TON address") from exc
    if len(hash_part) != 32:
        raise ValueError(f"{address!r} is not a TON address")
    return f"{address.wc}:{hash_part.hex()}"


def account_for(label: str, workchain: int = 0) -> str:
    """A deterministic raw address for a named local account."""
    return f"{workchain}:{hashlib.sha256(label.encode()).hexdigest()}"


def comment_cell(text: str | None) -> Any:
    """A text comment body (op 0 + snake UTF-8), or an empty body."""
    if text is None:
        return begin_cell().end_cell()
    return begin_cell().store_uint(0, 32).store_snake_string(text).end_cell()


def _payload(builder: Any, comment: str | None) -> Any:
    """``forward_payload:(Either Cell ^Cell)``, the comment kept in a reference."""
    if comment is None:
        return builder.store_bit(0)
    return builder.store_bit(1).store_ref(comment_cell(comment))


def internal_transfer_body(
    amount: int, sender: str, comment: str | None, forward_ton: int = 1
) -> Any:
    b = begin_cell().store_uint(OP_INTERNAL_TRANSFER, 32).store_uint(int(time.time()), 64)
    b.store_coins(amount).store_address(sender).store_address(sender).store_coins(forward_ton)
    return _payload(b, comment).end_cell()


def notification_body(amount: int, sender: str, comment: str | None) -> Any:
    b = begin_cell().store_uint(OP_TRANSFER_NOTIFICATION, 32).store_uint(int(time.time()), 64)
    b.store_coins(amount).store_address(sender)
    return _payload(b, comment).end_cell()


@dataclass
class Recorded:
    """One transaction: its cell, its v3 view, and the server's switches for it."""

    hash_hex: str
    account: str
    now: int
    lt: int
    cell: Any
    v3: dict[str, Any]
    mc_block_seqno: int | None
    out_cells: list[Any]
    hidden: bool = False


@dataclass
class TonLedger:
    """Transactions of a local TON network, indexed by hash and by account."""

    global_id: int = -3
    mc_seqno: int = 40_000_000
    txs: dict[str, Recorded] = field(default_factory=dict)
    by_account: dict[str, list[str]] = field(default_factory=dict)
    wallets: dict[tuple[str, str], str] = field(default_factory=dict)
    _lt: itertools.count[int] = field(default_factory=lambda: itertools.count(50_000_000_000_001))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def jetton_wallet(self, master: str, owner: str) -> str:
        """The wallet the jetton ``master`` derives for ``owner``: the registered one, if any,
        else the local master's deterministic derivation."""
        key = (raw_address(master), raw_address(owner))
        registered = self.wallets.get(key)
        if registered is not None:
            return registered
        return account_for(f"jetton-wallet:{master}:{owner}")

    def set_jetton_wallet(self, master: str, owner: str, wallet: str) -> None:
        """Register the wallet a real ``master`` derives for ``owner`` (its
        ``get_wallet_address`` answer, read elsewhere)."""
        key = (raw_address(master), raw_address(owner))
        self.wallets[key] = raw_address(wallet)

    # -- payments --------------------------------------------------------------------------

    def pay_ton(
        self,
        src: str,
        dst: str,
        amount: int,
        comment: str | None = None,
        *,
        bounced: bool = False,
        aborted: bool = False,
        pending: bool = False,
        hidden: bool = False,
        now: int | None = None,
    ) -> str:
        """Record ``dst`` receiving ``amount`` nanotons from ``src``; return the tx hash (hex)."""
        body = comment_cell(comment)
        if bounced:  # a bounced message starts with 0xffffffff and the original body's prefix
            body = begin_cell().store_uint(0xFFFFFFFF, 32).store_cell(body).end_cell()
        return self._record(
            dst,
            src,
            amount,
            body,
            bounced=bounced,
            aborted=aborted,
            pending=pending,
            hidden=hidden,
            now=now,
        ).hash_hex

    def pay_jetton(
        self,
        master: str,
        src_owner: str,
        dst_owner: str,
        amount: int,
        comment: str | None = None,
        *,
        forward_ton: int = 1,
        aborted: bool = False,
        pending: bool = False,
        now: int | None = None,
    ) -> tuple[str, str | None]:
        """A standard jetton transfer; the payee wallet's tx hash and its owner's (if notified)."""
        src_wallet = self.jetton_wallet(master, src_owner)
        dst_wallet = self.jetton_wallet(master, dst_owner)
        notify = None
        if not aborted and forward_ton > 0:
            notify = (dst_owner, forward_ton, notification_body(amount, src_owner, comment))
        wallet_tx = self._record(
            dst_wallet,
            src_wallet,
            50_000_000 + forward_ton,  # fees, and the TON the payee wallet forwards
            internal_transfer_body(amount, src_owner, comment, forward_ton),
            aborted=aborted,
            pending=pending,
            now=now,
            notify=notify,
        )
        owner_tx = None
        if notify is not None:
            out = wallet_tx.out_cells[0]
            owner_tx = self._record_message(dst_owner, out, pending=pending, now=now).hash_hex
        return wallet_tx.hash_hex, owner_tx

    def fake_notification(
        self, fake_wallet: str, src_owner: str, dst_owner: str, amount: int, comment: str | None
    ) -> str:
        """A ``transfer_notification`` sent by a contract that is no wallet of the master."""
        body = notification_body(amount, src_owner, comment)
        return self._record(dst_owner, fake_wallet, 1, body).hash_hex

    def insert(self, cell: Any, v3: dict[str, Any], *, pending: bool = False) -> str:
        """Record a transaction produced elsewhere (e.g. executed by ``@ton/sandbox``) as given:
        its cell and its toncenter v3 view; unless ``pending``, it goes in the next masterchain
        block. Return its hash (hex)."""
        with self._lock:
            hash_hex = bytes(cell.hash).hex()
            account = raw_address(str(v3["account"]))
            self.mc_seqno += 1
            mc = None if pending else self.mc_seqno
            v3 = {**v3, "mc_block_seqno": mc}
            rec = Recorded(hash_hex, account, int(v3["now"]), int(v3["lt"]), cell, v3, mc, [])
            self.txs[hash_hex] = rec
            self.by_account.setdefault(account, []).append(hash_hex)
            return hash_hex

    # -- switches --------------------------------------------------------------------------

    def finalize(self, hash_hex: str) -> None:
        """Include a pending transaction in the next masterchain block."""
        with self._lock:
            rec = self.txs[hash_hex]
            self.mc_seqno += 1
            rec.mc_block_seqno = self.mc_seqno
            rec.v3["mc_block_seqno"] = self.mc_seqno

    def set_hidden(self, hash_hex: str, hidden: bool) -> None:
        """Hide a transaction from the index (not yet indexed) or show it."""
        with self._lock:
            self.txs[hash_hex].hidden = hidden

    # -- building ---------------------------------------------------------------------------

    def _message(self, src: str, dst: str, value: int, body: Any, bounced: bool, now: int) -> Any:
        info = InternalMsgInfo(
            ihr_disabled=True,
            bounce=not bounced,
            bounced=bounced,
            src=Address(src),
            dest=Address(dst),
            value=CurrencyCollection(value),
            ihr_fee=0,
            fwd_fee=266_669,
            created_lt=next(self._lt),
            created_at=now,
        )
        return MessageAny(info, None, body).serialize()

    def _record(
        self, account: str, src: str, value: int, body: Any, *, bounced: bool = False, **how: Any
    ) -> Recorded:
        """``account`` receiving ``value`` nanotons with ``body`` from ``src``; ``how`` as for
        ``_record_message``."""
        now = how.pop("now", None)
        at = int(time.time()) if now is None else now
        msg = self._message(src, account, value, body, bounced, at)
        return self._record_message(account, msg, now=at, **how)

    def _record_message(
        self,
        account: str,
        in_msg: Any,
        *,
        aborted: bool = False,
        pending: bool = False,
        hidden: bool = False,
        now: int | None = None,
        notify: tuple[str, int, Any] | None = None,
    ) -> Recorded:
        at = int(time.time()) if now is None else now
        with self._lock:
            outs = []
            if notify is not None:
                outs.append(self._message(account, notify[0], notify[1], notify[2], False, at))
            lt = next(self._lt)
            prev = self.by_account.get(account, [])
            prev_rec = self.txs[prev[-1]] if prev else None
            cell = transaction_cell(
                account,
                lt,
                prev_rec,
                at,
                in_msg,
                outs,
                success=not aborted,
                exit_code=EXIT_JETTON_UNAUTHORIZED if aborted else 0,
            )
            hash_hex = bytes(cell.hash).hex()
            self.mc_seqno += 1
            mc = None if pending else self.mc_seqno
            v3 = transaction_v3(cell, account, in_msg, outs, mc, self.mc_seqno)
            rec = Recorded(hash_hex, account, at, lt, cell, v3, mc, outs, hidden)
            self.txs[hash_hex] = rec
            self.by_account.setdefault(account, []).append(hash_hex)
            return rec
