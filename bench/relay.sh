#!/usr/bin/env bash
# bench/relay.sh (make bench-relay; also run by make bench-compare): raw TCP
# over mTLS, relayed to a TCP echo origin, by fleetgate's tcp application,
# nginx `stream` (ssl_verify_client on), HAProxy `mode tcp` (verify required)
# and a Go crypto/tls + io.Copy relay with two goroutines per connection
# (ghostunnel's shape, `fleetgate bench -relay-server`).
#
# Pinning as in bench/compare.sh: every relay on CPU $SERVER_CPU (taskset;
# worker_processes 1, nbthread 1, GOMAXPROCS as FG_GOMAXPROCS says, each
# server's own choice by default: see bench/lib.sh), the load generator and the
# echo origin on CPU $CLIENT_CPU; no session tickets or caches; X25519. The
# figures are each relay's own CPU time (from /proc/<pid>/stat) divided by
# what it did:
#   - echo SIZE: $MESSAGES messages of SIZE bytes per connection, one at a
#     time (`fleetgate bench -mode tcp`): server CPU µs per echoed message;
#   - connect: one 64 B message per connection: server CPU µs per connect
#     (handshake, origin connect, one echo, close);
#   - hold: $HOLD_N connections opened, each after one echo, then idle
#     (`-mode tcp-hold`), one relay at a time: RSS growth per connection.
#     A relayed connection holds two descriptors in the relay (device and
#     origin): when 2 × HOLD_N does not fit the descriptor limit, the largest
#     thousand that fits is measured instead, and the results say so.
#
# Knobs (environment): RUNS=3 DURATION=4s WARMUP=1s CONCURRENCY=16 (or
# RELAY_CONCURRENCY, which make bench-compare passes: its CONCURRENCY is a list)
# DEVICES=100 SIZES="64 4096" MESSAGES=1000 TLS=1.3 HOLD_N=10000 (0: no hold)
# RELAY_SERVERS (or SERVERS)="fleetgate nginx haproxy gorelay" SERVER_CPU=0 CLIENT_CPU=1
# WORK=bench/work OUT=bench/results STAMP=<date> (results: $OUT/$STAMP-relay.md
# and .jsonl). FG_GOMAXPROCS=unset (or 1, or N; see bench/lib.sh).
# ORIGIN_TLS=1: the echo origin speaks TLS and every relay verifies it
# (fleetgate's tls:// origin, nginx proxy_ssl, HAProxy's server … ssl; the
# Go relay has none: SERVERS="fleetgate nginx haproxy").
# A run with the defaults takes about 5 minutes. The summary ends with the
# relay targets: fleetgate ≤ 0.8× HAProxy's CPU per 64 B echo, RSS per idle
# relayed connection below HAProxy's and ≤ 0.5× the Go relay's.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

RUNS=${RUNS:-3}
DURATION=${DURATION:-4s}
WARMUP=${WARMUP:-1s}
CONCURRENCY=${RELAY_CONCURRENCY:-${CONCURRENCY:-16}}
DEVICES=${DEVICES:-100}
SIZES=${SIZES:-64 4096}
MESSAGES=${MESSAGES:-1000}
TLS=${TLS:-1.3}
HOLD_N=${HOLD_N:-10000}
SERVERS=${RELAY_SERVERS:-${SERVERS:-fleetgate nginx haproxy gorelay}}
OUT=${OUT:-bench/results}
STAMP=${STAMP:-$(date +%F)}
IDLE_TIMEOUT=10m

trap cleanup EXIT
trap 'exit 130' INT TERM

[ "$(nproc)" -ge 2 ] || die "needs 2 CPUs (one for the relays, one for the client); this machine has $(nproc)"
[[ $CONCURRENCY =~ ^[1-9][0-9]*$ ]] || die "CONCURRENCY: $CONCURRENCY is not one number of connections (RELAY_CONCURRENCY sets the relay's alone)"
[[ $HOLD_N =~ ^[0-9]+$ ]] || die "HOLD_N: $HOLD_N is not a number of connections"
for s in $SERVERS; do
  declare -F "start_relay_$s" >/dev/null || die "SERVERS: no relay named $s (want fleetgate, nginx, haproxy, gorelay)"
