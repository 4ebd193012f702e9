#!/usr/bin/env bash
# bench/idle.sh (make bench-idle): memory per idle mTLS connection, against
# the standard library's (target: at most 0.4× its bytes). For each size in IDLE_N and each server, open that many mTLS
# connections from source addresses spread over 127.0.0.0/8 (1,000 per
# address, so ports never run out), each after one request, hold them idle,
# and divide the growth of the server's RSS by the connections still open.
#
# Knobs (environment): IDLE_N="10000 100000" SERVERS="fleetgate stdlib"
# DEVICES=100 WORK=bench/work OUT=bench/results. Both the server and this
# client need one file descriptor per connection: the script raises its limit
# as far as the hard limit allows; a size that does not fit is not run, and
# the results say so and why (exit status 3 when any size was left out).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

IDLE_N=${IDLE_N:-10000 100000}
SERVERS=${SERVERS:-fleetgate stdlib}
DEVICES=${DEVICES:-100}
OUT=${OUT:-bench/results}
IDLE_TIMEOUT=10m # fleetgate must not close the connections while they are counted
STAMP=${STAMP:-$(date +%F)} # the results file: $OUT/$STAMP-idle.md

trap cleanup EXIT
trap 'exit 130' INT TERM

MAX_N=0
for n in $IDLE_N; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || die "IDLE_N: $n is not a positive number of connections"
  [ "$n" -gt "$MAX_N" ] && MAX_N=$n
done
ulimit -n "$((MAX_N + 1000))" 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
FD_LIMIT=$(ulimit -n)
build
make_pki
mkdir -p "$OUT"
RESULTS=$WORK/idle.jsonl
: >"$RESULTS"
CLIENT_CPU=any start_origin

SKIPPED=() # "N: why" for each size this machine cannot hold
for n in $IDLE_N; do
  if [ "$FD_LIMIT" -le "$((n + 500))" ]; then
    why="needs about $((n + 500)) file descriptors per process; the limit here is $FD_LIMIT (hard limit $(ulimit -Hn)), and raising a hard limit needs CAP_SYS_RESOURCE"
    log "skipping $n connections: $why"
    SKIPPED+=("$n: $why")
    continue
  fi
  for s in $SERVERS; do
    log "starting $s"
    if [ "$s" = fleetgate ] || [ "$s" = stdlib ]; then "start_$s" any; else "start_$s"; fi
    pid=${PIDS[$s]##*,} # nginx: its worker
    log "$s: opening $n idle connections"
    timeout 1200 "$FG" bench -idle "$n" -target "${ADDR[$s]}" -sni "$(sni_for "$s" keepalive)" -insecure \
      -dir "$PKI" -devices "$DEVICES" -concurrency 32 -pid "$pid" -label "$s" -json | tee -a "$RESULTS"
    cleanup # one server at a time: each is measured alone
    CLIENT_CPU=any start_origin
  done
done
cleanup

MD=$OUT/$STAMP-idle.md
{
  echo "# Memory per idle mTLS connection — $STAMP"
  echo
  echo "Command: \`make bench-idle\` (bench/idle.sh) with IDLE_N=\"$IDLE_N\" DEVICES=$DEVICES; TLS 1.3, X25519, one request per connection before it idles; RSS from /proc/<pid>/status."
  echo
  echo "| server | connections open | RSS before (MiB) | RSS after (MiB) | bytes per connection |"
  echo "| --- | ---: | ---: | ---: | ---: |"
  while IFS= read -r line; do
    label=$(sed -n 's/.*"label":"\([^"]*\)".*/\1/p' <<<"$line")
    open=$(sed -n 's/.*"open":\([0-9]*\).*/\1/p' <<<"$line")
    before=$(sed -n 's/.*"rss_before_bytes":\([0-9]*\).*/\1/p' <<<"$line")
    after=$(sed -n 's/.*"rss_after_bytes":\([0-9]*\).*/\1/p' <<<"$line")
    per=$(sed -n 's/.*"bytes_per_conn":\([0-9.e+]*\).*/\1/p' <<<"$line")
    awk -v l="$label" -v o="$open" -v b="$before" -v a="$after" -v p="$per" \
      'BEGIN { printf "| %s | %d | %.1f | %.1f | %.0f |\n", l, o, b / 1048576, a / 1048576, p }'
  done <"$RESULTS"
  if [ "${#SKIPPED[@]}" -gt 0 ]; then
    echo
    echo "Not run on this machine:"
    for line in "${SKIPPED[@]}"; do echo "- ${line%%:*} connections: ${line#*: }."; done
  fi
} >"$MD"
cat "$MD"
log "wrote $MD"
[ "${#SKIPPED[@]}" -eq 0 ] || exit 3
