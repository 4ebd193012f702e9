#!/usr/bin/env bash
# bench/compare.sh (make bench-compare): fleetgate side by side with nginx,
# HAProxy and a Go standard-library mTLS proxy, for the CPU-per-request targets.
#
# Every server runs on CPU $SERVER_CPU (taskset; worker_processes 1,
# nbthread 1, GOMAXPROCS=1) in front of one origin; the load generator
# (`fleetgate bench`) and the origin run on CPU $CLIENT_CPU. No session
# tickets, no session caches, X25519 only. For each TLS version and mode, each
# server gets a warm-up run, then $RUNS measured runs interleaved across the
# servers. The figure compared is the server's CPU time per request, from
# /proc/<pid>/stat: on a shared machine it is far steadier than throughput.
#
# Knobs (environment): RUNS=5 DURATION=4s WARMUP=2s CONCURRENCY=16 DEVICES=100
# TLS_VERSIONS="1.3 1.2" MODES="fresh keepalive" SERVERS="fleetgate nginx haproxy stdlib"
# SERVER_CPU=0 CLIENT_CPU=1 WORK=bench/work OUT=bench/results
# VERDICT_CACHE_SIZE=100000 (fleetgate's chain-verdict cache; 0 verifies every chain, as the others do)
# STAMP=<date> (the results' file name: bench/results/$STAMP.md, .png, .jsonl)
# A full run with the defaults takes about 8 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

RUNS=${RUNS:-5}
DURATION=${DURATION:-4s}
WARMUP=${WARMUP:-2s}
CONCURRENCY=${CONCURRENCY:-16}
DEVICES=${DEVICES:-100}
TLS_VERSIONS=${TLS_VERSIONS:-1.3 1.2}
MODES=${MODES:-fresh keepalive}
SERVERS=${SERVERS:-fleetgate nginx haproxy stdlib}
OUT=${OUT:-bench/results}
STAMP=${STAMP:-$(date +%F)} # the results' file name

trap cleanup EXIT
trap 'exit 130' INT TERM

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

# one SERVER TLS MODE DURATION [LABEL]: one client run, its JSON on stdout.
one() {
  local server=$1 tls=$2 mode=$3 duration=$4 label=${5:-$1}
  # fleetgate bench stops by itself; timeout is the backstop.
  timeout 300 taskset -c "$CLIENT_CPU" "$FG" bench -json -insecure \
    -target "${ADDR[$server]}" -sni "$(sni_for "$server" "$mode")" \
    -dir "$PKI" -devices "$DEVICES" -concurrency "$CONCURRENCY" \
    -mode "$mode" -tls "$tls" -group x25519 -duration "$duration" -warmup 500ms \
    -pid "${PIDS[$server]}" -label "$label"
}

for tls in $TLS_VERSIONS; do
  for mode in $MODES; do
    for s in $SERVERS; do
      log "TLS $tls $mode: warming up $s"
      w=$(one "$s" "$tls" "$mode" "$WARMUP")
      case "$w" in
        *'"error_total":0,'*) ;;
        *) die "$s, TLS $tls $mode: the warm-up had errors: $w" ;;
      esac
    done
    for run in $(seq "$RUNS"); do
      for s in $SERVERS; do
        r=$(one "$s" "$tls" "$mode" "$DURATION")
        echo "$r" >>"$RUNS_FILE"
        cpu=$(sed -n 's/.*"server_cpu_us_per_req":\([0-9.]*\).*/\1/p' <<<"$r")
        rps=$(sed -n 's/.*"throughput_rps":\([0-9.]*\).*/\1/p' <<<"$r")
        log "TLS $tls $mode run $run/$RUNS $s: ${cpu%.*} µs/request, ${rps%.*} req/s"
      done
    done
  done
done
cleanup

MD=$OUT/$STAMP.md
{
  echo "# fleetgate vs nginx, HAProxy and Go's standard library — $STAMP"
  echo
  echo "Command: \`make bench-compare\` (bench/compare.sh) with RUNS=$RUNS DURATION=$DURATION WARMUP=$WARMUP CONCURRENCY=$CONCURRENCY DEVICES=$DEVICES."
  echo
  echo "- machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) CPUs, $(uname -sr); load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- $(go version | cut -d' ' -f3-), fleetgate $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nginx -v 2>&1 | sed 's/^nginx version: //'), $(haproxy -v | head -1 | cut -d' ' -f1-3), $(openssl version 2>/dev/null || echo 'OpenSSL ?')"
  echo "- servers on CPU $SERVER_CPU, one worker or thread each; client and origin on CPU $CLIENT_CPU; loopback; TLS with X25519 only, ECDSA P-256 certificates (root → intermediate → leaf), no tickets, no session cache; the client skips verifying the server's chain (-insecure) to spend its CPU on load."
  echo "- fresh: a new TCP connection and full mTLS handshake per request (fleetgate: its no-duration application, a token minted per request); keepalive: requests over kept connections (fleetgate: a 24h-session application, a token per request)."
  if [ "${VERDICT_CACHE_SIZE:-100000}" = 0 ]; then
    echo "- fleetgate's chain-verdict cache is off (VERDICT_CACHE_SIZE=0): every server verifies every chain."
  else
    echo "- fleetgate caches chain verdicts (DESIGN decision 3): with $DEVICES devices its chain verification is warm; the others verify every chain (VERDICT_CACHE_SIZE=0 turns fleetgate's cache off)."
  fi
  echo
  echo "On a machine shared with other work, compare the server CPU per request (each server's own CPU time, read from /proc); throughput and latency also depend on what else runs. The load average above says how busy the machine was."
  echo
  echo "## Server CPU per request"
  echo
  "$FG" bench -summarize "$RUNS_FILE" -floor-us "$FLOOR_US" -png "$OUT/$STAMP.png"
  echo
  echo "![server CPU per request]($STAMP.png)"
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
log "wrote $MD, $OUT/$STAMP.png and $OUT/$STAMP.jsonl"
