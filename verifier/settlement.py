"""The ``exact`` scheme: settle an authorization once, then observe it like any transaction.

An ``exact`` payment is an EIP-3009 authorization the payer signed; the *server side* sends it to
the chain. In this project a worker does (``verifier.jobs``), in one of two ways per network
(``[networks."<id>".settlement]``): ``local``, broadcasting ``transferWithAuthorization`` from a
relayer key (``chains.evm.settle``), or ``facilitator``, through an x402 facilitator's
``/verify`` and ``/settle`` (``verifier.facilitator``). Both are a ``Settler``.

Exactly one settlement per authorization:

1. The authorization's key (``<network>:<token>:<from>:<nonce>``) is claimed in Redis by one job
   (``Authorizations.claim``) before anything is checked on chain or broadcast. Another job (the
   same authorization under another challenge, or with another signature) is refused with
   ``authorization_already_used``; the same job (its next try, on any worker) gets the record.
2. The record says how far settlement went: the relayer nonce allocated for it, the signed
   transaction and its hash(es), written *before* the broadcast (``SettlementRecord.note``), or
   ``settling`` before a facilitator's ``/settle``. A try that finds a transaction in the record
   observes it (and sends it again or replaces it when it is stuck) instead of settling again;
   one that finds ``settling`` without a transaction looks on chain for the one that used the
   authorization (``Settler.used_by``) before it calls ``/settle`` again, which is safe: the
   token refuses a second use of the nonce.
3. The settlement transaction then goes through the same observe, judge and claim steps as an
   ``onchain-proof`` transaction (the ``Transfer`` of the token from ``from`` to ``payTo``, the
   confirmation policy, the canonical-block check, one consumption key per transaction).

A refusal before anything was broadcast releases the claim, so that the payer may present the
same authorization again (after funding the account, say) under a fresh challenge.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from redis.asyncio import Redis

from verifier.challenge import Challenge, Terms
from verifier.errors import ConfigError, FinalError, TransientError
from verifier.models import SCHEME_EXACT, Authorization, ExactBody, PaymentPayload, ReasonCode
from verifier.settings import Settings

if TYPE_CHECKING:
    from verifier.facilitator import FacilitatorClient

log = logging.getLogger(__name__)

# The claim of an authorization: the hash at KEYS[1] belongs to the job ARGV[1].
_CLAIM = """
local owner = redis.call('HGET', KEYS[1], 'job')
if not owner then
  redis.call('HSET', KEYS[1], 'job', ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[2])
elseif owner ~= ARGV[1] then
  return {'taken', owner}
end
return redis.call('HGETALL', KEYS[1])
"""
# Write fields of a record, only while the job ARGV[1] owns it.
_NOTE = """
if redis.call('HGET', KEYS[1], 'job') ~= ARGV[1] then
  return 0
end
for i = 2, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
return 1
"""
# Give the authorization back, unless something was broadcast for it.
_RELEASE = """
if redis.call('HGET', KEYS[1], 'job') == ARGV[1] and redis.call('HEXISTS', KEYS[1], 'txids') == 0
  and redis.call('HEXISTS', KEYS[1], 'state') == 0 then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""
# The relayer nonce of this authorization's settlement: the one it has, else the next one of the
# relayer (KEYS[2]), never below the chain's count of its transactions (ARGV[2]).
_NONCE = """
if redis.call('HGET', KEYS[1], 'job') ~= ARGV[1] then
  return -1
end
local have = redis.call('HGET', KEYS[1], 'relayer_nonce')
if have then
  return tonumber(have)
end
local n = math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), tonumber(ARGV[2]))
redis.call('SET', KEYS[2], n + 1)
redis.call('HSET', KEYS[1], 'relayer_nonce', n)
return n
"""


def authorization_key(network: str, token: str, body: ExactBody) -> str:
    """What one authorization is settled under: ``<network>:<token>:<from>:<nonce>``."""
    auth = body.authorization
    return f"{network}:{token.lower()}:{auth.from_.lower()}:{auth.nonce.lower()}"


