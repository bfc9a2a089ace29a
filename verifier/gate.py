"""The library a web server uses: issue challenges, settle proofs, wait for receipts.

::

    gate = await Gate.connect(load_settings("verifier.toml"))
    offers = gate.offers(route.accepts)
    required = gate.challenge(ResourceInfo(url=url), offers)        # -> 402 body and header
    outcome = await gate.settle(header, resource=url, offers=offers) # Receipt | Failure

``settle`` never talks to a chain. It checks what it can alone (the header, the challenge's MAC
and expiry, that the terms are the route's), then enqueues a verification job whose id is derived
from the proof, so the same proof sent twice, to any gate process, attaches to the same job. It
waits for the outcome on one Redis subscription shared by the whole process. When the chain has
not confirmed within ``timeout`` it returns a *pending* ``Failure`` (``transient=True``, reason
``tx_not_found`` or ``insufficient_confirmations``): the job keeps going and the same proof sent
later gets the final answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from verifier.assets import AssetRegistry, format_amount
from verifier.challenge import Challenge, ChallengeSigner, Terms, authenticate_proof, memo_for
from verifier.errors import FinalError, InvalidProof, TooManyProofs
from verifier.metrics import ANSWER_SECONDS, OUTCOMES
from verifier.models import (
    SCHEME,
    SCHEME_EXACT,
    SCHEMES,
    Accept,
    AcceptExtra,
    Binding,
    ExactBody,
    Failure,
    PaymentPayload,
    PaymentRequired,
    ReasonCode,
    Receipt,
    ResourceInfo,
    failure,
)
from verifier.queue import JobQueue, VerifyJob, job_key, open_redis
from verifier.settings import AcceptSettings, Settings, parse_price
from verifier.settlement import authorization_key, authorization_problem
from verifier.store import Store, parse_outcome
from verifier.trace import current_trace_id
from verifier.txid import canonical_tx_ref
from verifier.wire import decode_payment_payload

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Offer:
    """One rail of a route, resolved against the asset registry: the gate's own terms."""

    network: str
    asset: str
    amount: int
    pay_to: str
    max_timeout_seconds: int
    min_confirmations: int
    binding: Binding
    decimals: int
    symbol: str
    scheme: str = SCHEME
    eip712: tuple[str, str] | None = None  # exact: the token's EIP-712 domain (name, version)

    def terms(self, resource: str) -> Terms:
        return Terms(
            scheme=self.scheme,
            network=self.network,
            asset=self.asset,
            amount=self.amount,
            pay_to=self.pay_to,
            max_timeout_seconds=self.max_timeout_seconds,
            min_confirmations=self.min_confirmations,
            binding=self.binding,
            resource=resource,
        )


def resolve_offer(accept: AcceptSettings, settings: Settings, registry: AssetRegistry) -> Offer:
    info = registry.resolve(accept.network, accept.asset)
    amount = (
        accept.amount
        if accept.amount is not None
        else parse_price(accept.price or "", info.decimals)
    )
    min_conf = accept.min_confirmations or settings.network(accept.network).min_confirmations
    return Offer(
        network=accept.network,
        asset=info.asset,
        amount=amount,
        pay_to=accept.pay_to,
        max_timeout_seconds=accept.max_timeout_seconds,
        min_confirmations=min_conf,
        # An exact payment is bound by the payer's signed authorization, whatever the route says.
        binding=Binding.SIGNATURE if accept.scheme == SCHEME_EXACT else accept.binding,
        decimals=info.decimals,
        symbol=info.symbol,
        scheme=accept.scheme,
        eip712=info.eip712 if accept.scheme == SCHEME_EXACT else None,
    )


@dataclass(frozen=True, slots=True)
class Admitted:
    """A proof that passed the gate's own checks (``Gate.admit``)."""

    challenge: Challenge
    tx_ref: str  # the canonical transaction id, or an exact authorization's key
    job: str  # the verification job's id, derived from the proof

    def __iter__(self) -> Iterator[Any]:
        return iter((self.challenge, self.tx_ref, self.job))


