"""Typed models for everything that crosses HTTP or Redis.

Wire models (``Accept``, ``PaymentRequired``, ``PaymentPayload``, ``Receipt``, ``Failure``) use the
x402 v2 camelCase field names on the wire and are validated on the way in. Unknown fields are kept
(``extra="allow"``) where the protocol lets clients and servers add their own, so that a proof
echoes the offer it answers byte for byte.

``Observation`` and ``Transfer`` are what a chain adapter reports about one transaction; the core
compares them with the offer in ``verifier.matching``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

SCHEME = "onchain-proof"
# The ratified x402 scheme of stock clients: an EIP-3009 authorization the worker pool settles.
SCHEME_EXACT = "exact"
SCHEMES = (SCHEME, SCHEME_EXACT)

# The longest a challenge may live (an offer's maxTimeoutSeconds), whatever made the offer.
MAX_CHALLENGE_SECONDS = 7 * 86400
# Generous for any real header, small enough that a hostile one costs nothing to reject.
MAX_HEADER_BYTES = 16 * 1024

ShortStr = Annotated[str, StringConstraints(min_length=1, max_length=256, strip_whitespace=True)]
Amount = Annotated[str, StringConstraints(pattern=r"^(0|[1-9][0-9]{0,77})$")]


class ReasonCode(StrEnum):
    """Why a proof was not (yet) accepted. Stable, documented in the README."""

    # transient: the job keeps retrying until the challenge expires
    TX_NOT_FOUND = "tx_not_found"
    INSUFFICIENT_CONFIRMATIONS = "insufficient_confirmations"
    RPC_UNAVAILABLE = "rpc_unavailable"
    TOO_MANY_PROOFS = "too_many_proofs"
    # final
    INVALID_PAYLOAD = "invalid_payload"
    INVALID_NETWORK = "invalid_network"
    INVALID_SCHEME = "invalid_scheme"
    NONCE_UNKNOWN = "nonce_unknown"
    PAYMENT_EXPIRED = "payment_expired"
    NONCE_ALREADY_USED = "nonce_already_used"
    TX_ALREADY_USED = "tx_already_used"
    # the payment counted and has had what it bought (``verifier.delivery``)
    PAYMENT_ALREADY_REDEEMED = "payment_already_redeemed"
    TX_REVERTED = "tx_reverted"
    WRONG_RECIPIENT = "wrong_recipient"
    WRONG_ASSET = "wrong_asset"
    AMOUNT_TOO_LOW = "amount_too_low"
    TRANSFER_NOT_FOUND = "transfer_not_found"
    BINDING_MISSING = "binding_missing"
    BINDING_MISMATCH = "binding_mismatch"
    TX_BEFORE_CHALLENGE = "tx_before_challenge"
    WRONG_CHAIN = "wrong_chain"
    # the exact scheme (an EIP-3009 authorization the worker settles): nothing is broadcast
    AUTHORIZATION_INVALID = "authorization_invalid"
    AUTHORIZATION_EXPIRED = "authorization_expired"
    AUTHORIZATION_NOT_YET_VALID = "authorization_not_yet_valid"
    AUTHORIZATION_ALREADY_USED = "authorization_already_used"
    INSUFFICIENT_BALANCE = "insufficient_balance"
    SETTLEMENT_REFUSED = "settlement_refused"

    @property
    def transient(self) -> bool:
        return self in TRANSIENT_REASONS


TRANSIENT_REASONS = frozenset(
    {
        ReasonCode.TX_NOT_FOUND,
        ReasonCode.INSUFFICIENT_CONFIRMATIONS,
        ReasonCode.RPC_UNAVAILABLE,
        ReasonCode.TOO_MANY_PROOFS,
    }
)


class Binding(StrEnum):
    """How a proof must be tied to its challenge (rule 5 of the design).

    ``memo``: the transaction carries the memo commitment, or the proof is signed; the name
    says which one the payer is expected to use. ``required`` and ``memo`` are equally strict:
    either kind of binding counts. ``signature``: only a payer signature counts. ``none``: a fresh
    unbound proof is accepted too (the receipt then says ``bound: false``).
    """

    REQUIRED = "required"
    MEMO = "memo"
    SIGNATURE = "signature"
    NONE = "none"


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="allow")


class AcceptExtra(_Wire):
    nonce: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    memo: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    decimals: int | None = Field(default=None, ge=0, le=36)
    symbol: str | None = Field(default=None, max_length=32)
    amount_formatted: str | None = Field(default=None, alias="amountFormatted", max_length=100)
    min_confirmations: int = Field(default=1, alias="minConfirmations", ge=1, le=10_000)
    binding: Binding = Binding.REQUIRED
    # exact: the token's EIP-712 domain, which the payer signs over
    name: str | None = Field(default=None, max_length=100)
    version: str | None = Field(default=None, max_length=32)


class Accept(_Wire):
    """One payment rail the gate takes (an entry of ``accepts``)."""

    scheme: ShortStr
    network: ShortStr
    asset: ShortStr
    amount: Amount
    pay_to: ShortStr = Field(alias="payTo")
    max_timeout_seconds: int = Field(alias="maxTimeoutSeconds", ge=1, le=MAX_CHALLENGE_SECONDS)
    extra: AcceptExtra


class ResourceInfo(_Wire):
    url: Annotated[str, StringConstraints(min_length=1, max_length=2048)]
    description: str | None = None
    mime_type: str | None = Field(default=None, alias="mimeType")


class PaymentRequired(_Wire):
    x402_version: Literal[2] = Field(default=2, alias="x402Version")
    error: str | None = None
    resource: ResourceInfo
    accepts: list[Accept]
    extensions: dict[str, Any] | None = None


class ProofBody(_Wire):
    nonce: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    tx_hash: Annotated[
        str, StringConstraints(min_length=1, max_length=256, strip_whitespace=True)
    ] = Field(alias="txHash")
    signature: Annotated[str, StringConstraints(max_length=4096)] | None = None


Hex = Annotated[str, StringConstraints(pattern=r"^0x[0-9a-fA-F]*$", max_length=4096)]
Address = Annotated[str, StringConstraints(pattern=r"^0x[0-9a-fA-F]{40}$")]
Uint = Annotated[str, StringConstraints(pattern=r"^(0|[1-9][0-9]{0,77})$")]


class Authorization(_Wire):
    """An EIP-3009 ``TransferWithAuthorization`` as the x402 ``exact`` scheme sends it."""

    from_: Address = Field(alias="from")
    to: Address
    value: Uint
    valid_after: Uint = Field(alias="validAfter")
    valid_before: Uint = Field(alias="validBefore")
    nonce: Annotated[str, StringConstraints(pattern=r"^0x[0-9a-fA-F]{64}$")]


class ExactBody(_Wire):
    """The ``payload`` of an ``exact`` payment: the payer's signed authorization."""

    signature: Hex
    authorization: Authorization


