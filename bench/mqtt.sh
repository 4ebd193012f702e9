#!/usr/bin/env bash
# bench/mqtt.sh (make bench-mqtt): MQTT devices over mTLS against mosquitto
# reached directly (its own TLS listener, require_certificate true, the bench
# CA) and against mosquitto behind fleetgate (fleetgate's mqtt application,
# client id bound to the CN, → mosquitto's plain listener). The difference is
# the price of putting fleetgate in front, per connect and per message.
#
# Pinning as in bench/relay.sh: mosquitto and fleetgate on CPU $SERVER_CPU
# (GOMAXPROCS=1, one event loop), the client (`fleetgate bench -mode mqtt`)
# on CPU $CLIENT_CPU; TLS 1.3, X25519, ECDSA P-256 certificates. Server CPU
# is mosquitto's own (direct), or fleetgate's plus mosquitto's (behind), from
# /proc/<pid>/stat, divided by what was done in the phase:
#   - connect: $CONNECT_N devices connect (dial, mTLS, CONNECT → CONNACK),
#     $CONCURRENCY at a time, and disconnect: server CPU µs per connect;
#   - qos0 / qos1: $PUB_DEVICES devices publish $QOS0_MESSAGES (QoS 0) or
#     $QOS1_MESSAGES (QoS 1, one in flight per device) messages of $SIZE
#     bytes, unpaced: server CPU µs per message, PUBACK latency;
#   - qos1-rate: $RATE_DEVICES devices publish $RATE_MESSAGES QoS 1 messages
#     each at $RATE (for the fleet): PUBACK latency at a set rate;
#   - storm: $STORM_N devices connect, $STORM_CONCURRENCY at a time, then hold
#     idle for $STORM_HOLD (every device, from its CONNACK on, sends PINGREQ
#     $STORM_KEEPALIVE after its last packet, as a device does); fresh servers for
#     each set-up: time until all are connected, connects/s, and the RSS and
#     peak RSS (VmHWM) of fleetgate and mosquitto. Through fleetgate a device
#     is two descriptors in fleetgate (device and broker side): when
#     2 × STORM_N does not fit the descriptor limit, the largest thousand
#     that fits is used (for both set-ups), and the results say so.
#
# Knobs (environment): RUNS=3 CONCURRENCY=16 CONNECT_N=1000 PUB_DEVICES=50
# QOS0_MESSAGES=2000 QOS1_MESSAGES=400 SIZE=64 RATE_DEVICES=200 RATE=2000
# RATE_MESSAGES=50 STORM_N=10000 (0: no storm) STORM_CONCURRENCY=200
# STORM_HOLD=10s STORM_KEEPALIVE=30s MQTT_VERSION=3.1.1 TLS=1.3
# SERVER_CPU=0 CLIENT_CPU=1 WORK=bench/work OUT=bench/results STAMP=<date>
# (results: $OUT/$STAMP-mqtt.md and .jsonl). About 3 minutes with the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

RUNS=${RUNS:-3}
CONCURRENCY=${CONCURRENCY:-16}
CONNECT_N=${CONNECT_N:-1000}
PUB_DEVICES=${PUB_DEVICES:-50}
QOS0_MESSAGES=${QOS0_MESSAGES:-2000}
QOS1_MESSAGES=${QOS1_MESSAGES:-400}
SIZE=${SIZE:-64}
RATE_DEVICES=${RATE_DEVICES:-200}
RATE=${RATE:-2000}
RATE_MESSAGES=${RATE_MESSAGES:-50}
STORM_N=${STORM_N:-10000}
STORM_CONCURRENCY=${STORM_CONCURRENCY:-200}
STORM_HOLD=${STORM_HOLD:-10s}
STORM_KEEPALIVE=${STORM_KEEPALIVE:-30s}
MQTT_VERSION=${MQTT_VERSION:-3.1.1}
TLS=${TLS:-1.3}
OUT=${OUT:-bench/results}
STAMP=${STAMP:-$(date +%F)}

trap cleanup EXIT
trap 'exit 130' INT TERM

[ "$(nproc)" -ge 2 ] || die "needs 2 CPUs (one for the servers, one for the client); this machine has $(nproc)"
[[ $STORM_N =~ ^[0-9]+$ ]] || die "STORM_N: $STORM_N is not a number of devices"
install_peers
# Every process started from here (mosquitto and fleetgate included)
# inherits the highest descriptor limit allowed.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
FD_LIMIT=$(ulimit -n)
build
make_pki
mkdir -p "$OUT"
RUNS_FILE=$WORK/mqtt.jsonl
: >"$RUNS_FILE"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

