"""``x402-verifier``: gate | worker | facilitator | webhooks | receipts | verify | doctor.

Every command takes ``--config FILE`` (or ``$X402_CONFIG``) and reads it once at start, and
``-v`` (debug logging) before or after the command's name.

Exit codes: ``0`` done (or stopped by SIGINT / SIGTERM); ``1`` a check failed (``doctor``),
the proof does not count (``verify``) or no receipt matches (``receipts``); ``2`` the
configuration (or the command line) is wrong; ``3`` the process cannot start (Redis
unreachable, the gate's port taken). Errors are one line, ``x402-verifier: <what>``, on stderr,
never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from verifier.errors import ConfigError, RpcUnavailable, VerifierError, WrongChain
from verifier.settings import NetworkSettings, Settings, load_settings
from verifier.trace import configure_logging

if TYPE_CHECKING:
    from verifier.adapter import ChainAdapter
    from verifier.registry import Plugin

EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_CANNOT_START = 3


class CannotStart(Exception):
    """The process cannot start for a reason outside its configuration (exit code 3)."""


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


def _redis_down(settings: Settings, exc: BaseException) -> CannotStart:
    return CannotStart(f"cannot start: Redis at {settings.redis_url} is unreachable ({exc})")


def _listen(args: argparse.Namespace, host: str, port: int, keys: str) -> tuple[str, int]:
    """The command line's host and port, else the configuration's; ``CannotStart`` when
    they cannot be listened on (``keys`` names the settings)."""
    from verifier.server import check_listen

    host = args.host or host
    port = port if args.port is None else args.port
    try:
        check_listen(host, port)
    except OSError as exc:
        raise CannotStart(f"cannot start: cannot listen on {host}:{port} ({keys}): {exc}") from exc
    return host, port


def _serve(
    settings: Settings,
    host: str,
    port: int,
    connect: Callable[[], Awaitable[Any]],
    make_app: Callable[[Any], Any],
    **server: Any,
) -> int:
    """Serve ``make_app(service)`` until stopped, ``service`` (anything with ``close``) made by
    ``connect`` before the server starts, so that Redis being down is one line here rather than
    a traceback from the app's lifespan ("Application startup failed")."""
    from verifier.server import build_server

    started = False

    async def serve() -> None:
        nonlocal started
        try:
            service = await connect()
        except (RedisError, OSError, TimeoutError) as exc:
            raise _redis_down(settings, exc) from exc
        try:
            app = build_server(settings, make_app(service), host=host, port=port, **server)
            try:
                await app.serve()
            finally:
                started = app.started
        finally:
            await service.close()

    # As uvicorn.run does: Ctrl-C shuts down gracefully, then uvicorn raises it again.
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0 if started else EXIT_CANNOT_START


def cmd_gate(args: argparse.Namespace) -> int:
    from verifier.asgi import create_app
    from verifier.gate import Gate

    settings = _settings(args)
    host, port = _listen(args, settings.gate.host, settings.gate.port, "gate.host, gate.port")
    return _serve(
        settings, host, port, lambda: Gate.connect(settings), lambda g: create_app(settings, g)
    )


def cmd_facilitator(args: argparse.Namespace) -> int:
    from verifier.facilitator_api import Facilitator, create_facilitator_app

    settings = _settings(args)
    config = settings.facilitator
    host, port = _listen(args, config.host, config.port, "facilitator.host, facilitator.port")
    if settings.api.token() is None:
        logging.getLogger(__name__).warning(
            "%s is not set: every request will be refused (401)", settings.api.token_env
        )
    return _serve(
        settings,
        host,
        port,
        lambda: Facilitator.start(settings),
        lambda f: create_facilitator_app(settings, f),
        max_body_bytes=config.max_body_bytes,
    )


def cmd_worker(args: argparse.Namespace) -> int:
    from verifier.worker import run_worker

    settings = _settings(args)
    try:
        run_worker(settings)
    except RedisError as exc:  # arq tried 5 times, 1 s apart
        raise _redis_down(settings, exc) from exc
    return 0


async def _verify(settings: Settings, header: str, resource: str) -> int:
    """Verify one proof against the chain without claiming it (a dry run)."""
    from verifier.challenge import ChallengeSigner
    from verifier.jobs import Verifier
    from verifier.models import ProofBody
    from verifier.queue import VerifyJob, job_key
    from verifier.registry import build_adapters
    from verifier.wire import decode_payment_payload
    from verifier.worker import start_adapters

    proof = decode_payment_payload(header)
    if not isinstance(proof.payload, ProofBody):
        raise ConfigError(
            "verify checks an onchain-proof payment against the chain; an exact payment is "
            "settled, which only a worker does"
        )
    adapters = build_adapters(settings)
    await start_adapters(adapters)
    try:
        signer = ChallengeSigner(settings.challenge.key_bytes(), settings.challenge.active)
        verifier = Verifier(settings, signer, adapters)
        job = VerifyJob(
            proof=proof,
            resource=resource,
            job=job_key(proof.nonce, proof.payload.tx_hash, proof.payload.signature),
        )
        step = await verifier.attempt(job)
    finally:
        await asyncio.gather(*(a.close() for a in adapters.values()))
    print(step.outcome.model_dump_json(by_alias=True, exclude_none=True, indent=2))
    return 0 if step.outcome.success else 1


