#!/usr/bin/env bash
# bench/perfcount.sh: what a server does per request besides computing:
# loads one server of the comparison (SERVER=fleetgate or stdlib) pinned to
# CPU $SERVER_CPU with `fleetgate bench` from CPU $CLIENT_CPU, and meanwhile
# counts its context switches and system calls with `perf stat`, or, with
# PERF=record, records its call stacks (PERF_EVENT="-e sched:sched_switch"
# for the stacks that switch) into $OUT/perf-$SERVER.data for
# `perf report`. Prints the load's JSON line and perf's counts; divide by
# the requests (in the JSON) for per-request figures. MODE=tcp loads the
# relay instead (SERVER=fleetgate, haproxy, nginx or gorelay; 64 B echoes,
# $MESSAGES per connection): divide by the messages. Needs perf (Debian's
# linux-perf) and permission to trace (root, or perf_event_paranoid ≤ 1).
#
# Knobs (environment): SERVER=fleetgate MODE=fresh CLIENTS=16 DUR=8s
# PERF=stat (or record) PERF_EVENT="-F 2000" PERF_SECONDS=5 OUT=/tmp
# STAT_EVENTS (perf stat's event list; 'syscalls:sys_enter_*' counts every
# system call by name) STAT_OPTS (more perf stat options, e.g. --per-thread
# to see which of the server's threads switch) MESSAGES=1000 (MODE=tcp) WATCH=server (or origin: perf
# watches the HTTP origin on the client's CPU instead, to see what each
# server's requests cost it). PERF_TARGET replaces what perf record watches
# (the server's pid): "-C 0" records everything on CPU 0 (the server's, with the
# default SERVER_CPU), and
# with PERF_EVENT="-e sched:sched_switch -e sched:sched_wakeup",
# `perf sched timehist -i $OUT/perf-$SERVER.data` lists the server's idle
# gaps (the <idle> task's run times) and how long a wake-up takes.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

SERVER=${SERVER:-fleetgate}
MODE=${MODE:-fresh}
CLIENTS=${CLIENTS:-16}
DUR=${DUR:-8s}
PERF=${PERF:-stat}
PERF_EVENT=${PERF_EVENT:--F 2000}
PERF_SECONDS=${PERF_SECONDS:-5}
OUT=${OUT:-/tmp}
STAT_EVENTS=${STAT_EVENTS:-task-clock,context-switches,syscalls:sys_enter_futex,syscalls:sys_enter_epoll_pwait,syscalls:sys_enter_write,syscalls:sys_enter_read,syscalls:sys_enter_nanosleep}
command -v perf >/dev/null || die "perf is not installed (apt-get install linux-perf)"

trap cleanup EXIT
trap 'exit 130' INT TERM

build
make_pki
if [ "$MODE" = tcp ]; then
  start_echo_origin
  "start_relay_$SERVER"
  target=${RELAY_ADDR[$SERVER]} sni=bench.fleet.test extra=(-message-size 64 -messages "${MESSAGES:-1000}")
else
  start_origin
  "start_$SERVER"
  target=${ADDR[$SERVER]} sni=$(sni_for "$SERVER" "$MODE") extra=()
fi
pid=${PIDS[$SERVER]}
watched=$pid
if [ "${WATCH:-server}" = origin ]; then
  [ "$MODE" != tcp ] || die "WATCH=origin is for the HTTP modes"
  watched=$ORIGIN_PID
fi
load() {
  timeout 300 taskset -c "$CLIENT_CPU" "$FG" bench -json -insecure -target "$target" \
    -sni "$sni" "${extra[@]}" -dir "$PKI" -devices 100 -concurrency "$CLIENTS" \
    -mode "$MODE" -tls 1.3 -group x25519 -duration "$1" -warmup 500ms -pid "$pid" -label "$SERVER"
}
load 2s >/dev/null
load "$DUR" >"$OUT/perf-$SERVER.json" &
client=$!
sleep 1
if [ "$PERF" = record ]; then
  perf_target=(-p "$watched")
  [ -z "${PERF_TARGET:-}" ] || read -ra perf_target <<<"$PERF_TARGET"
  # shellcheck disable=SC2086 # PERF_EVENT is a list of perf options
  perf record $PERF_EVENT -g "${perf_target[@]}" -o "$OUT/perf-$SERVER.data" -- sleep "$PERF_SECONDS" 2>/dev/null
else
  # shellcheck disable=SC2086 # STAT_OPTS is a list of perf options
  perf stat ${STAT_OPTS:-} -e "$STAT_EVENTS" -p "$watched" -- sleep "$PERF_SECONDS" 2>"$OUT/perf-$SERVER.stat"
fi
wait "$client"
cat "$OUT/perf-$SERVER.json"
[ "$PERF" = record ] || cat "$OUT/perf-$SERVER.stat"