declare -A TARGET=([mosquitto]=$MOSQUITTO_TLS_ADDR [fleetgate]=${ADDR[fleetgate]})
SETUPS="mosquitto fleetgate"

# pids SETUP: the PIDs whose CPU and memory count for SETUP.
pids() {
  if [ "$1" = fleetgate ]; then echo "${PIDS[fleetgate]},${PIDS[mosquitto]}"; else echo "${PIDS[mosquitto]}"; fi
}

# one SETUP SCENARIO DEVICES ARGS...: one client run, its JSON on stdout.
one() {
  local setup=$1 scenario=$2 devices=$3; shift 3
  timeout 600 taskset -c "$CLIENT_CPU" "$FG" bench -json -insecure -mode mqtt \
    -target "${TARGET[$setup]}" -sni mqtt.fleet.test -dir "$PKI" -devices "$devices" \
    -tls "$TLS" -group x25519 -mqtt-version "$MQTT_VERSION" -message-size "$SIZE" \
    -pid "$(pids "$setup")" -label "$setup" -scenario "$scenario" "$@"
}

# The scenarios: "NAME DEVICES ARGS…".
SCENARIOS=(
  "connect $CONNECT_N -messages 0 -concurrency $CONCURRENCY"
  "qos0 $PUB_DEVICES -qos 0 -messages $QOS0_MESSAGES -concurrency $CONCURRENCY"
  "qos1 $PUB_DEVICES -qos 1 -messages $QOS1_MESSAGES -concurrency $CONCURRENCY"
  "qos1-rate $RATE_DEVICES -qos 1 -messages $RATE_MESSAGES -rate $RATE -concurrency $CONCURRENCY"
)

STORM_NOTE=""
storm_n=$STORM_N
if [ $((2 * storm_n + 200)) -gt "$FD_LIMIT" ]; then
  storm_n=$(((FD_LIMIT - 200) / 2 / 1000 * 1000))
  STORM_NOTE="$STORM_N devices through fleetgate need about $((2 * STORM_N + 200)) descriptors in fleetgate (device and broker side of each); the limit here is $FD_LIMIT per process (hard limit $(ulimit -Hn); raising a hard limit needs CAP_SYS_RESOURCE), so the storm is $storm_n devices, for both set-ups."
  log "$STORM_NOTE"
fi

start_mosquitto
MOSQUITTO_LIMITS=$(awk '{print $4 " (soft), " $5 " (hard)"}' "$WORK/mosquitto.limits" 2>/dev/null || echo '?')
start_mqtt_fleetgate
for sc in "${SCENARIOS[@]}"; do
  read -r name devices args <<<"$sc"
  for s in $SETUPS; do
    log "$name: warming up $s"
    # shellcheck disable=SC2086 # args is a list of flags
    w=$(one "$s" "warm-up" 50 $args) || die "$s, $name: the warm-up failed: $w"
    case "$w" in
      *'"error_total":0,'*) ;;
      *) die "$s, $name: the warm-up had errors: $w" ;;
    esac
  done
  for run in $(seq "$RUNS"); do
    for s in $SETUPS; do
      # shellcheck disable=SC2086
      r=$(one "$s" "$name" "$devices" $args) || die "$s, $name: the run failed: $r"
      echo "$r" >>"$RUNS_FILE"
      con=$(sed -n 's/.*"server_cpu_us_per_connect":\([0-9.]*\).*/\1/p' <<<"$r")
      msg=$(sed -n 's/.*"server_cpu_us_per_message":\([0-9.]*\).*/\1/p' <<<"$r")
      mps=$(sed -n 's/.*"messages_per_s":\([0-9.]*\).*/\1/p' <<<"$r")
      log "$name run $run/$RUNS $s: ${con%.*} µs/connect, ${msg%.*} µs/message, ${mps%.*} messages/s"
    done
  done
done
cleanup

# The storm: fresh servers for each set-up, so that the peak RSS is the storm's.
if [ "$storm_n" -gt 0 ]; then
  for s in $SETUPS; do
    start_mosquitto
    [ "$s" = fleetgate ] && start_mqtt_fleetgate
    log "storm: $storm_n devices to $s"
    one "$s" storm "$storm_n" -messages 0 -concurrency "$STORM_CONCURRENCY" -hold "$STORM_HOLD" \
      -keepalive "$STORM_KEEPALIVE" -timeout 30s | tee -a "$RUNS_FILE" >&2
    cleanup
  done
