"""Exceptions of the verifier.

::

    VerifierError                   root of everything raised on purpose
    ├── ConfigError                 bad configuration, found at start
    ├── PluginError                 an adapter entry point that cannot be loaded or is malformed
    ├── TransientError              worth retrying: the job backs off and tries again
    │   ├── TxNotFound              the chain does not know the transaction (yet)
    │   ├── NotFinal                known, but not deep / final enough yet
    │   ├── RpcUnavailable          the node failed, timed out or rate limited us
    │   └── TooManyProofs           the challenge has as many proofs in verification as allowed
    └── FinalError                  a fact: becomes a failure receipt
        ├── InvalidProof            the proof is malformed (``invalid_payload``)
        └── WrongChain              the RPC serves another network than configured

An expected outcome of a verification (a receipt or a failure) is a return value, never an
exception through arq. Adapters map their SDK and HTTP errors to these at their edge.
"""

from __future__ import annotations

from verifier.models import ReasonCode


class VerifierError(Exception):
    """Root of the verifier's exceptions."""


class ConfigError(VerifierError):
    """The configuration is invalid."""


class PluginError(VerifierError):
    """An adapter plugin could not be loaded or does not implement the protocol."""


class TransientError(VerifierError):
    """A condition that may change: retry with backoff until the challenge expires."""

    reason: ReasonCode = ReasonCode.RPC_UNAVAILABLE


class TxNotFound(TransientError):
    reason = ReasonCode.TX_NOT_FOUND


class NotFinal(TransientError):
    reason = ReasonCode.INSUFFICIENT_CONFIRMATIONS


class RpcUnavailable(TransientError):
    reason = ReasonCode.RPC_UNAVAILABLE


class TooManyProofs(TransientError):
    """The challenge already has as many unfinished verifications as the gate allows."""

    reason = ReasonCode.TOO_MANY_PROOFS


class FinalError(VerifierError):
    """A verdict: the proof fails for good with ``reason``."""

    reason: ReasonCode = ReasonCode.INVALID_PAYLOAD

    def __init__(self, message: str, reason: ReasonCode | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class InvalidProof(FinalError):
    reason = ReasonCode.INVALID_PAYLOAD


class WrongChain(FinalError):
    reason = ReasonCode.WRONG_CHAIN
