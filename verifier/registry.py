"""Adapter discovery through the entry point group ``verifier.chains``.

Each entry point is named after the CAIP-2 namespace it serves and points at an adapter class
(see ``verifier.adapter.ChainAdapter``). Built-in adapters are registered the same way as
third-party ones, in ``pyproject.toml``.

Entry points are looked up by name from the installed distributions' metadata, and only the
namespaces a worker is configured for are imported and validated: an install with one extra
(``x402-verifier[evm]``) runs an EVM worker without the other families' SDKs, and a broken
plugin stops only the workers configured for its namespace. Any failure to load a configured
plugin is one ``PluginError`` line naming the plugin, its distribution and what went wrong; for a
built-in adapter whose SDK is missing, it ends with the ``pip install`` that fixes it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from verifier.adapter import ChainAdapter
from verifier.assets import namespace_of
from verifier.errors import ConfigError, PluginError
from verifier.settings import Settings

GROUP = "verifier.chains"
BUILTIN_DISTRIBUTION = "x402-verifier"
#: The extra of ``x402-verifier`` that installs each built-in adapter's SDK (``pyproject.toml``).
BUILTIN_EXTRAS = {"eip155": "evm", "solana": "solana", "stellar": "stellar", "tvm": "ton"}
_REQUIRED = (
    "create",
    "start",
    "close",
    "canonical_txid",
    "normalize_address",
    "normalize_asset",
    "observe",
    "verify_signature",
)
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Plugin:
    namespace: str
    adapter: type[ChainAdapter]
    distribution: str


def _distribution(ep: EntryPoint) -> str:
    return ep.dist.name if ep.dist is not None else "an unknown distribution"


def _canonical(name: str) -> str:
    # Build backends spell a distribution's name in metadata as declared or normalized
    # (x402-verifier, x402_verifier): compare them the way pip does (PEP 503).
    return re.sub(r"[-_.]+", "-", name).lower()


def _registered() -> dict[str, list[EntryPoint]]:
    found: dict[str, list[EntryPoint]] = {}
    for ep in entry_points(group=GROUP):
        found.setdefault(ep.name, []).append(ep)
    return found


def installed() -> dict[str, tuple[str, ...]]:
    """The distributions registering each namespace, read from metadata: nothing is imported."""
    return {
        namespace: tuple(_distribution(ep) for ep in eps)
        for namespace, eps in sorted(_registered().items())
    }


def _import(ep: EntryPoint, where: str) -> object:
    try:
        return ep.load()
    except ImportError as exc:
        failure = f"{where} cannot be loaded: {_one_line(exc)}"
        extra = BUILTIN_EXTRAS.get(ep.name)
        if extra is not None and _canonical(_distribution(ep)) == BUILTIN_DISTRIBUTION:
            # The built-in adapters import their chain SDK at the top: an ImportError there is an
            # install without that family's extra.
            failure += f"; install its extra: pip install '{BUILTIN_DISTRIBUTION}[{extra}]'"
        raise PluginError(failure) from exc
    except Exception as exc:
        # A plugin's own bug at import (or an entry point naming a missing attribute) is reported
        # as that plugin's, in one line; the traceback stays on the exception's __cause__.
        raise PluginError(f"{where} cannot be loaded: {_one_line(exc)}") from exc


def _one_line(exc: Exception) -> str:
    first_line = str(exc).partition("\n")[0]
    return f"{type(exc).__name__}: {first_line}"


def _load(ep: EntryPoint) -> Plugin:
    where = f"adapter plugin {ep.name!r} ({ep.value}) from {_distribution(ep)}"
    cls = _import(ep, where)
    missing = [name for name in _REQUIRED if not callable(getattr(cls, name, None))]
    if not isinstance(cls, type) or missing:
        raise PluginError(f"{where} is not a ChainAdapter class (missing: {missing})")
    if getattr(cls, "namespace", None) != ep.name:
        raise PluginError(
            f"{where}: entry point name must equal the class's namespace "
            f"({getattr(cls, 'namespace', None)!r})"
        )
    return Plugin(ep.name, cls, _distribution(ep))


def load_plugins(namespaces: Iterable[str] | None = None) -> dict[str, Plugin]:
    """The adapter classes of ``namespaces`` (default: every registered one), by namespace.

    Each is imported and validated; a namespace no distribution registers is left out.
    """
    registered = _registered()
    wanted = registered.keys() if namespaces is None else registered.keys() & set(namespaces)
    plugins: dict[str, Plugin] = {}
    for namespace in sorted(wanted):
        eps = registered[namespace]
        if len(eps) > 1:
            claims = ", ".join(f"{ep.value} from {_distribution(ep)}" for ep in eps)
            raise PluginError(f"adapter plugin {namespace!r} is registered twice: {claims}")
        plugins[namespace] = _load(eps[0])
    return plugins


def build_adapters(
    settings: Settings, plugins: dict[str, Plugin] | None = None
) -> dict[str, ChainAdapter]:
    """One adapter per configured network (not started yet).

    Without ``plugins``, only the namespaces of ``settings.networks`` are imported.
    """
    if plugins is None:
        plugins = load_plugins({namespace_of(network) for network in settings.networks})
    adapters: dict[str, ChainAdapter] = {}
    for network, config in settings.networks.items():
        plugin = plugins.get(namespace_of(network))
        if plugin is None:
            raise ConfigError(
                f"no adapter for {network}: no plugin serves namespace {namespace_of(network)!r} "
                f"(installed: {sorted(installed().keys() | plugins.keys())})"
            )
        adapters[network] = plugin.adapter.create(network, config)
        log.debug(
            "adapter %s for %s from %s", plugin.adapter.__name__, network, plugin.distribution
        )
    return adapters
