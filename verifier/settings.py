"""Configuration: a TOML file and ``X402_*`` environment variables, read once at start.

Precedence, highest first: keyword arguments, environment (``X402_REDIS_URL``,
``X402_WORKER__MAX_JOBS``, nested with ``__``), the TOML file (``--config FILE`` or
``X402_CONFIG``), defaults. ``examples/config.toml`` documents each field.

What cannot work is refused when the settings load, never later at the first payment: every
table forbids unknown keys and every ``X402_*`` variable must name a setting, so a misspelt one
is an error, not a silently ignored line; addresses and asset ids have their network's shape
(``verifier.addresses``); each route's offers resolve against the asset registry. The error
(``ConfigError``) is one line naming each key at fault, e.g.
``worker.retry_max: 2.0 is less than retry_base (5.0)``.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable
from decimal import Decimal, Inexact, InvalidOperation, localcontext
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from verifier.addresses import check_address, check_asset
from verifier.assets import NATIVE, AssetInfo, AssetRegistry, namespace_of, normalize_network
from verifier.config_check import (
    API_TOKEN_ENV,
    CONFIG_ENV,
    ENV_PREFIX,
    NOT_SETTINGS,
    RELAYER_KEY_ENV,
    check_environment,
    one_line,
)
from verifier.errors import ConfigError
from verifier.models import MAX_HEADER_BYTES, Binding

# What each family's adapter means by ``finality``; other namespaces' adapters read their own.
FINALITIES = {
    "eip155": ("EVM", ("latest", "safe", "finalized")),
    "solana": ("Solana", ("confirmed", "finalized", "latest")),
}
# Paths the gate serves itself.
RESERVED_PATHS = frozenset({"/healthz"})
_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,16}$")  # as verifier.challenge signs them
MIN_KEY_BYTES = 32


def http_url(url: str, *, query: bool = True) -> str:
    """``url`` if it is an absolute http(s) URL with a host (and, unless ``query``, without a
    query or fragment); ``ValueError`` otherwise."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port out of range)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL (http[s]://host[:port][/path])")
    if not query and (parts.query or parts.fragment or url.endswith(("?", "#"))):
        raise ValueError(f"{url!r} has a query or fragment")
    return url


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SettlementSettings(_Section):
    """How workers settle exact payments on one network (``verifier.settlement``).

    ``local``: the worker broadcasts ``transferWithAuthorization`` itself, from the relayer key
    in the environment variable ``relayer_key_env`` (never in this file), EVM only.
    ``facilitator``: the worker calls ``facilitator_url``'s ``/verify`` and ``/settle``, with the
    headers of ``facilitator_headers_env`` (header name -> environment variable of its value).
    """

    mode: Literal["local", "facilitator"]
    # validBefore must leave at least this many seconds to settle (the reference facilitator's 6).
    margin: float = Field(default=6.0, ge=0, le=600)
    relayer_key_env: str = Field(default=RELAYER_KEY_ENV, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    # A transaction not in a block after this many seconds is sent again at the same nonce,
    # with fees raised by gas_bump_percent (at least the 10 % nodes require for a replacement).
    replace_after: float = Field(default=30.0, gt=0)
    gas_bump_percent: int = Field(default=20, ge=10, le=500)
    # The most the relayer pays per gas (wei); a settlement priced above it waits.
    max_fee_per_gas: int | None = Field(default=None, ge=1)
    facilitator_url: str | None = None
    facilitator_headers_env: dict[str, str] = Field(default_factory=dict)
    facilitator_timeout: float = Field(default=15.0, gt=0, le=120)

    @field_validator("facilitator_url")
    @classmethod
    def _facilitator_url(cls, v: str | None) -> str | None:
        return None if v is None else http_url(v, query=False)

    @model_validator(mode="after")
    def _mode(self) -> SettlementSettings:
        if self.mode == "facilitator" and self.facilitator_url is None:
            raise ValueError('mode = "facilitator" needs facilitator_url')
        for name in (self.relayer_key_env, *self.facilitator_headers_env.values()):
            if name.upper().startswith(ENV_PREFIX) and name.upper() not in NOT_SETTINGS:
                raise ValueError(
                    f"{name}: a variable named {ENV_PREFIX}… is read as a setting; "
                    f"name secrets otherwise (or use {RELAYER_KEY_ENV} for the relayer key)"
                )
        return self


class NetworkSettings(_Section):
    """One chain network the workers verify on."""

    rpc_urls: list[str] = Field(min_length=1)
    # Used when a route does not say; an offer's own minConfirmations always wins.
    min_confirmations: int = Field(default=1, ge=1)
    # What "final" means, per family. EVM: "latest" counts confirmations from the head,
    # "safe"/"finalized" also require the block at or below that tag. Solana: "confirmed"
    # (the default, "latest" means the same) or "finalized" commitment.
    finality: Literal["latest", "confirmed", "safe", "finalized"] = "latest"
    rpc_timeout: float = Field(default=10.0, gt=0)
    # How long a head (block number / slot) read is shared between concurrent jobs.
    head_cache_seconds: float = Field(default=0.5, ge=0)
    # Free-form adapter options (third-party adapters read theirs from here).
    options: dict[str, Any] = Field(default_factory=dict)
    # How exact payments are settled here; without it, no route may offer exact here.
    settlement: SettlementSettings | None = None

    @field_validator("rpc_urls")
    @classmethod
    def _urls(cls, v: list[str]) -> list[str]:
        return [http_url(url) for url in v]


class _OnNetwork(_Section):
    """A table about one network. ``network`` is its first key, so the keys after it are
    checked against that network's shapes (``_shaped``); when it is invalid, they are not."""

    network: str

    @field_validator("network")
    @classmethod
    def _network(cls, v: str) -> str:
        return normalize_network(v)

    @staticmethod
    def _shaped(check: Callable[[str, str], None], v: str, info: ValidationInfo) -> str:
        if "network" in info.data:
            check(info.data["network"], v)
        return v


class AssetSettings(_OnNetwork):
    symbol: str = Field(pattern=r"^[A-Za-z0-9._-]{1,16}$")
    asset: str  # chain-native id (verifier.addresses), or "native"
    decimals: int = Field(ge=0, le=36)
    # The token's EIP-712 domain, for exact offers; a worker checks it against the token's own.
    eip712_name: str | None = Field(default=None, min_length=1, max_length=100)
    eip712_version: str | None = Field(default=None, min_length=1, max_length=32)

    @model_validator(mode="after")
    def _domain(self) -> AssetSettings:
        if (self.eip712_name is None) != (self.eip712_version is None):
            raise ValueError("give both eip712_name and eip712_version, or neither")
        return self

    def info(self) -> AssetInfo:
        domain = None
        if self.eip712_name is not None and self.eip712_version is not None:
            domain = (self.eip712_name, self.eip712_version)
        return AssetInfo(self.network, self.symbol, self.asset, self.decimals, domain)

    @field_validator("asset")
    @classmethod
    def _asset(cls, v: str, info: ValidationInfo) -> str:
        return cls._shaped(check_asset, v, info)


class AcceptSettings(_OnNetwork):
    """One rail of a paid route. Give ``amount`` in base units, or ``price`` in whole tokens."""

    # A symbol or an id the asset registry knows (built in, or [[assets]]), or "native".
    asset: str
    pay_to: str  # an address of the network (verifier.addresses)
    amount: int | None = Field(default=None, ge=1)
    price: str | None = None
    max_timeout_seconds: int = Field(default=600, ge=10, le=7 * 86400)
    min_confirmations: int | None = Field(default=None, ge=1)
    binding: Binding = Binding.REQUIRED
    # "exact": the payer signs an EIP-3009 authorization and a worker settles it (the network
    # needs a [networks."<id>".settlement] table); binding does not apply to it.
    scheme: Literal["onchain-proof", "exact"] = "onchain-proof"

    @field_validator("pay_to")
    @classmethod
    def _pay_to(cls, v: str, info: ValidationInfo) -> str:
        return cls._shaped(check_address, v, info)

    @model_validator(mode="after")
    def _one_amount(self) -> AcceptSettings:
        if (self.amount is None) == (self.price is None):
            raise ValueError("give exactly one of amount (base units) or price (decimal)")
        return self


class RouteSettings(_Section):
    """One paid route: its resource (a static ``body`` or an ``upstream``), its rails, and what
    one payment buys (``verifier.delivery``).

    ``delivery = "once"`` (the default): the first successful delivery consumes the payment; the
    same proof within ``replay_window`` seconds gets that same response again, after it a final
    ``payment_already_redeemed``. ``delivery = "entitlement"``: the proof is a bearer pass, served
    anew on every request for ``access_period`` seconds from its first delivery.
    """

    path: str = Field(pattern=r"^/")
    description: str = ""
    mime_type: str = "application/json"
    body: str | None = None
    upstream: str | None = None
    accepts: list[AcceptSettings] = Field(min_length=1)
    delivery: Literal["once", "entitlement"] = "once"
    replay_window: int = Field(default=300, ge=1)
    access_period: int | None = Field(default=None, ge=1)
    # Responses kept for replays are at most this large (default: gate.max_stored_response_bytes).
    max_stored_response_bytes: int | None = Field(default=None, ge=0)

    @field_validator("upstream")
    @classmethod
    def _upstream(cls, v: str | None) -> str | None:
        # No query: the gate appends the request's own query to this URL.
        return None if v is None else http_url(v, query=False)

    @model_validator(mode="after")
    def _one_source(self) -> RouteSettings:
        if (self.body is None) == (self.upstream is None):
            raise ValueError(f"route {self.path}: give exactly one of body or upstream")
        return self

    @model_validator(mode="after")
    def _one_policy(self) -> RouteSettings:
        if self.delivery == "entitlement":
            if self.access_period is None:
                raise ValueError(f"route {self.path}: delivery = 'entitlement' needs access_period")
            for key in ("replay_window", "max_stored_response_bytes"):
                if key in self.model_fields_set:
                    raise ValueError(
                        f"route {self.path}: {key} applies to delivery = 'once' only "
                        "(an entitlement serves every access anew and stores nothing)"
                    )
        elif self.access_period is not None:
            raise ValueError(
                f"route {self.path}: access_period applies to delivery = 'entitlement' only"
            )
        return self


class ChallengeSettings(_Section):
    """HMAC keys for stateless nonces, by key id. Rotate by adding a key and moving ``active``."""

    active: str = "k1"
    keys: dict[str, str] = Field(default_factory=dict)

    @field_validator("keys")
    @classmethod
    def _keys(cls, v: dict[str, str]) -> dict[str, str]:
        for kid, key in v.items():
            if not _KEY_ID.match(kid):
                raise ValueError(f"key id {kid!r} is not 1 to 16 of A-Z a-z 0-9 _ -")
            if len(key.encode()) < MIN_KEY_BYTES:
                raise ValueError(
                    f"key {kid!r} is {len(key.encode())} bytes; at least {MIN_KEY_BYTES} "
                    "(openssl rand -hex 32)"
                )
        return v

    @model_validator(mode="after")
    def _active(self) -> ChallengeSettings:
        # No keys at all is load_settings' error, which says how to make one.
        if self.keys and self.active not in self.keys:
            known = ", ".join(sorted(self.keys))
            raise ValueError(f"challenge.active: {self.active!r} is not one of the keys ({known})")
        return self

    def key_bytes(self) -> dict[str, bytes]:
        return {kid: key.encode() for kid, key in self.keys.items()}


class WorkerSettings(_Section):
    max_jobs: int = Field(default=500, ge=1)
    # Seconds between queue polls: a new job waits half of it on average before it starts.
    poll_delay: float = Field(default=0.01, gt=0)
    queue_read_limit: int | None = Field(default=None, ge=1)
    # One attempt's time limit. A worker killed mid-job frees its job this long (+10 s) later.
    job_timeout: float = Field(default=30.0, gt=0)
    retry_base: float = Field(default=1.0, gt=0)
    retry_max: float = Field(default=15.0, gt=0)
    # How many of the max_jobs slots retries may hold at once (default: a twentieth); new proofs
    # may take any slot. It bounds what a backlog of proofs that keep retrying (never mined)
    # costs the worker, so that new proofs keep their speed under a flood (README, rule 11).
    retry_slots: int | None = Field(default=None, ge=1)
    # Transient outcomes keep retrying this long past the challenge's expiry, so that a payment
    # made just before expiry is not lost while it gathers confirmations.
    grace_seconds: int = Field(default=120, ge=0)
    clock_skew: int = Field(default=60, ge=0)
    # Seconds between a worker's writes of its health-check key (`doctor --worker` reads it);
    # the key lives a second longer, so a worker that stopped is not counted after that.
    health_check_interval: int = Field(default=10, ge=1, le=3600)
    # Prometheus /metrics of each worker process on this port (verifier.metrics); None: off.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)

    @model_validator(mode="after")
    def _retries(self) -> WorkerSettings:
        if self.retry_max < self.retry_base:
            raise ValueError(
                f"worker.retry_max: {self.retry_max} is less than retry_base ({self.retry_base})"
            )
        if self.retry_slots is not None and self.retry_slots > self.max_jobs:
            raise ValueError(
                f"worker.retry_slots: {self.retry_slots} is more than max_jobs ({self.max_jobs})"
            )
        return self

    def retry_slots_or_default(self) -> int:
        return self.retry_slots or max(1, self.max_jobs // 20)


class StoreSettings(_Section):
    # A used transaction must stay claimed as long as any challenge could still accept it; the
    # verifier refuses a value shorter than the longest offer's window (see Settings).
    used_tx_retention: int = Field(default=30 * 86400, ge=3600)
    receipt_retention: int = Field(default=7 * 86400, ge=3600)
    stream_maxlen: int = Field(default=1_000_000, ge=1000)
    prefix: str = Field(default="x402", pattern=r"^[A-Za-z0-9_.-]{1,32}$")


class WebhookSettings(_Section):
    """Signed webhooks for receipts (``verifier.webhooks``; ``x402-verifier webhooks``).

    ``secrets_env`` maps key ids to the environment variables holding the secrets; deliveries
    are signed with ``active``'s. Keep an old key id while receivers still check it.
    """

    url: str | None = None
    secrets_env: dict[str, str] = Field(default_factory=dict)
    active: str | None = None
    timeout: float = Field(default=10.0, gt=0, le=120)
    max_attempts: int = Field(default=8, ge=1, le=100)
    backoff_base: float = Field(default=1.0, gt=0)
    backoff_max: float = Field(default=300.0, gt=0)
    concurrency: int = Field(default=16, ge=1, le=1000)
    # A delivery held this long by a dispatcher that stopped answering is taken by another.
    reclaim_after: float = Field(default=60.0, gt=0)
    group: str = Field(default="webhooks", pattern=r"^[A-Za-z0-9_.-]{1,64}$")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return None if v is None else http_url(v)

    @model_validator(mode="after")
    def _keys(self) -> WebhookSettings:
        if self.url is None:
            return self
        if not self.secrets_env:
            raise ValueError('url needs secrets_env: {key id = "<variable holding its secret>"}')
        if self.active is None or self.active not in self.secrets_env:
            raise ValueError(
                f"active must be one of the key ids of secrets_env ({', '.join(self.secrets_env)})"
            )
        for key_id, name in self.secrets_env.items():
            if not re.match(r"^[A-Za-z0-9_-]{1,32}$", key_id):
                raise ValueError(f"key id {key_id!r}: 1 to 32 of A-Z a-z 0-9 _ -")
            if name.upper().startswith(ENV_PREFIX) and name.upper() not in NOT_SETTINGS:
                raise ValueError(f"{name}: a variable named {ENV_PREFIX}… is read as a setting")
        if self.backoff_max < self.backoff_base:
            raise ValueError("backoff_max is less than backoff_base")
        return self


class ApiSettings(_Section):
    """What authenticates the operator APIs: the facilitator endpoint and the receipts endpoint.

    ``token_env`` names the variable holding the bearer token (a secret, never in the file).
    Without it set, those endpoints refuse every request (``401``), so nothing is open by
    accident.
    """

    token_env: str = Field(default=API_TOKEN_ENV, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    @field_validator("token_env")
    @classmethod
    def _not_a_setting(cls, v: str) -> str:
        if v.upper().startswith(ENV_PREFIX) and v.upper() not in NOT_SETTINGS:
            raise ValueError(f"{v}: a variable named {ENV_PREFIX}… is read as a setting")
        return v

    def token(self) -> str | None:
        """The configured token, or ``None`` when the variable is unset or empty."""
        return os.environ.get(self.token_env) or None


class FacilitatorSettings(_Section):
    """The x402 facilitator HTTP API (``x402-verifier facilitator``; ``verifier.facilitator_api``).

    ``rate_limit`` requests per second per client (by its address), with bursts of ``burst``;
    ``settle_timeout``: how long ``/settle`` waits for the worker pool before answering a
    pending failure (the same payload sent again gets the final answer). A payment's ``/settle``
    succeeds once and ``max_replays`` more times (a client retrying after a lost response)
    within ``replay_window`` seconds of the first, then answers ``payment_already_redeemed``.
    """

    host: str = "127.0.0.1"
    port: int = Field(default=8403, ge=0, le=65535)
    rate_limit: float = Field(default=50.0, gt=0)
    burst: int = Field(default=100, ge=1)
    verify_timeout: float = Field(default=10.0, gt=0, le=120)
    settle_timeout: float = Field(default=30.0, gt=0, le=120)
    replay_window: int = Field(default=300, ge=1)
    max_replays: int = Field(default=1, ge=0, le=100)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)


class GateSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8402, ge=0, le=65535)
    settle_timeout: float = Field(default=10.0, gt=0, le=120)
    # Unfinished verifications one challenge may have at once (distinct transaction ids or
    # signatures); one more is refused with too_many_proofs (HTTP 429) until one ends.
    max_proofs_per_nonce: int = Field(default=4, ge=1, le=100)
    # Base URL the routes are offered under (the resource url); defaults to the request's.
    public_url: str | None = None

    # Seconds for one whole upstream call (connect, send, the complete response).
    upstream_timeout: float = Field(default=30.0, gt=0)
    # The largest response kept for replays of a "once" route (routes may set their own).
    max_stored_response_bytes: int = Field(default=1 << 20, ge=0)
    # What one client may hold (verifier/server.py says what each limit protects against).
    # Open connections served at once; a request on one more gets 503.
    max_connections: int = Field(default=1000, ge=1)
    # Seconds a connection has to send a request's line and headers, counted from when it
    # opened or from the previous response; then it is closed.
    header_timeout: float = Field(default=10.0, gt=0)
    # Seconds an idle kept-alive connection stays open (whole seconds: uvicorn's unit).
    keep_alive_timeout: int = Field(default=5, ge=1)
    # A request body larger than this gets 413.
    max_body_bytes: int = Field(default=1024 * 1024, ge=0)
    # Prometheus metrics of the HTTP gate at this path (verifier.metrics); "" turns it off.
    metrics_path: str = Field(default="/metrics", pattern=r"^(/[A-Za-z0-9._~/-]*)?$")
    # The status read (verifier.status) behind the [api] token; "" turns it off.
    receipts_path: str = Field(default="/x402/receipts", pattern=r"^(/[A-Za-z0-9._~/-]*)?$")
    # Request line and headers together; more gets 431. A proof header alone may take 16 KiB
    # (MAX_HEADER_BYTES), so no less than twice that: room for the request's other headers.
    max_header_bytes: int = Field(default=64 * 1024, ge=2 * MAX_HEADER_BYTES)

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, v: str | None) -> str | None:
        return None if v is None else http_url(v, query=False)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    redis_url: str = "redis://127.0.0.1:6379/0"
    queue_name: str = "x402:verify"
    challenge: ChallengeSettings = ChallengeSettings()
    worker: WorkerSettings = WorkerSettings()
    store: StoreSettings = StoreSettings()
    gate: GateSettings = GateSettings()
    webhooks: WebhookSettings = WebhookSettings()
    api: ApiSettings = ApiSettings()
    facilitator: FacilitatorSettings = FacilitatorSettings()
    networks: dict[str, NetworkSettings] = Field(default_factory=dict)
    assets: list[AssetSettings] = Field(default_factory=list)
    routes: list[RouteSettings] = Field(default_factory=list)

    _toml_path: ClassVar[Path | None] = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        check_environment(os.environ, cls)
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if cls._toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=cls._toml_path))
        return tuple(sources)

    @field_validator("networks")
    @classmethod
    def _networks(cls, v: dict[str, NetworkSettings]) -> dict[str, NetworkSettings]:
        networks = {normalize_network(k): n for k, n in v.items()}
        for network, config in networks.items():
            if (
                config.settlement is not None
                and config.settlement.mode == "local"
                and namespace_of(network) != "eip155"
            ):
                raise ValueError(
                    f'networks."{network}".settlement.mode: local settlement is EVM only; '
                    'use mode = "facilitator"'
                )
            family, allowed = FINALITIES.get(namespace_of(network), ("", ()))
            if allowed and config.finality not in allowed:
                raise ValueError(
                    f'networks."{network}".finality: "{config.finality}" is not a finality on '
                    f"{family} (one of {', '.join(allowed)})"
                )
        return networks

    @field_validator("assets")
    @classmethod
    def _assets(cls, v: list[AssetSettings]) -> list[AssetSettings]:
        # Later entries override the built-in ones; two entries for one symbol (or one id) on
        # one network would silently drop the earlier one, so that is refused.
        symbols: dict[tuple[str, str], int] = {}
        ids: dict[tuple[str, str], int] = {}
        for i, a in enumerate(v):
            asset_id = a.asset.lower() if namespace_of(a.network) == "eip155" else a.asset
            for seen, key, name, value in (
                (symbols, (a.network, a.symbol.upper()), "symbol", a.symbol),
                (ids, (a.network, asset_id), "asset", a.asset),
            ):
                if key in seen:
                    raise ValueError(
                        f"assets[{i}].{name}: {value!r} is already assets[{seen[key]}] on "
                        f"{a.network}"
                    )
                seen[key] = i
        return v

    @field_validator("routes")
    @classmethod
    def _paths(cls, v: list[RouteSettings]) -> list[RouteSettings]:
        seen: dict[str, int] = {}
        for i, route in enumerate(v):
            if route.path in RESERVED_PATHS:
                raise ValueError(f"routes[{i}].path: {route.path!r} is the gate's own")
            if route.path in seen:
                raise ValueError(
                    f"routes[{i}].path: {route.path!r} is already routes[{seen[route.path]}]"
                )
            seen[route.path] = i
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        longest = max((a.max_timeout_seconds for r in self.routes for a in r.accepts), default=600)
        window = longest + self.worker.grace_seconds + 2 * self.worker.clock_skew
        if self.store.used_tx_retention < window:
            raise ValueError(
                f"store.used_tx_retention ({self.store.used_tx_retention}s) is shorter than the "
                f"longest acceptance window ({window}s): a used transaction could be redeemed again"
            )
        if self.gate.receipts_path and self.gate.receipts_path == self.gate.metrics_path:
            raise ValueError("gate.receipts_path: it is gate.metrics_path too")
        for name in ("metrics_path", "receipts_path"):
            # /healthz comes first among the gate's routes: the other would never be reached.
            if getattr(self.gate, name) in RESERVED_PATHS:
                raise ValueError(f"gate.{name}: {getattr(self.gate, name)!r} is the gate's own")
        for i, route in enumerate(self.routes):
            if route.path == self.gate.metrics_path:
                raise ValueError(
                    f"routes[{i}].path: {route.path!r} is gate.metrics_path (the gate's metrics)"
                )
            if route.path == self.gate.receipts_path:
                raise ValueError(
                    f"routes[{i}].path: {route.path!r} is gate.receipts_path (the status read)"
                )
        for route in self.routes:
            period = route.access_period or route.replay_window
            if period > self.store.receipt_retention:
                name = "access_period" if route.access_period else "replay_window"
                raise ValueError(
                    f"route {route.path}: {name} ({period}s) is longer than "
                    f"store.receipt_retention ({self.store.receipt_retention}s), for which the "
                    "proof's receipt is kept"
                )
            for accept in route.accepts:
                if accept.network not in self.networks:
                    raise ValueError(
                        f"route {route.path} offers {accept.network}, which has no [networks] entry"
                    )
        self._offers_resolve()
        return self

    def _offers_resolve(self) -> None:
        """Each offer's asset is in the registry and its price is exact in its decimals, as the
        gate resolves them (``verifier.gate.resolve_offer``) when it starts."""
        registry = self.asset_registry()
        for i, route in enumerate(self.routes):
            for j, accept in enumerate(route.accepts):
                key = f"routes[{i}].accepts[{j}]"
                try:
                    info = registry.resolve(accept.network, accept.asset)
                except ConfigError as exc:
                    raise ValueError(f"{key}.asset: {exc}") from None
                if accept.price is not None:
                    try:
                        parse_price(accept.price, info.decimals)
                    except ConfigError as exc:
                        raise ValueError(f"{key}.price: {exc}") from None
                if accept.scheme == "exact":
                    self._exact_offer(key, accept, info)

    def _exact_offer(self, key: str, accept: AcceptSettings, info: AssetInfo) -> None:
        settlement = self.networks[accept.network].settlement
        if settlement is None:
            raise ValueError(
                f'{key}.scheme: exact needs [networks."{accept.network}".settlement] '
                '(mode = "local" or "facilitator")'
            )
        evm = namespace_of(accept.network) == "eip155"
        if (evm or settlement.mode == "local") and (info.asset == NATIVE or info.eip712 is None):
            what = (
                "the native coin" if info.asset == NATIVE else f"{info.symbol} has no known domain"
            )
            raise ValueError(
                f"{key}.asset: exact on EVM takes an EIP-3009 token with a known EIP-712 "
                f"domain, and {what}: give eip712_name and eip712_version in [[assets]]"
            )

    def asset_registry(self) -> AssetRegistry:
        return AssetRegistry([a.info() for a in self.assets])

    def network(self, network: str) -> NetworkSettings:
        try:
            return self.networks[network]
        except KeyError:
            raise ConfigError(f"network {network} is not configured") from None


