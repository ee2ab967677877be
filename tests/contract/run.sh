#!/usr/bin/env bash
# Contract tests: Schemathesis against the real gateway binary, on each listener, from the
# OpenAPI document the listener serves (GET /v1/openapi.json).
#
#   tests/contract/run.sh [BINARY]     (default: target/debug/referral-gateway)
#
# The gateway runs with config/gateway.toml's registry and development certificates, on
# its own SQLite database in a temporary directory, with the relay off (referrals stay in
# the outbox; nothing is published). The agency listener is called with the Coventry
# liaison team's certificate (certs-example/agencies/), the staff listener with a
# development auditor token (`dev-token`, allowed by `[staff] dev_tokens = true`).
#
# Every check is on (--checks all), in every phase (examples, coverage, fuzzing,
# stateful). A few operations have rules no JSON Schema can state (the NHS number's check
# digit, routing and permissions from the configuration, `to` after `from`, an agency that
# must be registered); tests/contract/{agency,staff}.toml let their valid-looking requests be refused with
# the documented 400 or 422 (positive_data_acceptance), and nothing else.
#
# One worker: the run is then reproducible from its seed, and CPython 3.11's ast module
# (which Hypothesis calls to describe its filters) is not safe across threads ("AST
# constructor recursion depth mismatch").
#
# Exits non-zero on any failure. SCHEMATHESIS_SEED and SCHEMATHESIS_MAX_EXAMPLES override
# the seed and the examples per operation; both are printed, as are the request counts.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
bin=${1:-target/debug/referral-gateway}
seed=${SCHEMATHESIS_SEED:-20261129}
max_examples=${SCHEMATHESIS_MAX_EXAMPLES:-250}
min_requests=${SCHEMATHESIS_MIN_REQUESTS:-2000}
agency_port=${CONTRACT_AGENCY_PORT:-18443}
staff_port=${CONTRACT_STAFF_PORT:-18444}

command -v st >/dev/null || { echo "schemathesis (st) is not installed: pip install schemathesis"; exit 2; }
[ -x "$bin" ] || { echo "no gateway binary at $bin"; exit 2; }

reports=${CONTRACT_REPORT_DIR:-target/contract}
mkdir -p "$reports"
work=$(mktemp -d)
gateway_pid=
cleanup() {
  if [ -n "$gateway_pid" ]; then
    kill "$gateway_pid" 2>/dev/null || true
    wait "$gateway_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# The shipped configuration with absolute paths, its own database and ports, no relay.
sed -e "s#\"certs-example/#\"$root/certs-example/#g" \
    -e "s#\"config/#\"$root/config/#g" \
    -e "s#^dir = \"schemas\"#dir = \"$root/schemas\"#" \
    config/gateway.toml > "$work/gateway.toml"
printf '\n[relay]\nenabled = false\n' >> "$work/gateway.toml"
export REFGW_CONFIG="$work/gateway.toml"
export REFGW_LISTEN="127.0.0.1:$agency_port"
export REFGW_STAFF_LISTEN="127.0.0.1:$staff_port"
export REFGW_OPS_LISTEN=off
export REFGW_DATABASE_URL="sqlite://$work/gateway.db"
export REFGW_LOG=warn

"$bin" serve > "$work/gateway.log" 2>&1 &
gateway_pid=$!

agency="https://localhost:$agency_port"
staff="https://localhost:$staff_port"
cert=certs-example/agencies/coventry-liaison.crt
key=certs-example/agencies/coventry-liaison.key
for _ in $(seq 1 100); do
  curl -sf --cacert certs-example/ca.crt --cert "$cert" --key "$key" "$agency/healthz" >/dev/null 2>&1 && break
  kill -0 "$gateway_pid" 2>/dev/null || { cat "$work/gateway.log"; echo "the gateway did not start"; exit 1; }
  sleep 0.2
done
curl -sf --cacert certs-example/ca.crt --cert "$cert" --key "$key" "$agency/healthz" >/dev/null

token=$("$bin" dev-token --role auditor --subject contract-tests --minutes 60)

echo "== schemathesis $(st --version | awk '{print $NF}'): seed $seed, max examples $max_examples per operation"

# Runs one listener; prints its request and failure counts from the JSON report.
run() {
  local name=$1; shift
  local report="$reports/$name"
  local status=0
  st --config-file "tests/contract/$name.toml" run "$@" \
    --checks all \
    --phases examples,coverage,fuzzing,stateful \
    --max-examples "$max_examples" \
    --seed "$seed" \
    --generation-database none \
    --generation-allow-x00 false \
    --workers 1 \
    --request-timeout 10 \
    --tls-verify certs-example/ca.crt \
    --report ndjson --report-ndjson-path "$report.ndjson" \
    --no-color || status=$?
  python3 tests/contract/count.py "$name" "$report.ndjson" "$min_requests" "$seed" "$max_examples" || status=1
  return $status
}

failed=0
echo "== agency listener ($agency, certificate of coventry-liaison)"
run agency "$agency/v1/openapi.json" \
  --request-cert "$cert" --request-cert-key "$key" || failed=1

echo "== staff listener ($staff, development auditor token)"
run staff "$staff/v1/openapi.json" \
  -H "Authorization: Bearer $token" || failed=1

if ! kill -0 "$gateway_pid" 2>/dev/null; then
  echo "the gateway exited during the run"; cat "$work/gateway.log"; failed=1
fi
if grep -q "panicked" "$work/gateway.log"; then
  echo "the gateway panicked:"; grep -B2 -A10 "panicked" "$work/gateway.log"; failed=1
fi
if [ "$failed" != 0 ]; then
  echo "== contract tests FAILED (seed $seed)"
  exit 1
fi
echo "== contract tests passed (seed $seed)"
