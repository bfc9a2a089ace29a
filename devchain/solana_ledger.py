"""A local Solana ledger: LiteSVM executes real transactions of the real SPL programs.

``solders.litesvm`` bundles SPL Token, Token-2022, Associated Token Account and both Memo
programs, but has no JSON-RPC and no notion of commitment. This ledger executes each transaction,
snapshots the accounts it touches before and after, and keeps the result rendered as a real
``getTransaction`` jsonParsed result (``devchain.solana_render``) together with a commitment
level that tests move on (``hidden`` → ``processed`` → ``confirmed`` → ``finalized``).
``devchain.solana_server`` serves it.
"""

from __future__ import annotations

import hashlib
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from solders.account import Account
from solders.address_lookup_table_account import AddressLookupTableAccount
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.message import Message, MessageV0
from solders.pubkey import Pubkey
from solders.system_program import ID as SYSTEM_ID
from solders.system_program import CreateAccountParams, TransferParams, create_account, transfer
from solders.token.associated import get_associated_token_address
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata, TransactionMetadata
from solders.transaction_status import (
    InstructionErrorCustom,
    TransactionErrorInstructionError,
)

from devchain.solana_render import ATA, MEMO, TOKEN, TOKEN_2022, parse_instruction, ui_amount

Commitment = Literal["hidden", "processed", "confirmed", "finalized"]
LEVELS: tuple[Commitment, ...] = ("hidden", "processed", "confirmed", "finalized")
# What this local cluster answers to getGenesisHash: its CAIP-2 id is solana:<first 32 chars>.
GENESIS_HASH = str(Hash(hashlib.sha256(b"x402-verifier local LiteSVM cluster").digest()))
NETWORK = f"solana:{GENESIS_HASH[:32]}"
ALT_PROGRAM = Pubkey.from_string("AddressLookupTab1e1111111111111111111111111")
_TOKEN_PROGRAMS = {TOKEN, TOKEN_2022}


@dataclass
class Recorded:
    signature: str
    slot: int
    result: dict[str, Any]  # the getTransaction result
    err: Any
    commitment: Commitment = "finalized"


@dataclass
class Mint:
    address: Pubkey
    program: Pubkey
    decimals: int
    authority: Keypair = field(repr=False)


def _error_json(err: Any) -> Any:
    """A TransactionError as the RPC writes it (``{"InstructionError": [0, {"Custom": 1}]}``)."""
    if isinstance(err, TransactionErrorInstructionError):
        inner = err.err
        detail: Any = (
            {"Custom": inner.code}
            if isinstance(inner, InstructionErrorCustom)
            else (str(inner).split(".")[-1])
        )
        return {"InstructionError": [err.index, detail]}
    return str(err).split(".")[-1]