done
install_peers
# Every process started from here inherits the highest descriptor limit allowed.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
FD_LIMIT=$(ulimit -n)
build
make_pki
mkdir -p "$OUT"
RUNS_FILE=$WORK/relay.jsonl
: >"$RUNS_FILE"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# one SERVER SIZE MESSAGES DURATION: one client run, its JSON on stdout.
one() {
  local server=$1 size=$2 messages=$3 duration=$4
  timeout 300 taskset -c "$CLIENT_CPU" "$FG" bench -json -insecure -mode tcp \
    -target "${RELAY_ADDR[$server]}" -sni bench.fleet.test \
    -dir "$PKI" -devices "$DEVICES" -concurrency "$CONCURRENCY" \
    -message-size "$size" -messages "$messages" -tls "$TLS" -group x25519 \
    -duration "$duration" -warmup 500ms -pid "${PIDS[$server]}" -label "$server"
}

# The scenarios: "SIZE MESSAGES-PER-CONNECTION".
SCENARIOS=()
for size in $SIZES; do SCENARIOS+=("$size $MESSAGES"); done
SCENARIOS+=("64 1")

start_echo_origin
for s in $SERVERS; do
  log "starting $s"
  "start_relay_$s"
done
for sc in "${SCENARIOS[@]}"; do
  read -r size messages <<<"$sc"
  for s in $SERVERS; do
    log "TLS $TLS, $size B × $messages per connection: warming up $s"
    w=$(one "$s" "$size" "$messages" "$WARMUP")
    case "$w" in
      *'"error_total":0,'*) ;;
      *) die "$s, $size B × $messages: the warm-up had errors: $w" ;;
    esac
  done
  for run in $(seq "$RUNS"); do
    for s in $SERVERS; do
      r=$(one "$s" "$size" "$messages" "$DURATION")
      echo "$r" >>"$RUNS_FILE"
      msg=$(sed -n 's/.*"server_cpu_us_per_message":\([0-9.]*\).*/\1/p' <<<"$r")
      con=$(sed -n 's/.*"server_cpu_us_per_connect":\([0-9.]*\).*/\1/p' <<<"$r")
      mps=$(sed -n 's/.*"messages_per_s":\([0-9.]*\).*/\1/p' <<<"$r")
      log "TLS $TLS $size B × $messages run $run/$RUNS $s: ${msg%.*} µs/message, ${con%.*} µs/connect, ${mps%.*} messages/s"
    done
  done
done
cleanup

