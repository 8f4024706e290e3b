#!/usr/bin/env bash
# make e2e-spire: the control plane in SPIRE mode against a real SPIRE.
#
# Builds spire-server and spire-agent (SPIRE_VERSION) from the Go module
# proxy into bin/spire (once: later runs reuse them), starts both on
# loopback in a temporary directory with join-token node attestation,
# registers the control plane's SPIFFE ID for this user's processes, runs
# `cryptomesh server --identity spire --spire-socket ... --tls`, and checks
# that the API serves the SVID SPIRE issued (URI SAN
# spiffe://<td>/control-plane, verified by SPIRE's bundle), that its
# bundle route serves SPIRE's bundle, that join tokens still authenticate
# nodes, and that it issues no SVIDs itself.
#
# Needs Go, a C compiler (SPIRE's SQLite datastore uses cgo), openssl, curl.
set -euo pipefail

SPIRE_VERSION=${SPIRE_VERSION:-v1.13.3}
TD=${TRUST_DOMAIN:-cryptomesh.local}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SPIRE_BIN=${SPIRE_BIN_DIR:-$ROOT/bin/spire}
GO=${GO:-go}

log() { printf 'e2e-spire: %s\n' "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }

# --- 1. spire-server and spire-agent from the module proxy (idempotent) ---
# A module of their own under bin/ (git-ignored), so that the project's go.mod
# never sees SPIRE's dependencies.
build_spire() {
  local want=${SPIRE_VERSION#v}
  if [ -x "$SPIRE_BIN/spire-server" ] && [ -x "$SPIRE_BIN/spire-agent" ] &&
     "$SPIRE_BIN/spire-server" --version 2>&1 | grep -q "^$want" &&
     "$SPIRE_BIN/spire-agent" --version 2>&1 | grep -q "^$want"; then
    log "using SPIRE $SPIRE_VERSION in $SPIRE_BIN"
    return
  fi
  log "building spire-server and spire-agent $SPIRE_VERSION into $SPIRE_BIN (the first time takes minutes)"
  local mod="$SPIRE_BIN/module"
  rm -rf "$mod"
  mkdir -p "$mod"
  (
    cd "$mod"
    export GOFLAGS=-mod=mod GOWORK=off
    "$GO" mod init cryptomesh-e2e-spire-tools >/dev/null 2>&1
    "$GO" get -tool "github.com/spiffe/spire/cmd/spire-server@$SPIRE_VERSION"
    "$GO" get -tool "github.com/spiffe/spire/cmd/spire-agent@$SPIRE_VERSION"
    GOBIN="$SPIRE_BIN" "$GO" install tool
  ) || fail "could not build SPIRE $SPIRE_VERSION from the module proxy (see above)"
}
build_spire
for tool in openssl curl; do
  command -v "$tool" >/dev/null || fail "$tool is needed"
done

log "building cryptomesh"
(cd "$ROOT" && "$GO" build -o bin/cryptomesh ./cmd/cryptomesh)
CM="$ROOT/bin/cryptomesh"

# --- 2. a temporary directory and the processes this script started ---
TMP=$(mktemp -d "${TMPDIR:-/tmp}/cryptomesh-e2e-spire.XXXXXX")
PIDS=()
cleanup() {
  local code=$?
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$code" -ne 0 ]; then
    for f in "$TMP"/*.log; do [ -f "$f" ] && { log "--- $f"; tail -n 30 "$f" >&2; }; done
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

# free_port prints a loopback TCP port nobody listens on.
free_port() {
  local p
  for _ in $(seq 1 100); do
    p=$((20000 + RANDOM % 20000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return
    fi
  done
  fail "no free port"
}

# wait_for DESCRIPTION SECONDS COMMAND...: polls COMMAND until it succeeds.
wait_for() {
  local what=$1 secs=$2
  shift 2
  for _ in $(seq 1 $((secs * 5))); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  fail "$what: not within ${secs}s"
}

# --- 3. SPIRE server and agent on loopback, join-token attestation ---
SERVER_PORT=$(free_port)
SERVER_SOCK="$TMP/server/api.sock"
AGENT_SOCK="$TMP/agent/public/api.sock"
mkdir -p "$TMP/server/data" "$TMP/agent/data" "$TMP/agent/public"
cat >"$TMP/server.conf" <<EOF
server {
  bind_address = "127.0.0.1"
  bind_port = "$SERVER_PORT"
  socket_path = "$SERVER_SOCK"
  trust_domain = "$TD"
  data_dir = "$TMP/server/data"
  log_level = "INFO"
  default_x509_svid_ttl = "1h"
}
plugins {
  DataStore "sql" {
    plugin_data {
      database_type = "sqlite3"
      connection_string = "$TMP/server/data/datastore.sqlite3"
    }
  }
  KeyManager "memory" { plugin_data {} }
  NodeAttestor "join_token" { plugin_data {} }
}
EOF
cat >"$TMP/agent.conf" <<EOF
agent {
  data_dir = "$TMP/agent/data"
  log_level = "INFO"
  server_address = "127.0.0.1"
  server_port = "$SERVER_PORT"
  socket_path = "$AGENT_SOCK"
  trust_domain = "$TD"
  insecure_bootstrap = true
}
plugins {
  NodeAttestor "join_token" { plugin_data {} }
  KeyManager "memory" { plugin_data {} }
  WorkloadAttestor "unix" { plugin_data {} }
}
EOF

log "starting spire-server on 127.0.0.1:$SERVER_PORT"
"$SPIRE_BIN/spire-server" run -config "$TMP/server.conf" >"$TMP/spire-server.log" 2>&1 &
PIDS+=($!)
wait_for "spire-server healthy" 60 "$SPIRE_BIN/spire-server" healthcheck -socketPath "$SERVER_SOCK"

AGENT_ID="spiffe://$TD/spire-agent/e2e"
JOIN=$("$SPIRE_BIN/spire-server" token generate -socketPath "$SERVER_SOCK" -spiffeID "$AGENT_ID" -ttl 600 | sed -n 's/^Token: //p')
[ -n "$JOIN" ] || fail "spire-server gave no join token"
log "starting spire-agent (join token attestation)"
"$SPIRE_BIN/spire-agent" run -config "$TMP/agent.conf" -joinToken "$JOIN" >"$TMP/spire-agent.log" 2>&1 &
PIDS+=($!)
wait_for "spire-agent healthy" 60 "$SPIRE_BIN/spire-agent" healthcheck -socketPath "$AGENT_SOCK"

# The registration entry SPEC §4 asks for: the control plane's ID, for
# processes of this user on that agent, with the DNS name clients dial.
CP_ID="spiffe://$TD/control-plane"
"$SPIRE_BIN/spire-server" entry create -socketPath "$SERVER_SOCK" -parentID "$AGENT_ID" \
  -spiffeID "$CP_ID" -selector "unix:uid:$(id -u)" -dns localhost >"$TMP/entry.txt"
log "registered $CP_ID for unix:uid:$(id -u)"
"$SPIRE_BIN/spire-server" bundle show -socketPath "$SERVER_SOCK" -format pem >"$TMP/spire-bundle.pem"

# --- 4. cryptomesh in SPIRE mode ---
"$CM" server --identity spire --spire-socket "$AGENT_SOCK" --trust-domain "$TD" --tls \
  --addr 127.0.0.1:0 --data-dir "$TMP/cm" --log-format json >"$TMP/cryptomesh.log" 2>&1 &
PIDS+=($!)
URL=""
for _ in $(seq 1 300); do
  URL=$(sed -n 's/.*"msg":"serving API".*"url":"\([^"]*\)\/api\/v1".*/\1/p' "$TMP/cryptomesh.log" | head -n 1)
  [ -n "$URL" ] && break
  kill -0 "${PIDS[-1]}" 2>/dev/null || fail "cryptomesh server exited"
  sleep 0.2
done
[ -n "$URL" ] || fail "cryptomesh server did not serve within 60s"
case "$URL" in https://*) ;; *) fail "the API is not served over TLS: $URL" ;; esac
PORT=${URL##*:}
URL="https://localhost:$PORT"
log "cryptomesh serves $URL"

# --- 5. checks ---
# The served certificate is SPIRE's SVID for the control plane.
openssl s_client -connect "127.0.0.1:$PORT" -servername localhost </dev/null 2>/dev/null |
  openssl x509 >"$TMP/served.pem" || fail "no certificate from the API"
SAN=$(openssl x509 -in "$TMP/served.pem" -noout -ext subjectAltName)
grep -q "URI:$CP_ID" <<<"$SAN" || fail "served certificate SANs: $SAN"
openssl verify -CAfile "$TMP/spire-bundle.pem" "$TMP/served.pem" >/dev/null ||
  fail "the served certificate does not verify against SPIRE's bundle"
ISSUER=$(openssl x509 -in "$TMP/served.pem" -noout -issuer)
log "served certificate: $CP_ID, issued by SPIRE ($ISSUER)"

# The API is reachable by name with SPIRE's bundle as the only trust.
curl -fsS --cacert "$TMP/spire-bundle.pem" "$URL/readyz" >/dev/null || fail "readyz over TLS"
curl -fsS --cacert "$TMP/spire-bundle.pem" "$URL/api/v1/identity/bundle" >"$TMP/served-bundle.pem" ||
  fail "GET /api/v1/identity/bundle"
fp() { openssl x509 -in "$1" -noout -fingerprint -sha256; }
[ "$(fp "$TMP/served-bundle.pem")" = "$(fp "$TMP/spire-bundle.pem")" ] ||
  fail "the bundle route does not serve SPIRE's bundle"

# Join tokens still authenticate nodes; SVIDs come from SPIRE, not from us.
export CRYPTOMESH_SERVER="$URL" CRYPTOMESH_DATA_DIR="$TMP/cm" CRYPTOMESH_CA_FILE="$TMP/spire-bundle.pem"
cat >"$TMP/mesh.yaml" <<EOF
roles:
  r1: {name: r1}
security_policies:
  p1: {roles: [r1], requires_authentication: true}
endpoints:
  e1: {security_policy: p1, role: r1}
EOF
"$CM" apply -f "$TMP/mesh.yaml" >/dev/null
NODE_TOKEN=$("$CM" token create --node n1 --endpoint e1 2>/dev/null)
WHO=$(curl -fsS --cacert "$TMP/spire-bundle.pem" -H "Authorization: Bearer $NODE_TOKEN" "$URL/api/v1/identity/whoami")
grep -q "\"spiffe_id\":\"spiffe://$TD/role/r1/endpoint/e1\"" <<<"$WHO" || fail "whoami: $WHO"
CODE=$(curl -sS -o "$TMP/svids.json" -w '%{http_code}' --cacert "$TMP/spire-bundle.pem" \
  -H "Authorization: Bearer $NODE_TOKEN" -H 'Content-Type: application/json' -d '{"csr": "-"}' "$URL/api/v1/identity/svids")
[ "$CODE" = 501 ] || fail "POST /identity/svids in SPIRE mode answered $CODE: $(cat "$TMP/svids.json")"
if grep -q "$NODE_TOKEN" "$TMP/cryptomesh.log"; then fail "the join token appears in the server's log"; fi

log "PASS: the API serves SPIRE's SVID for $CP_ID and SPIRE's bundle; join tokens work; no SVIDs issued by the control plane"
