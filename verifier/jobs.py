"""The verification job: authenticate, observe, judge, claim.

``verify_payment`` is the arq job function. Its outcome is always a return value stored in Redis
(a receipt or a failure) and announced to the gates, except for transient outcomes before the
deadline, which raise ``arq.Retry`` with backoff so that the same job tries again (rule 3). The
deadline is the challenge's expiry plus ``worker.grace_seconds``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from arq import Retry
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from verifier.adapter import ChainAdapter, Query
from verifier.challenge import ChallengeSigner, authenticate_proof, nonce_expiry, proof_message
from verifier.errors import FinalError, TransientError
from verifier.matching import Expectation, judge, signature_candidates
from verifier.models import (
    MAX_CHALLENGE_SECONDS,
    SCHEME,
    Failure,
    Observation,
    PaymentPayload,
    ReasonCode,
    Receipt,
    failure,
)
from verifier.queue import VerifyJob
from verifier.settings import Settings
from verifier.store import ClaimStatus, Store

log = logging.getLogger(__name__)
# Redis is unreachable: refused or dropped connections (BusyLoadingError, while a restarted
# Redis reloads its data, is a ConnectionError too), timeouts, and socket errors. Nothing else:
# a ResponseError or a bug must still surface. The worker's poll loop rides out the same.
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)


@dataclass(frozen=True, slots=True)
class Step:
    """The result of one attempt: a final outcome, or a transient one to retry."""

    outcome: Receipt | Failure
    retry: bool = False


class Verifier:
    """Everything a worker needs to verify proofs; built once at worker start."""

    def __init__(
        self,
        settings: Settings,
        signer: ChallengeSigner,
        adapters: dict[str, ChainAdapter],
        store: Store | None = None,
    ) -> None:
        self.settings = settings
        self._store = store
        self.signer = signer
        self.adapters = adapters

    async def attempt(self, job: VerifyJob, *, now: float | None = None) -> Step:
        """One verification attempt, without touching Redis."""
        now = time.time() if now is None else now
        proof = job.proof
        fail: dict[str, str] = {"network": proof.accepted.network, "nonce": proof.payload.nonce}
        grace = self.settings.worker.grace_seconds
        try:
            challenge = authenticate_proof(self.signer, proof, job.resource, now=now, grace=grace)
            network = challenge.terms.network
            fail["network"] = network
            adapter = self.adapters.get(network)
            if adapter is None:
                raise FinalError(f"no worker adapter for {network}", ReasonCode.INVALID_NETWORK)
            txid = adapter.canonical_txid(proof.payload.tx_hash)
            fail["transaction"] = txid
            try:
                asset = adapter.normalize_asset(challenge.terms.asset)
                pay_to = adapter.normalize_address(challenge.terms.pay_to)
            except ValueError as exc:  # an offer the gate should never have made
                raise FinalError(f"the offer is invalid: {exc}") from exc
            expect = Expectation(
                asset=asset,
                pay_to=pay_to,
                amount=challenge.terms.amount,
                min_confirmations=challenge.terms.min_confirmations,
                binding=challenge.terms.binding,
                memo=challenge.memo,
                issued_at=challenge.issued_at,
                expires_at=challenge.expires_at,
                clock_skew=self.settings.worker.clock_skew,
            )
            # Chain I/O gets most of arq's job timeout: a slow node becomes a transient outcome
            # that we retry, never an arq timeout that would end the job without an answer.
            async with asyncio.timeout(self.settings.worker.job_timeout * 0.8):
                query = Query(
                    txid,
                    asset,
                    pay_to,
                    expect.min_confirmations,
                    challenge.memo,
                    challenge.issued_at,
                    expect.amount,
                )
                obs = await adapter.observe(query)
                signer = await self._signer(adapter, obs, expect, challenge.nonce, proof)
        except TimeoutError:
            note = "the chain did not answer within the job's time budget"
            return Step(failure(ReasonCode.RPC_UNAVAILABLE, note, **fail), retry=True)
        except TransientError as exc:
            return Step(failure(exc.reason, str(exc), **fail), retry=True)
        except FinalError as exc:
            return Step(failure(exc.reason, str(exc), **fail))

        verdict = judge(obs, expect, signer=signer)
        fail["transaction"] = obs.txid
        if verdict.reason is not None:
            return Step(
                failure(verdict.reason, verdict.message, **fail), retry=verdict.reason.transient
            )
        receipt = Receipt(
            scheme=SCHEME,
            network=network,
            transaction=obs.txid,
            asset=proof.accepted.asset,
            amount=str(challenge.terms.amount),
            payer=verdict.payer,
            pay_to=proof.accepted.pay_to,
            verified_at=datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
            + "Z",
            nonce=challenge.nonce,
            extensions={
                SCHEME: {
                    "paidAmount": str(verdict.paid),
                    "confirmations": obs.confirmations,
                    "blockRef": obs.block_ref,
                    "blockTime": obs.block_time,
                    "bound": verdict.bound,
                    "consumptionKey": f"{network}:{obs.txid}",
                }
            },
        )
        return Step(receipt)

    @staticmethod
    async def _signer(
        adapter: ChainAdapter,
        obs: Observation,
        expect: Expectation,
        nonce: str,
        proof: PaymentPayload,
    ) -> str | None:
        """The owner whose signature the proof carries, among those the core would accept."""
        signature = proof.payload.signature
        if not signature:
            return None
        message = proof_message(adapter.network, nonce, obs.txid)
        for owner in signature_candidates(obs, expect):
            if await adapter.verify_signature(owner, message, signature):
                return owner
        return None

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("this Verifier has no store: it can only dry-run (attempt)")
        return self._store

    def deadline(self, job: VerifyJob) -> float:
        """When transient outcomes stop being retried (expiry + grace), from the nonce."""
        expires = nonce_expiry(job.proof.payload.nonce)
        return 0.0 if expires is None else float(expires + self.settings.worker.grace_seconds)

    def used_ttl(self, block_time: int, now: float) -> int:
        """How long a transaction must stay consumed: as long as any challenge could accept it.

        A challenge accepts a transaction whose block time is within its window (give or take
        the clock skew), and is verified until its expiry plus grace. The latest such challenge
        was issued at ``block_time + skew`` and lives ``MAX_CHALLENGE_SECONDS`` at most, whatever
        made the offer (a ``[[routes]]`` entry or library code), so it is verified until
        ``block_time + skew + MAX_CHALLENGE_SECONDS + grace``; one more skew for the clocks of
        the processes that judge it, and a minute of margin.
        """
        w = self.settings.worker
        until = block_time + MAX_CHALLENGE_SECONDS + w.grace_seconds + 2 * w.clock_skew + 60
        return max(int(until - now), 60)

    def backoff(self, job_try: int, left: float) -> float:
        w = self.settings.worker
        delay: float = min(w.retry_max, w.retry_base * 2.0 ** max(job_try - 1, 0))
        delay *= random.uniform(0.8, 1.2)  # spread retries of a burst of proofs
        return max(0.05, min(delay, left))

    async def _explain_mismatch(self, outcome: Failure) -> Failure:
        """A transaction bound to another challenge that already paid for it is, to the client,
        a used transaction: say so (``tx_already_used``) rather than ``binding_mismatch``."""
        if outcome.error_reason is not ReasonCode.BINDING_MISMATCH or not outcome.transaction:
            return outcome
        owner = await self.store.consumed_by(f"{outcome.network}:{outcome.transaction}")
        if owner is None or owner == outcome.nonce:
            return outcome
        return failure(
            ReasonCode.TX_ALREADY_USED,
            "this transaction already paid for another challenge",
            network=outcome.network,
            nonce=outcome.nonce,
            transaction=outcome.transaction,
        )

    async def run(self, job: VerifyJob, job_try: int) -> Receipt | Failure:
        """One attempt, stored: a final outcome is recorded, a transient one retried."""
        step = await self.attempt(job)
        outcome = step.outcome
        now = time.time()
        deadline = self.deadline(job)
        retention = self.settings.store.receipt_retention
        if step.retry and isinstance(outcome, Failure):
            if now < deadline:
                await self.store.record_pending(job.job, outcome, int(deadline - now) + 60)
                raise Retry(defer=self.backoff(job_try, deadline - now))
            outcome = failure(
                ReasonCode.PAYMENT_EXPIRED,
                f"the challenge expired while waiting: {outcome.error_reason.value}: "
                f"{outcome.error_message}",
                network=outcome.network,
                nonce=outcome.nonce,
                transaction=outcome.transaction,
            )
        if isinstance(outcome, Failure):
            outcome = await self._explain_mismatch(outcome)
            await self.store.record_failure(job.job, outcome, retention)
            return outcome
        details = outcome.extensions[SCHEME]
        claim = await self.store.claim(
            nonce=outcome.nonce,
            consumption_key=details["consumptionKey"],
            job=job.job,
            receipt=outcome,
            nonce_ttl=int(deadline - now) + 60,
            used_ttl=self.used_ttl(details["blockTime"], now),
        )
        if claim.receipt is not None:
            return claim.receipt
        reason = (
            ReasonCode.TX_ALREADY_USED
            if claim.status is ClaimStatus.TX_USED
            else ReasonCode.NONCE_ALREADY_USED
        )
        message = (
            "this transaction already paid for another challenge"
            if reason is ReasonCode.TX_ALREADY_USED
            else "this challenge was already paid by another transaction"
        )
        refused = failure(
            reason,
            message,
            network=outcome.network,
            nonce=outcome.nonce,
            transaction=outcome.transaction,
        )
        await self.store.record_failure(job.job, refused, retention)
        return refused


async def verify_payment(ctx: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    """arq job: verify one proof; returns the stored outcome as wire JSON."""
    verifier: Verifier = ctx["verifier"]
    parsed = VerifyJob.model_validate(job)
    job_try = ctx.get("job_try", 1)
    try:
        outcome = await verifier.run(parsed, job_try)
    except Retry:
        raise
    except REDIS_DOWN as exc:
        # Redis went away mid-job (the worker itself rides out the outage): nothing was decided
        # that is not written again by the next try, so retry quietly, past the deadline too,
        # since the final answer still has to be stored.
        log.warning("job %s: Redis unreachable (%s), retrying (try %d)", parsed.job, exc, job_try)
        left = max(verifier.deadline(parsed) - time.time(), 1.0)
        raise Retry(defer=verifier.backoff(job_try, left)) from None
    except Exception:
        # A bug or an unmapped error in an adapter must not strand the proof: log it loudly and
        # retry like a transient error; at the deadline the proof gets a final answer.
        log.exception("verification of job %s failed unexpectedly (try %d)", parsed.job, job_try)
        left = verifier.deadline(parsed) - time.time()
        if left > 0:
            raise Retry(defer=verifier.backoff(job_try, left)) from None
        outcome = failure(
            ReasonCode.PAYMENT_EXPIRED,
            "the challenge expired while the verifier failed internally",
            network=parsed.proof.accepted.network,
            nonce=parsed.proof.payload.nonce,
        )
        await verifier.store.record_failure(
            parsed.job, outcome, verifier.settings.store.receipt_retention
        )
    return outcome.model_dump(by_alias=True, exclude_none=True)
