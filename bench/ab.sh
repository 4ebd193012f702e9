#!/usr/bin/env bash
# bench/ab.sh: two fleetgate builds (or two environments of one), A then B,
# ROUNDS times, each alone on CPU $SERVER_CPU under the same load from
# `fleetgate bench` on CPU $CLIENT_CPU: one line "A <µs> <rate> <p99>" or
# "B <µs> <rate> <p99>" per run: the server's CPU per request (per
# message), the requests (messages) per second and the p99 latency in µs. Interleaving the runs is what makes a
# difference of a few percent visible on a machine whose speed drifts from
# minute to minute; compare the medians, and the pairs of each round.
#
#   BIN_A=/tmp/fleetgate-before BIN_B=/tmp/fleetgate-after bash bench/ab.sh
#   BIN_A=/tmp/fg BIN_B=/tmp/fg ENV_B="GOMAXPROCS=3" bash bench/ab.sh
#
# Knobs (environment): BIN_A, BIN_B (required: fleetgate binaries), ENV_A,
# ENV_B (extra environment, "K=V ..."), ROUNDS=6, DUR=4s, MODE=fresh
# (or keepalive, or tcp: 64 B echoes through the tcp application, MESSAGES per
# connection, default 1000; the server's CPU per message), CLIENTS=16, SERVER_CPU=0,
# CLIENT_CPU=1, PROCS=1 (event loops and handshake workers; for more than
# one core, e.g. SERVER_CPU=0,1 CLIENT_CPU=0,1 PROCS=2).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

: "${BIN_A:?BIN_A: the first fleetgate binary}" "${BIN_B:?BIN_B: the second fleetgate binary}"
ROUNDS=${ROUNDS:-6}
DUR=${DUR:-4s}
MODE=${MODE:-fresh}
CLIENTS=${CLIENTS:-16}
PROCS=${PROCS:-1}

trap cleanup EXIT
trap 'exit 130' INT TERM

build
make_pki
if [ "$MODE" = tcp ]; then
  start_echo_origin
  FG_TCP_ORIGIN=$TCP_ORIGIN_ADDR write_fleetgate_config "$PROCS"
  SNI=bench.fleet.test
  MODE_ARGS=(-message-size 64 -messages "${MESSAGES:-1000}")
  FIGURE=server_cpu_us_per_message
  RATE=messages_per_s
else
  start_origin
  write_fleetgate_config "$PROCS"
  SNI=$(sni_for fleetgate "$MODE")
  MODE_ARGS=()
  FIGURE=server_cpu_us_per_req
  RATE=throughput_rps
fi

# load PID DURATION: one client run against the fleetgate at PID, its JSON.
load() {
  timeout 120 taskset -c "$CLIENT_CPU" "$FG" bench -json -insecure -target "${ADDR[fleetgate]}" \
    -sni "$SNI" -dir "$PKI" -devices 100 -concurrency "$CLIENTS" \
    -mode "$MODE" "${MODE_ARGS[@]}" -tls 1.3 -group x25519 -duration "$2" -warmup 300ms -pid "$1" -label ab
}

# run LABEL BIN ENV: start BIN pinned, warm it up, measure, stop it.
run() {
  local label=$1 bin=$2 envs=$3 pid out
  # shellcheck disable=SC2086 # ENV_A/ENV_B are lists of K=V words
  taskset -c "$SERVER_CPU" env -u GOMAXPROCS $envs "$bin" serve -c "$WORK/fleetgate.toml" -log-level warn >"$WORK/ab-$label.log" 2>&1 &
  pid=$!
  STARTED+=("$pid")
  wait_port "${ADDR[fleetgate]}"
  load "$pid" 1s >/dev/null
  out=$(load "$pid" "$DUR")
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  printf '%s %s %s %s\n' "$label" "$(field "$FIGURE" "$out")" "$(field "$RATE" "$out")" "$(field p99 "$out")"
}

for _ in $(seq "$ROUNDS"); do
  run A "$BIN_A" "${ENV_A:-}"
  run B "$BIN_B" "${ENV_B:-}"
done
