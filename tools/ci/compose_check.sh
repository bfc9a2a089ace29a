#!/usr/bin/env bash
# CI: docker-compose.yml is valid and resolves to what the README promises, without running a
# container engine. `docker-compose config` (v1, or v2 as `docker compose`) interpolates the
# file with a known challenge key; the resolved services are then checked with the project's
# own settings code: each verifier service gets exactly that key and only X402_* variables that
# name settings, the mounted configuration loads with that environment, Redis runs with AOF,
# fsync always and noeviction, the worker's healthcheck is `doctor --worker`. Without the key,
# `config` must refuse with the message the file gives.
# Needs docker-compose (Debian package `docker-compose`) and the venv (`make install`).
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
PYTHON="${PYTHON:-$repo/.venv/bin/python}"
cd "$repo"

fail() {
  echo "compose-check: FAIL: $*" >&2
  exit 1
}

if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  compose=(docker-compose)
else
  fail "docker-compose is not installed (apt-get install docker-compose)"
fi

# The resolved file as JSON: v2 prints it itself; v1 prints YAML, read with the PyYAML that
# v1 runs on (the interpreter of its own script).
resolved_json() {
  case "$("${compose[@]}" version --short 2>/dev/null)" in
    1.*) ;;
    *) "${compose[@]}" config --format json; return ;;
  esac
  local interpreter
  interpreter="$(head -n1 "$(command -v "${compose[0]}")" | sed -n 's/^#! *//p')"
  [ -n "$interpreter" ] || fail "cannot tell which python runs ${compose[*]} to read its YAML"
  "${compose[@]}" config | $interpreter -c 'import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)'
}

# A key with the characters that broke the file before: braces, quotes and a colon.
KEY_JSON='{"k1":"'"$(printf '%064d' 7)"'"}'

missing="$(env -u X402_CHALLENGE__KEYS "${compose[@]}" config 2>&1 >/dev/null || true)"
case "$missing" in
  *"set X402_CHALLENGE__KEYS"*) ;;
  *) fail "without X402_CHALLENGE__KEYS, config should refuse and say how to set it; said: $missing" ;;
esac

json="$(X402_CHALLENGE__KEYS="$KEY_JSON" resolved_json)" || fail "${compose[*]} config failed"

KEY_JSON="$KEY_JSON" COMPOSE_JSON="$json" "$PYTHON" - <<'EOF'
import json
import os
import sys

from verifier.config_check import check_environment
from verifier.errors import ConfigError
from verifier.settings import Settings, load_settings

key = os.environ["KEY_JSON"]
services = json.loads(os.environ["COMPOSE_JSON"])["services"]
problems = []


def environment(service):
    env = services[service].get("environment") or {}
    if isinstance(env, list):  # KEY=VALUE entries
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def volumes(service):
    out = {}
    for volume in services[service].get("volumes") or []:
        if isinstance(volume, dict):
            out[volume["target"]] = volume["source"]
        else:
            source, target = volume.split(":")[:2]
            out[target] = source
    return out


for name in ("worker", "gate"):
    env = environment(name)
    if env.get("X402_CHALLENGE__KEYS") != key:
        problems.append(f"{name}: X402_CHALLENGE__KEYS resolves to {env.get('X402_CHALLENGE__KEYS')!r}, not {key!r}")
    try:
        check_environment(env, Settings)
    except ConfigError as exc:
        problems.append(f"{name}: {exc}")
    config = volumes(name).get(env.get("X402_CONFIG", ""))
    if config is None:
        problems.append(f"{name}: X402_CONFIG={env.get('X402_CONFIG')!r} is not a mounted file")
        continue
    # The configuration as the container reads it: the mounted file and this environment.
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        problems.append(f"{name}: the mounted configuration does not load: {exc}")
    else:
        if settings.redis_url != "redis://redis:6379/0":
            problems.append(f"{name}: redis_url is {settings.redis_url}")
    finally:
        os.environ.clear()
        os.environ.update(saved)

redis = services["redis"].get("command") or []
if isinstance(redis, str):
    redis = redis.split()
for flag, value in (("--appendonly", "yes"), ("--appendfsync", "always"), ("--maxmemory-policy", "noeviction")):
    if flag not in redis or redis[redis.index(flag) + 1] != value:
        problems.append(f"redis: {flag} {value} is missing from its command line {redis}")

gate = services["gate"]
if gate.get("command") != ["gate", "--host", "0.0.0.0", "--port", "8402"]:
    problems.append(f"gate: command is {gate.get('command')}")
probe = (services["worker"].get("healthcheck") or {}).get("test")
if probe != ["CMD", "x402-verifier", "doctor", "--worker"]:
    problems.append(f"worker: healthcheck is {probe}, not doctor --worker")

for problem in problems:
    print(f"compose-check: FAIL: {problem}", file=sys.stderr)
sys.exit(1 if problems else 0)
EOF
echo "compose-check: ok (${compose[*]} config; services: $(echo "$json" | "$PYTHON" -c 'import json, sys; print(", ".join(sorted(json.load(sys.stdin)["services"])))'))"
