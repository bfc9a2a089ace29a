"""A verification job as the gate enqueues it, for tests of the queue and the pipeline."""

from __future__ import annotations

from verifier.challenge import ChallengeSigner, Terms, memo_for
from verifier.models import SCHEME, Accept, AcceptExtra, Binding, PaymentPayload, ProofBody
from verifier.queue import VerifyJob, job_key
from verifier.settings import Settings

RESOURCE = "https://shop.example/item"
TX = "0x" + "42" * 32


def a_job(signer: ChallengeSigner, network: str, *, nonce: str | None = None) -> VerifyJob:
    """A proof of a challenge ``signer`` issued (or of ``nonce``) for an offer on ``network``."""
    terms = Terms(
        scheme=SCHEME,
        network=network,
        asset="0x" + "22" * 20,
        amount=1000,
        pay_to="0x" + "11" * 20,
        max_timeout_seconds=600,
        min_confirmations=1,
        binding=Binding.REQUIRED,
        resource=RESOURCE,
    )
    nonce = nonce or signer.issue(terms).nonce
    accept = Accept(
        scheme=SCHEME,
        network=network,
        asset=terms.asset,
        amount=str(terms.amount),
        pay_to=terms.pay_to,
        max_timeout_seconds=terms.max_timeout_seconds,
        extra=AcceptExtra(nonce=nonce, memo=memo_for(nonce)),
    )
    proof = PaymentPayload(accepted=accept, payload=ProofBody(nonce=nonce, tx_hash=TX))
    return VerifyJob(proof=proof, resource=RESOURCE, job=job_key(nonce, TX))


def signer_of(settings: Settings) -> ChallengeSigner:
    """The gate's challenge signer for ``settings``."""
    return ChallengeSigner(settings.challenge.key_bytes(), settings.challenge.active)
