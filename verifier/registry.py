"""Adapter discovery through the entry point group ``verifier.chains``.

Each entry point is named after the CAIP-2 namespace it serves and points at an adapter class
(see ``verifier.adapter.ChainAdapter``). Built-in adapters are registered the same way as
third-party ones, in ``pyproject.toml``. Entry points are loaded once and validated at load time;
an error names the plugin and the distribution that ships it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from verifier.adapter import ChainAdapter
from verifier.assets import namespace_of
from verifier.errors import ConfigError, PluginError
from verifier.settings import Settings

GROUP = "verifier.chains"
_REQUIRED = (
    "create",
    "start",
    "close",
    "canonical_txid",
    "normalize_address",
    "normalize_asset",
    "observe",
    "verify_payer_signature",
)
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Plugin:
    namespace: str
    adapter: type[ChainAdapter]
    distribution: str


def _describe(ep: EntryPoint) -> str:
    dist = ep.dist.name if ep.dist is not None else "unknown distribution"
    return f"adapter plugin {ep.name!r} ({ep.value}) from {dist}"


def load_plugins() -> dict[str, Plugin]:
    """Every adapter class registered in ``verifier.chains``, by namespace."""
    found: dict[str, Plugin] = {}
    for ep in entry_points(group=GROUP):
        where = _describe(ep)
        try:
            cls = ep.load()
        except ImportError as exc:
            raise PluginError(
                f"{where} cannot be imported: {exc} (is its extra installed?)"
            ) from exc
        missing = [name for name in _REQUIRED if not callable(getattr(cls, name, None))]
        if not isinstance(cls, type) or missing:
            raise PluginError(f"{where} is not a ChainAdapter class (missing: {missing})")
        if getattr(cls, "namespace", None) != ep.name:
            raise PluginError(
                f"{where}: entry point name must equal the class's namespace "
                f"({getattr(cls, 'namespace', None)!r})"
            )
        if ep.name in found:
            raise PluginError(f"{where}: namespace {ep.name!r} is registered twice")
        dist = ep.dist.name if ep.dist is not None else "?"
        found[ep.name] = Plugin(ep.name, cls, dist)
    return found


def build_adapters(
    settings: Settings, plugins: dict[str, Plugin] | None = None
) -> dict[str, ChainAdapter]:
    """One adapter per configured network (not started yet)."""
    plugins = load_plugins() if plugins is None else plugins
    adapters: dict[str, ChainAdapter] = {}
    for network, config in settings.networks.items():
        plugin = plugins.get(namespace_of(network))
        if plugin is None:
            raise ConfigError(
                f"no adapter for {network}: no plugin serves namespace {namespace_of(network)!r} "
                f"(installed: {sorted(plugins)})"
            )
        adapters[network] = plugin.adapter.create(network, config)
        log.debug(
            "adapter %s for %s from %s", plugin.adapter.__name__, network, plugin.distribution
        )
    return adapters
