#!/usr/bin/env bash
# bench/profile.sh (make bench-profile): where fleetgate's CPU goes (issue 5:
# "a CPU profile of the run shows where the time goes"). Runs the gateway
# with Go's CPU profiler (bench/cmd/fleetgate-prof, the same configuration
# as bench/compare.sh, pinned to CPU $SERVER_CPU with GOMAXPROCS=1), loads it
# with `fleetgate bench` from CPU $CLIENT_CPU, and writes
# `go tool pprof -top` to bench/results/<date>-profile-tls<V>-<mode>.txt.
#
# Knobs (environment): MODES="fresh keepalive" TLS=1.3 DURATION=10s
# CONCURRENCY=16 DEVICES=100 VERDICT_CACHE_SIZE=100000 SERVER_CPU=0 CLIENT_CPU=1
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

MODES=${MODES:-fresh keepalive}
TLS=${TLS:-1.3}
DURATION=${DURATION:-10s}
CONCURRENCY=${CONCURRENCY:-16}
DEVICES=${DEVICES:-100}
OUT=${OUT:-bench/results}
STAMP=$(date +%F)

trap cleanup EXIT
trap 'exit 130' INT TERM

build
go build -o "$WORK/fleetgate-prof" ./bench/cmd/fleetgate-prof
make_pki
mkdir -p "$OUT"
start_origin
write_fleetgate_config 1

for mode in $MODES; do
  prof=$WORK/cpu-$mode.pprof
  GOMAXPROCS=1 spawn fleetgate-prof "$SERVER_CPU" "$WORK/fleetgate-prof" -c "$WORK/fleetgate.toml" -cpuprofile "$prof"
  pid=$SPAWNED
  wait_port "${ADDR[fleetgate]}"
  log "profiling fleetgate, TLS $TLS $mode, for $DURATION"
  run=$(timeout 300 taskset -c "$CLIENT_CPU" "$FG" bench -json -insecure -target "${ADDR[fleetgate]}" \
    -sni "$(sni_for fleetgate "$mode")" -dir "$PKI" -devices "$DEVICES" -concurrency "$CONCURRENCY" \
    -mode "$mode" -tls "$TLS" -group x25519 -duration "$DURATION" -warmup 1s -pid "$pid" -label fleetgate)
  kill -TERM "$pid"
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  txt=$OUT/$STAMP-profile-tls$TLS-$mode.txt
  {
    echo "# fleetgate CPU profile, TLS $TLS $mode: bench/profile.sh (make bench-profile), $(date -u +%FT%TZ)"
    echo "# GOMAXPROCS=1 on CPU $SERVER_CPU; load: fleetgate bench -mode $mode -tls $TLS -concurrency $CONCURRENCY -devices $DEVICES -duration $DURATION"
    echo "# run: $run"
    echo
    go tool pprof -top -nodecount=60 "$WORK/fleetgate-prof" "$prof" 2>&1
  } >"$txt"
  log "wrote $txt: $(sed -n 's/.*"server_cpu_us_per_req":\([0-9]*\).*/\1/p' <<<"$run") µs/request"
done