def cmd_verify(args: argparse.Namespace) -> int:
    return asyncio.run(_verify(_settings(args), args.proof, args.resource))


#: A well-formed id of a transaction that does not exist, per built-in namespace: asking a node
#: for it shows whether the node answers (``tx_not_found``) without depending on any real one.
PROBE_TXIDS = {
    "eip155": "0x" + "00" * 32,
    "solana": "1" * 64,
    "stellar": "00" * 32,
    "tvm": "00" * 32,
}


async def _probe(adapter: ChainAdapter, namespace: str) -> str | None:
    """Why the (single) URL of a started adapter cannot be used, or ``None`` when it answers."""
    from verifier.adapter import Query

    txid = PROBE_TXIDS.get(namespace)
    if txid is None:
        return None  # a third-party family: started (its network pinned, if reachable), no probe
    try:
        await adapter.observe(Query(txid=txid, asset="native", pay_to="", min_confirmations=1))
    except RpcUnavailable as exc:
        return f"unreachable ({exc})"
    except WrongChain as exc:
        return str(exc)
    except VerifierError:
        pass  # "not found" and the like: the node answered
    return None


async def _check_url(network: str, url: str, config: NetworkSettings, plugin: Plugin) -> bool:
    from verifier.assets import namespace_of

    # One adapter per URL: with failover, a dead URL behind a live one would go unnoticed.
    adapter = plugin.adapter.create(network, config.model_copy(update={"rpc_urls": [url]}))
    try:
        await adapter.start()
        failure = await _probe(adapter, namespace_of(network))
    except VerifierError as exc:
        failure = str(exc)
    finally:
        await adapter.close()
    if failure is None:
        print(f"network     ok    {network} {url}")
    else:
        print(f"network     FAIL  {network} {url}: {failure}")
    return failure is None


async def _redis_ok(settings: Settings) -> bool:
    from redis.asyncio import Redis

    redis = Redis.from_url(settings.redis_url)
    try:
        await redis.ping()
        print(f"redis       ok    {settings.redis_url}")
        return True
    except (RedisError, OSError) as exc:
        print(f"redis       FAIL  {settings.redis_url}: {exc}")
        return False
    finally:
        await redis.aclose()


async def _workers_ok(settings: Settings) -> bool:
    """Whether a worker serves the queue: arq's health-check key, which every worker of the
    queue rewrites each ``worker.health_check_interval`` seconds and which expires a second
    after that (a worker that stops cleanly deletes it)."""
    from arq.constants import health_check_key_suffix
    from redis.asyncio import Redis

    key = settings.queue_name + health_check_key_suffix
    redis = Redis.from_url(settings.redis_url)
    try:
        health = await redis.get(key)
    except (RedisError, OSError) as exc:
        print(f"workers     FAIL  {settings.queue_name}: Redis unreachable ({exc})")
        return False
    finally:
        await redis.aclose()
    if health is None:
        window = settings.worker.health_check_interval + 1
        print(
            f"workers     FAIL  no worker serves {settings.queue_name} ({key}: none in {window} s)"
        )
        return False
    print(f"workers     ok    {settings.queue_name}: {health.decode(errors='replace')}")
    return True


async def _doctor(settings: Settings) -> int:
    from verifier.assets import namespace_of
    from verifier.registry import installed, load_plugins

    ok = await _redis_ok(settings)
    # Only the configured namespaces are imported (and validated); the others are listed from
    # their distributions' metadata, so a missing extra or a broken plugin there does not matter.
    configured = {namespace_of(network) for network in settings.networks}
    plugins = load_plugins(configured)
    listed = {ns: f"{ns} ({', '.join(dists)})" for ns, dists in installed().items()}
    loaded = [entry for ns, entry in listed.items() if ns in configured]
    idle = [entry for ns, entry in listed.items() if ns not in configured]
    print("adapters    ok    " + (", ".join(loaded) or "no network configured"))
    if idle:
        print("adapters    --    not configured, not imported: " + ", ".join(idle))
    for network, config in settings.networks.items():
        plugin = plugins.get(namespace_of(network))
        if plugin is None:
            ok = False
            print(
                f"network     FAIL  {network}: no adapter plugin serves {namespace_of(network)!r}"
            )
            continue
        for url in config.rpc_urls:
            ok = await _check_url(network, url, config, plugin) and ok
    return 0 if ok else EXIT_FAILED


