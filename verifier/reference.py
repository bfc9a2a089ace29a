"""The server side of ``onchain-proof`` for the reference x402 Python SDK (``pip install x402``).

A resource server built on the reference middleware offers ``onchain-proof`` by registering
this scheme next to (or instead of) the SDK's own, with our facilitator endpoint
(``x402-verifier facilitator``) as its facilitator::

    from x402.http import FacilitatorConfig, HTTPFacilitatorClient
    from x402.server import x402ResourceServer
    from verifier.reference import OnchainProofServerScheme

    facilitator = HTTPFacilitatorClient(FacilitatorConfig(url=..., auth_provider=...))
    server = x402ResourceServer(facilitator)
    server.register("eip155:8453", OnchainProofServerScheme(settings))

    routes = {"GET /report": RouteConfig(accepts=PaymentOption(
        scheme="onchain-proof", network="eip155:8453", pay_to="0x…", price="$0.01",
        extra={"route": "/report"}))}

For each 402 it issues a fresh authenticated challenge (the nonce and its memo commitment, in
``extra``) over the requirements the SDK built, exactly as the HTTP gate does, with the same
keys (``settings.challenge``: give it the facilitator's configuration file). The challenge is
for the route named in ``extra.route`` (optional; with it, a proof paid on one route does not
pay another at the same price). ``nonce`` and ``memo`` are dynamic fields: the SDK matches a
paid proof against the route's requirements without them, and the facilitator endpoint
authenticates them.

Prices: an ``AssetAmount`` (``{"amount": "10000", "asset": "0x…"}``) as given, or money
(``"$0.01"``, ``0.01``) in the network's USDC from our asset registry; a price that is not
exact in the asset's decimals is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from verifier.assets import format_amount, normalize_network
from verifier.challenge import ChallengeSigner, Terms, memo_for
from verifier.errors import ConfigError
from verifier.facilitator_api import DYNAMIC_EXTRA, facilitator_resource
from verifier.models import SCHEME, Binding
from verifier.settings import Settings, parse_price


class OnchainProofServerScheme:
    """``SchemeNetworkServer`` of the reference SDK for ``onchain-proof`` (module docstring)."""

    scheme = SCHEME
    # The SDK's plumbing: no asset transfer method on the wire, the "authorization" flow
    # (verify before the handler, settle after it).
    default_asset_transfer_method = "default"
    payment_flows: Mapping[str, Any] = {
        "default": {"supported": ("authorization",), "default": "authorization"}
    }
    dynamic_extra_fields = list(DYNAMIC_EXTRA)

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry = settings.asset_registry()
        self.signer = ChallengeSigner(settings.challenge.key_bytes(), settings.challenge.active)

    def parse_price(self, price: Any, network: str) -> Any:
        from x402.schemas import AssetAmount

        network = normalize_network(str(network))
        if isinstance(price, AssetAmount):
            return price
        if isinstance(price, dict) and "amount" in price:
            if not price.get("asset"):
                raise ValueError(f"an AssetAmount needs its asset on {network}")
            return AssetAmount(
                amount=str(price["amount"]), asset=price["asset"], extra=price.get("extra")
            )
        text = str(price).strip().removeprefix("$").strip()
        try:
            Decimal(text)
            info = self.registry.resolve(network, "USDC")
            amount = parse_price(text, info.decimals)
        except InvalidOperation:
            raise ValueError(f"price {price!r} is not money ($0.01) nor an AssetAmount") from None
        except ConfigError as exc:  # not exact in the decimals, or no USDC on the network
            raise ValueError(str(exc)) from None
        return AssetAmount(amount=str(amount), asset=info.asset)

    def enhance_payment_requirements(
        self, requirements: Any, supported_kind: Any, extension_keys: list[str]
    ) -> Any:
        """A fresh challenge for these requirements, in ``extra``."""
        network = normalize_network(str(requirements.network))
        try:
            info = self.registry.resolve(network, requirements.asset)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        extra = dict(requirements.extra or {})
        binding = Binding(extra.get("binding", Binding.REQUIRED.value))
        min_conf = int(
            extra.get("minConfirmations") or self.settings.network(network).min_confirmations
        )
        route = extra.get("route")
        requirements.asset = info.asset  # as the registry spells it (EVM: lowercase)
        terms = Terms(
            scheme=SCHEME,
            network=network,
            asset=info.asset,
            amount=int(requirements.amount),
            pay_to=requirements.pay_to,
            max_timeout_seconds=int(requirements.max_timeout_seconds),
            min_confirmations=min_conf,
            binding=binding,
            resource=facilitator_resource(route if isinstance(route, str) else None),
        )
        issued = self.signer.issue(terms)
        extra.update(
            nonce=issued.nonce,
            memo=memo_for(issued.nonce),
            decimals=info.decimals,
            symbol=info.symbol,
            amountFormatted=format_amount(terms.amount, info.decimals),
            minConfirmations=min_conf,
            binding=binding.value,
        )
        requirements.extra = extra
        return requirements
