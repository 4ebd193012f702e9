#!/usr/bin/env bash
# bench/compare.sh (make bench-compare): fleetgate side by side with nginx,
# HAProxy and a Go standard-library mTLS proxy, at several concurrencies.
#
# Every server runs on CPU $SERVER_CPU (taskset; worker_processes 1,
# nbthread 1, GOMAXPROCS as FG_GOMAXPROCS says, each its own choice by default) in front of one
# origin; the load generator (`fleetgate bench`) and the origin run on CPU
# $CLIENT_CPU. No session tickets, no session caches, X25519 only. For each
# TLS version, mode and concurrency, each server gets a warm-up run, then
# $RUNS measured runs interleaved across the servers. The report gives, for
# every server at every concurrency: throughput, p50 and p99 latency, the
# server's CPU time per request and how busy it kept its core (from
# /proc/<pid>/stat: on a shared machine the CPU per request is far steadier
# than throughput), and the load client's CPU per request and how busy its
# core was (the client's CPU plus the origin's, over the wall time). A row
# whose client core was over 90% busy says the client was the limit. Charts
# (gonum/plot): req/s against concurrency, one per TLS version and mode, and
# the server CPU per request.
#
# Knobs (environment): RUNS=5 DURATION=4s WARMUP=2s CONCURRENCY="4 16 64"
# DEVICES=100 TLS_VERSIONS="1.3 1.2" MODES="fresh keepalive"
# SERVERS="fleetgate nginx haproxy stdlib" SERVER_CPU=0 CLIENT_CPU=1
# WORK=bench/work OUT=bench/results
# FG_GOMAXPROCS=unset (or 1, or N; FG_GOMAXPROCS_fleetgate / _stdlib for one
# server: see bench/lib.sh)
# VERDICT_CACHE_SIZE=100000 (fleetgate's chain-verdict cache; 0 verifies every chain, as the others do)
# HAPROXY_IDENTITY=0 (1: HAProxy tells the origin who the device is, its
# certificate and X-Forwarded-*, as fleetgate does with its token: bench/lib.sh)
# STAMP=<date> (the results' file name: $OUT/$STAMP.md, .png, -rps-tlsV-MODE.png, .jsonl)
# A full run with the defaults takes about 22 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

RUNS=${RUNS:-5}
DURATION=${DURATION:-4s}
WARMUP=${WARMUP:-2s}
CONCURRENCY=${CONCURRENCY:-4 16 64}
DEVICES=${DEVICES:-100}
TLS_VERSIONS=${TLS_VERSIONS:-1.3 1.2}
MODES=${MODES:-fresh keepalive}
SERVERS=${SERVERS:-fleetgate nginx haproxy stdlib}
OUT=${OUT:-bench/results}
STAMP=${STAMP:-$(date +%F)} # the results' file name

trap cleanup EXIT
trap 'exit 130' INT TERM

for c in $CONCURRENCY; do
  [[ $c =~ ^[1-9][0-9]*$ ]] || die "CONCURRENCY: $c is not a number of clients"
done
GOMAXPROCS_NOTE=$(gomaxprocs_note $SERVERS) || exit 1
[ "$(nproc)" -ge 2 ] || die "needs 2 CPUs (one for the servers, one for the client); this machine has $(nproc)"
install_peers
build
make_pki
ulimit -n 65536 2>/dev/null || true
mkdir -p "$OUT"
RUNS_FILE=$WORK/runs.jsonl
: >"$RUNS_FILE"

# The crypto floor, on the servers' CPU before any load.
log "measuring the crypto floor on CPU $SERVER_CPU"
taskset -c "$SERVER_CPU" env GOMAXPROCS=1 "$FG" bench -floor >"$WORK/floor.txt"
FLOOR_US=$(awk '$1 == "Sum" { print $2 }' "$WORK/floor.txt")
[ -n "$FLOOR_US" ] || die "no Sum line in $WORK/floor.txt"
cat "$WORK/floor.txt" >&2

start_origin
for s in $SERVERS; do
  log "starting $s"
  "start_$s"
done

# one SERVER TLS MODE CLIENTS DURATION: one client run, its JSON on stdout.
# The origin shares the client's CPU: its CPU counts toward that core's
# busy share (-client-core-pids).
one() {
  local server=$1 tls=$2 mode=$3 clients=$4 duration=$5
  # fleetgate bench stops by itself; timeout is the backstop.
  timeout 300 taskset -c "$CLIENT_CPU" "$FG" bench -json -insecure \
    -target "${ADDR[$server]}" -sni "$(sni_for "$server" "$mode")" \
    -dir "$PKI" -devices "$DEVICES" -concurrency "$clients" \
    -mode "$mode" -tls "$tls" -group x25519 -duration "$duration" -warmup 500ms \
    -pid "${PIDS[$server]}" -client-core-pids "$ORIGIN_PID" -label "$server"
}

