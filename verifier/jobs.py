"""The verification job, one straight pipeline: authenticate, expect, observe, judge, claim.

``verify_payment`` is the arq job function. Each try of a job runs the steps of ``Verifier``:

1. **authenticate**: the proof answers a challenge this gate issued for exactly the proof's terms
   and resource, still open (its expiry plus ``worker.grace_seconds``). Every later step reads
   the authenticated ``Challenge``, never the client's copy of the offer.
2. **expect**: the challenge's terms in the normal form of the chain (``Expectation.of``).
3. **observe**: what the chain says about the transaction, within the job's time budget, and
   whose payer signature the proof carries.
4. **judge**: the verdict (``verifier.matching``); a payment that counts gets its receipt.
5. **claim**: the nonce and the transaction consumed, the receipt stored and announced, in one
   atomic step (``Store.claim``); a payment claimed before answers with the receipt it had.

The outcome is always a return value stored in Redis (a receipt or a failure) and announced to the
gates, except for transient outcomes before the deadline, which raise ``arq.Retry`` with backoff
so that the same job tries again (rule 3). The deadline is the authenticated challenge's expiry
plus ``worker.grace_seconds``. A job whose challenge does not authenticate has nothing to wait
for: its deadline is long past (0), so its failure is final at once, and only a Redis outage,
retried past any deadline, delays storing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from arq import Retry
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from verifier.adapter import ChainAdapter
from verifier.challenge import Challenge, ChallengeSigner, authenticate_proof, proof_message
from verifier.errors import FinalError, NotFinal, TransientError, TxNotFound
from verifier.matching import Expectation, Verdict, judge, signature_candidates
from verifier.metrics import CLAIMS, OUTCOMES, RETRIES, SETTLEMENTS, STEP_SECONDS, Timer
from verifier.models import (
    MAX_CHALLENGE_SECONDS,
    SCHEME,
    SCHEME_EXACT,
    SCHEMES,
    Failure,
    Observation,
    ProofExtension,
    ReasonCode,
    Receipt,
    failure,
)
from verifier.queue import VerifyJob, queue_entry
from verifier.settings import Settings
from verifier.settlement import (
    Authorizations,
    ExactPayment,
    SettlementRecord,
    Settler,
    authorization_problem,
)
from verifier.store import ClaimStatus, Store
from verifier.trace import current_trace_id, log_context

log = logging.getLogger(__name__)
# Redis is unreachable: refused or dropped connections (BusyLoadingError, while a restarted
# Redis reloads its data, is a ConnectionError too), timeouts, and socket errors. Nothing else:
# a ResponseError or a bug must still surface. The worker's poll loop rides out the same.
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)
# What a proof is told when another proof consumed its transaction, or its nonce, first.
TX_TAKEN = "this transaction already paid for another challenge"
NONCE_TAKEN = "this challenge was already paid by another transaction"
# Where a receipt carries the trace id of the request whose job made it.
TRACE_EXTENSION = "trace"
# After broadcasting a settlement, how long the same attempt looks for it on chain (and how
# often) before it retries with backoff.
INCLUSION_WAIT = 3.0
INCLUSION_POLL = 0.25


async def verify_payment(ctx: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    """arq job: verify one proof; returns the stored outcome as wire JSON.

    Every log line of the job carries its trace id, job id, network and scheme
    (``verifier.trace``); the line that ends an attempt also its outcome.
    """
    verifier: Verifier = ctx["verifier"]
    verify = VerifyJob.model_validate(job)
    accepted = verify.proof.accepted
    with log_context(
        trace_id=verify.trace_id, job=verify.job, network=accepted.network, scheme=accepted.scheme
    ):
        try:
            outcome = await verifier.run(verify, ctx.get("job_try", 1))
        except Retry:
            log.debug("attempt ended: retry", extra={"outcome": "retry"})
            raise
        said = outcome.error_reason.value if isinstance(outcome, Failure) else "receipt"
        log.info("verification ended: %s", said, extra={"outcome": said})
        network = accepted.network if accepted.network in verifier.settings.networks else "other"
        scheme = accepted.scheme if accepted.scheme in SCHEMES else "other"
        OUTCOMES.labels("worker", scheme, network, said).inc()
    return outcome.model_dump(by_alias=True, exclude_none=True)


@dataclass(frozen=True, slots=True)
class Paid:
    """A payment that counts, not claimed yet: its receipt, and the receipt's extension typed."""

    receipt: Receipt
    extension: ProofExtension