class PaymentPayload(_Wire):
    """The proof a client sends in ``PAYMENT-SIGNATURE`` (or ``X-PAYMENT``).

    ``payload`` is read by the scheme of the offer it answers: a ``ProofBody`` (a transaction
    the client sent) for ``onchain-proof``, an ``ExactBody`` (an authorization the worker
    settles) for ``exact``. Either way the challenge nonce is the offer's ``extra.nonce``.
    """

    x402_version: Literal[1, 2] = Field(default=2, alias="x402Version")
    accepted: Accept
    payload: ProofBody | ExactBody
    resource: ResourceInfo | None = None

    @model_validator(mode="before")
    @classmethod
    def _payload_of_scheme(cls, data: Any) -> Any:
        if isinstance(data, dict):
            accepted, payload = data.get("accepted"), data.get("payload")
            if isinstance(accepted, dict) and isinstance(payload, dict):
                body = ExactBody if accepted.get("scheme") == SCHEME_EXACT else ProofBody
                data = {**data, "payload": body.model_validate(payload)}
        return data

    @model_validator(mode="after")
    def _nonce_matches_offer(self) -> PaymentPayload:
        if isinstance(self.payload, ProofBody) and self.payload.nonce != self.accepted.extra.nonce:
            raise ValueError("payload.nonce differs from accepted.extra.nonce")
        return self

    @property
    def nonce(self) -> str:
        """The challenge nonce this payment answers."""
        return self.accepted.extra.nonce

    @property
    def proof(self) -> ProofBody:
        """The ``onchain-proof`` payload; ``ValueError`` for an ``exact`` payment."""
        if not isinstance(self.payload, ProofBody):
            raise ValueError("an exact payment carries an authorization, not a transaction")
        return self.payload

    @property
    def exact(self) -> ExactBody:
        """The ``exact`` payload; ``ValueError`` for an ``onchain-proof`` one."""
        if not isinstance(self.payload, ExactBody):
            raise ValueError("an onchain-proof payment carries a transaction, not an authorization")
        return self.payload


