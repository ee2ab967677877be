#!/usr/bin/env bash
# TLS scan of both listeners with testssl (Debian package testssl.sh, binary `testssl`).
#
# Starts the gateway binary with the shipped development config on free loopback ports
# (a throw-away SQLite database, no broker: the relay just waits), scans the agency
# (mTLS) listener and the staff listener at the same time, and fails unless:
#   - only TLS 1.2 and TLS 1.3 are offered (SSLv2, SSLv3, TLS 1.0 and 1.1 not offered);
#   - no finding has severity MEDIUM, HIGH or CRITICAL (weak ciphers, renegotiation,
#     compression and every known vulnerability testssl checks are findings of those
#     severities when present);
#   - testssl itself reported no scan error (severity WARN or FATAL).
# The summary (.ci/testssl_report.py) goes to standard output, i.e. the CI log.
#
# The agency listener refuses a handshake without a client certificate. testssl 3.2
# has --mtls for that; Debian's 3.0 does not, so testssl is given an `openssl` wrapper
# that adds the development agency certificate to every `openssl s_client` it runs
# (testssl's own socket probes only need the server's first flight, which the gateway
# sends before it looks at the client's certificate).
#
# Environment: REFGW_BIN (default target/debug/referral-gateway, built if missing),
# TESTSSL (default testssl), TESTSSL_OUT (keep the JSON/CSV/logs there; default: a
# temporary directory, removed afterwards).
set -euo pipefail
cd "$(dirname "$0")/.."
exec </dev/null

bin=${REFGW_BIN:-target/debug/referral-gateway}
testssl=${TESTSSL:-testssl}
command -v "$testssl" >/dev/null || { echo "testssl not found (apt-get install testssl.sh)"; exit 1; }
if [ ! -x "$bin" ]; then
  cargo build --locked --quiet --bin referral-gateway
fi

work=$(mktemp -d)
out=${TESTSSL_OUT:-$work/out}
mkdir -p "$out"
gateway_pid=
cleanup() {
  if [ -n "$gateway_pid" ]; then kill "$gateway_pid" 2>/dev/null || true; wait "$gateway_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
agency_port=$(free_port)
staff_port=$(free_port)
ops_port=$(free_port)

echo "== gateway: agency (mTLS) 127.0.0.1:$agency_port, staff 127.0.0.1:$staff_port"
REFGW_CONFIG=config/gateway.toml \
REFGW_LISTEN="127.0.0.1:$agency_port" \
REFGW_STAFF_LISTEN="127.0.0.1:$staff_port" \
REFGW_OPS_LISTEN="127.0.0.1:$ops_port" \
REFGW_DATABASE_URL="sqlite://$work/gateway.db" \
REFGW_AMQP_URL="amqp://guest:guest@127.0.0.1:1/%2f" \
REFGW_LOG=warn \
  "$bin" serve >"$out/gateway.log" 2>&1 &
gateway_pid=$!
for _ in $(seq 1 100); do
  if curl -fsS -o /dev/null "http://127.0.0.1:$ops_port/healthz" 2>/dev/null; then break; fi
  if ! kill -0 "$gateway_pid" 2>/dev/null; then echo "the gateway exited:"; cat "$out/gateway.log"; exit 1; fi
  sleep 0.2
done
curl -fsS -o /dev/null "http://127.0.0.1:$ops_port/healthz"

# openssl s_client with the development agency certificate (see above).
real_openssl=$(command -v openssl)
cert=$PWD/certs-example/agencies/coventry-liaison.crt
key=$PWD/certs-example/agencies/coventry-liaison.key
cat >"$work/openssl" <<EOF
#!/bin/sh
if [ "\$1" = s_client ]; then
  shift
  exec "$real_openssl" s_client -cert "$cert" -key "$key" "\$@"
fi
exec "$real_openssl" "\$@"
EOF
chmod +x "$work/openssl"

# -p protocols, -s cipher categories, -f forward secrecy, -S server defaults (certificate,
# session resumption, tickets), -U every vulnerability check (Heartbleed, CCS, ticketbleed,
# ROBOT, renegotiation, CRIME/compression, BREACH, POODLE, fallback SCSV, SWEET32, FREAK,
# DROWN, LOGJAM, BEAST, LUCKY13, RC4). The scheme CA is added so the chain verifies;
# `localhost` is in the development server certificate.
scan() {
  local name=$1 port=$2
  shift 2
  "$testssl" --quiet --color 0 --warnings batch --sneaky \
    --connect-timeout 10 --openssl-timeout 10 \
    --nodns none --ip 127.0.0.1 \
    --add-ca "$PWD/certs-example/ca.crt" \
    --jsonfile "$out/$name.json" --csvfile "$out/$name.csv" \
    "$@" -p -s -f -S -U "localhost:$port" >"$out/$name.log" 2>&1
}

echo "== testssl $("$testssl" --version 2>/dev/null | sed -n 's/.*testssl *\([0-9][^ ]*\) .*/\1/p' | head -n1)"
started=$SECONDS
scan agency "$agency_port" --openssl "$work/openssl" &
agency_scan=$!
scan staff "$staff_port" &
staff_scan=$!
scan_status=0
wait "$agency_scan" || scan_status=$?
wait "$staff_scan" || scan_status=$?
echo "both scans took $((SECONDS - started)) s (testssl exit status $scan_status)"

if ! kill -0 "$gateway_pid" 2>/dev/null; then
  echo "the gateway died during the scan:"; cat "$out/gateway.log"; exit 1
fi

python3 .ci/testssl_report.py "agency (mTLS)=$out/agency.json" "staff=$out/staff.json"
