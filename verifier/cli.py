"""``x402-verifier``: gate | worker | verify | doctor.

Every command takes ``--config FILE`` (or ``$X402_CONFIG``) and reads it once at start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Sequence

from verifier.errors import VerifierError
from verifier.settings import Settings, load_settings


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


def cmd_gate(args: argparse.Namespace) -> int:
    from verifier.server import build_server

    server = build_server(_settings(args), host=args.host, port=args.port)
    # As uvicorn.run does: Ctrl-C shuts down gracefully, then uvicorn raises it again.
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    # Also as uvicorn.run: a gate that never started (Redis down, port taken) exits with 3.
    return 0 if server.started else 3


def cmd_worker(args: argparse.Namespace) -> int:
    from verifier.worker import run_worker

    run_worker(_settings(args))
    return 0


async def _verify(settings: Settings, header: str, resource: str) -> int:
    """Verify one proof against the chain without claiming it (a dry run)."""
    from verifier.challenge import ChallengeSigner
    from verifier.jobs import Verifier
    from verifier.queue import VerifyJob, job_key
    from verifier.registry import build_adapters
    from verifier.wire import decode_payment_payload
    from verifier.worker import start_adapters

    proof = decode_payment_payload(header)
    adapters = build_adapters(settings)
    await start_adapters(adapters)
    try:
        signer = ChallengeSigner(settings.challenge.key_bytes(), settings.challenge.active)
        verifier = Verifier(settings, signer, adapters)
        job = VerifyJob(
            proof=proof,
            resource=resource,
            job=job_key(proof.payload.nonce, proof.payload.tx_hash, proof.payload.signature),
        )
        step = await verifier.attempt(job)
    finally:
        await asyncio.gather(*(a.close() for a in adapters.values()))
    print(step.outcome.model_dump_json(by_alias=True, exclude_none=True, indent=2))
    return 0 if step.outcome.success else 1


def cmd_verify(args: argparse.Namespace) -> int:
    return asyncio.run(_verify(_settings(args), args.proof, args.resource))


async def _doctor(settings: Settings) -> int:
    from redis.asyncio import Redis
    from redis.exceptions import RedisError

    from verifier.assets import namespace_of
    from verifier.registry import build_adapters, installed

    ok = True
    redis = Redis.from_url(settings.redis_url)
    try:
        await redis.ping()
        print(f"redis       ok    {settings.redis_url}")
    except (RedisError, OSError) as exc:
        ok = False
        print(f"redis       FAIL  {settings.redis_url}: {exc}")
    finally:
        await redis.aclose()
    # Only the configured namespaces are imported (and validated); the others are listed from
    # their distributions' metadata, so a missing extra or a broken plugin there does not matter.
    adapters = build_adapters(settings)
    configured = {namespace_of(network) for network in adapters}
    listed = {ns: f"{ns} ({', '.join(dists)})" for ns, dists in installed().items()}
    loaded = [entry for ns, entry in listed.items() if ns in configured]
    idle = [entry for ns, entry in listed.items() if ns not in configured]
    print("adapters    ok    " + (", ".join(loaded) or "no network configured"))
    if idle:
        print("adapters    --    not configured, not imported: " + ", ".join(idle))
    for network, adapter in adapters.items():
        try:
            await adapter.start()
            print(f"network     ok    {network}")
        except VerifierError as exc:
            ok = False
            print(f"network     FAIL  {network}: {exc}")
        finally:
            await adapter.close()
    return 0 if ok else 1


def cmd_doctor(args: argparse.Namespace) -> int:
    return asyncio.run(_doctor(_settings(args)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="x402-verifier", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.add_argument("--config", help="TOML configuration file (default: $X402_CONFIG)")
        return p

    gate = command("gate", "serve the paid routes of the configuration over HTTP")
    gate.add_argument("--host")
    gate.add_argument("--port", type=int)
    gate.set_defaults(run=cmd_gate)
    command("worker", "run a verification worker (arq)").set_defaults(run=cmd_worker)
    verify = command("verify", "verify one proof header against the chain, without claiming it")
    verify.add_argument("proof", help="the PAYMENT-SIGNATURE header value")
    verify.add_argument("--resource", required=True, help="the resource URL the proof pays for")
    verify.set_defaults(run=cmd_verify)
    command("doctor", "check Redis and every configured network").set_defaults(run=cmd_doctor)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        code: int = args.run(args)
    except VerifierError as exc:
        print(f"x402-verifier: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
