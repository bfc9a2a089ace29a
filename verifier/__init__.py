"""x402 on-chain payment proof verifier: the chain-agnostic core.

Web servers use ``Gate`` (or the ASGI app in ``verifier.asgi``); workers run
``verifier.worker``; chain adapters implement ``verifier.adapter.ChainAdapter`` and register in the
entry point group ``verifier.chains``. This package never imports a chain SDK.
"""

from verifier.adapter import ChainAdapter, Query
from verifier.challenge import ChallengeSigner, Terms, memo_for, proof_message
from verifier.errors import (
    ConfigError,
    FinalError,
    InvalidProof,
    NotFinal,
    PluginError,
    RpcUnavailable,
    TransientError,
    TxNotFound,
    VerifierError,
    WrongChain,
)
from verifier.gate import Gate, Offer
from verifier.models import (
    SCHEME,
    Accept,
    AcceptExtra,
    Binding,
    Failure,
    Finality,
    Observation,
    PaymentPayload,
    PaymentRequired,
    ProofBody,
    ProofExtension,
    ReasonCode,
    Receipt,
    ResourceInfo,
    Transfer,
)
from verifier.settings import Settings, load_settings

__all__ = [
    "SCHEME",
    "Accept",
    "AcceptExtra",
    "Binding",
    "ChainAdapter",
    "ChallengeSigner",
    "ConfigError",
    "Failure",
    "FinalError",
    "Finality",
    "Gate",
    "InvalidProof",
    "NotFinal",
    "Observation",
    "Offer",
    "PaymentPayload",
    "PaymentRequired",
    "PluginError",
    "ProofBody",
    "ProofExtension",
    "Query",
    "ReasonCode",
    "Receipt",
    "ResourceInfo",
    "RpcUnavailable",
    "Settings",
    "Terms",
    "Transfer",
    "TransientError",
    "TxNotFound",
    "VerifierError",
    "WrongChain",
    "load_settings",
    "memo_for",
    "proof_message",
]