# Idle relayed connections: one relay at a time, each measured alone.
HOLD_NOTE=""
if [ "$HOLD_N" -gt 0 ]; then
  n=$HOLD_N
  if [ $((2 * n + 200)) -gt "$FD_LIMIT" ]; then
    n=$(((FD_LIMIT - 200) / 2 / 1000 * 1000))
    HOLD_NOTE="$HOLD_N idle relayed connections need about $((2 * HOLD_N + 200)) descriptors in the relay (device and origin side of each); the limit here is $FD_LIMIT (hard limit $(ulimit -Hn), and raising a hard limit needs CAP_SYS_RESOURCE), so $n were measured instead."
    log "$HOLD_NOTE"
  fi
  if [ "$n" -gt 0 ]; then
    for s in $SERVERS; do
      start_echo_origin any
      log "starting $s"
      "start_relay_$s"
      pid=${PIDS[$s]##*,} # nginx: its worker
      log "$s: opening $n idle relayed connections"
      timeout 1200 "$FG" bench -mode tcp-hold -idle "$n" -message-size 64 -target "${RELAY_ADDR[$s]}" \
        -sni bench.fleet.test -insecure -tls "$TLS" -dir "$PKI" -devices "$DEVICES" -concurrency 32 \
        -pid "$pid" -label "$s" -json | tee -a "$RUNS_FILE" >&2
      cleanup
    done
  fi
fi

MD=$OUT/$STAMP-relay.md
{
  echo "# Relays: raw TCP over mTLS — fleetgate vs nginx stream, HAProxy mode tcp and a Go io.Copy relay — $STAMP"
  echo
  echo "Command: \`make bench-relay\` (bench/relay.sh) with RUNS=$RUNS DURATION=$DURATION WARMUP=$WARMUP CONCURRENCY=$CONCURRENCY DEVICES=$DEVICES SIZES=\"$SIZES\" MESSAGES=$MESSAGES TLS=$TLS HOLD_N=$HOLD_N."
  echo
  echo "- machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) CPUs, $(uname -sr); load average before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- $(go version | cut -d' ' -f3-), fleetgate $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nginx -v 2>&1 | sed 's/^nginx version: //') (stream), $(haproxy -v | head -1 | cut -d' ' -f1-3), $(openssl version 2>/dev/null || echo 'OpenSSL ?')"
  echo "- relays on CPU $SERVER_CPU, one worker or thread each ($(gomaxprocs_note $SERVERS)); client and TCP echo origin on CPU $CLIENT_CPU; loopback; TLS $TLS with X25519, ECDSA P-256 certificates (root → intermediate → leaf), client certificate required and verified by every relay, no tickets, no session cache. fleetgate: a tcp application without PROXY header; nginx: \`stream\` with \`ssl_verify_client on\`; HAProxy: \`mode tcp\` with \`verify required\`; gorelay: crypto/tls + two io.Copy goroutines per connection (\`fleetgate bench -relay-server\`)."
  if [ -n "${ORIGIN_TLS:-}" ]; then
    echo "- **TLS to the origin** (ORIGIN_TLS=1): the echo origin speaks TLS 1.3 (Go's crypto/tls, the bench server certificate, session tickets on), and each relay verifies it against the bench root and the name bench.fleet.test and resumes its sessions: fleetgate \`origin = \"tls://…\"\` with \`origin_server_name\`; nginx \`proxy_ssl on\` with \`proxy_ssl_verify\`; HAProxy \`server … ssl verify required verifyhost\`. A relayed message is decrypted and encrypted twice."
  fi
  echo "- echo: each of $CONCURRENCY connections sends a message, reads the whole echo back and checks it, then sends the next; after $MESSAGES messages it closes (close_notify) and a new connection (full handshake) follows. The CPU per message includes the connection's share of a handshake (1/$MESSAGES). connect: one 64 B message per connection, so the CPU per connect includes one echo. Idle: each connection echoes one 64 B message (so the origin side is connected), then idles; RSS of the relay process (nginx: its worker) before the first connection and 2 s after the last, divided by the connections still open. fleetgate runs with its defaults, among them memory_release_after = \"500ms\": once it has allocated next to nothing for half a second it returns the heap the connections' handshakes left unused."
  echo
  echo "The machine is shared with other work: throughput and latency move with the load; the server CPU per message or connect (each relay's own CPU time, from /proc) is the figure to compare, and even it moves by tens of percent between runs on a busy machine."
  echo
  echo "## Server CPU and memory"
  echo
  "$FG" bench -summarize-relay "$RUNS_FILE"
  if [ -n "$HOLD_NOTE" ]; then
    echo
    echo "Idle connections: $HOLD_NOTE"
  fi
  echo
  echo "Raw runs (one JSON object per run): \`$STAMP-relay.jsonl\`."
} >"$MD"
cp "$RUNS_FILE" "$OUT/$STAMP-relay.jsonl"
cat "$MD"
log "wrote $MD and $OUT/$STAMP-relay.jsonl"