class ProofExtension(_Wire):
    """What a receipt adds under ``extensions["onchain-proof"]``: what the chain showed."""

    paid_amount: str = Field(alias="paidAmount")  # all paid to the payee, overpayment included
    confirmations: int
    block_ref: str = Field(alias="blockRef")
    block_time: int = Field(alias="blockTime")  # unix seconds
    bound: bool  # a memo commitment or a payer signature tied the transaction to the challenge
    consumption_key: str = Field(alias="consumptionKey")  # <CAIP-2>:<canonical txid>


class Receipt(_Wire):
    """A payment that counted. Superset of the x402 v2 SettleResponse.

    Our receipts carry a ``ProofExtension`` under ``extensions["onchain-proof"]``; the field stays
    a plain mapping so that a receipt from elsewhere, with other extensions, reads back as sent.
    """

    success: Literal[True] = True
    scheme: str = SCHEME
    network: str
    transaction: str
    asset: str
    amount: str
    payer: str
    pay_to: str = Field(alias="payTo")
    verified_at: str = Field(alias="verifiedAt")
    nonce: str
    extensions: dict[str, Any] = Field(default_factory=dict)


class Failure(_Wire):
    """A proof that did not count (yet, when ``transient``)."""

    success: Literal[False] = False
    error_reason: ReasonCode = Field(alias="errorReason")
    error_message: str = Field(default="", alias="errorMessage")
    transient: bool = False
    transaction: str = ""
    network: str = ""
    nonce: str = ""


Outcome = Receipt | Failure


def failure(
    reason: ReasonCode, message: str, *, network: str = "", nonce: str = "", transaction: str = ""
) -> Failure:
    return Failure(
        error_reason=reason,
        error_message=message[:500],
        transient=reason.transient,
        network=network,
        nonce=nonce,
        transaction=transaction,
    )


class Finality(StrEnum):
    """How final an adapter saw the transaction."""

    PENDING = "pending"  # known but not yet in a block, or not deep enough
    CONFIRMED = "confirmed"
    FINALIZED = "finalized"


@dataclass(frozen=True, slots=True)
class Transfer:
    """One movement of value inside a transaction, with normalized addresses.

    ``sender`` is the owner whose funds were debited for it (the ``from`` of an ERC-20 log, the
    owner of a debited token account, the source of a payment operation), never whoever merely
    signed, paid the fee for or submitted the transaction; ``""`` when the chain does not say
    whose funds these were. Only a sender's signature can bind a proof (``verifier.matching``).
    """

    asset: str  # normalized asset id, or "native"
    sender: str
    recipient: str
    amount: int


@dataclass(frozen=True, slots=True)
class Observation:
    """What one chain says about one transaction. Produced by an adapter, judged by the core."""

    txid: str  # canonical transaction id (the consumption key uses it)
    success: bool
    block_ref: str
    block_time: int  # unix seconds
    confirmations: int
    finality: Finality
    transfers: tuple[Transfer, ...]
    # What the transaction carries as memos, as the chain allows: hex for binary data (an EVM
    # calldata suffix, a Stellar memo hash), text for memos and comments. Those of a
    # commitment's shape bind the transaction to that challenge only (``verifier.matching``).
    memos: tuple[str, ...] = ()
    # Other ids of this same payment (a fee-bump outer hash, a TON notification transaction),
    # for logs and audits; the consumption key uses ``txid`` only.
    aliases: tuple[str, ...] = ()
