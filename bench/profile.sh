#!/usr/bin/env bash
# bench/profile.sh (make bench-profile): where fleetgate's CPU goes, so that
# each performance change starts from a measurement. Runs the gateway
# with Go's CPU profiler (bench/cmd/fleetgate-prof, the same configuration
# as bench/compare.sh, pinned to CPU $SERVER_CPU with GOMAXPROCS=1), loads it
# with `fleetgate bench` from CPU $CLIENT_CPU, and writes
# `go tool pprof -top` to bench/results/<date>-profile-tls<V>-<mode>.txt.
#
# The mode `idle` profiles memory instead (for the idle-connection target):
# it opens IDLE_N idle mTLS connections (`fleetgate bench -idle`), then has the
# gateway run a GC and write its heap profile, every allocation recorded, to
# bench/results/<date>-idle-heap-exact.txt: what each idle connection keeps.
#
# The mode `tcp` profiles the relay: 64 B echoes through the tcp application
# to the TCP echo origin, MESSAGES per connection (as `make bench-relay`).
# The mode `tcp-idle` is `idle` for relayed connections: IDLE_N connections
# to the tcp application, each after one 64 B echo (`-mode tcp-hold`, as
# the relay's idle rows), written to <date>-tcp-idle-heap-exact.txt.
#
# Knobs (environment): MODES="fresh keepalive" (or idle, tcp, tcp-idle) TLS=1.3 DURATION=10s
# CONCURRENCY=16 DEVICES=100 IDLE_N=4000 VERDICT_CACHE_SIZE=100000
# MESSAGES=1000 SERVER_CPU=0 CLIENT_CPU=1
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

MODES=${MODES:-fresh keepalive}
TLS=${TLS:-1.3}
DURATION=${DURATION:-10s}
CONCURRENCY=${CONCURRENCY:-16}
DEVICES=${DEVICES:-100}
OUT=${OUT:-bench/results}
IDLE_N=${IDLE_N:-4000}
STAMP=${STAMP:-$(date +%F)}

trap cleanup EXIT
trap 'exit 130' INT TERM

build
go build -o "$WORK/fleetgate-prof" ./bench/cmd/fleetgate-prof
make_pki
mkdir -p "$OUT"
start_origin
case " $MODES " in *" tcp "* | *" tcp-idle "*) start_echo_origin ;; esac
export FG_TCP_ORIGIN=$TCP_ORIGIN_ADDR # the tcp application, in every config written
write_fleetgate_config 1

# profile_idle MODE: the heap of IDLE_N idle connections, one request each
# (MODE idle), or IDLE_N idle relayed connections, one echo each (tcp-idle).
profile_idle() {
  local mode=$1 heap=$WORK/$1-heap.pprof pid client txt run what load fds
  rm -f "$heap"
  IDLE_TIMEOUT=10m write_fleetgate_config 1 # none may time out while counted
  # a relayed connection holds two descriptors (device and origin side)
  ulimit -n "$((2 * IDLE_N + 1000))" 2>/dev/null || true
  GOMAXPROCS=1 spawn fleetgate-prof "$SERVER_CPU" "$WORK/fleetgate-prof" -c "$WORK/fleetgate.toml" \
    -cpuprofile "$WORK/cpu-$mode.pprof" -memprofile "$heap" -memprofilerate 1
  pid=$SPAWNED
  wait_port "${ADDR[fleetgate]}"
  if [ "$mode" = tcp-idle ]; then
    what="idle relayed connections (one 64 B echo each)"
    load=(-mode tcp-hold -idle "$IDLE_N" -message-size 64 -sni bench.fleet.test)
    fds=$((2 * IDLE_N))
  else
    what="idle mTLS connections (one request each)"
    load=(-idle "$IDLE_N" -sni "$(sni_for fleetgate keepalive)")
    fds=$IDLE_N
  fi
  log "opening $IDLE_N $what to fleetgate"
  timeout 600 "$FG" bench "${load[@]}" -target "${ADDR[fleetgate]}" -insecure \
    -dir "$PKI" -devices "$DEVICES" -concurrency 32 -pid "$pid" -label fleetgate -json >"$WORK/$mode-run.json" &
  client=$!
  # The client reads the RSS 2 s after its last connection and then closes
  # them all: take the heap while they are open.
  for _ in $(seq 1200); do
    [ "$(ls "/proc/$pid/fd" | wc -l)" -ge "$fds" ] && break
    kill -0 "$client" 2>/dev/null || die "the idle client stopped early"
    sleep 0.5
  done
  kill -USR1 "$pid"
  for _ in $(seq 100); do [ -s "$heap" ] && break; sleep 0.1; done
  wait "$client" || die "the idle client failed"
  kill -TERM "$pid"
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  run=$(cat "$WORK/$mode-run.json")
  txt=$OUT/$STAMP-$mode-heap-exact.txt
  {
    echo "# fleetgate heap in use with $IDLE_N $what, TLS 1.3, every allocation recorded: bench/profile.sh (MODES=$mode make bench-profile), $(date -u +%FT%TZ)"
    echo "# GOMAXPROCS=1 on CPU $SERVER_CPU; fleetgate-prof -memprofilerate 1; the heap taken after a GC, with the connections open"
    echo "# run (its RSS includes the profiler's own records): $run"
    echo
    go tool pprof -sample_index=inuse_space -top -nodecount=45 "$WORK/fleetgate-prof" "$heap" 2>&1
  } >"$txt"
  write_fleetgate_config 1
  log "wrote $txt"
}

for mode in $MODES; do
  if [ "$mode" = idle ] || [ "$mode" = tcp-idle ]; then
    profile_idle "$mode"
    continue
  fi
  prof=$WORK/cpu-$mode.pprof
  GOMAXPROCS=1 spawn fleetgate-prof "$SERVER_CPU" "$WORK/fleetgate-prof" -c "$WORK/fleetgate.toml" -cpuprofile "$prof"
  pid=$SPAWNED
  wait_port "${ADDR[fleetgate]}"
  log "profiling fleetgate, TLS $TLS $mode, for $DURATION"
  sni=$(sni_for fleetgate "$mode") extra=()
  if [ "$mode" = tcp ]; then
    sni=bench.fleet.test extra=(-message-size 64 -messages "${MESSAGES:-1000}")
  fi
  run=$(timeout 300 taskset -c "$CLIENT_CPU" "$FG" bench -json -insecure -target "${ADDR[fleetgate]}" \
    -sni "$sni" "${extra[@]}" -dir "$PKI" -devices "$DEVICES" -concurrency "$CONCURRENCY" \
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
  log "wrote $txt: $(sed -n 's/.*"server_cpu_us_per_\(req\|message\)":\([0-9]*\).*/\2/p' <<<"$run") µs per request or message"
done