async def _doctor_worker(settings: Settings) -> int:
    return 0 if await _workers_ok(settings) else EXIT_FAILED


def cmd_webhooks(args: argparse.Namespace) -> int:
    from verifier.webhooks import replay_dead_letters, run_dispatcher

    settings = _settings(args)
    try:
        if args.action == "replay":
            delivered, failed = asyncio.run(replay_dead_letters(settings, args.count))
            print(f"replayed: {delivered} delivered, {failed} still failing")
            return 0 if failed == 0 else 1
        asyncio.run(run_dispatcher(settings))
    except (RedisError, OSError) as exc:
        raise _redis_down(settings, exc) from exc
    except KeyboardInterrupt:
        pass
    return 0


async def _receipts(settings: Settings, query: object) -> list[str]:
    from verifier.queue import open_redis
    from verifier.status import Query, find_receipts

    assert isinstance(query, Query)
    redis = await open_redis(settings)
    try:
        found = await find_receipts(redis, settings, query)
    finally:
        await redis.aclose()
    return [r.model_dump_json(by_alias=True) for r in found]


def cmd_receipts(args: argparse.Namespace) -> int:
    from verifier.status import BadQuery, Query, nothing_found

    settings = _settings(args)
    try:
        query = Query(
            tx=args.tx, network=args.network, nonce=args.nonce, trace=args.trace, limit=args.limit
        )
    except BadQuery as exc:
        print(f"x402-verifier: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        lines = asyncio.run(_receipts(settings, query))
    except (RedisError, OSError) as exc:
        raise CannotStart(f"Redis at {settings.redis_url} is unreachable ({exc})") from exc
    except BadQuery as exc:
        print(f"x402-verifier: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    for line in lines:
        print(line)
    if not lines:
        print(f"x402-verifier: {nothing_found(query)}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    settings = _settings(args)
    return asyncio.run(_doctor_worker(settings) if args.worker else _doctor(settings))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="x402-verifier",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text",
        help="log lines as text, or as JSON objects (trace_id, job, network, scheme, outcome)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.add_argument("--config", help="TOML configuration file (default: $X402_CONFIG)")
        # Also after the command's name; SUPPRESS keeps the value given before it.
        p.add_argument(
            "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging"
        )
        return p

    gate = command("gate", "serve the paid routes of the configuration over HTTP")
    gate.add_argument("--host")
    gate.add_argument("--port", type=int)
    gate.set_defaults(run=cmd_gate)
    command("worker", "run a verification worker (arq)").set_defaults(run=cmd_worker)
    facilitator = command(
        "facilitator", "serve the x402 facilitator API (/supported, /verify, /settle)"
    )
    facilitator.add_argument("--host")
    facilitator.add_argument("--port", type=int)
    facilitator.set_defaults(run=cmd_facilitator)
    verify = command("verify", "verify one proof header against the chain, without claiming it")
    verify.add_argument("proof", help="the PAYMENT-SIGNATURE header value")
    verify.add_argument("--resource", required=True, help="the resource URL the proof pays for")
    verify.set_defaults(run=cmd_verify)
    hooks = command("webhooks", "deliver signed receipt webhooks ([webhooks]); replay dead ones")
    hooks.add_argument("action", nargs="?", choices=["run", "replay"], default="run")
    hooks.add_argument("--count", type=int, default=1000, help="replay: at most this many")
    hooks.set_defaults(run=cmd_webhooks)
    receipts = command(
        "receipts", "print receipts as JSON lines: the latest, or by transaction, nonce, trace id"
    )
    receipts.add_argument("--tx", help="a transaction id, or a consumption key <CAIP-2>:<txid>")
    receipts.add_argument("--network", help="with --tx: the network (default: each configured)")
    receipts.add_argument("--nonce", help="the challenge nonce the payment answered")
    receipts.add_argument("--trace", help="the x-trace-id of the request that was verified")
    receipts.add_argument("--limit", type=int, default=10, help="at most this many (1-100)")
    receipts.set_defaults(run=cmd_receipts)
    doctor = command("doctor", "check Redis and every RPC URL of every configured network")
    doctor.add_argument(
        "--worker",
        action="store_true",
        help="only check that a live worker serves the queue (a readiness probe): exit 0 if so",
    )
    doctor.set_defaults(run=cmd_doctor)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(logging.DEBUG if args.verbose else logging.INFO, args.log_format)
    if not args.verbose:
        logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        code: int = args.run(args)
    except VerifierError as exc:
        print(f"x402-verifier: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except CannotStart as exc:
        print(f"x402-verifier: {exc}", file=sys.stderr)
        return EXIT_CANNOT_START
    return code


if __name__ == "__main__":
    sys.exit(main())