def authorization_problem(
    auth: Authorization, terms: Terms, now: float, margin: float
) -> tuple[ReasonCode, str] | None:
    """What makes ``auth`` unfit for ``terms`` before any chain is asked, or ``None``.

    The reference facilitator's rules, not looser: ``to`` is the payee, ``value`` the amount
    (less is too low; more would charge the payer more than the offer), ``validAfter`` has
    passed, and ``validBefore`` leaves ``margin`` seconds to settle.
    """
    if auth.to.lower() != terms.pay_to.lower():
        return ReasonCode.WRONG_RECIPIENT, f"the authorization pays {auth.to}, not the payee"
    value = int(auth.value)
    if value < terms.amount:
        return ReasonCode.AMOUNT_TOO_LOW, f"the authorization is for {value}, not {terms.amount}"
    if value > terms.amount:
        return (
            ReasonCode.INVALID_PAYLOAD,
            f"the authorization is for {value}, more than the offer's {terms.amount}",
        )
    if int(auth.valid_after) > now:
        return (
            ReasonCode.AUTHORIZATION_NOT_YET_VALID,
            f"the authorization is valid only after {auth.valid_after}",
        )
    if int(auth.valid_before) < now + margin:
        return (
            ReasonCode.AUTHORIZATION_EXPIRED,
            f"the authorization is valid only before {auth.valid_before}, "
            f"and settling needs {margin:g} s",
        )
    return None


@dataclass(frozen=True, slots=True)
class ExactPayment:
    """An exact payment a worker settles: the authenticated terms and the payer's authorization.

    ``domain`` is the token's EIP-712 domain from the asset registry (never the client's copy);
    ``payload`` and ``requirements`` are the wire forms a facilitator takes.
    """

    network: str
    token: str
    pay_to: str
    amount: int
    authorization: Authorization
    signature: str
    domain: tuple[str, str] | None
    key: str
    payload: dict[str, Any] = field(repr=False)
    requirements: dict[str, Any] = field(repr=False)

    @classmethod
    def of(
        cls, proof: PaymentPayload, challenge: Challenge, domain: tuple[str, str] | None
    ) -> ExactPayment:
        body = proof.exact
        terms = challenge.terms
        return cls(
            network=terms.network,
            token=terms.asset,
            pay_to=terms.pay_to,
            amount=terms.amount,
            authorization=body.authorization,
            signature=body.signature,
            domain=domain,
            key=authorization_key(terms.network, terms.asset, body),
            payload=proof.model_dump(by_alias=True, exclude_none=True),
            requirements=proof.accepted.model_dump(by_alias=True, exclude_none=True),
        )

    @property
    def payer(self) -> str:
        return self.authorization.from_.lower()


class SettlementRecord:
    """How far the settlement of one authorization went, as its owning job left it in Redis.

    Fields: ``txids`` (the settlement transaction's hashes, newest last: a replacement adds
    one), ``raw`` (the last signed transaction, local mode), ``relayer_nonce``, ``sent_at``
    (unix seconds of the last broadcast), ``state`` (``settling`` once a broadcast or a
    facilitator's ``/settle`` may have happened) and ``from_block`` (the head when it began).
    """

    def __init__(self, store: Authorizations, key: str, job: str, fields: dict[str, str]) -> None:
        self._store = store
        self.key = key
        self.job = job
        self.fields = fields

    @property
    def txids(self) -> list[str]:
        raw = self.fields.get("txids")
        return list(orjson.loads(raw)) if raw else []

    @property
    def settling(self) -> bool:
        return self.fields.get("state") == "settling" or bool(self.txids)

    def get(self, name: str) -> str | None:
        return self.fields.get(name)

    async def note(self, **fields: str | int | float) -> None:
        """Write ``fields``; ``LostAuthorization`` when this job no longer owns the record."""
        values = {k: str(v) for k, v in fields.items()}
        if not await self._store.note(self.key, self.job, values):
            raise LostAuthorization(f"the settlement record of {self.key} is not ours any more")
        self.fields.update(values)

    async def add_txid(self, txid: str, **fields: str | int | float) -> None:
        txids = self.txids
        if txid not in txids:
            txids.append(txid)
        await self.note(txids=orjson.dumps(txids).decode(), state="settling", **fields)

    async def relayer_nonce(self, counter: str, chain_count: int) -> int:
        """This settlement's relayer nonce: allocated once, kept across tries and workers."""
        nonce = await self._store.allocate_nonce(self.key, self.job, counter, chain_count)
        if nonce < 0:
            raise LostAuthorization(f"the settlement record of {self.key} is not ours any more")
        self.fields["relayer_nonce"] = str(nonce)
        return nonce


class LostAuthorization(TransientError):
    """The record expired or another job owns it: this try must not broadcast anything (the
    next one finds out which)."""


