#!/usr/bin/env bash
# bench/ab.sh: two fleetgate builds (or two environments of one), A then B,
# ROUNDS times, each alone on CPU $SERVER_CPU under the same load from
# `fleetgate bench` on CPU $CLIENT_CPU: one line "A <µs> <rate> <p99>" or
# "B <µs> <rate> <p99>" per run: the server's CPU per request (per
# message), the requests (messages) per second and the p99 latency in µs. Interleaving the runs is what makes a
# difference of a few percent visible on a machine whose speed drifts from
# minute to minute; compare the medians, and the pairs of each round. The
# run lines end with a summary: the medians, and the rounds' own ratios (B
# over A): their median with its 95% confidence interval (as bench/pair.sh
# gives it), their mean with its standard error, and the rounds in which B
# was lower.
#
#   BIN_A=/tmp/fleetgate-before BIN_B=/tmp/fleetgate-after bash bench/ab.sh
#   BIN_A=/tmp/fg BIN_B=/tmp/fg ENV_B="GOMAXPROCS=3" bash bench/ab.sh
#   POOL="/tmp/ab1.txt /tmp/ab2.txt" bash bench/ab.sh   # summarize saved runs together
#
# Knobs (environment): BIN_A, BIN_B (required: fleetgate binaries), ENV_A,
# ENV_B (extra environment, "K=V ..."), ROUNDS=6, DUR=4s, MODE=fresh
# (or keepalive, or tcp: 64 B echoes through the tcp application, MESSAGES per
# connection, default 1000; the server's CPU per message), CLIENTS=16, SERVER_CPU=0,
# CLIENT_CPU=1, PROCS=1 (event loops and handshake workers; for more than
# one core, e.g. SERVER_CPU=0,1 CLIENT_CPU=0,1 PROCS=2). POOL: files of
# earlier runs' output to summarize as one, measuring nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

# summarize FILE...: the summary of the run lines in FILEs, which come in
# rounds of one A line then one B line.
summarize() {
  local f
  for f in "$@"; do
    grep '^[AB] ' "$f" | awk '$1 != ((NR % 2) ? "A" : "B") { bad = 1 } END { exit (bad || NR % 2 || NR == 0) }' ||
      die "$f: its run lines do not come in rounds of one \"A …\" line then one \"B …\" line"
  done
  local lines rounds ma mb ratios
  lines=$(grep -h '^[AB] ' "$@")
  rounds=$(($(wc -l <<<"$lines") / 2))
  ma=$(awk '$1 == "A" { print $2 }' <<<"$lines" | quantile 0.5)
  mb=$(awk '$1 == "B" { print $2 }' <<<"$lines" | quantile 0.5)
  ratios=$(awk '$1 == "A" { a = $2 } $1 == "B" { printf "%.4f\n", $2 / a }' <<<"$lines")
  echo "# $rounds rounds: server CPU µs per request or message, $(awk -v a="$ma" -v b="$mb" 'BEGIN { printf "medians: A %.2f, B %.2f; ratio of the medians (B/A) %.3f", a, b, b / a }')"
  echo "# the rounds' own ratios, B over A: median $(median_ci <<<"$ratios"); $(awk '{ s += $1; q += $1 * $1; n++ } END { m = s / n; sd = (n > 1) ? sqrt((q - n * m * m) / (n - 1)) : 0; printf "mean %.3f ± %.3f (standard error)", m, sd / sqrt(n) }' <<<"$ratios"); B lower in $(awk '$1 < 1' <<<"$ratios" | wc -l) of $rounds"
}

if [ -n "${POOL:-}" ]; then
  # shellcheck disable=SC2086 # POOL is a list of files
  summarize $POOL
  exit 0
fi

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
  # A run whose load failed, or had errors, measured something else.
  [ "$(field error_total "$out")" = 0 ] || die "$label ($bin): the run had errors or no result (log: $WORK/ab-$label.log): $out"
  printf '%s %s %s %s\n' "$label" "$(field "$FIGURE" "$out")" "$(field "$RATE" "$out")" "$(field p99 "$out")" | tee -a "$LINES"
}

LINES=$WORK/ab-lines.txt
: >"$LINES"
for _ in $(seq "$ROUNDS"); do
  run A "$BIN_A" "${ENV_A:-}"
  run B "$BIN_B" "${ENV_B:-}"
done
summarize "$LINES"