@dataclass(frozen=True, slots=True)
class Step:
    """One attempt's result: a payment to claim, a final failure, or a transient one to retry."""

    result: Paid | Failure
    retry: bool = False

    @property
    def outcome(self) -> Receipt | Failure:
        """What the attempt answers, before any claim."""
        return self.result.receipt if isinstance(self.result, Paid) else self.result


class Verifier:
    """Everything a worker needs to verify proofs; built once at worker start."""

    def __init__(
        self,
        settings: Settings,
        signer: ChallengeSigner,
        adapters: dict[str, ChainAdapter],
        store: Store | None = None,
        settlers: dict[str, Settler] | None = None,
    ) -> None:
        self.settings = settings
        self._store = store
        self.signer = signer
        self.adapters = adapters
        self.settlers = settlers or {}
        self.registry = settings.asset_registry()
        self._authorizations_store: Authorizations | None = None

    @property
    def _authorizations(self) -> Authorizations:
        if self._authorizations_store is None:
            self._authorizations_store = Authorizations(self.store.redis, self.store.keys.prefix)
        return self._authorizations_store

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("this Verifier has no store: it can only dry-run (attempt)")
        return self._store

    async def run(self, job: VerifyJob, job_try: int) -> Receipt | Failure:
        """One try of ``job``, stored: a final outcome is recorded, a transient one retried.

        Nothing raised on the way strands the proof: a Redis outage is retried, past the deadline
        too, since the final answer still has to be stored; anything else (a bug, an error an
        adapter did not map) is logged and retried until the deadline, then answered.
        """
        challenge: Challenge | None = None  # what the deadline of the failure paths is read from
        try:
            now = time.time()
            authenticated = self.authenticate(job, now)
            if isinstance(authenticated, Failure):
                return await self._refuse(job, authenticated)
            challenge = authenticated
            step = await self.verify(job, challenge, now)
            return await self._conclude(job, step, self.deadline(challenge), job_try)
        except Retry:
            raise
        except REDIS_DOWN as exc:
            # Redis went away mid-job (the worker itself rides out the outage): nothing was
            # decided that is not written again by the next try.
            log.warning("job %s: Redis unreachable (%s), retrying (try %d)", job.job, exc, job_try)
            RETRIES.labels("redis_unavailable").inc()
            left = max(self.deadline(challenge) - time.time(), 1.0)
            raise Retry(defer=self.backoff(job_try, left)) from None
        except Exception:
            log.exception("verification of job %s failed unexpectedly (try %d)", job.job, job_try)
            return await self._fail_internally(job, self.deadline(challenge), job_try)

    async def attempt(self, job: VerifyJob, *, now: float | None = None) -> Step:
        """One verification attempt, without touching Redis (``x402-verifier verify``)."""
        now = time.time() if now is None else now
        challenge = self.authenticate(job, now)
        if isinstance(challenge, Failure):
            return Step(challenge)
        return await self.verify(job, challenge, now)

    # -- the pipeline ------------------------------------------------------------------------

    def authenticate(self, job: VerifyJob, now: float) -> Challenge | Failure:
        """The challenge the proof answers, if this gate issued it for the proof's terms and
        resource and it is still open (expiry plus grace); else the final failure saying why."""
        proof = job.proof
        grace = self.settings.worker.grace_seconds
        try:
            return authenticate_proof(self.signer, proof, job.resource, now=now, grace=grace)
        except FinalError as exc:
            network, nonce = proof.accepted.network, proof.nonce
            return failure(exc.reason, str(exc), network=network, nonce=nonce)

    async def verify(self, job: VerifyJob, challenge: Challenge, now: float) -> Step:
        """Expect, observe, judge: the proof's transaction against the challenge's terms."""
        if challenge.terms.scheme == SCHEME_EXACT:
            return await self._verify_exact(job, challenge, now)
        txid = ""
        try:
            adapter = self._adapter(challenge)
            txid = adapter.canonical_txid(job.proof.proof.tx_hash)
            expect = Expectation.of(challenge, adapter, clock_skew=self.settings.worker.clock_skew)
            signature = job.proof.proof.signature
            obs, signer = await self._observe(adapter, expect, txid, challenge, signature)
        except TimeoutError:
            note = "the chain did not answer within the job's time budget"
            return Step(_failure(challenge, txid, ReasonCode.RPC_UNAVAILABLE, note), retry=True)
        except TransientError as exc:
            return Step(_failure(challenge, txid, exc.reason, str(exc)), retry=True)
        except FinalError as exc:
            return Step(_failure(challenge, txid, exc.reason, str(exc)))
        return _judge(challenge, expect, obs, signer, now)

    async def _verify_exact(self, job: VerifyJob, challenge: Challenge, now: float) -> Step:
        """Settle the authorization once (``verifier.settlement``), then observe, judge."""
        txid = ""
        settler: Settler | None = None
        payment: ExactPayment | None = None
        record: SettlementRecord | str | None = None
        try:
            adapter = self._adapter(challenge)
            settler = self.settlers.get(challenge.terms.network)
            if settler is None:
                raise FinalError(
                    f"no settlement for {challenge.terms.network} on this worker",
                    ReasonCode.INVALID_NETWORK,
                )
            info = self.registry.find(challenge.terms.network, challenge.terms.asset)
            payment = ExactPayment.of(job.proof, challenge, info.eip712 if info else None)
            ttl = int(self.deadline(challenge) - now) + self.settings.store.receipt_retention
            record = await self._authorizations.claim(payment.key, job.job, ttl)
            if isinstance(record, str):
                raise FinalError(
                    "this authorization was presented for another payment",
                    ReasonCode.AUTHORIZATION_ALREADY_USED,
                )
            sent_before = bool(record.txids)
            with Timer(STEP_SECONDS.labels("settle")):
                txid = await self._settled(settler, payment, record, challenge, now)
            expect = Expectation.of(challenge, adapter, clock_skew=self.settings.worker.clock_skew)
            # Just sent: look again for a few seconds before a retry's backoff (a block is
            # seconds away on most chains).
            wait = 0.0 if sent_before else INCLUSION_WAIT
            async with asyncio.timeout(self.settings.worker.job_timeout * 0.5):
                with Timer(STEP_SECONDS.labels("observe")):
                    obs = await self._observe_settlement(adapter, expect, record, txid, wait)
                if not obs.success:
                    # Reverted: someone else's use of the authorization may have been mined
                    # first (it paid the payee all the same). That one is the settlement then.
                    used = await settler.used_by(payment, record)
                    if used is not None and used != obs.txid:
                        await record.add_txid(used)
                        txid = used
                        obs = await adapter.observe(expect.query(adapter.canonical_txid(used)))
        except TimeoutError:
            note = "the chain did not answer within the job's time budget"
            return Step(_failure(challenge, txid, ReasonCode.RPC_UNAVAILABLE, note), retry=True)
        except (TxNotFound, NotFinal) as exc:
            # Sent but not in a block (or not deep enough): the settler sends it again, or
            # replaces it once it is overdue, unless it is in a block already.
            if settler is not None and payment is not None and isinstance(record, SettlementRecord):
                with contextlib.suppress(TransientError):
                    await settler.unstick(payment, record)
            return Step(_failure(challenge, txid, exc.reason, str(exc)), retry=True)
        except TransientError as exc:
            return Step(_failure(challenge, txid, exc.reason, str(exc)), retry=True)
        except FinalError as exc:
            return Step(_failure(challenge, txid, exc.reason, str(exc)))
        return _judge(challenge, expect, obs, payment.payer, now)

    async def _settled(
        self,
        settler: Settler,
        payment: ExactPayment,
        record: SettlementRecord,
        challenge: Challenge,
        now: float,
    ) -> str:
        """The settlement transaction of ``payment``: found in the record or on chain, or
        broadcast now after every check passed."""
        if record.txids:
            return record.txids[-1]
        if record.settling:  # a try before may have broadcast: look before settling again
            used = await settler.used_by(payment, record)
            if used is not None:
                await record.add_txid(used)
                SETTLEMENTS.labels(payment.network, "found").inc()
                return used
        else:
            settlement = self.settings.network(challenge.terms.network).settlement
            margin = settlement.margin if settlement is not None else 0.0
            try:
                problem = authorization_problem(payment.authorization, challenge.terms, now, margin)
                if problem is not None:
                    raise FinalError(problem[1], problem[0])
                await settler.check(payment)
            except FinalError as exc:
                if exc.reason is ReasonCode.AUTHORIZATION_ALREADY_USED:
                    used = await settler.used_by(payment, record)
                    if used is not None:  # used on chain already, by us or by anyone: it paid
                        await record.add_txid(used)
                        SETTLEMENTS.labels(payment.network, "found").inc()
                        return used
                await self._authorizations.release(record)
                SETTLEMENTS.labels(payment.network, "refused").inc()
                raise
        txid = await settler.settle(payment, record)
        await record.add_txid(txid)
        SETTLEMENTS.labels(payment.network, "sent").inc()
        return txid

    async def _observe_settlement(
        self,
        adapter: ChainAdapter,
        expect: Expectation,
        record: SettlementRecord,
        txid: str,
        wait: float = 0.0,
    ) -> Observation:
        """The first of the record's transactions (a replacement is newer) the chain knows;
        not in a block (or not deep enough) yet, looked at again for up to ``wait`` seconds."""
        until = time.monotonic() + wait
        while True:
            try:
                return await self._observe_candidates(adapter, expect, record, txid)
            except (TxNotFound, NotFinal):
                if time.monotonic() + INCLUSION_POLL > until:
                    raise
            await asyncio.sleep(INCLUSION_POLL)

    async def _observe_candidates(
        self, adapter: ChainAdapter, expect: Expectation, record: SettlementRecord, txid: str
    ) -> Observation:
        missing: TxNotFound | None = None
        for candidate in reversed(record.txids or [txid]):
            try:
                return await adapter.observe(expect.query(adapter.canonical_txid(candidate)))
            except TxNotFound as exc:
                missing = exc
        assert missing is not None
        raise missing

    def _adapter(self, challenge: Challenge) -> ChainAdapter:
        network = challenge.terms.network
        adapter = self.adapters.get(network)
        if adapter is None:
            raise FinalError(f"no worker adapter for {network}", ReasonCode.INVALID_NETWORK)
        return adapter

    async def _observe(
        self,
        adapter: ChainAdapter,
        expect: Expectation,
        txid: str,
        challenge: Challenge,
        signature: str | None,
    ) -> tuple[Observation, str | None]:
        """What the chain says about ``txid``, and the owner whose payer signature the proof
        carries, among those the core would accept.

        Chain I/O gets most of arq's job timeout: a slow node becomes a transient outcome that we
        retry, never an arq timeout that would end the job without an answer.
        """
        async with asyncio.timeout(self.settings.worker.job_timeout * 0.8):
            with Timer(STEP_SECONDS.labels("observe")):
                obs = await adapter.observe(expect.query(txid))
            if not signature:
                return obs, None
            message = proof_message(adapter.network, challenge.nonce, obs.txid)
            for owner in signature_candidates(obs, expect):
                if await adapter.verify_signature(owner, message, signature):
                    return obs, owner
            return obs, None

    async def _conclude(
        self, job: VerifyJob, step: Step, deadline: float, job_try: int
    ) -> Receipt | Failure:
        """Claim a payment; retry a transient failure until the deadline; store a final one."""
        if isinstance(step.result, Paid):
            return await self._claim(job, step.result, deadline)
        outcome = step.result
        now = time.time()
        if step.retry:
            if now < deadline:
                await self.store.record_pending(job.job, outcome, int(deadline - now) + 60)
                RETRIES.labels(outcome.error_reason.value).inc()
                raise Retry(defer=self.backoff(job_try, deadline - now))
            waited = f"{outcome.error_reason.value}: {outcome.error_message}"
            message = f"the challenge expired while waiting: {waited}"
            outcome = _restated(outcome, ReasonCode.PAYMENT_EXPIRED, message)
        return await self._refuse(job, outcome)

    async def _claim(self, job: VerifyJob, paid: Paid, deadline: float) -> Receipt | Failure:
        """Consume the nonce and the transaction for ``paid``: its receipt, the one this payment
        already had, or a refusal when another proof consumed either of them first."""
        now = time.time()
        with Timer(STEP_SECONDS.labels("claim")):
            claim = await self.store.claim(
                nonce=paid.receipt.nonce,
                consumption_key=paid.extension.consumption_key,
                job=job.job,
                receipt=paid.receipt,
                nonce_ttl=int(deadline - now) + 60,
                used_ttl=self.used_ttl(paid.extension.block_time, now),
                entry=queue_entry(self.settings.queue_name, job.job),
            )
        CLAIMS.labels(claim.status.value).inc()
        if claim.receipt is not None:
            return claim.receipt
        if claim.status is ClaimStatus.TX_USED:
            taken = _restated(paid.receipt, ReasonCode.TX_ALREADY_USED, TX_TAKEN)
        else:
            taken = _restated(paid.receipt, ReasonCode.NONCE_ALREADY_USED, NONCE_TAKEN)
        return await self._refuse(job, taken)

    async def _refuse(self, job: VerifyJob, outcome: Failure) -> Failure:
        """Store a final failure for the proof and announce it."""
        outcome = await self._explain_mismatch(outcome)
        await self.store.record_failure(
            job.job,
            outcome,
            self.settings.store.receipt_retention,
            queue_entry(self.settings.queue_name, job.job),
        )
        return outcome

    async def _fail_internally(self, job: VerifyJob, deadline: float, job_try: int) -> Failure:
        """After an unexpected error: retry like a transient error; at the deadline, answer."""
        left = deadline - time.time()
        if left > 0:
            raise Retry(defer=self.backoff(job_try, left)) from None
        outcome = failure(
            ReasonCode.PAYMENT_EXPIRED,
            "the challenge expired while the verifier failed internally",
            network=job.proof.accepted.network,
            nonce=job.proof.nonce,
        )
        return await self._refuse(job, outcome)

    # -- timing ----------------------------------------------------------------------------

    def deadline(self, challenge: Challenge | None) -> float:
        """When transient outcomes stop being retried: the challenge's expiry plus grace; 0 (long
        past) without an authenticated challenge, which has nothing to wait for."""
        if challenge is None:
            return 0.0
        return float(challenge.expires_at + self.settings.worker.grace_seconds)

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
        owner = await self.store.consumed_by(consumption_key(outcome.network, outcome.transaction))
        if owner is None or owner == outcome.nonce:
            return outcome
        return _restated(outcome, ReasonCode.TX_ALREADY_USED, TX_TAKEN)