class Authorizations:
    """The Redis side of settlement: claims of authorizations and their records."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._prefix = prefix
        self._redis = redis
        self._claim = redis.register_script(_CLAIM)
        self._note = redis.register_script(_NOTE)
        self._release = redis.register_script(_RELEASE)
        self._nonce = redis.register_script(_NONCE)

    def record_key(self, key: str) -> str:
        return f"{self._prefix}:authorization:{key}"

    def relayer_key(self, network: str, relayer: str) -> str:
        return f"{self._prefix}:relayer-nonce:{network}:{relayer.lower()}"

    async def claim(self, key: str, job: str, ttl: int) -> SettlementRecord | str:
        """The record of ``key`` for ``job``, new or as an earlier try left it; the id of the
        job that owns it otherwise."""
        reply = await self._claim(keys=[self.record_key(key)], args=[job, max(ttl, 60)])
        items = [x.decode() if isinstance(x, bytes) else str(x) for x in reply]
        if items[:1] == ["taken"]:
            return items[1]
        return SettlementRecord(self, key, job, dict(zip(items[::2], items[1::2], strict=True)))

    async def owner(self, key: str) -> str | None:
        """The job that claimed ``key``, if any (read only)."""
        job = await self._redis.hget(self.record_key(key), "job")  # type: ignore[misc]
        return job.decode() if isinstance(job, bytes) else job

    async def note(self, key: str, job: str, fields: dict[str, str]) -> bool:
        args: list[str] = [job]
        for name, value in fields.items():
            args += [name, value]
        return bool(await self._note(keys=[self.record_key(key)], args=args))

    async def release(self, record: SettlementRecord) -> bool:
        return bool(await self._release(keys=[self.record_key(record.key)], args=[record.job]))

    async def allocate_nonce(self, key: str, job: str, counter: str, chain_count: int) -> int:
        return int(await self._nonce(keys=[self.record_key(key), counter], args=[job, chain_count]))


class Settler(Protocol):
    """Settles exact payments on one network. Built once per worker (``build_settlers``).

    Every method raises ``FinalError`` for a fact that refuses the payment (with its reason)
    and ``TransientError`` for what may change; nothing else on purpose.
    """

    network: str

    async def start(self) -> None:
        """Connect, and check what must hold before any job runs (the relayer's key, the
        token's domain, the facilitator's networks); raise ``ConfigError`` otherwise."""

    async def close(self) -> None: ...

    async def used_by(self, payment: ExactPayment, record: SettlementRecord) -> str | None:
        """The transaction that used this authorization on chain, if it was used."""

    async def check(self, payment: ExactPayment) -> None:
        """Every check the payment must pass before a broadcast; nothing is broadcast."""

    async def settle(self, payment: ExactPayment, record: SettlementRecord) -> str:
        """Broadcast the settlement, noting in ``record`` first what a later try needs to find
        it; the settlement transaction's id."""

    async def unstick(self, payment: ExactPayment, record: SettlementRecord) -> None:
        """The settlement transaction is not on chain yet: send it again, or replace it."""


class FacilitatorSettler:
    """Settles payments on one network through an x402 facilitator (``verifier.facilitator``).

    Chain-agnostic: what it settles is then observed by the network's own adapter. Before a
    settlement it calls ``/verify`` (a refusal is final, with the facilitator's reason in the
    message); ``/settle`` follows once the record says ``settling``, so that a try after a
    crash looks for the transaction first (on EVM, the token's ``AuthorizationUsed`` log) and
    otherwise calls ``/settle`` again with the same payload, which the chain makes safe.
    """

    def __init__(
        self,
        network: str,
        client: FacilitatorClient,
        adapter: Any,
        scheme: str = "exact",
        tokens: dict[str, tuple[str, str] | None] | None = None,
    ) -> None:
        self.network = network
        self._client = client
        self._adapter = adapter
        self._scheme = scheme
        self._tokens = tokens or {}
        self._checked = False

    async def start(self) -> None:
        """Refuse to start when the facilitator does not list this network. A facilitator
        that cannot be reached now does not stop the worker (it also verifies other payments):
        the check is made again before the first settlement."""
        try:
            await self._served()
        except TransientError as exc:
            log.warning("%s; checked again before the first settlement on %s", exc, self.network)

    async def _served(self) -> None:
        if self._checked:
            return
        # The domains the 402 names are the tokens' own (where the adapter can read them).
        check_domains = getattr(self._adapter, "check_token_domains", None)
        if check_domains is not None and self._tokens:
            await check_domains(self._tokens)
        served = await self._client.supported()
        if (self._scheme, self.network) not in served:
            raise ConfigError(
                f"the facilitator at {self._client.host} does not settle {self._scheme} on "
                f"{self.network} (it lists {', '.join(sorted(f'{s}/{n}' for s, n in served))})"
            )
        self._checked = True

    async def close(self) -> None:
        await self._client.close()

    async def used_by(self, payment: ExactPayment, record: SettlementRecord) -> str | None:
        find = getattr(self._adapter, "authorization_used_by", None)
        if find is None:
            return None
        used: str | None = await find(payment, record)
        return used

    async def check(self, payment: ExactPayment) -> None:
        try:
            await self._served()
        except ConfigError as exc:
            raise FinalError(str(exc), ReasonCode.SETTLEMENT_REFUSED) from exc
        result = await self._client.verify(payment.payload, payment.requirements)
        if not result.is_valid:
            raise FinalError(
                f"the facilitator refused the authorization: {result.invalid_reason}",
                _facilitator_reason(result.invalid_reason or ""),
            )

    async def settle(self, payment: ExactPayment, record: SettlementRecord) -> str:
        await record.note(state="settling")
        result = await self._client.settle(payment.payload, payment.requirements)
        if result.success and result.transaction:
            return str(result.transaction)
        reason = _facilitator_reason(result.error_reason or "")
        if reason is ReasonCode.AUTHORIZATION_ALREADY_USED:
            used = await self.used_by(payment, record)
            if used is not None:  # our earlier /settle went through: that is the settlement
                return used
        raise FinalError(f"the facilitator did not settle: {result.error_reason}", reason)

    async def unstick(self, payment: ExactPayment, record: SettlementRecord) -> None:
        return None  # the facilitator broadcast it: its transaction is its to keep alive


