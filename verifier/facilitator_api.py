"""The x402 facilitator HTTP API, backed by the gate library and the worker pool.

``x402-verifier facilitator`` serves ``GET /supported``, ``POST /verify`` and ``POST /settle``
as the reference x402 facilitator does, so a resource server built on the reference middleware
(any language) points its facilitator URL here and our workers verify and settle its payments::

    {"x402Version": 2, "paymentPayload": {...}, "paymentRequirements": {...}}

**What each scheme means here.**

- ``exact``: the payload is the payer's EIP-3009 authorization, signed for requirements that
  carry no challenge of ours. The endpoint derives one from the authorization
  (``ChallengeSigner.derive``: the same authorization, the same nonce, the same job), expiring
  at the authorization's ``validBefore`` (which may not be further than ``maxTimeoutSeconds``
  plus half the worker's ``clock_skew`` from now). ``/verify`` checks the terms, the validity
  window, and, on networks whose adapter can (EVM), the signature (EIP-712, or EIP-1271 for a
  contract wallet), that the authorization is unused on chain and that the payer holds the
  amount: chain reads only, nothing is sent. ``/settle`` has the worker pool settle it (the
  network's ``[settlement]``, locally or through a facilitator) and answers the receipt.
- ``onchain-proof``: the client paid on chain itself, answering the challenge nonce our
  scheme server for the reference SDK put in the requirements (``verifier.reference``).
  ``/verify`` has the worker pool verify the transaction (and claim it: a transaction pays for
  one payment); ``/settle`` answers the same receipt.

**Which terms count.** The resource server's ``paymentRequirements`` are what its route asks
for now; ``paymentPayload.accepted`` is what the client paid. They must agree on the scheme,
network, asset, amount, payee and timeout, and every ``extra`` field of the requirements (but
the per-challenge ``nonce`` and ``memo``) must be in ``accepted.extra`` with the same value; a
payment for another price or payee is refused. ``extra.route`` (any string up to 256
characters, set per route in the reference middleware's ``PaymentOption.extra``) binds a
challenge to one route: it is part of the authenticated terms.

**Idempotent.** The same payload gets the same job, so ``/verify`` and ``/settle`` may be sent
again (after a timeout, by several server processes): one settlement, one receipt. A
settlement still on its way answers ``settlement_pending`` with its transaction (the reference
server sends ``/settle`` once more on it), or the pending reason.

**One payment, one response.** The reference middleware releases a response only once
``/settle`` succeeded, so that is what is counted: a payment's ``/settle`` succeeds once, and
``facilitator.max_replays`` more times (default 1: a client retrying after a lost response)
within ``facilitator.replay_window`` seconds of the first; after that ``/settle`` and ``/verify``
answer ``payment_already_redeemed``. The same payment sent many times at once passes
``/verify`` each time (it is sound), but no more than those settlements succeed.

**Guarded.** Every endpoint but ``/healthz`` takes ``Authorization: Bearer <token>`` (the
token from ``api.token_env``; unset, every request gets ``401``) and is rate-limited per client
address (``facilitator.rate_limit``, ``burst``; ``429`` with ``Retry-After``). A body over
``facilitator.max_body_bytes`` gets ``413``; a body that is not a facilitator request, ``400``.
A payment refused for what it says is ``200`` with ``isValid: false`` / ``success: false``, the
reason a ``ReasonCode`` of ``verifier.models``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from verifier.assets import namespace_of, normalize_network
from verifier.auth import RateLimiter, bearer_ok
from verifier.challenge import Terms, memo_for
from verifier.errors import ConfigError, FinalError, TransientError
from verifier.gate import Gate
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
    ReasonCode,
    Receipt,
)
from verifier.registry import build_adapters
from verifier.settings import Settings
from verifier.settlement import Authorizations, ExactPayment, authorization_key, exact_tokens
from verifier.trace import TraceMiddleware
from verifier.worker import start_adapters

log = logging.getLogger(__name__)

# The resource of the challenges the endpoint and ``verifier.reference`` issue: never a URL,
# so that no challenge of theirs is taken by the HTTP gate, nor one of the gate's here.
RESOURCE_PREFIX = "x402-facilitator:"
# The per-challenge fields of ``extra`` (issued anew for each 402): not compared.
DYNAMIC_EXTRA = ("nonce", "memo")
_CORE = ("scheme", "network", "asset", "amount", "payTo", "maxTimeoutSeconds")
# The reason a settlement on its way is answered with (the reference SDK sends /settle once
# more on it).
SETTLEMENT_PENDING = "settlement_pending"


# One more success of /settle for a payment: its count, and when the first one was.
_COUNT_SETTLEMENT = """
local n = redis.call('HINCRBY', KEYS[1], 'count', 1)
if n == 1 then
  redis.call('HSET', KEYS[1], 'first', ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return {n, tonumber(redis.call('HGET', KEYS[1], 'first'))}
"""


def facilitator_resource(route: str | None) -> str:
    """The resource string a challenge for ``route`` (``extra.route``) is authenticated for."""
    return RESOURCE_PREFIX + (route or "")


class BadRequest(Exception):
    """Not a facilitator request at all: ``400``."""


@dataclass(frozen=True, slots=True)
class Refusal(Exception):
    """A payment refused for what it says, before any job."""

    reason: ReasonCode
    message: str


@dataclass(frozen=True, slots=True)
class Request402:
    """A facilitator request, in our terms."""

    proof: PaymentPayload
    resource: str
    network: str  # as the requirements name it, for the answer


class Facilitator:
    """The endpoint's logic, apart from HTTP (``create_facilitator_app`` serves it)."""

    def __init__(self, settings: Settings, gate: Gate, adapters: Mapping[str, Any]) -> None:
        self.settings = settings
        self.gate = gate
        self.adapters = dict(adapters)
        self._authorizations = Authorizations(gate.redis, settings.store.prefix)
        self._settled = gate.redis.register_script(_COUNT_SETTLEMENT)
        self._tokens = {network: exact_tokens(settings, network) for network in settings.networks}

    @classmethod
    async def start(cls, settings: Settings, gate: Gate | None = None) -> Facilitator:
        """Connect (a gate of its own unless given) and start the adapters of the networks
        that settle ``exact`` (for ``/verify``'s chain reads)."""
        adapters = build_adapters(settings) if _settles(settings) else {}
        adapters = {n: a for n, a in adapters.items() if n in _settles(settings)}
        await start_adapters(adapters)
        own = gate is None
        gate = gate if gate is not None else await Gate.connect(settings)
        facilitator = cls(settings, gate, adapters)
        facilitator._own_gate = own
        return facilitator

    _own_gate = False

    async def close(self) -> None:
        for adapter in self.adapters.values():
            with contextlib.suppress(Exception):
                await adapter.close()
        if self._own_gate:
            await self.gate.close()

    # -- the three endpoints ---------------------------------------------------------------

    def supported(self) -> dict[str, Any]:
        """Each network served here with the schemes it takes: ``onchain-proof`` on every one,
        ``exact`` where the network has a ``[settlement]``."""
        kinds: list[dict[str, Any]] = []
        for network, config in self.settings.networks.items():
            kinds.append({"x402Version": 2, "scheme": SCHEME, "network": network})
            if config.settlement is not None:
                kinds.append({"x402Version": 2, "scheme": SCHEME_EXACT, "network": network})
        return {"kinds": kinds, "extensions": [], "signers": {}}

    async def verify(self, body: Any) -> dict[str, Any]:
        try:
            request = self.translate(body)
            if request.proof.accepted.scheme == SCHEME_EXACT:
                outcome = await self._check_exact(request)
            else:
                outcome = await self.gate.settle_payload(
                    request.proof,
                    resource=request.resource,
                    timeout=self.settings.facilitator.verify_timeout,
                )
            if isinstance(outcome, Receipt):
                await self._not_redeemed(outcome)
        except Refusal as refusal:
            return _invalid(refusal.reason.value, refusal.message)
        if isinstance(outcome, Failure):
            return _invalid(outcome.error_reason.value, outcome.error_message)
        if outcome is None:  # exact: every check before a settlement passed
            payer = request.proof.exact.authorization.from_.lower()
            return {"isValid": True, "payer": payer}
        return {"isValid": True, "payer": outcome.payer}

    async def settle(self, body: Any) -> dict[str, Any]:
        try:
            request = self.translate(body)
        except Refusal as refusal:
            return _not_settled(refusal.reason.value, refusal.message, network="")
        outcome = await self.gate.settle_payload(
            request.proof,
            resource=request.resource,
            timeout=self.settings.facilitator.settle_timeout,
        )
        if isinstance(outcome, Failure):
            reason = outcome.error_reason.value
            exact = request.proof.accepted.scheme == SCHEME_EXACT
            if exact and outcome.transient and outcome.transaction:
                reason = SETTLEMENT_PENDING  # broadcast, not yet in a block (or not deep enough)
            return _not_settled(
                reason,
                outcome.error_message,
                network=request.network,
                transaction=outcome.transaction if reason == SETTLEMENT_PENDING else "",
            )
        try:
            await self._count_settlement(outcome)
        except Refusal as refusal:
            return _not_settled(refusal.reason.value, refusal.message, network=request.network)
        return {
            "success": True,
            "payer": outcome.payer,
            "transaction": outcome.transaction,
            "network": request.network,
            "amount": outcome.amount,
            "extensions": outcome.extensions,
        }

    # -- translation -----------------------------------------------------------------------

    def translate(self, body: Any) -> Request402:
        """The facilitator request as our proof and resource; ``BadRequest`` for a body that is
        not one, ``Refusal`` for a payment that cannot count."""
        if not isinstance(body, dict):
            raise BadRequest("the body is not a JSON object")
        payload, required = body.get("paymentPayload"), body.get("paymentRequirements")
        if not isinstance(payload, dict) or not isinstance(required, dict):
            raise BadRequest("the body needs paymentPayload and paymentRequirements objects")
        accepted = payload.get("accepted")
        if not isinstance(accepted, dict):
            raise BadRequest("paymentPayload.accepted is missing")
        if payload.get("x402Version") != 2:
            raise Refusal(ReasonCode.INVALID_PAYLOAD, "only x402Version 2 payloads are served")
        scheme = required.get("scheme")
        if scheme not in SCHEMES:
            raise Refusal(
                ReasonCode.INVALID_SCHEME,
                f"scheme {str(scheme)[:40]!r} is not one of {', '.join(SCHEMES)}",
            )
        network = required.get("network")
        try:
            served = normalize_network(str(network))
        except ValueError as exc:
            raise Refusal(ReasonCode.INVALID_NETWORK, str(exc)) from None
        if served not in self.settings.networks:
            raise Refusal(ReasonCode.INVALID_NETWORK, f"network {served} is not served here")
        _same_terms(accepted, required, served)
        route = (required.get("extra") or {}).get("route")
        if route is not None and (not isinstance(route, str) or len(route) > 256):
            raise Refusal(ReasonCode.INVALID_PAYLOAD, "extra.route is not a string of ≤ 256")
        resource = facilitator_resource(route)
        try:
            if scheme == SCHEME_EXACT:
                proof = self._exact_proof(payload, required, served, resource)
            else:
                proof = PaymentPayload.model_validate(payload)
        except ValidationError as exc:
            where = ".".join(str(p) for p in exc.errors()[0]["loc"]) if exc.errors() else ""
            raise Refusal(
                ReasonCode.INVALID_PAYLOAD, f"paymentPayload is not valid ({where})"
            ) from None
        return Request402(proof, resource, str(network))

    def _exact_proof(
        self, payload: dict[str, Any], required: dict[str, Any], network: str, resource: str
    ) -> PaymentPayload:
        """An exact payment with the challenge derived from its authorization."""
        body = ExactBody.model_validate(payload.get("payload"))
        config = self.settings.networks[network]
        if config.settlement is None:
            raise Refusal(ReasonCode.INVALID_SCHEME, f"exact is not settled on {network} here")
        try:
            info = self.gate.registry.resolve(network, str(required.get("asset")))
        except ConfigError:
            raise Refusal(
                ReasonCode.WRONG_ASSET, f"{str(required.get('asset'))[:80]} is not an asset here"
            ) from None
        if info.eip712 is None and namespace_of(network) == "eip155":
            raise Refusal(ReasonCode.WRONG_ASSET, f"{info.symbol} has no known EIP-712 domain")
        accepted = Accept.model_validate(
            {
                "scheme": SCHEME_EXACT,
                "network": network,
                "asset": info.asset,
                "amount": required.get("amount"),
                "payTo": required.get("payTo"),
                "maxTimeoutSeconds": required.get("maxTimeoutSeconds"),
                "extra": {"nonce": "-", "memo": "0" * 64},
            }
        )
        terms = Terms(
            scheme=SCHEME_EXACT,
            network=network,
            asset=info.asset,
            amount=int(accepted.amount),
            pay_to=accepted.pay_to,
            max_timeout_seconds=accepted.max_timeout_seconds,
            min_confirmations=config.min_confirmations,
            binding=Binding.SIGNATURE,
            resource=resource,
        )
        valid_before = int(body.authorization.valid_before)
        latest = time.time() + terms.max_timeout_seconds + self.settings.worker.clock_skew / 2
        if valid_before > latest:
            raise Refusal(
                ReasonCode.AUTHORIZATION_INVALID,
                f"validBefore {valid_before} is further than maxTimeoutSeconds from now",
            )
        if valid_before - terms.max_timeout_seconds < 0:
            raise Refusal(ReasonCode.AUTHORIZATION_EXPIRED, f"validBefore {valid_before} passed")
        seed = authorization_key(network, info.asset, body).encode()
        challenge = self.gate.signer.derive(terms, valid_before, seed)
        name, version = info.eip712 or (None, None)
        ours = accepted.model_copy(
            update={
                "extra": AcceptExtra(
                    nonce=challenge.nonce,
                    memo=memo_for(challenge.nonce),
                    decimals=info.decimals,
                    symbol=info.symbol,
                    min_confirmations=terms.min_confirmations,
                    binding=Binding.SIGNATURE,
                    name=name,
                    version=version,
                )
            }
        )
        return PaymentPayload(x402_version=2, accepted=ours, payload=body)

    # -- exact: the checks of /verify ------------------------------------------------------

    async def _check_exact(self, request: Request402) -> Receipt | Failure | None:
        """A stored outcome of this payment, or every check before a settlement (``None``
        when they pass); ``Refusal`` for a failed one."""
        proof = request.proof
        try:
            challenge, key, job = self.gate.admit(proof, request.resource)
        except FinalError as exc:
            raise Refusal(exc.reason, str(exc)) from None
        known = await self.gate.store.outcome(job)
        if known is not None:
            return known
        if time.time() > challenge.expires_at:
            raise Refusal(ReasonCode.AUTHORIZATION_EXPIRED, "the authorization expired")
        owner = await self._authorizations.owner(key)
        if owner is not None and owner != job:
            raise Refusal(
                ReasonCode.AUTHORIZATION_ALREADY_USED,
                "this authorization was presented for another payment",
            )
        network = challenge.terms.network
        adapter = self.adapters.get(network)
        check = getattr(adapter, "check_authorization", None)
        if check is not None:
            info = self.gate.registry.find(network, challenge.terms.asset)
            payment = ExactPayment.of(proof, challenge, info.eip712 if info else None)
            try:
                await check(payment, self._tokens.get(network, {}))
            except FinalError as exc:
                if exc.reason is not ReasonCode.AUTHORIZATION_ALREADY_USED or owner is None:
                    raise Refusal(exc.reason, str(exc)) from None
                # Used on chain by our own settlement of it, still on its way: it verifies.
            except TransientError as exc:
                raise Refusal(exc.reason, f"cannot check now: {exc}") from None
        return None

    # -- one payment, one response ---------------------------------------------------------

    def _settled_key(self, receipt: Receipt) -> str:
        prefix = self.settings.store.prefix
        return f"{prefix}:facilitator:settled:{receipt.network}:{receipt.transaction}"

    def _spent(self, count: int, first: int) -> str | None:
        """Why a payment answered ``count`` times, the first at ``first``, is redeemed."""
        config = self.settings.facilitator
        if count > 1 + config.max_replays:
            return f"this payment was settled and served already ({count - 1} times)"
        if count > 1 and time.time() - first > config.replay_window:
            return f"this payment was settled more than {config.replay_window} s ago"
        return None

    async def _count_settlement(self, receipt: Receipt) -> None:
        """Count this success of ``/settle``; ``Refusal`` once the payment has had its
        answers (the first one and ``max_replays`` retries, within ``replay_window``)."""
        count, first = await self._settled(
            keys=[self._settled_key(receipt)],
            args=[int(time.time()), self.settings.store.receipt_retention],
        )
        why = self._spent(int(count), int(first))
        if why is not None:
            raise Refusal(ReasonCode.PAYMENT_ALREADY_REDEEMED, why)

    async def _not_redeemed(self, receipt: Receipt) -> None:
        """``/verify``'s read: ``Refusal`` when a ``/settle`` now could not succeed."""
        raw = await self.gate.redis.hmget(self._settled_key(receipt), ["count", "first"])  # type: ignore[misc]
        if raw[0] is None:
            return
        why = self._spent(int(raw[0]) + 1, int(raw[1] or 0))
        if why is not None:
            raise Refusal(ReasonCode.PAYMENT_ALREADY_REDEEMED, why)


def _settles(settings: Settings) -> set[str]:
    return {n for n, config in settings.networks.items() if config.settlement is not None}


def _same_terms(accepted: dict[str, Any], required: dict[str, Any], network: str) -> None:
    """``accepted`` (what the client paid) is what ``required`` (the route now) asks for."""
    fold = namespace_of(network) == "eip155"  # EVM addresses: case is only a checksum
    for field in _CORE:
        a, r = accepted.get(field), required.get(field)
        if field == "network":
            with contextlib.suppress(ValueError):
                a, r = normalize_network(str(a)), normalize_network(str(r))
        elif fold and field in ("asset", "payTo") and isinstance(a, str) and isinstance(r, str):
            a, r = a.lower(), r.lower()
        if a != r:
            raise Refusal(
                ReasonCode.INVALID_PAYLOAD,
                f"the payment's {field} is not the requirements' ({str(a)[:80]} ≠ {str(r)[:80]})",
            )
    paid_extra = accepted.get("extra") or {}
    for name, value in (required.get("extra") or {}).items():
        if name not in DYNAMIC_EXTRA and paid_extra.get(name) != value:
            raise Refusal(
                ReasonCode.INVALID_PAYLOAD,
                f"the payment's extra.{str(name)[:40]} is not the requirements'",
            )


def _invalid(reason: str, message: str) -> dict[str, Any]:
    return {"isValid": False, "invalidReason": reason, "invalidMessage": message[:500]}


def _not_settled(
    reason: str, message: str, *, network: str, transaction: str = ""
) -> dict[str, Any]:
    return {
        "success": False,
        "errorReason": reason,
        "errorMessage": message[:500],
        "transaction": transaction,
        "network": network,
    }


def _json(status: int, content: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status, headers, media_type="application/json")


def create_facilitator_app(settings: Settings, facilitator: Facilitator | None = None) -> Any:
    """The ASGI app of ``x402-verifier facilitator`` (module docstring); it starts its own
    ``Facilitator`` unless given one."""
    limiter = RateLimiter(settings.facilitator.rate_limit, settings.facilitator.burst)
    state: dict[str, Facilitator] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state["f"] = facilitator or await Facilitator.start(settings)
        try:
            yield
        finally:
            if facilitator is None:
                await state["f"].close()

    def guarded(handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            # Limited first: a caller guessing tokens is slowed down as much as any other.
            client = request.client.host if request.client else "?"
            wait = limiter.allow(client)
            if wait > 0:
                return _json(429, {"error": "rate limited"}, {"Retry-After": str(math.ceil(wait))})
            if not bearer_ok(request.headers.get("authorization"), settings.api.token()):
                return _json(
                    401,
                    {"error": "a bearer token is required (Authorization: Bearer <token>)"},
                    {"WWW-Authenticate": "Bearer"},
                )
            return await handler(request)  # type: ignore[no-any-return]

        return endpoint

    async def supported(request: Request) -> Response:
        return _json(200, state["f"].supported())

    def payment(name: str) -> Any:
        async def endpoint(request: Request) -> Response:
            raw = await request.body()
            if len(raw) > settings.facilitator.max_body_bytes:
                return _json(413, {"error": "the request body is too large"})
            try:
                body = orjson.loads(raw)
                answer = await getattr(state["f"], name)(body)
            except orjson.JSONDecodeError:
                return _json(400, {"error": "the body is not JSON"})
            except BadRequest as exc:
                return _json(400, {"error": str(exc)})
            return _json(200, answer)

        return endpoint

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True})

    app = Starlette(
        routes=[
            Route("/supported", guarded(supported), methods=["GET"]),
            Route("/verify", guarded(payment("verify")), methods=["POST"]),
            Route("/settle", guarded(payment("settle")), methods=["POST"]),
            Route("/healthz", health, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    return TraceMiddleware(app)