def consumption_key(network: str, txid: str) -> str:
    """What one payment is consumed under (rule 2): ``<CAIP-2>:<canonical txid>``."""
    return f"{network}:{txid}"


def _judge(
    challenge: Challenge, expect: Expectation, obs: Observation, signer: str | None, now: float
) -> Step:
    verdict = judge(obs, expect, signer=signer)
    if verdict.reason is not None:
        refusal = _failure(challenge, obs.txid, verdict.reason, verdict.message)
        return Step(refusal, retry=verdict.reason.transient)
    return Step(_receipt(challenge, obs, verdict, now))


def _receipt(challenge: Challenge, obs: Observation, verdict: Verdict, now: float) -> Paid:
    terms = challenge.terms
    extension = ProofExtension(
        paid_amount=str(verdict.paid),
        confirmations=obs.confirmations,
        block_ref=obs.block_ref,
        block_time=obs.block_time,
        bound=verdict.bound,
        consumption_key=consumption_key(terms.network, obs.txid),
    )
    receipt = Receipt(
        scheme=terms.scheme,
        network=terms.network,
        transaction=obs.txid,
        asset=terms.asset,
        amount=str(terms.amount),
        payer=verdict.payer,
        pay_to=terms.pay_to,
        verified_at=datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        nonce=challenge.nonce,
        extensions={SCHEME: extension.model_dump(by_alias=True)},
    )
    trace_id = current_trace_id()
    if trace_id is not None:  # the receipt stays a superset of the x402 one
        receipt.extensions[TRACE_EXTENSION] = {"traceId": trace_id}
    return Paid(receipt, extension)


def _failure(challenge: Challenge, txid: str, reason: ReasonCode, message: str) -> Failure:
    """A failure of the proof of ``challenge``; ``txid`` is "" before the proof's is known."""
    terms = challenge.terms
    return failure(reason, message, network=terms.network, nonce=challenge.nonce, transaction=txid)


def _restated(outcome: Receipt | Failure, reason: ReasonCode, message: str) -> Failure:
    """A failure about the same proof and transaction as ``outcome``."""
    return failure(
        reason,
        message,
        network=outcome.network,
        nonce=outcome.nonce,
        transaction=outcome.transaction,
    )