def _facilitator_reason(reason: str) -> ReasonCode:
    """Our reason code for a facilitator's (the reference package's names, roughly)."""
    text = reason.lower()
    for fragment, code in (
        ("valid_after", ReasonCode.AUTHORIZATION_NOT_YET_VALID),
        ("valid_before", ReasonCode.AUTHORIZATION_EXPIRED),
        ("expired", ReasonCode.AUTHORIZATION_EXPIRED),
        ("nonce", ReasonCode.AUTHORIZATION_ALREADY_USED),
        ("used", ReasonCode.AUTHORIZATION_ALREADY_USED),
        ("insufficient_funds", ReasonCode.INSUFFICIENT_BALANCE),
        ("balance", ReasonCode.INSUFFICIENT_BALANCE),
        ("recipient", ReasonCode.WRONG_RECIPIENT),
        ("value", ReasonCode.AMOUNT_TOO_LOW),
        ("signature", ReasonCode.AUTHORIZATION_INVALID),
    ):
        if fragment in text:
            return code
    return ReasonCode.SETTLEMENT_REFUSED


def exact_tokens(settings: Settings, network: str) -> dict[str, tuple[str, str] | None]:
    """The tokens exact offers name on ``network``, with their registry domains."""
    registry = settings.asset_registry()
    tokens: dict[str, tuple[str, str] | None] = {}
    for route in settings.routes:
        for accept in route.accepts:
            if accept.scheme == SCHEME_EXACT and accept.network == network:
                info = registry.resolve(accept.network, accept.asset)
                tokens[info.asset] = info.eip712
    return tokens


def build_settlers(
    settings: Settings,
    adapters: Mapping[str, Any],
    authorizations: Authorizations,
    environ: Mapping[str, str],
) -> dict[str, Settler]:
    """One settler per network with a ``settlement`` table; ``ConfigError`` when one cannot be
    built (a missing key or header variable, an adapter that cannot settle locally)."""
    settlers: dict[str, Settler] = {}
    for network, config in settings.networks.items():
        settlement = config.settlement
        if settlement is None:
            continue
        adapter = adapters.get(network)
        where = f'networks."{network}".settlement'
        if settlement.mode == "local":
            factory = getattr(adapter, "local_settler", None)
            if factory is None:
                raise ConfigError(f"{where}: the {network} adapter cannot settle locally")
            key = environ.get(settlement.relayer_key_env, "").strip()
            if not key:
                raise ConfigError(
                    f"{where}: set {settlement.relayer_key_env} to the relayer's private key "
                    "(hex); it pays the gas of every settlement"
                )
            settlers[network] = factory(
                settlement, key, authorizations, exact_tokens(settings, network)
            )
        else:
            from verifier.facilitator import FacilitatorClient

            headers = {}
            for header, variable in settlement.facilitator_headers_env.items():
                value = environ.get(variable)
                if not value:
                    raise ConfigError(f"{where}: {variable} (header {header}) is not set")
                headers[header] = value
            assert settlement.facilitator_url is not None  # checked by the settings
            client = FacilitatorClient(
                settlement.facilitator_url, headers=headers, timeout=settlement.facilitator_timeout
            )
            settlers[network] = FacilitatorSettler(
                network, client, adapter, tokens=exact_tokens(settings, network)
            )
    return settlers