# busy CPU_S DURATION_S: "65%".
busy() { awk -v c="$1" -v d="$2" 'BEGIN { if (d > 0) printf "%.0f%%", 100 * c / d; else print "?" }'; }

for tls in $TLS_VERSIONS; do
  for mode in $MODES; do
    for clients in $CONCURRENCY; do
      for s in $SERVERS; do
        log "TLS $tls $mode, $clients clients: warming up $s"
        w=$(one "$s" "$tls" "$mode" "$clients" "$WARMUP")
        case "$w" in
          *'"error_total":0,'*) ;;
          *) die "$s, TLS $tls $mode, $clients clients: the warm-up had errors: $w" ;;
        esac
      done
      for run in $(seq "$RUNS"); do
        for s in $SERVERS; do
          r=$(one "$s" "$tls" "$mode" "$clients" "$DURATION")
          echo "$r" >>"$RUNS_FILE"
          cpu=$(field server_cpu_us_per_req "$r")
          rps=$(field throughput_rps "$r")
          p99=$(field p99 "$r")
          dur=$(field duration_s "$r")
          log "TLS $tls $mode, $clients clients, run $run/$RUNS $s: ${cpu%.*} µs/request, ${rps%.*} req/s, p99 ${p99} µs, server core $(busy "$(field server_cpu_s "$r")" "$dur") busy, client core $(busy "$(field client_core_cpu_s "$r")" "$dur")"
        done
      done
    done
  done
done
cleanup

MD=$OUT/$STAMP.md
{
  echo "# fleetgate vs nginx, HAProxy and Go's standard library — $STAMP"
  echo
  echo "Command: \`make bench-compare\` (bench/compare.sh) with RUNS=$RUNS DURATION=$DURATION WARMUP=$WARMUP CONCURRENCY=\"$CONCURRENCY\" DEVICES=$DEVICES FG_GOMAXPROCS=$FG_GOMAXPROCS."
  echo
  echo "- machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) CPUs, $(uname -sr); load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- $(go version | cut -d' ' -f3-), fleetgate $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nginx -v 2>&1 | sed 's/^nginx version: //'), $(haproxy -v | head -1 | cut -d' ' -f1-3), $(openssl version 2>/dev/null || echo 'OpenSSL ?')"
  echo "- servers on CPU $SERVER_CPU (taskset), one worker or thread each ($GOMAXPROCS_NOTE); client and origin on CPU $CLIENT_CPU; loopback; TLS with X25519 only, ECDSA P-256 certificates (root → intermediate → leaf), no tickets, no session cache; the client skips verifying the server's chain (-insecure) to spend its CPU on load."
  echo "- fresh: a new TCP connection and full mTLS handshake per request (fleetgate: its no-duration application, a token minted per request); keepalive: requests over kept connections (fleetgate: a 24h-session application, a token per request)."
  if [ "${HAPROXY_IDENTITY:-0}" = 1 ]; then
    echo "- HAProxy tells the origin who the device is (HAPROXY_IDENTITY=1): its certificate, base64, in X-Client-Cert, and X-Forwarded-For, -Proto and -Host; fleetgate sends its token and X-Forwarded-*; nginx and the standard library's proxy forward as by default."
  else
    echo "- what each server adds to a request for the origin: fleetgate its token (Cf-Access-Jwt-Assertion) and X-Forwarded-For, -Proto and -Host, about 1,100 bytes; HAProxy and nginx nothing (HAPROXY_IDENTITY=1 has HAProxy send the device's certificate and X-Forwarded-*)."
  fi
  if [ "${VERDICT_CACHE_SIZE:-100000}" = 0 ]; then
    echo "- fleetgate's chain-verdict cache is off (VERDICT_CACHE_SIZE=0): every server verifies every chain."
  else
    echo "- fleetgate caches chain verdicts (DESIGN decision 3): with $DEVICES devices its chain verification is warm; the others verify every chain (VERDICT_CACHE_SIZE=0 turns fleetgate's cache off)."
  fi
  echo
  echo "On a machine shared with other work, compare the server CPU per request (each server's own CPU time, read from /proc); throughput and latency also depend on what else runs. The load average above says how busy the machine was."
  echo
  echo "## Throughput, latency and CPU at each concurrency"
  echo
  "$FG" bench -summarize "$RUNS_FILE" -floor-us "$FLOOR_US" -png "$OUT/$STAMP.png"
  echo
  echo "## Crypto floor"
  echo
  echo '```'
  cat "$WORK/floor.txt"
  echo '```'
  echo
  echo "Raw runs (one JSON object per run): \`$STAMP.jsonl\`."
} >"$MD"
cp "$RUNS_FILE" "$OUT/$STAMP.jsonl"
cat "$MD"
log "wrote $MD, $OUT/$STAMP.png, $OUT/$STAMP-rps-*.png and $OUT/$STAMP.jsonl"
