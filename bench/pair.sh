#!/usr/bin/env bash
# bench/pair.sh: one cell of the comparison measured closely: two servers
# of bench/compare.sh (A=fleetgate B=haproxy by default), both running,
# loaded in turn, ROUNDS rounds of one run each, every run right after the
# other server's, so that both see the same phase of a machine whose speed
# drifts from minute to minute (compare.sh puts the other servers' runs
# between them). The first half of the rounds runs A then B (A B A B …),
# the second half B then A: each server is first in half of them, and only
# the one run at the switch follows a run of its own server (rounds of
# A B then B A made the first server's run, right after its own, about 5%
# cheaper at 64 keep-alive clients). Prints one line per run
# ("A <µs> <rate> <p99>": the server's CPU per request, requests per
# second, p99 latency in µs), then a summary:
# the medians, their ratio, and the median of the rounds' own ratios (A
# over B) with its 95% confidence interval, distribution-free, from the
# ratios' order statistics (a target's line inside it is met or missed by
# noise), and the median over the rounds with A first and with B first.
# MODE=tcp measures the relays of bench/relay.sh instead (fleetgate's tcp
# application, nginx stream, HAProxy mode tcp, the Go relay): 64 B echoes,
# MESSAGES per connection, the server's CPU per message.
#
#   MODE=keepalive CLIENTS=64 ROUNDS=40 bash bench/pair.sh | tee /tmp/ka64.txt
#   MODE=tcp ROUNDS=40 bash bench/pair.sh
#   POOL="/tmp/ka64.txt /tmp/ka64-2.txt" bash bench/pair.sh   # summarize saved runs together
#
# Knobs (environment): A=fleetgate B=haproxy (fleetgate, nginx, haproxy or
# stdlib; gorelay for MODE=tcp), MODE=keepalive (or fresh, or tcp),
# CLIENTS=64 (16 for tcp), ROUNDS=12, DUR=3s, DEVICES=100, MESSAGES=1000,
# SERVER_CPU=0, CLIENT_CPU=1, FG_GOMAXPROCS and HAPROXY_IDENTITY (bench/lib.sh). POOL: files of
# earlier runs' output to summarize as one, measuring nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

# summarize FILE...: the summary of the run lines in FILEs; a round is two
# consecutive lines of one file, one A and one B, in either order.
summarize() {
  local f
  for f in "$@"; do
    grep '^[AB] ' "$f" | awk 'NR % 2 == 0 && $1 == prev { bad = 1 } { prev = $1 } END { exit (bad || NR % 2 || NR == 0) }' ||
      die "$f: its run lines (\"A …\", \"B …\") do not pair up as rounds of one A and one B"
  done
  local lines rounds
  lines=$(grep -h '^[AB] ' "$@")
  rounds=$(($(wc -l <<<"$lines") / 2))
  local ma mb
  ma=$(awk '$1 == "A" { print $2 }' <<<"$lines" | quantile 0.5)
  mb=$(awk '$1 == "B" { print $2 }' <<<"$lines" | quantile 0.5)
  # ratios: "<A over B> <which ran first>", one line per round.
  local ratios
  ratios=$(awk '{ v[$1] = $2 } NR % 2 == 1 { first = $1 } NR % 2 == 0 { printf "%.4f %s\n", v["A"] / v["B"], first }' <<<"$lines")
  echo "# $rounds rounds: server CPU µs per request or message, $(awk -v a="$ma" -v b="$mb" 'BEGIN { printf "medians: A %.2f, B %.2f; ratio of the medians %.3f", a, b, a / b }')"
  echo "# the rounds' own ratios, A over B: median $(cut -d' ' -f1 <<<"$ratios" | median_ci); A lower in $(awk '$1 < 1' <<<"$ratios" | wc -l) of $rounds"
  local first
  for first in A B; do
    if grep -q " $first\$" <<<"$ratios"; then
      echo "#   rounds with $first first: $(grep -c " $first\$" <<<"$ratios"), median $(awk -v f="$first" '$2 == f { print $1 }' <<<"$ratios" | quantile 0.5)"
    fi
  done
}

if [ -n "${POOL:-}" ]; then
  # shellcheck disable=SC2086 # POOL is a list of files
  summarize $POOL
  exit 0
fi

A=${A:-fleetgate}
B=${B:-haproxy}
MODE=${MODE:-keepalive}
if [ "$MODE" = tcp ]; then CLIENTS=${CLIENTS:-16}; else CLIENTS=${CLIENTS:-64}; fi
ROUNDS=${ROUNDS:-12}
DUR=${DUR:-3s}
DEVICES=${DEVICES:-100}
SERVERS="fleetgate nginx haproxy stdlib"
[ "$MODE" != tcp ] || SERVERS="fleetgate nginx haproxy gorelay"
for s in "$A" "$B"; do
  [[ " $SERVERS " == *" $s "* ]] || die "A, B: \"$s\" is not a server of the $MODE comparison ($SERVERS)"
done
[ "$A" != "$B" ] || die "A and B are both $A"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS: $ROUNDS is not a number of rounds"

trap cleanup EXIT
trap 'exit 130' INT TERM

install_peers
build
make_pki
ulimit -n 65536 2>/dev/null || true
if [ "$MODE" = tcp ]; then
  start_echo_origin
  "start_relay_$A"
  "start_relay_$B"
  for s in "$A" "$B"; do ADDR[$s]=${RELAY_ADDR[$s]}; done
  SNI=bench.fleet.test MODE_ARGS=(-message-size 64 -messages "${MESSAGES:-1000}")
  FIGURE=server_cpu_us_per_message RATE=messages_per_s
else
  start_origin
  "start_$A"
  "start_$B"
  SNI=$(sni_for fleetgate "$MODE") MODE_ARGS=()
  FIGURE=server_cpu_us_per_req RATE=throughput_rps
fi

# one SERVER DURATION: one client run against SERVER, its JSON.
one() {
  timeout 120 taskset -c "$CLIENT_CPU" "$FG" bench -json -insecure -target "${ADDR[$1]}" \
    -sni "$SNI" -dir "$PKI" -devices "$DEVICES" -concurrency "$CLIENTS" \
    -mode "$MODE" "${MODE_ARGS[@]}" -tls 1.3 -group x25519 -duration "$2" -warmup 500ms -pid "${PIDS[$1]}" -label "$1"
}

# run LABEL SERVER: one measured run, its line (also into $LINES).
run() {
  local out errs line
  out=$(one "$2" "$DUR")
  errs=$(field error_total "$out")
  [ "$errs" = 0 ] || die "$2: $errs errors in a run: $out"
  line="$1 $(field "$FIGURE" "$out") $(field "$RATE" "$out") $(field p99 "$out")"
  echo "$line"
  echo "$line" >>"$LINES"
}

LINES=$WORK/pair-lines.txt
: >"$LINES"
for s in "$A" "$B"; do one "$s" 2s >/dev/null; done # warm-up
for i in $(seq "$ROUNDS"); do
  if ((i <= (ROUNDS + 1) / 2)); then run A "$A"; run B "$B"; else run B "$B"; run A "$A"; fi
done
echo "# A $A, B $B: $MODE, $CLIENTS clients, rounds of $DUR (A B for the first half, then B A), fleetgate $(git rev-parse --short HEAD 2>/dev/null || echo '?')${HAPROXY_IDENTITY:+, HAPROXY_IDENTITY=$HAPROXY_IDENTITY}"
summarize "$LINES"
