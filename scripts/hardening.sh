#!/usr/bin/env bash
# scripts/hardening.sh: the long hardening runs (floods and reloads), with
# the real binary, `fleetgate bench` as the fleet and `fleetgate bench
# -origin` (and -origin-tcp) as the origins, all on loopback. The short
# versions are Go tests in gateway/ (limits_test.go, stream_test.go,
# server_test.go, leak_test.go) that `make test` runs.
#
#   flood        (make flood) DURATION seconds of fresh mTLS handshakes at
#                three times the gateway's handshake capacity: handshake_queue
#                = QUEUE (64) with one CPU slot, 3 × QUEUE clients. The excess
#                is shed at once; the gateway's RSS is sampled every second.
#                Passes when the excess was shed (shed > 0), devices were
#                served (requests > 0), no handshake timed out (neither the
#                gateway's count nor the bench's), and the RSS stays under
#                RSS_LIMIT_MIB (256) and grows by less than GROWTH_LIMIT_MIB
#                (32) from the 10th second on.
#   soak-reload  (make soak-reload) DURATION seconds of load (fresh handshakes,
#                kept-alive connections, relayed connections of a tcp
#                application, each echoing 200 messages before it closes, and,
#                with mosquitto installed, fleets of 100 mqtt devices that
#                publish 20 QoS 1 messages each, one fleet after the other) with
#                a SIGHUP every second, the file alternating between two
#                configurations: passes when no request or message fails,
#                every reload succeeds, and once the load is over no
#                connection is counted open and the gateway holds no more
#                descriptors than before it (its pooled connections to the
#                HTTP origin aside). Then a SIGTERM
#                during load: the gateway must exit 0, and no request whose
#                connection was admitted may fail (refusals at the handshake,
#                once draining, are expected); a bench report that is missing
#                or unreadable is a failure, never "nothing lost".
#
# Knobs (environment): DURATION=60 QUEUE=64 RSS_LIMIT_MIB=256
# GROWTH_LIMIT_MIB=32 CONCURRENCY=8 WORK=<temp dir> PORT_BASE=18640.
# With two CPUs or more the gateway runs on CPU 0 (taskset; it chooses its
# own GOMAXPROCS, as in production) and the clients on the others.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/config.sh

MODE=${1:?usage: scripts/hardening.sh flood|soak-reload}
DURATION=${DURATION:-60}
QUEUE=${QUEUE:-64}
RSS_LIMIT_MIB=${RSS_LIMIT_MIB:-256}
GROWTH_LIMIT_MIB=${GROWTH_LIMIT_MIB:-32}
CONCURRENCY=${CONCURRENCY:-8}
PORT_BASE=${PORT_BASE:-18640}
OWN_WORK=
[ -n "${WORK:-}" ] || OWN_WORK=1
WORK=${WORK:-$(mktemp -d /tmp/fleetgate-hardening.XXXXXX)}
LISTEN=127.0.0.1:$PORT_BASE
ADMIN=127.0.0.1:$((PORT_BASE + 1))
ORIGIN=127.0.0.1:$((PORT_BASE + 2))
TCP_ORIGIN=127.0.0.1:$((PORT_BASE + 3))
BROKER=127.0.0.1:$((PORT_BASE + 4))
FG=$WORK/fleetgate
STARTED=()