def load_settings(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Read the configuration once: ``path``, else ``$X402_CONFIG``, else environment alone.

    Any mistake is one ``ConfigError`` line that names the file or variable and each key.
    """
    chosen = path if path is not None else os.environ.get(CONFIG_ENV)
    toml_path = Path(chosen) if chosen else None
    if toml_path is not None and not toml_path.is_file():
        raise ConfigError(f"configuration file {toml_path} does not exist")
    Settings._toml_path = toml_path
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        where = f" in {toml_path}" if toml_path else ""
        raise ConfigError(f"invalid configuration{where}: {one_line(exc)}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{toml_path} is not valid TOML: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{toml_path} cannot be read: {exc}") from exc
    except SettingsError as exc:  # what check_environment does not foresee, said as it is
        raise ConfigError(f"invalid environment: {exc}: {exc.__cause__}") from exc
    finally:
        Settings._toml_path = None
    if not settings.challenge.keys:
        raise ConfigError(
            "no challenge keys: set [challenge.keys] (at least 32 random characters each), "
            'e.g. X402_CHALLENGE__KEYS=\'{"k1": "<openssl rand -hex 32>"}\''
        )
    return settings


def parse_price(price: str, decimals: int) -> int:
    """A decimal price in whole tokens as exact base units; refuses sub-unit precision."""
    # Exact arithmetic: the default 28-digit context would round large amounts silently.
    with localcontext() as ctx:
        ctx.prec = 200
        ctx.traps[Inexact] = True
        try:
            value = Decimal(price.strip()) if len(price) <= 100 else Decimal("nan")
            units = value.scaleb(decimals)
        except (InvalidOperation, Inexact) as exc:
            raise ConfigError(f"price {price!r} is not a decimal number") from exc
    if not units.is_finite() or units <= 0 or units != units.to_integral_value():
        raise ConfigError(f"price {price!r} is not a positive multiple of 10^-{decimals}")
    return int(units)
