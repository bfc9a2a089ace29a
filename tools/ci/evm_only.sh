#!/usr/bin/env bash
# CI: the README's EVM-only install works. A fresh virtualenv gets only `pip install '.[evm]'`
# (a wheel built from this tree, not an editable install), must lack the other families' SDKs,
# and then `x402-verifier doctor` and `x402-verifier worker` run on an EVM-only configuration
# against a throwaway redis-server and anvil. Needs python3 (3.11+), redis-server, the npm dev
# tools (`npm ci`: anvil) and network access to PyPI.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
PYTHON="${PYTHON:-python3}"
started=$SECONDS

tmp="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT

fail() {
  echo "evm-only: FAIL: $*" >&2
  exit 1
}

free_port() {
  "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# cli LOG ARGS...: the installed `x402-verifier ARGS...`, its output in LOG and shown indented,
# its exit status in $code.
cli() {
  local log=$1
  shift
  set +e
  "$venv/x402-verifier" "$@" >"$log" 2>&1
  code=$?
  set -e
  sed 's/^/  /' "$log"
}

# The anvil binary the way devchain/anvil.py finds it: $X402_ANVIL, the npm platform package
# (not node_modules/.bin/anvil: that is a node wrapper, and stopping it can leave anvil running),
# then PATH.
find_anvil() {
  local arch
  case "$(uname -m)" in x86_64 | amd64) arch=amd64 ;; aarch64 | arm64) arch=arm64 ;; *) arch="" ;; esac
  local os
  os="$(uname -s | tr '[:upper:]' '[:lower:]')"
  local npm_binary="$repo/node_modules/@foundry-rs/anvil-$os-$arch/bin/anvil"
  if [ -n "${X402_ANVIL:-}" ]; then
    echo "$X402_ANVIL"
  elif [ -x "$npm_binary" ]; then
    echo "$npm_binary"
  elif command -v anvil >/dev/null 2>&1; then
    command -v anvil
  else
    fail "anvil not found: run npm ci in $repo, put anvil on PATH or set X402_ANVIL"
  fi
}

command -v redis-server >/dev/null 2>&1 || fail "redis-server is not on PATH"
anvil_bin="$(find_anvil)"

# Install from a copy of the tracked (and new, not ignored) files: building in the work tree
# would write build/ and egg-info there, and the copy shows that the wheel needs nothing else.
echo "evm-only: pip install '.[evm]' into a fresh venv"
mkdir "$tmp/src"
(cd "$repo" && git ls-files -z --cached --others --exclude-standard |
  xargs -0 cp --parents -t "$tmp/src") ||
  fail "could not copy the source tree"
"$PYTHON" -m venv "$tmp/venv"
venv="$tmp/venv/bin"
if ! "$venv/python" -m pip install --disable-pip-version-check "$tmp/src[evm]" \
  >"$tmp/pip.log" 2>&1; then
  tail -40 "$tmp/pip.log"
  fail "pip install '.[evm]' failed"
fi

# Everything below runs outside the repository, so no source tree shadows the installed wheel.
cd "$tmp"
where="$("$venv/python" -c 'import verifier; print(verifier.__file__)')"
case "$where" in "$tmp/venv/"*) ;; *) fail "verifier imported from $where, not the venv" ;; esac
"$venv/python" -c 'import eth_account' || fail "the evm extra did not install eth_account"
for sdk in solders stellar_sdk pytoniq_core; do
  if "$venv/python" -c "import $sdk" 2>/dev/null; then
    fail "$sdk is importable: this venv is not EVM-only"
  fi
done

key="$("$PYTHON" -c 'import secrets; print(secrets.token_hex(32))')"

# A configured family whose extra is missing stops the worker at start with the command to run.
cat >"$tmp/solana.toml" <<EOF
redis_url = "redis://127.0.0.1:1/0"
[challenge]
keys = { k1 = "$key" }
[networks."solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp"]
rpc_urls = ["http://127.0.0.1:1"]
EOF
cli "$tmp/solana.log" worker --config "$tmp/solana.toml"
[ "$code" = 2 ] || fail "a Solana worker without the solana extra exited with $code, not 2"
grep -q "pip install 'x402-verifier\[solana\]'\$" "$tmp/solana.log" ||
  fail "a Solana worker without the solana extra did not name pip install 'x402-verifier[solana]'"
[ "$(wc -l <"$tmp/solana.log")" = 1 ] || fail "the missing extra was not reported in one line"

redis_port="$(free_port)"
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
  >"$tmp/redis.log" 2>&1 &
pids+=($!)
anvil_port="$(free_port)"
"$anvil_bin" --silent --host 127.0.0.1 --port "$anvil_port" --chain-id 31337 \
  >"$tmp/anvil.log" 2>&1 &
pids+=($!)

# Both answer within a second or two; give them 20.
"$venv/python" - "$redis_port" "$anvil_port" <<'EOF' || fail "redis-server or anvil did not start"
import json, sys, time, urllib.request
import redis

redis_port, anvil_port = sys.argv[1:]
body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}).encode()
deadline = time.monotonic() + 20
while True:
    try:
        redis.Redis(port=int(redis_port)).ping()
        request = urllib.request.Request(
            f"http://127.0.0.1:{anvil_port}", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=1) as answer:
            assert json.load(answer)["result"] == hex(31337)
        break
    except Exception:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.1)
EOF

cat >"$tmp/verifier.toml" <<EOF
redis_url = "redis://127.0.0.1:$redis_port/0"

[challenge]
active = "k1"
keys = { k1 = "$key" }

[networks."eip155:31337"]
rpc_urls = ["http://127.0.0.1:$anvil_port"]
min_confirmations = 1
EOF

echo "evm-only: x402-verifier doctor"
cli "$tmp/doctor.log" doctor --config "$tmp/verifier.toml"
[ "$code" = 0 ] || fail "doctor exited with $code"
grep -q '^redis       ok' "$tmp/doctor.log" || fail "doctor did not report Redis ok"
grep -q '^network     ok    eip155:31337 http' "$tmp/doctor.log" || fail "doctor did not report the network's RPC URL ok"

echo "evm-only: x402-verifier worker"
"$venv/x402-verifier" worker --config "$tmp/verifier.toml" >"$tmp/worker.log" 2>&1 &
worker=$!
pids+=("$worker")
for _ in $(seq 150); do
  grep -q 'worker ready for eip155:31337' "$tmp/worker.log" && break
  kill -0 "$worker" 2>/dev/null || break
  sleep 0.1
done
sleep 1 # still up a moment after start-up, polling the queue
if ! kill -0 "$worker" 2>/dev/null || ! grep -q 'worker ready for eip155:31337' "$tmp/worker.log"; then
  sed 's/^/  /' "$tmp/worker.log"
  fail "the worker did not become ready, or exited"
fi
kill -TERM "$worker"
set +e
wait "$worker"
code=$?
set -e
sed 's/^/  /' "$tmp/worker.log"
grep -q Traceback "$tmp/worker.log" && fail "the worker logged a traceback"
# arq stops on SIGTERM and exits 0; 143 if the signal arrived before its handler was installed.
[ "$code" = 0 ] || [ "$code" = 143 ] || fail "the worker exited with $code on SIGTERM"

echo "evm-only: ok ($((SECONDS - started)) s)"