fi

MD=$OUT/$STAMP-mqtt.md
{
  echo "# MQTT over mTLS: mosquitto directly vs mosquitto behind fleetgate — $STAMP"
  echo
  echo "Command: \`make bench-mqtt\` (bench/mqtt.sh) with RUNS=$RUNS CONCURRENCY=$CONCURRENCY CONNECT_N=$CONNECT_N PUB_DEVICES=$PUB_DEVICES QOS0_MESSAGES=$QOS0_MESSAGES QOS1_MESSAGES=$QOS1_MESSAGES SIZE=$SIZE RATE_DEVICES=$RATE_DEVICES RATE=$RATE RATE_MESSAGES=$RATE_MESSAGES STORM_N=$STORM_N STORM_CONCURRENCY=$STORM_CONCURRENCY STORM_HOLD=$STORM_HOLD STORM_KEEPALIVE=$STORM_KEEPALIVE MQTT_VERSION=$MQTT_VERSION TLS=$TLS."
  echo
  echo "- machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) CPUs, $(uname -sr); load average before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- $(go version | cut -d' ' -f3-), fleetgate $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $({ mosquitto -h 2>/dev/null || true; } | head -1), $(openssl version 2>/dev/null || echo 'OpenSSL ?')"
  echo "- servers on CPU $SERVER_CPU (mosquitto, and fleetgate with GOMAXPROCS=1 and one event loop); the client on CPU $CLIENT_CPU; loopback; TLS $TLS with X25519, ECDSA P-256 certificates (root → intermediate → leaf), MQTT $MQTT_VERSION, clean sessions, client id = the device certificate's CN, topic \`devices/<cn>/telemetry\`, no subscribers."
  echo "- mosquitto: one process, \`max_connections -1\`, descriptor limit: $MOSQUITTO_LIMITS; listener $MOSQUITTO_TLS_ADDR with \`require_certificate true\`, \`cafile\` the bench root, \`use_identity_as_username true\`, no TLS 1.3 session tickets (OpenSSL \`NumTickets 0\`, as fleetgate sends none) (the *mosquitto* rows); plain listener $MOSQUITTO_PLAIN_ADDR behind fleetgate's mqtt application (\`mqtt_client_id = \"common_name\"\`, \`mqtt_username = \"common_name\"\`) on ${ADDR[fleetgate]} (the *fleetgate* rows: CPU of fleetgate + mosquitto)."
  echo "- connect: each device dials, handshakes, sends CONNECT and waits for the CONNACK ($CONCURRENCY in flight), then stays connected until the run ends with DISCONNECT; the CPU per connect is the servers' CPU over that phase. qos0: each device writes its messages back to back, then a PINGREQ whose PINGRESP shows the broker has read them all. qos1: one message in flight per device, PUBACK latency from the write to the PUBACK. qos1-rate: the same at a total rate of $RATE messages/s. storm: $STORM_CONCURRENCY connects in flight, each device then idle with a keep-alive of $STORM_KEEPALIVE (PINGREQ $STORM_KEEPALIVE after its last packet, from its CONNACK on) until the whole fleet is connected and for $STORM_HOLD more; the RSS is read at the end of the hold, the peak is VmHWM. Each scenario starts with a 50-device warm-up run per set-up, not recorded."
  echo
  echo "**Noisy numbers.** The machine (2 CPUs) was shared with other engineers' builds and tests during this run: throughput and latency move with their load, and even the server CPU per connect or per message (each process's own CPU time, from /proc) moves by tens of percent between runs. Read the differences, not the third digit."
  echo
  echo "## Runs (medians of $RUNS)"
  echo
  "$FG" bench -summarize-mqtt "$RUNS_FILE"
  if [ -n "$STORM_NOTE" ]; then
    echo
    echo "Storm: $STORM_NOTE"
  fi
  echo
  echo "Raw runs (one JSON object per run): \`$STAMP-mqtt.jsonl\`."
} >"$MD"
cp "$RUNS_FILE" "$OUT/$STAMP-mqtt.jsonl"
cat "$MD"
log "wrote $MD and $OUT/$STAMP-mqtt.jsonl"