class OutcomeListener:
    """One Redis subscription per process, fanned out to the requests waiting on it.

    Each message is ``<id>\\n<data>``; a waiter waits for one id (a verification job, or a
    delivery's lease key) on any of the channels.
    """

    def __init__(self, redis: Redis, *channels: str) -> None:
        self._redis = redis
        self._channels = channels
        self._waiters: defaultdict[str, set[asyncio.Future[bytes | None]]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="x402-outcome-listener")
        await asyncio.wait_for(self._ready.wait(), timeout=10)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        delay = 0.1
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(*self._channels)
                self._ready.set()
                delay = 0.1
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    job, _, raw = message["data"].partition(b"\n")
                    for fut in self._waiters.get(job.decode(), ()):
                        if not fut.done():
                            fut.set_result(raw)
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                log.warning("outcome subscription lost (%s); resubscribing", exc)
                # Notifications may have been missed: let every waiter re-read the store.
                for futs in self._waiters.values():
                    for fut in futs:
                        if not fut.done():
                            fut.set_result(None)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                with contextlib.suppress(RedisConnectionError, RedisTimeoutError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    @contextlib.contextmanager
    def waiting(self, job: str) -> Iterator[asyncio.Future[bytes | None]]:
        fut: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._waiters[job].add(fut)
        try:
            yield fut
        finally:
            waiters = self._waiters.get(job)
            if waiters is not None:
                waiters.discard(fut)
                if not waiters:
                    del self._waiters[job]


class Gate:
    """Challenges and settlement for a web server. One per process; see the module docstring."""

    def __init__(self, settings: Settings, redis: Redis) -> None:
        self.settings = settings
        self.redis = redis
        self.store = Store(redis, settings.store)
        self.queue = JobQueue(redis, settings.queue_name, self.store.keys)
        self.signer = ChallengeSigner(settings.challenge.key_bytes(), settings.challenge.active)
        self.registry = settings.asset_registry()
        self._listener = OutcomeListener(redis, self.store.keys.channel, self.store.keys.deliveries)

    @classmethod
    async def connect(cls, settings: Settings) -> Gate:
        gate = cls(settings, await open_redis(settings))
        await gate._listener.start()
        return gate

    async def close(self) -> None:
        await self._listener.close()
        await self.redis.aclose()

    def watch(self, key: str) -> contextlib.AbstractContextManager[asyncio.Future[bytes | None]]:
        """A future resolved when ``key`` is announced on the process's subscription.

        It resolves to ``None`` when the subscription was lost (a notice may have been missed):
        re-read the store then. Enter it before reading the state it reports changes of.
        """
        return self._listener.waiting(key)

    def offers(self, accepts: Sequence[AcceptSettings]) -> list[Offer]:
        return [resolve_offer(a, self.settings, self.registry) for a in accepts]

    def challenge(
        self,
        resource: ResourceInfo,
        offers: Sequence[Offer],
        error: str | None = None,
        now: float | None = None,
    ) -> PaymentRequired:
        """A 402 offer: one fresh, authenticated nonce per rail. No Redis write."""
        accepts = []
        for offer in offers:
            issued = self.signer.issue(offer.terms(resource.url), now=now)
            name, version = offer.eip712 or (None, None)
            accepts.append(
                Accept(
                    scheme=offer.scheme,
                    network=offer.network,
                    asset=offer.asset,
                    amount=str(offer.amount),
                    pay_to=offer.pay_to,
                    max_timeout_seconds=offer.max_timeout_seconds,
                    extra=AcceptExtra(
                        nonce=issued.nonce,
                        memo=memo_for(issued.nonce),
                        decimals=offer.decimals,
                        symbol=offer.symbol,
                        amount_formatted=format_amount(offer.amount, offer.decimals),
                        min_confirmations=offer.min_confirmations,
                        binding=offer.binding,
                        name=name,
                        version=version,
                    ),
                )
            )
        return PaymentRequired(x402_version=2, error=error, resource=resource, accepts=accepts)

    def _admit(
        self, proof: PaymentPayload, resource: str, offers: Sequence[Offer] | None
    ) -> Challenge:
        """The checks that need no chain, but the expiry: this gate issued the proof's challenge
        for ``resource`` and one of ``offers``, on a network served here. Raises ``FinalError``.
        """
        challenge = authenticate_proof(self.signer, proof, resource, now=None)
        if challenge.terms.network not in self.settings.networks:
            raise FinalError(
                f"network {challenge.terms.network} is not served here", ReasonCode.INVALID_NETWORK
            )
        if offers is not None and challenge.terms not in {o.terms(resource) for o in offers}:
            raise InvalidProof("the proof's terms are not offered for this resource")
        return challenge

    def _admit_authorization(self, body: ExactBody, challenge: Challenge) -> str:
        """The checks of an exact authorization that need no chain; its key (``<network>:<token>
        :<from>:<nonce>``, lowercase), which names the job as a transaction id does."""
        settlement = self.settings.network(challenge.terms.network).settlement
        margin = settlement.margin if settlement is not None else 0.0
        problem = authorization_problem(body.authorization, challenge.terms, time.time(), margin)
        if problem is not None:
            raise FinalError(problem[1], problem[0])
        return authorization_key(challenge.terms.network, challenge.terms.asset, body)

    async def settle(
        self,
        proof_header: str | bytes,
        *,
        resource: str,
        offers: Sequence[Offer] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (a deadline for the wait, not for I/O)
    ) -> Receipt | Failure:
        """Verify a proof header for ``resource``: a receipt, a failure, or pending (transient).

        ``offers``, when given, must include the terms the proof answers: a challenge issued
        for another route or at another price is refused even with a valid MAC.

        A stored outcome answers only a proof that authenticates for this resource and these
        offers: it is stored under a job id derived from the nonce, the canonical transaction
        id, the signature and the terms (resource included), and found again only after those
        checks passed. Once the challenge expired, that lookup is all that is left: a proof that
        counted keeps its receipt, any other gets ``payment_expired``.

        Each answer is counted and timed in the metrics (``verifier.metrics``).
        """
        start = time.perf_counter()
        try:
            proof = decode_payment_payload(proof_header)
        except InvalidProof as exc:
            outcome: Receipt | Failure = failure(ReasonCode.INVALID_PAYLOAD, str(exc))
            self._count(None, outcome, start)
            return outcome
        return await self.settle_payload(proof, resource=resource, offers=offers, timeout=timeout)

    async def settle_payload(
        self,
        proof: PaymentPayload,
        *,
        resource: str,
        offers: Sequence[Offer] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (a deadline for the wait, not for I/O)
    ) -> Receipt | Failure:
        """``settle`` for a payload already decoded (the facilitator endpoint's)."""
        start = time.perf_counter()
        outcome = await self._settle(proof, resource, offers, timeout)
        self._count(proof, outcome, start)
        return outcome

    def _count(
        self, proof: PaymentPayload | None, outcome: Receipt | Failure, start: float
    ) -> None:
        # Labels only of what this gate serves: a client's strings never become labels.
        scheme = network = "other"
        if proof is not None and proof.accepted.scheme in SCHEMES:
            scheme = proof.accepted.scheme
        if proof is not None and proof.accepted.network in self.settings.networks:
            network = proof.accepted.network
        said = "receipt" if isinstance(outcome, Receipt) else outcome.error_reason.value
        OUTCOMES.labels("gate", scheme, network, said).inc()
        ANSWER_SECONDS.labels(scheme, network).observe(time.perf_counter() - start)

    def admit(
        self, proof: PaymentPayload, resource: str, offers: Sequence[Offer] | None = None
    ) -> Admitted:
        """Every check of ``proof`` that needs no chain and no Redis, but the expiry; the
        challenge, the canonical transaction (or authorization) reference and the job id.
        Raises ``FinalError``."""
        challenge = self._admit(proof, resource, offers)
        if isinstance(proof.payload, ExactBody):
            tx_ref = self._admit_authorization(proof.payload, challenge)
        else:
            tx_ref = canonical_tx_ref(
                challenge.terms.network, proof.payload.tx_hash, nonce=proof.nonce
            )
        signature = proof.payload.signature.lower() if proof.payload.signature else None
        job_id = job_key(proof.nonce, tx_ref, signature, challenge.terms.canonical())
        return Admitted(challenge, tx_ref, job_id)

    async def _settle(
        self,
        proof: PaymentPayload,
        resource: str,
        offers: Sequence[Offer] | None,
        timeout: float | None,  # noqa: ASYNC109 (a deadline for the wait, not for I/O)
    ) -> Receipt | Failure:
        nonce = proof.nonce
        try:
            challenge, tx_ref, job_id = self.admit(proof, resource, offers)
        except FinalError as exc:
            return failure(exc.reason, str(exc), network=proof.accepted.network, nonce=nonce)
        job = VerifyJob(proof=proof, resource=resource, job=job_id, trace_id=current_trace_id())
        left = challenge.expires_at + self.settings.worker.grace_seconds - time.time()
        if left < 0:
            return await self._expired(job_id, challenge)
        timeout = self.settings.gate.settle_timeout if timeout is None else timeout
        return await self._verify(job, challenge, tx_ref, left, timeout)

    async def _expired(self, job_id: str, challenge: Challenge) -> Receipt | Failure:
        """Past the challenge's deadline only a stored outcome of the same proof answers."""
        known = await self.store.outcome(job_id)
        if known is not None and known.nonce == challenge.nonce:
            return known
        return failure(
            ReasonCode.PAYMENT_EXPIRED,
            f"the challenge expired at {challenge.expires_at}",
            network=challenge.terms.network,
            nonce=challenge.nonce,
        )

    async def _verify(
        self, job: VerifyJob, challenge: Challenge, tx_ref: str, left: float, wait: float
    ) -> Receipt | Failure:
        """Submit ``job`` (once per proof) and wait up to ``wait`` s for its outcome.

        ``left`` is how long the challenge has until its deadline (expiry plus grace).
        """
        network, nonce = challenge.terms.network, challenge.nonce
        with self._listener.waiting(job.job) as fut:
            try:
                known = await self.queue.submit(
                    job,
                    max_jobs_per_nonce=self.settings.gate.max_proofs_per_nonce,
                    nonce_ttl_ms=int((left + 60) * 1000),
                )
            except TooManyProofs as exc:
                return failure(exc.reason, str(exc), network=network, nonce=nonce)
            if known is not None:  # idempotent: the same proof gets the same answer
                return known
            with contextlib.suppress(TimeoutError):
                raw = await asyncio.wait_for(asyncio.shield(fut), wait)
                if raw:
                    return parse_outcome(raw)
        # Timed out, or the subscription dropped: the store is the source of truth.
        known = await self.store.outcome(job.job)
        if known is not None:
            return known
        pending = await self.store.pending(job.job)
        if pending is not None:
            return pending
        return failure(
            ReasonCode.TX_NOT_FOUND,
            "not verified yet: send the same proof again later",
            network=network,
            nonce=nonce,
            transaction=tx_ref,
        )