class SolanaLedger:
    """LiteSVM plus the history of the transactions it executed, with their commitment."""

    def __init__(self) -> None:
        self.svm = LiteSVM()
        self.slot = 1000
        self.svm.warp_to_slot(self.slot)
        self.records: dict[str, Recorded] = {}
        self.tables: dict[Pubkey, list[Pubkey]] = {}
        self.lock = threading.Lock()
        self.funder = self.wallet(10**12)

    # -- accounts --------------------------------------------------------------------------

    def wallet(self, lamports: int = 10 * 10**9) -> Keypair:
        key = Keypair()
        self.svm.airdrop(key.pubkey(), lamports)
        return key

    def create_mint(self, decimals: int = 6, *, program: str = TOKEN, fee_bps: int = 0) -> Mint:
        """A new mint; with ``fee_bps`` a Token-2022 mint with a transfer fee (max fee huge)."""
        mint, owner = Keypair(), Pubkey.from_string(program)
        # A mint with the TransferFeeConfig extension: 165 + account type + TLV header + 108.
        space = 278 if fee_bps else 82
        ixs = [self._create_account_ix(mint.pubkey(), space, owner)]
        meta = [AccountMeta(mint.pubkey(), False, True)]
        if fee_bps:
            authority = b"\1" + bytes(self.funder.pubkey())
            data = bytes([26, 0]) + authority + authority + struct.pack("<HQ", fee_bps, 2**63)
            ixs.append(Instruction(owner, data, meta))
        data = bytes([20, decimals]) + bytes(self.funder.pubkey()) + b"\0"
        ixs.append(Instruction(owner, data, meta))
        self.execute(ixs, [self.funder, mint])
        return Mint(mint.pubkey(), owner, decimals, self.funder)

    def _create_account_ix(self, account: Pubkey, space: int, owner: Pubkey) -> Instruction:
        """A rent-exempt ``account`` of ``space`` bytes owned by ``owner``, paid by the funder."""
        params = CreateAccountParams(
            from_pubkey=self.funder.pubkey(),
            to_pubkey=account,
            lamports=self.svm.minimum_balance_for_rent_exemption(space),
            space=space,
            owner=owner,
        )
        return create_account(params)

    def ata(self, owner: Pubkey, mint: Mint) -> Pubkey:
        return get_associated_token_address(owner, mint.address, mint.program)

    def create_ata_ix(self, payer: Pubkey, owner: Pubkey, mint: Mint) -> Instruction:
        accounts = [
            AccountMeta(payer, True, True),
            AccountMeta(self.ata(owner, mint), False, True),
            AccountMeta(owner, False, False),
            AccountMeta(mint.address, False, False),
            AccountMeta(SYSTEM_ID, False, False),
            AccountMeta(mint.program, False, False),
        ]
        return Instruction(Pubkey.from_string(ATA), b"\1", accounts)

    def open_account(self, owner: Pubkey, mint: Mint, amount: int = 0) -> Pubkey:
        """The owner's associated token account (created by the real ATA program), funded."""
        ixs = [self.create_ata_ix(self.funder.pubkey(), owner, mint)]
        if amount:
            data = bytes([7]) + struct.pack("<Q", amount)
            metas = [
                AccountMeta(mint.address, False, True),
                AccountMeta(self.ata(owner, mint), False, True),
                AccountMeta(mint.authority.pubkey(), True, False),
            ]
            ixs.append(Instruction(mint.program, data, metas))
        self.execute(ixs, [self.funder])
        return self.ata(owner, mint)

    def open_plain_account(self, owner: Pubkey, mint: Mint) -> Pubkey:
        """A token account of ``owner`` that is not its associated one (a fresh keypair)."""
        account = Keypair()
        space = 165 if mint.program == Pubkey.from_string(TOKEN) else 178
        ixs = [
            self._create_account_ix(account.pubkey(), space, mint.program),
            Instruction(
                mint.program,
                bytes([18]) + bytes(owner),
                [
                    AccountMeta(account.pubkey(), False, True),
                    AccountMeta(mint.address, False, False),
                ],
            ),
        ]
        self.execute(ixs, [self.funder, account])
        return account.pubkey()

    def lookup_table(self, addresses: Sequence[Pubkey]) -> AddressLookupTableAccount:
        """An address lookup table holding ``addresses``, written directly as an account."""
        key = Keypair().pubkey()
        meta = struct.pack("<IQQB", 1, 2**64 - 1, 0, 0) + b"\1" + bytes(self.funder.pubkey())
        data = meta + b"\0\0" + b"".join(bytes(a) for a in addresses)
        lamports = self.svm.minimum_balance_for_rent_exemption(len(data))
        self.svm.set_account(key, Account(lamports, data, ALT_PROGRAM, False, 0))
        self.tables[key] = list(addresses)
        return AddressLookupTableAccount(key, list(addresses))

    # -- instructions ----------------------------------------------------------------------

    @staticmethod
    def memo_ix(text: str, program: str = MEMO) -> Instruction:
        return Instruction(Pubkey.from_string(program), text.encode(), [])

    @staticmethod
    def sol_transfer_ix(sender: Pubkey, to: Pubkey, lamports: int) -> Instruction:
        return transfer(TransferParams(from_pubkey=sender, to_pubkey=to, lamports=lamports))

    def token_transfer_ix(
        self,
        mint: Mint,
        source: Pubkey,
        destination: Pubkey,
        authority: Pubkey,
        amount: int,
        *,
        checked: bool = True,
    ) -> Instruction:
        if checked:
            data = bytes([12]) + struct.pack("<QB", amount, mint.decimals)
            metas = [
                AccountMeta(source, False, True),
                AccountMeta(mint.address, False, False),
                AccountMeta(destination, False, True),
                AccountMeta(authority, True, False),
            ]
        else:
            data = bytes([3]) + struct.pack("<Q", amount)
            metas = [
                AccountMeta(source, False, True),
                AccountMeta(destination, False, True),
                AccountMeta(authority, True, False),
            ]
        return Instruction(mint.program, data, metas)

    @staticmethod
    def set_owner_ix(mint: Mint, account: Pubkey, owner: Pubkey, new_owner: Pubkey) -> Instruction:
        """SetAuthority(AccountOwner): ``owner`` hands the token account over to ``new_owner``."""
        data = bytes([6, 2, 1]) + bytes(new_owner)
        metas = [AccountMeta(account, False, True), AccountMeta(owner, True, False)]
        return Instruction(mint.program, data, metas)

    # -- execution -------------------------------------------------------------------------

    def execute(
        self,
        instructions: Sequence[Instruction],
        signers: Sequence[Keypair],
        *,
        tables: Sequence[AddressLookupTableAccount] = (),
        legacy: bool = False,
        commitment: Commitment = "finalized",
        allow_failure: bool = False,
    ) -> str:
        """Execute for real and record; returns the base58 signature.

        A failing transaction raises unless ``allow_failure``: then it is recorded with its
        ``meta.err``, as a cluster includes failed transactions in blocks.
        """
        payer = signers[0].pubkey()
        blockhash = self.svm.latest_blockhash()
        message: Message | MessageV0
        if legacy:
            message = Message.new_with_blockhash(list(instructions), payer, blockhash)
        else:
            message = MessageV0.try_compile(payer, list(instructions), list(tables), blockhash)
        tx = VersionedTransaction(message, list(signers))
        keys, writable, loaded = self._keys(message)
        header = message.header
        before = self._snapshot(keys)
        outcome = self.svm.send_transaction(tx)
        after = self._snapshot(keys)
        if isinstance(outcome, FailedTransactionMetadata):
            err = _error_json(outcome.err())
            meta: TransactionMetadata = outcome.meta()
            if not allow_failure:
                raise RuntimeError(f"transaction failed: {err}: {meta.logs()}")
        else:
            err, meta = None, outcome
        signature = str(tx.signatures[0])
        self.slot += 1
        self.svm.warp_to_slot(self.slot)
        self.svm.expire_blockhash()
        signers_n = header.num_required_signatures
        account_keys = [
            {
                "pubkey": k,
                "signer": i < signers_n,
                "source": "transaction" if i < len(message.account_keys) else "lookupTable",
                "writable": writable[i],
            }
            for i, k in enumerate(keys)
        ]

        def render(index: int, ix: Any, height: int | None) -> dict[str, Any]:
            accounts = [keys[a] for a in bytes(ix.accounts)]
            return parse_instruction(keys[ix.program_id_index], accounts, bytes(ix.data), height)

        inner = [
            {
                "index": i,
                "instructions": [render(i, x.instruction(), x.stack_height()) for x in group],
            }
            for i, group in enumerate(meta.inner_instructions())
            if group
        ]
        result: dict[str, Any] = {
            "blockTime": int(time.time()),
            "meta": {
                "computeUnitsConsumed": meta.compute_units_consumed(),
                "err": err,
                "fee": meta.fee(),
                "innerInstructions": inner,
                "loadedAddresses": loaded,
                "logMessages": list(meta.logs()),
                "postBalances": [lamports for lamports, _ in after],
                "postTokenBalances": [
                    {"accountIndex": i, **t} for i, (_, t) in enumerate(after) if t
                ],
                "preBalances": [lamports for lamports, _ in before],
                "preTokenBalances": [
                    {"accountIndex": i, **t} for i, (_, t) in enumerate(before) if t
                ],
                "rewards": [],
                "status": {"Ok": None} if err is None else {"Err": err},
            },
            "slot": self.slot,
            "transaction": {
                "message": {
                    "accountKeys": account_keys,
                    "addressTableLookups": None
                    if legacy
                    else [
                        {
                            "accountKey": str(lookup.account_key),
                            "readonlyIndexes": list(bytes(lookup.readonly_indexes)),
                            "writableIndexes": list(bytes(lookup.writable_indexes)),
                        }
                        for lookup in message.address_table_lookups  # type: ignore[union-attr]
                    ],
                    "instructions": [
                        render(i, ix, None) for i, ix in enumerate(message.instructions)
                    ],
                    "recentBlockhash": str(blockhash),
                },
                "signatures": [str(s) for s in tx.signatures],
            },
            "version": "legacy" if legacy else 0,
        }
        with self.lock:
            self.records[signature] = Recorded(signature, self.slot, result, err, commitment)
        return signature

    def set_commitment(self, signature: str, commitment: Commitment) -> None:
        with self.lock:
            self.records[signature].commitment = commitment

    def _keys(
        self, message: Message | MessageV0
    ) -> tuple[list[str], list[bool], dict[str, list[str]]]:
        static = list(message.account_keys)
        header = message.header
        n = len(static)
        signed, ro_signed, ro_unsigned = (
            header.num_required_signatures,
            header.num_readonly_signed_accounts,
            header.num_readonly_unsigned_accounts,
        )
        writable = [i < signed - ro_signed or signed <= i < n - ro_unsigned for i in range(n)]
        loaded_w: list[Pubkey] = []
        loaded_r: list[Pubkey] = []
        if isinstance(message, MessageV0):
            for lookup in message.address_table_lookups:
                table = self.tables[lookup.account_key]
                loaded_w += [table[i] for i in bytes(lookup.writable_indexes)]
                loaded_r += [table[i] for i in bytes(lookup.readonly_indexes)]
        keys = [str(k) for k in (*static, *loaded_w, *loaded_r)]
        writable += [True] * len(loaded_w) + [False] * len(loaded_r)
        loaded = {"readonly": [str(k) for k in loaded_r], "writable": [str(k) for k in loaded_w]}
        return keys, writable, loaded

    def _snapshot(self, keys: list[str]) -> list[tuple[int, dict[str, Any] | None]]:
        """Per key: lamports, and the token balance entry if it is an initialized token account."""
        out: list[tuple[int, dict[str, Any] | None]] = []
        for key in keys:
            account = self.svm.get_account(Pubkey.from_string(key))
            if account is None:
                out.append((0, None))
                continue
            data, program = bytes(account.data), str(account.owner)
            token: dict[str, Any] | None = None
            is_account = len(data) == 165 or (len(data) > 165 and data[165] == 2)
            if program in _TOKEN_PROGRAMS and is_account and data[108] in (1, 2):
                mint = Pubkey.from_bytes(data[:32])
                mint_account = self.svm.get_account(mint)
                decimals = bytes(mint_account.data)[44] if mint_account else 0
                token = {
                    "mint": str(mint),
                    "owner": str(Pubkey.from_bytes(data[32:64])),
                    "programId": program,
                    "uiTokenAmount": ui_amount(struct.unpack_from("<Q", data, 64)[0], decimals),
                }
            out.append((account.lamports, token))
        return out
