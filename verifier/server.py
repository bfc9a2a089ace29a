"""The uvicorn server that ``x402-verifier gate`` runs, built from ``Settings``."""

from __future__ import annotations

import uvicorn
from starlette.types import ASGIApp

from verifier.settings import Settings


def build_config(
    settings: Settings,
    app: ASGIApp | None = None,
    *,
    host: str | None = None,
    port: int | None = None,
) -> uvicorn.Config:
    """The server configuration for ``app`` (default: the gate of ``settings.routes``)."""
    if app is None:
        from verifier.asgi import create_app

        app = create_app(settings)
    return uvicorn.Config(
        app,
        host=host or settings.gate.host,
        port=settings.gate.port if port is None else port,
        log_level="warning",
        access_log=False,
    )


def build_server(
    settings: Settings,
    app: ASGIApp | None = None,
    *,
    host: str | None = None,
    port: int | None = None,
) -> uvicorn.Server:
    """A uvicorn ``Server`` for :func:`build_config`; ``run()`` it, or ``await serve()``."""
    return uvicorn.Server(build_config(settings, app, host=host, port=port))