log() { printf '%s %s\n' "$(date +%T)" "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}
cleanup() {
  local pid
  for pid in "${STARTED[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${STARTED[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  STARTED=()
  # A temporary folder keeps its logs and samples, not the binary or the PKI.
  [ -z "$OWN_WORK" ] || rm -rf "$FG" "$WORK/pki"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

SERVER_CPU=() CLIENT_CPU=()
command -v curl >/dev/null 2>&1 || die "needs curl (to read the gateway's /metrics)"
if command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then
  SERVER_CPU=(taskset -c 0)
  CLIENT_CPU=(taskset -c "1-$(($(nproc) - 1))")
fi
ulimit -n 65536 2>/dev/null || true

wait_port() {
  local host=${1%:*} port=${1##*:}
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  die "nothing listens on $1 after 10 s (see $WORK/*.log)"
}

# scrape: /metrics into $WORK/metrics.txt (empty when the gateway does not answer).
scrape() { curl -s --max-time 2 "http://$ADMIN/metrics" >"$WORK/metrics.txt" 2>/dev/null || : >"$WORK/metrics.txt"; }

# metric NAME [LABEL_MATCH]: the sum of the series of NAME (whose labels
# include LABEL_MATCH) in the last scrape; 0 if absent.
metric() {
  awk -v n="$1" -v l="${2:-}" '($1 == n || index($1, n "{") == 1) && index($0, l) { v += $NF } END { print v + 0 }' "$WORK/metrics.txt"
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

# fds PID [PORT]: the descriptors PID holds, less its TCP sockets with an
# end on PORT (connections pooled on purpose).
fds() {
  local pid=$1 port=${2:-}
  local all pooled=0
  all=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
  if [ -n "$port" ]; then
    local hex inodes
    hex=$(printf '%04X' "$port")
    inodes=$(awk -v p=":$hex" 'NR > 1 && (substr($2, length($2) - 4) == p || substr($3, length($3) - 4) == p) { print $10 }' \
      "/proc/$pid/net/tcp" "/proc/$pid/net/tcp6" 2>/dev/null | sort -u)
    if [ -n "$inodes" ]; then
      pooled=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 -printf '%l\n' 2>/dev/null | sed -n 's/^socket:\[\([0-9]*\)\]$/\1/p' |
        grep -cxF -f <(echo "$inodes") || true)
    fi
  fi
  echo $((all - pooled))
}

# json_field FILE NAME: a numeric field of a bench JSON report.
json_field() { sed -n "s/.*\"$2\":\([0-9.]*\).*/\1/p" "$1"; }
json_errors() { sed -n 's/.*"errors":{\([^}]*\)}.*/\1/p' "$1"; }
# json_error FILE KIND: the count of one error kind in a bench JSON report (0 if absent).
json_error() { json_errors "$1" | tr ',' '\n' | awk -F: -v k="\"$2\"" '$1 == k { s += $2 } END { print s + 0 }'; }
# report_ok FILE: whether FILE is a bench JSON report (requests and errors present).
report_ok() { [ -s "$1" ] && grep -q '"requests":[0-9]' "$1" && grep -q '"errors":{' "$1"; }
# positive N: whether N is a number above zero.
positive() { awk -v n="$1" 'BEGIN { exit !(n ~ /^[0-9.]+$/ && n + 0 > 0) }'; }

# write_config FILE EXTRA: the gateway configuration (bench/config.sh),
# EXTRA appended.
write_config() {
  {
    echo "# generated by scripts/hardening.sh ($MODE)"
    FG_LISTEN=$LISTEN FG_ADMIN=$ADMIN FG_ORIGIN=$ORIGIN FG_TCP_ORIGIN=${FG_TCP_ORIGIN:-} FG_MQTT_ORIGIN=${FG_MQTT_ORIGIN:-} \
      FG_QUEUE=$QUEUE FG_HANDSHAKE_TIMEOUT=5s \
      FG_IDLE_TIMEOUT=30s FG_DRAIN_TIMEOUT=15s fleetgate_toml
    echo "$2"
  } >"$1"
}

start_gateway() {
  "${SERVER_CPU[@]}" "$FG" serve -c "$WORK/fleetgate.toml" -log-level warn >"$WORK/gateway.log" 2>&1 &
  GW=$!
  STARTED+=("$GW")
  wait_port "$LISTEN"
  # One small run first makes the device certificates: bench runs started
  # together would each write them into the same folder.
  "$FG" bench -insecure -target "$LISTEN" -sni devices.fleet.test -dir "$WORK/pki" -devices 100 \
    -concurrency 1 -requests 1 >/dev/null || die "the first bench request failed"
}

# bench_run OUT ARGS...: a bench run in the background, its JSON report in OUT.
bench_run() {
  local out=$1
  shift
  bench "$@" >"$out" 2>"$out.err" &
  BENCH=$!
  STARTED+=("$BENCH")
}

# bench ARGS...: one `fleetgate bench` against the gateway, with the work
# folder's 100 devices, its JSON report on stdout.
bench() { "${CLIENT_CPU[@]}" "$FG" bench -json -insecure -target "$LISTEN" -dir "$WORK/pki" -devices 100 "$@"; }

# mqtt_loop OUT UNTIL: mqtt bench runs, one after the other, until the Unix
# time UNTIL; their reports in OUT.0, OUT.1, …
mqtt_loop() {
  local out=$1 until=$2 n=0
  while [ "$(date +%s)" -lt "$until" ]; do
    bench -mode mqtt -sni mqtt.fleet.test -qos 1 -messages 20 -concurrency "$CONCURRENCY" -label mqtt \
      >"$out.$n" 2>"$out.$n.err" || return 1
    n=$((n + 1))
  done
}

log "work folder $WORK"
go build -o "$FG" ./cmd/fleetgate
"$FG" bench -init "$WORK/pki" >/dev/null
"${CLIENT_CPU[@]}" "$FG" bench -origin "$ORIGIN" >"$WORK/origin.log" 2>&1 &
STARTED+=("$!")
wait_port "$ORIGIN"

flood() {
  local clients=$((3 * QUEUE))
  write_config "$WORK/fleetgate.toml" ""
  "$FG" check -c "$WORK/fleetgate.toml" >/dev/null || die "the configuration does not validate"
  start_gateway
  log "flood: ${DURATION}s of fresh mTLS handshakes, $clients clients against handshake_queue = $QUEUE (one CPU slot)"
  # Refused connections come back at once: spread them over source
  # addresses so the client never runs out of ports.
  bench_run "$WORK/flood.json" -sni devices.fleet.test -mode fresh -tls 1.3 -concurrency "$clients" \
    -duration "${DURATION}s" -timeout 10s -source-ips 256 -label flood
  local samples=$WORK/rss.tsv start next rss
  start=$(date +%s)
  next=$((start + 1))
  printf 't_s\trss_mib\tconnections_open\thandshakes_in_flight\tshed_total\n' | tee "$samples" >&2
  while kill -0 "$BENCH" 2>/dev/null; do
    while [ "$(date +%s)" -lt "$next" ]; do sleep 0.1; done
    rss=$(rss_kib "$GW")
    scrape
    printf '%d\t%.1f\t%s\t%s\t%s\n' "$((next - start))" "$(awk -v k="$rss" 'BEGIN { print k / 1024 }')" \
      "$(metric fleetgate_connections_open)" "$(metric fleetgate_handshakes_in_flight)" \
      "$(metric fleetgate_connections_refused_total 'reason="shed"')" | tee -a "$samples" >&2
    next=$((next + 1))
  done
  wait "$BENCH" || die "the bench failed: $(cat "$WORK/flood.json.err")"
  kill -0 "$GW" 2>/dev/null || die "the gateway died during the flood (see $WORK/gateway.log)"
  scrape
  echo
  echo "== flood: $clients clients, fresh TLS 1.3 handshakes for ${DURATION}s against handshake_queue = $QUEUE, 1 CPU slot"
  echo "bench: $(json_field "$WORK/flood.json" requests) requests ok, $(json_field "$WORK/flood.json" error_total) refused or failed {$(json_errors "$WORK/flood.json")}, $(json_field "$WORK/flood.json" throughput_rps) ok/s"
  echo "served requests (handshake included): p50 $(json_field "$WORK/flood.json" p50) µs, p99 $(json_field "$WORK/flood.json" p99) µs, max $(json_field "$WORK/flood.json" max) µs"
  echo "gateway: shed $(metric fleetgate_connections_refused_total 'reason="shed"') connections; $(metric fleetgate_handshakes_total 'result="ok"') handshakes completed; timed out $(metric fleetgate_handshakes_total 'reason="timeout"')"
  # The RSS bound means nothing unless the flood happened: the excess shed,
  # devices served, and no handshake left waiting until it timed out.
  local fail=0 shed requests gw_timeouts bench_timeouts
  report_ok "$WORK/flood.json" || die "no bench report in $WORK/flood.json"
  shed=$(metric fleetgate_connections_refused_total 'reason="shed"')
  requests=$(json_field "$WORK/flood.json" requests)
  gw_timeouts=$(metric fleetgate_handshakes_total 'reason="timeout"')
  bench_timeouts=$(json_error "$WORK/flood.json" timeout)
  positive "$shed" || { echo "FAIL: nothing was shed: the flood did not exceed the handshake capacity (or /metrics did not answer)"; fail=1; }
  positive "$requests" || { echo "FAIL: no request was served during the flood"; fail=1; }
  [ "$gw_timeouts" = 0 ] && [ "$bench_timeouts" = 0 ] || { echo "FAIL: timeouts: $gw_timeouts handshakes timed out at the gateway, $bench_timeouts requests timed out at the bench"; fail=1; }
  awk -F'\t' -v lim="$RSS_LIMIT_MIB" -v glim="$GROWTH_LIMIT_MIB" '
    NR == 1 { next }
    { n++; v[n] = $2; if (n == 1 || $2 < min) min = $2; if ($2 > max) max = $2; sum += $2; if ($1 >= 10 && at10 == "") at10 = $2; last = $2 }
    END {
      if (at10 == "") at10 = v[1]
      printf "gateway RSS over %d samples: min %.1f MiB, mean %.1f MiB, max %.1f MiB; at 10 s %.1f MiB, at the end %.1f MiB (growth %+.1f MiB)\n", n, min, sum / n, max, at10, last, last - at10
      ok = (max < lim) && (last - at10 < glim)
      printf "%s: RSS max under %d MiB and growth from 10 s under %d MiB\n", ok ? "PASS" : "FAIL", lim, glim
      exit ok ? 0 : 1
    }' "$samples" || fail=1
  echo "(per-second samples: $samples)"
  if [ "$fail" = 0 ]; then echo "PASS: excess shed, devices served, no timeouts, RSS bounded"; else echo "FAIL"; fi
  return "$fail"
}

soak_reload() {
  local spare='
[[applications]]
name = "spare"
domain = "spare.fleet.test"
origin = "http://'$ORIGIN'"
tls_cert_file = "pki/server.pem"
tls_key_file = "pki/server-key.pem"

[[applications.policies]]
name = "never"
decision = "deny"
include = [{ ip = ["192.0.2.1/32"] }]
'
  QUEUE=4096 # no shedding here: every request must be served
  # With mosquitto installed, an mqtt application's devices join the load.
  local mqtt_origin="" mosquitto
  mosquitto=$(command -v mosquitto || echo /usr/sbin/mosquitto)
  if [ -x "$mosquitto" ]; then
    mqtt_origin=$BROKER
    printf '%s\n' "persistence false" "log_dest stderr" "log_type error" "max_connections -1" \
      "allow_anonymous true" "listener ${BROKER##*:} ${BROKER%:*}" >"$WORK/mosquitto.conf"
    "${CLIENT_CPU[@]}" "$mosquitto" -c "$WORK/mosquitto.conf" >"$WORK/mosquitto.log" 2>&1 &
    STARTED+=("$!")
    wait_port "$BROKER"
  fi
  FG_TCP_ORIGIN=$TCP_ORIGIN FG_MQTT_ORIGIN=$mqtt_origin write_config "$WORK/a.toml" ""
  FG_TCP_ORIGIN=$TCP_ORIGIN FG_MQTT_ORIGIN=$mqtt_origin write_config "$WORK/b.toml" "$spare"
  "$FG" check -c "$WORK/a.toml" >/dev/null && "$FG" check -c "$WORK/b.toml" >/dev/null || die "the configurations do not validate"
  cp "$WORK/a.toml" "$WORK/fleetgate.toml"
  "${CLIENT_CPU[@]}" "$FG" bench -origin-tcp "$TCP_ORIGIN" >"$WORK/tcp-origin.log" 2>&1 &
  STARTED+=("$!")
  wait_port "$TCP_ORIGIN"
  start_gateway
  local origin_port=${ORIGIN##*:} fds_before
  sleep 1
  fds_before=$(fds "$GW" "$origin_port")
  log "soak-reload: ${DURATION}s of load with a SIGHUP every second"
  bench_run "$WORK/fresh.json" -sni devices.fleet.test -mode fresh -tls 1.3 -concurrency "$CONCURRENCY" -duration "${DURATION}s" -label fresh
  local fresh=$BENCH
  bench_run "$WORK/keep.json" -sni app.fleet.test -mode keepalive -tls 1.2 -group p256 -concurrency "$CONCURRENCY" -duration "${DURATION}s" -label keepalive
  local keep=$BENCH
  bench_run "$WORK/relay.json" -sni bench.fleet.test -mode tcp -message-size 64 -messages 200 -tls 1.3 -concurrency "$CONCURRENCY" -duration "${DURATION}s" -label relay
  local relay=$BENCH
  local mqtt=0
  if [ -n "$mqtt_origin" ]; then
    # One fleet at a time: 100 devices connect (client id = CN), publish 20
    # QoS 1 messages each and disconnect, again until the time is up.
    mqtt_loop "$WORK/mqtt" $(($(date +%s) + DURATION)) &
    mqtt=$!
    STARTED+=("$mqtt")
  fi
  local hups=0 rss_max=0 rss
  while kill -0 "$fresh" 2>/dev/null || kill -0 "$keep" 2>/dev/null || kill -0 "$relay" 2>/dev/null ||
    { [ "$mqtt" != 0 ] && kill -0 "$mqtt" 2>/dev/null; }; do
    sleep 1
    if [ $((hups % 2)) -eq 0 ]; then cp "$WORK/b.toml" "$WORK/next.toml"; else cp "$WORK/a.toml" "$WORK/next.toml"; fi
    mv "$WORK/next.toml" "$WORK/fleetgate.toml"
    kill -HUP "$GW"
    hups=$((hups + 1))
    rss=$(rss_kib "$GW")
    [ "$rss" -gt "$rss_max" ] && rss_max=$rss
  done
  wait "$fresh" || die "the fresh bench failed: $(cat "$WORK/fresh.json.err")"
  wait "$keep" || die "the keepalive bench failed: $(cat "$WORK/keep.json.err")"
  wait "$relay" || die "the relay bench failed: $(cat "$WORK/relay.json.err")"
  [ "$mqtt" = 0 ] || wait "$mqtt" || die "an mqtt bench failed: $(cat "$WORK"/mqtt.*.err)"
  # Every connection ends: none counted open, and the descriptors back to
  # where they were (within 10 s, the pooled HTTP origin connections aside).
  local open relays fds_after
  for _ in $(seq 100); do
    scrape
    open=$(metric fleetgate_connections_open)
    relays=$(metric fleetgate_tcp_connections)
    fds_after=$(fds "$GW" "$origin_port")
    [ "$open" = 0 ] && [ "$relays" = 0 ] && [ "$fds_after" -le "$fds_before" ] && break
    sleep 0.1
  done
  local ok_reloads failed_reloads fail=0
  ok_reloads=$(metric fleetgate_config_reloads_total 'result="ok"')
  failed_reloads=$(metric fleetgate_config_reloads_total 'result="failed"')
  echo
  echo "== soak-reload: ${DURATION}s, $hups SIGHUPs (one a second, alternating two configurations)"
  for f in fresh keep relay; do
    echo "bench $f: $(json_field "$WORK/$f.json" requests) requests ok, $(json_field "$WORK/$f.json" error_total) failed {$(json_errors "$WORK/$f.json")}, $(json_field "$WORK/$f.json" throughput_rps) req/s"
    report_ok "$WORK/$f.json" || { echo "FAIL: no bench report in $WORK/$f.json"; fail=1; }
    [ "$(json_field "$WORK/$f.json" error_total)" = 0 ] || fail=1
    positive "$(json_field "$WORK/$f.json" requests)" || { echo "FAIL: bench $f served no request"; fail=1; }
  done
  echo "relay: $(json_field "$WORK/relay.json" connects) connections, each of up to 200 echoes"
  if [ "$mqtt" != 0 ]; then
    local runs=0 msgs=0 errs=0 f
    for f in "$WORK"/mqtt.[0-9]*; do
      case $f in *.err) continue ;; esac
      grep -q '"error_total":' "$f" || { echo "FAIL: no mqtt bench report in $f"; fail=1; continue; }
      runs=$((runs + 1))
      [ "$(json_field "$f" connected)" = 100 ] || { echo "FAIL: $f: $(json_field "$f" connected) of 100 devices connected"; fail=1; }
      msgs=$(awk -v a="$msgs" -v b="$(json_field "$f" messages)" 'BEGIN { print a + b }')
      errs=$(awk -v a="$errs" -v b="$(json_field "$f" error_total)" 'BEGIN { print a + b }')
    done
    echo "mqtt: $runs fleets of 100 devices, $msgs messages ok, $errs failed"
    [ "$errs" = 0 ] && positive "$msgs" || fail=1
  fi
  echo "gateway: $ok_reloads reloads ok, $failed_reloads refused; RSS max $((rss_max / 1024)) MiB"
  [ "$failed_reloads" = 0 ] && [ "$ok_reloads" -ge "$hups" ] || fail=1
  echo "after the load: $open connections and $relays relays counted open; $fds_after descriptors (besides pooled origin connections) against $fds_before before it"
  [ "$open" = 0 ] && [ "$relays" = 0 ] && [ "$fds_after" -le "$fds_before" ] || fail=1

  log "SIGTERM during load"
  bench_run "$WORK/term.json" -sni devices.fleet.test -mode fresh -tls 1.3 -concurrency "$CONCURRENCY" -duration 6s -label sigterm
  sleep 2
  local served_before
  scrape
  served_before=$(metric fleetgate_requests_total)
  kill -TERM "$GW"
  local rc=0
  wait "$GW" || rc=$?
  local bench_rc=0
  wait "$BENCH" || bench_rc=$?
  local errs lost
  # No report is no evidence: it must not read as "nothing lost".
  if ! report_ok "$WORK/term.json"; then
    echo "SIGTERM during load: FAIL: no bench report in $WORK/term.json (bench exited $bench_rc: $(cat "$WORK/term.json.err" 2>/dev/null))"
    echo "FAIL"
    return 1
  fi
  errs=$(json_errors "$WORK/term.json")
  # Kinds other than dial and handshake are requests lost after their
  # connection was admitted.
  lost=$(echo "$errs" | tr ',' '\n' | awk -F: '$1 !~ /"(dial|handshake)"/ && NF == 2 { s += $2 } END { print s + 0 }')
  echo "SIGTERM during load: the gateway exited $rc after serving $(json_field "$WORK/term.json" requests) requests of the run ($served_before before the signal); refused after the drain began {$errs}; admitted and lost: $lost"
  [ "$rc" = 0 ] && [ "$lost" = 0 ] || fail=1
  positive "$(json_field "$WORK/term.json" requests)" || { echo "FAIL: no request was served in the SIGTERM run"; fail=1; }
  if [ "$fail" = 0 ]; then echo "PASS: no failed request or message, every reload applied, nothing left open, clean exit on SIGTERM"; else echo "FAIL"; fi
  return "$fail"
}

case "$MODE" in
  flood) flood ;;
  soak-reload) soak_reload ;;
  *) die "unknown mode $MODE (flood or soak-reload)" ;;
esac
