# bench/lib.sh: shared by bench/compare.sh, bench/relay.sh, bench/idle.sh and
# bench/mqtt.sh (sourced, not run).
#
# Starts the servers of the comparison on loopback, each pinned to one CPU,
# and remembers every process it starts so that `cleanup` (trap EXIT) ends
# them all. HTTP servers: fleetgate, nginx, haproxy, and the Go
# standard-library proxy (`fleetgate bench -stdlib-server`), all in front of
# one origin (`fleetgate bench -origin`). Relays (start_relay_*): fleetgate's
# tcp application, nginx `stream`, HAProxy `mode tcp` and the Go
# crypto/tls + io.Copy relay (`fleetgate bench -relay-server`), all in front
# of one TCP echo origin (`fleetgate bench -origin-tcp`). MQTT: mosquitto
# (start_mosquitto) with an mTLS listener of its own and a plain one, the
# latter behind fleetgate's mqtt application (start_mqtt_fleetgate). One PKI
# made by `fleetgate bench -init`.

source "$(dirname "${BASH_SOURCE[0]}")/config.sh"

WORK=${WORK:-bench/work}
FG=$WORK/fleetgate
PKI=$WORK/pki
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
ORIGIN_ADDR=${ORIGIN_ADDR:-127.0.0.1:19000}
declare -A ADDR=([fleetgate]=127.0.0.1:18443 [nginx]=127.0.0.1:18444 [haproxy]=127.0.0.1:18445 [stdlib]=127.0.0.1:18446)
TCP_ORIGIN_ADDR=${TCP_ORIGIN_ADDR:-127.0.0.1:19001}
# The relays' listeners; fleetgate's tcp application shares its one listener
# (its SNI, bench.fleet.test, picks the application).
declare -A RELAY_ADDR=([fleetgate]=${ADDR[fleetgate]} [nginx]=127.0.0.1:18454 [haproxy]=127.0.0.1:18455 [gorelay]=127.0.0.1:18456)
NGINX_STREAM_MODULE=${NGINX_STREAM_MODULE:-/usr/lib/nginx/modules/ngx_stream_module.so}
# mosquitto's listeners: mTLS (require_certificate) and plain (behind fleetgate).
MOSQUITTO_TLS_ADDR=${MOSQUITTO_TLS_ADDR:-127.0.0.1:18883}
MOSQUITTO_PLAIN_ADDR=${MOSQUITTO_PLAIN_ADDR:-127.0.0.1:11883}
# FG_GOMAXPROCS: the GOMAXPROCS of the Go servers pinned to $SERVER_CPU
# (fleetgate, the standard-library proxy, the Go relay): "unset" (the
# default) leaves it out of their environment, so that each chooses as it
# would in production: the Go runtime takes the CPUs of the affinity mask
# (1 under taskset), fleetgate adds one P per event loop (its `gomaxprocs`
# key, docs/performance.md); a number N sets GOMAXPROCS=N (1 reproduces the
# runs before fleetgate chose its own). FG_GOMAXPROCS_<server>
# (FG_GOMAXPROCS_fleetgate, FG_GOMAXPROCS_stdlib, FG_GOMAXPROCS_gorelay)
# overrides it for one server. Either way every server stays pinned to its
# one CPU with taskset; nginx and HAProxy are unaffected (one worker, one
# thread).
FG_GOMAXPROCS=${FG_GOMAXPROCS:-unset}
declare -A PIDS=()   # server name → the PIDs whose CPU counts (comma-separated)
STARTED=()           # every PID started, for cleanup

log() { printf '%s %s\n' "$(date +%T)" "$*" >&2; }

# field NAME JSON: the number after the first "NAME": in JSON (a run's line
# from `fleetgate bench -json`; for p99, the message's or request's latency:
# MODE=tcp's connect latency comes after it).
field() { { grep -o "\"$1\":[0-9.]*" <<<"$2" || true; } | head -1 | cut -d: -f2; }
die() { log "error: $*"; exit 1; }

# quantile Q: the Q-quantile (0 ≤ Q ≤ 1) of the numbers on stdin, by linear
# interpolation.
quantile() {
  sort -g | awk -v q="$1" '{ v[NR] = $1 } END { p = 1 + q * (NR - 1); i = int(p); f = p - i; print (i < NR) ? v[i] + f * (v[i+1] - v[i]) : v[i] }'
}

# median_ci: "M (95% interval L–U)" of the numbers on stdin: the median and
# the bounds of its 95% confidence interval, the order statistics
# ⌈n/2 − 0.98·√n⌉ and ⌊n/2 + 1 + 0.98·√n⌋ (1-based, clamped to 1..n),
# which assume nothing about the distribution.
median_ci() {
  sort -g | awk '{ v[NR] = $1 } END {
    n = NR; h = 0.98 * sqrt(n)
    lo = n / 2 - h; lo = (lo == int(lo)) ? lo : int(lo) + 1; if (lo < 1) lo = 1
    hi = int(n / 2 + 1 + h); if (hi > n) hi = n
    m = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    if (n < 6) printf "%.3f (too few rounds for a 95%% interval)", m
    else printf "%.3f (95%% interval %.3f–%.3f)", m, v[lo], v[hi] }'
}

cleanup() {
  local pid
  for pid in "${STARTED[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${STARTED[@]}"; do
    # bounded wait: a process that ignores SIGTERM gets SIGKILL after 5 s
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  STARTED=()
}

# install_peers installs nginx (with its stream module, for the relays),
# haproxy and mosquitto from Debian's packages when missing.
install_peers() {
  local need=()
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
  [ -f "$NGINX_STREAM_MODULE" ] || need+=(libnginx-mod-stream)
  command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
  command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
  command -v taskset >/dev/null 2>&1 || need+=(util-linux)
  if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null || {
      # nginx-light is gone from newer Debian releases: fall back to nginx.
      need=("${need[@]/nginx-light/nginx}")
      apt-get install -y -qq "${need[@]}" >/dev/null
    }
    # The packages start their services: stop them, the benchmark starts its own.
    service nginx stop >/dev/null 2>&1 || true
    service haproxy stop >/dev/null 2>&1 || true
    service mosquitto stop >/dev/null 2>&1 || true
  fi
  export PATH="$PATH:/usr/sbin:/sbin"
}

# build builds the fleetgate binary into $WORK.
build() {
  mkdir -p "$WORK"
  go build -o "$FG" ./cmd/fleetgate
}

# make_pki makes the bench PKI (once) and DEVICES device certificates.
make_pki() {
  "$FG" bench -init "$PKI" >/dev/null
  cat "$PKI/server.pem" "$PKI/server-key.pem" >"$WORK/haproxy.pem"
  chmod 600 "$WORK/haproxy.pem"
}

# wait_port waits (at most 10 s) until host:port accepts connections.
wait_port() {
  local host=${1%:*} port=${1##*:}
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  die "nothing listens on $1 after 10 s (see $WORK/*.log)"
}

# spawn NAME CPU CMD...: start CMD pinned to CPU in the background, logging to $WORK/NAME.log.
spawn() {
  local name=$1 cpu=$2; shift 2
  if [ "$cpu" = any ]; then
    "$@" >"$WORK/$name.log" 2>&1 &
  else
    taskset -c "$cpu" "$@" >"$WORK/$name.log" 2>&1 &
  fi
  SPAWNED=$!
  STARTED+=("$SPAWNED")
}

# gomaxprocs SERVER: GOMAXPROCS's setting for the Go server SERVER: "unset"
# or a number (FG_GOMAXPROCS_SERVER, else FG_GOMAXPROCS); dies on anything else.
gomaxprocs() {
  local var="FG_GOMAXPROCS_$1"
  local v=${!var:-$FG_GOMAXPROCS}
  case "$v" in
    unset) ;;
    '' | *[!0-9]* | 0*) die "$var or FG_GOMAXPROCS: \"$v\": want unset or a number of Ps (1, 2 …)" ;;
  esac
  echo "$v"
}

# go_env SERVER: sets GO_ENV to the env(1) arguments that apply SERVER's
# GOMAXPROCS setting (spawn NAME CPU env "${GO_ENV[@]}" CMD...).
go_env() {
  local v
  v=$(gomaxprocs "$1") || exit 1
  if [ "$v" = unset ]; then
    GO_ENV=(-u GOMAXPROCS)
  else
    GO_ENV=("GOMAXPROCS=$v")
  fi
}

# gomaxprocs_note SERVERS...: "fleetgate GOMAXPROCS=1, stdlib GOMAXPROCS unset"
# for the Go servers among SERVERS, for the results' header.
gomaxprocs_note() {
  local s v out=()
  for s in "$@"; do
    case "$s" in fleetgate | stdlib | gorelay) ;; *) continue ;; esac
    v=$(gomaxprocs "$s") || exit 1
    if [ "$v" = unset ]; then out+=("$s GOMAXPROCS unset"); else out+=("$s GOMAXPROCS=$v"); fi
  done
  local IFS=,
  echo "${out[*]}" | sed 's/,/, /g'
}

# start_origin starts the HTTP origin on the client's CPU; ORIGIN_PID is its
# PID (its CPU counts toward the client core's busy share).
start_origin() {
  GOMAXPROCS=1 spawn origin "$CLIENT_CPU" "$FG" bench -origin "$ORIGIN_ADDR"
  ORIGIN_PID=$SPAWNED
  wait_port "$ORIGIN_ADDR"
}

# write_fleetgate_config PROCS: $WORK/fleetgate.toml (bench/config.sh) for
# PROCS event loops and handshake workers.
write_fleetgate_config() {
  {
    echo "# generated by bench/lib.sh"
    FG_LISTEN=${ADDR[fleetgate]} FG_ORIGIN=$ORIGIN_ADDR FG_PROCS=$1 FG_IDLE_TIMEOUT=${IDLE_TIMEOUT:-60s} \
      FG_VERDICT_CACHE_SIZE=${VERDICT_CACHE_SIZE:-100000} FG_TCP_ORIGIN=${FG_TCP_ORIGIN:-} fleetgate_toml
  } >"$WORK/fleetgate.toml"
  "$FG" check -c "$WORK/fleetgate.toml" >/dev/null || die "the generated fleetgate configuration does not validate"
}

start_fleetgate() {
  local cpu=${1:-$SERVER_CPU} procs=1
  [ "$cpu" = any ] && procs=$(nproc)
  write_fleetgate_config "$procs"
  if [ "$cpu" = any ]; then
    spawn fleetgate any "$FG" serve -c "$WORK/fleetgate.toml" -log-level warn
  else
    go_env fleetgate
    spawn fleetgate "$cpu" env "${GO_ENV[@]}" "$FG" serve -c "$WORK/fleetgate.toml" -log-level warn
  fi
  PIDS[fleetgate]=$SPAWNED
  wait_port "${ADDR[fleetgate]}"
}

start_stdlib() {
  local cpu=${1:-$SERVER_CPU}
  if [ "$cpu" = any ]; then
    spawn stdlib any "$FG" bench -stdlib-server "${ADDR[stdlib]}" -dir "$PKI" -upstream "http://$ORIGIN_ADDR"
  else
    go_env stdlib
    spawn stdlib "$cpu" env "${GO_ENV[@]}" "$FG" bench -stdlib-server "${ADDR[stdlib]}" -dir "$PKI" -upstream "http://$ORIGIN_ADDR"
  fi
  PIDS[stdlib]=$SPAWNED
  wait_port "${ADDR[stdlib]}"
}

start_nginx() {
  local abs
  abs=$(cd "$WORK" && pwd)
  mkdir -p "$abs/nginx-tmp"
  chmod 1777 "$abs/nginx-tmp"
  cat >"$abs/nginx.conf" <<EOF
# generated by bench/lib.sh
worker_processes 1;
daemon off;
pid $abs/nginx.pid;
error_log $abs/nginx-error.log warn;
events { worker_connections $(($(ulimit -n) - 100)); }
http {
  access_log off;
  client_body_temp_path $abs/nginx-tmp/body;
  proxy_temp_path $abs/nginx-tmp/proxy;
  fastcgi_temp_path $abs/nginx-tmp/fastcgi;
  uwsgi_temp_path $abs/nginx-tmp/uwsgi;
  scgi_temp_path $abs/nginx-tmp/scgi;
  upstream origin {
    server $ORIGIN_ADDR;
    keepalive 64;
  }
  server {
    listen ${ADDR[nginx]} ssl;
    ssl_certificate $abs/pki/server.pem;
    ssl_certificate_key $abs/pki/server-key.pem;
    ssl_client_certificate $abs/pki/root.pem;
    ssl_verify_client optional;
    ssl_verify_depth 2;
    ssl_protocols TLSv1.2 TLSv1.3;
    # P-256 second: TLS 1.2 clients name the certificate's curve in the same list.
    ssl_ecdh_curve X25519:prime256v1;
    ssl_session_cache off;
    ssl_session_tickets off;
    # TLS 1.3: without this OpenSSL still sends two (stateful) tickets per handshake.
    ssl_conf_command NumTickets 0;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    location / {
      if (\$ssl_client_verify != SUCCESS) { return 403; }
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
  nginx -t -q -c "$abs/nginx.conf" -p "$abs" 2>"$WORK/nginx-t.log" || die "nginx rejects its configuration: $(cat "$WORK/nginx-t.log")"
  spawn nginx "$SERVER_CPU" nginx -c "$abs/nginx.conf" -p "$abs"
  local master=$SPAWNED
  wait_port "${ADDR[nginx]}"
  # taskset execs nginx in place, so the master's PID is $!; its worker is its child.
  local worker
  worker=$(pgrep -P "$master" | head -1 || true)
  [ -n "$worker" ] || die "nginx has no worker process"
  PIDS[nginx]=$master,$worker
}

# write_openssl_no_tickets writes $WORK/openssl-no-tickets.cnf, an OpenSSL
# configuration (HAProxy's OPENSSL_CONF) whose system default sends no TLS
# 1.3 session tickets. HAProxy 2.6 has no keyword for it: no-tls-tickets and
# a cache size of 0 still leave OpenSSL sending stateful tickets after every
# TLS 1.3 handshake, work the Go servers do not do (nginx: ssl_conf_command).
write_openssl_no_tickets() {
  cat >"$WORK/openssl-no-tickets.cnf" <<EOF
# generated by bench/lib.sh
openssl_conf = openssl_init
[openssl_init]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
NumTickets = 0
EOF
}

# haproxy_identity_lines: with HAPROXY_IDENTITY=1, HAProxy tells the origin
# who the device is, as an mTLS gateway in front of an origin would and as
# fleetgate does with its token: the client certificate (base64 DER) and
# X-Forwarded-For, -Proto and -Host, about 650 bytes more per request to the
# origin (fleetgate's token and X-Forwarded-* are about 1,100). Off by
# default: the comparison's HAProxy forwards nothing.
haproxy_identity_lines() {
  [ "${HAPROXY_IDENTITY:-0}" = 1 ] || return 0
  cat <<EOF
  option forwardfor
  http-request set-header X-Forwarded-Proto https
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  http-request set-header X-Client-Cert %[ssl_c_der,base64]
EOF
}

start_haproxy() {
  local abs
  abs=$(cd "$WORK" && pwd)
  # HAProxy needs about two descriptors per connection and refuses to start
  # when maxconn exceeds what the limit allows.
  local maxconn=$((($(ulimit -n) - 200) / 2))
  cat >"$abs/haproxy.cfg" <<EOF
# generated by bench/lib.sh
global
  nbthread 1
  maxconn $maxconn
  tune.ssl.cachesize 0
  ssl-default-bind-options no-tls-tickets

defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s
  option http-keep-alive

frontend bench
  # prefer-client-ciphers: the client's order (AES-128-GCM), as nginx and the Go
  # servers follow it; HAProxy's own order would pick AES-256-GCM with SHA-384.
  bind ${ADDR[haproxy]} ssl crt $abs/haproxy.pem ca-file $abs/pki/root.pem verify optional curves X25519:P-256 no-tls-tickets prefer-client-ciphers ssl-min-ver TLSv1.2 ssl-max-ver TLSv1.3 alpn http/1.1
  # ssl_c_verify is 0 also when no certificate was sent: require one too.
  http-request deny deny_status 403 unless { ssl_c_used } { ssl_c_verify 0 }
$(haproxy_identity_lines)
  default_backend origin

backend origin
  http-reuse always
  server origin $ORIGIN_ADDR maxconn 1024
EOF
  haproxy -c -q -f "$abs/haproxy.cfg" >"$WORK/haproxy-c.log" 2>&1 || die "haproxy rejects its configuration: $(cat "$WORK/haproxy-c.log")"
  write_openssl_no_tickets
  spawn haproxy "$SERVER_CPU" env OPENSSL_CONF="$abs/openssl-no-tickets.cnf" haproxy -db -f "$abs/haproxy.cfg"
  PIDS[haproxy]=$SPAWNED
  wait_port "${ADDR[haproxy]}"
}

# sni_for SERVER MODE: fleetgate's fresh runs go to its no-duration application,
# keepalive runs to the 24h one; the other servers ignore the name.
sni_for() {
  if [ "$2" = fresh ]; then echo devices.fleet.test; else echo app.fleet.test; fi
}

# --- relays: raw TCP over mTLS in front of the TCP echo origin ---

# With ORIGIN_TLS=1 the echo origin speaks TLS (the bench server certificate,
# bench.fleet.test; it issues session tickets) and every relay speaks TLS to
# it, verifying it against the bench root and that name.
start_echo_origin() {
  local cpu=${1:-$CLIENT_CPU} tls=()
  [ -z "${ORIGIN_TLS:-}" ] || tls=(-origin-tls -dir "$PKI")
  GOMAXPROCS=1 spawn echo-origin "$cpu" "$FG" bench -origin-tcp "$TCP_ORIGIN_ADDR" "${tls[@]}"
  wait_port "$TCP_ORIGIN_ADDR"
}

# start_relay_fleetgate: fleetgate with its tcp application (bench.fleet.test,
# no PROXY header, so that the echo carries the device's bytes only).
start_relay_fleetgate() {
  FG_TCP_ORIGIN=$TCP_ORIGIN_ADDR FG_TCP_ORIGIN_TLS=${ORIGIN_TLS:-} start_fleetgate
}

start_relay_gorelay() {
  [ -z "${ORIGIN_TLS:-}" ] || die "the Go relay speaks no TLS to its origin: leave gorelay out of SERVERS with ORIGIN_TLS=1"
  go_env gorelay
  spawn gorelay "$SERVER_CPU" env "${GO_ENV[@]}" "$FG" bench -relay-server "${RELAY_ADDR[gorelay]}" -dir "$PKI" -relay-upstream "$TCP_ORIGIN_ADDR"
  PIDS[gorelay]=$SPAWNED
  wait_port "${RELAY_ADDR[gorelay]}"
}

# start_relay_nginx: nginx `stream` with ssl_verify_client on. A relayed
# connection is two of worker_connections (device and origin).
start_relay_nginx() {
  local abs nofile upstream_tls=""
  abs=$(cd "$WORK" && pwd)
  nofile=$(ulimit -n)
  [ -z "${ORIGIN_TLS:-}" ] || upstream_tls="proxy_ssl on; proxy_ssl_verify on; proxy_ssl_trusted_certificate $abs/pki/root.pem; proxy_ssl_name bench.fleet.test; proxy_ssl_server_name on; proxy_ssl_session_reuse on;"
  [ -f "$NGINX_STREAM_MODULE" ] || die "no nginx stream module at $NGINX_STREAM_MODULE (Debian: libnginx-mod-stream)"
  cat >"$abs/nginx-stream.conf" <<EOF
# generated by bench/lib.sh
load_module $NGINX_STREAM_MODULE;
worker_processes 1;
worker_rlimit_nofile $nofile;
daemon off;
pid $abs/nginx-stream.pid;
error_log $abs/nginx-stream-error.log warn;
events { worker_connections $((nofile - 100)); }
stream {
  upstream echo { server $TCP_ORIGIN_ADDR; }
  server {
    listen ${RELAY_ADDR[nginx]} ssl;
    ssl_certificate $abs/pki/server.pem;
    ssl_certificate_key $abs/pki/server-key.pem;
    ssl_client_certificate $abs/pki/root.pem;
    ssl_verify_client on;
    ssl_verify_depth 2;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_ecdh_curve X25519:prime256v1;
    ssl_session_cache off;
    ssl_session_tickets off;
    # TLS 1.3: without this OpenSSL still sends two (stateful) tickets per handshake.
    ssl_conf_command NumTickets 0;
    proxy_pass echo;
    $upstream_tls
    proxy_connect_timeout 5s;
    proxy_timeout 10m;
  }
}
EOF
  nginx -t -q -c "$abs/nginx-stream.conf" -p "$abs" 2>"$WORK/nginx-stream-t.log" || die "nginx rejects its stream configuration: $(cat "$WORK/nginx-stream-t.log")"
  spawn nginx-stream "$SERVER_CPU" nginx -c "$abs/nginx-stream.conf" -p "$abs"
  local master=$SPAWNED worker
  wait_port "${RELAY_ADDR[nginx]}"
  worker=$(pgrep -P "$master" | head -1 || true)
  [ -n "$worker" ] || die "nginx (stream) has no worker process"
  PIDS[nginx]=$master,$worker
}

# start_relay_haproxy: HAProxy `mode tcp` with verify required.
start_relay_haproxy() {
  local abs
  abs=$(cd "$WORK" && pwd)
  # Two descriptors per relayed connection (device and origin).
  local maxconn=$((($(ulimit -n) - 200) / 2)) server_tls=""
  [ -z "${ORIGIN_TLS:-}" ] || server_tls="ssl verify required ca-file $abs/pki/root.pem verifyhost bench.fleet.test sni str(bench.fleet.test)"
  cat >"$abs/haproxy-tcp.cfg" <<EOF
# generated by bench/lib.sh
global
  nbthread 1
  maxconn $maxconn
  tune.ssl.cachesize 0
  ssl-default-bind-options no-tls-tickets

defaults
  mode tcp
  timeout connect 5s
  timeout client 10m
  timeout server 10m

frontend relay
  # prefer-client-ciphers: the client's order (AES-128-GCM), as nginx and the Go
  # servers follow it; HAProxy's own order would pick AES-256-GCM with SHA-384.
  bind ${RELAY_ADDR[haproxy]} ssl crt $abs/haproxy.pem ca-file $abs/pki/root.pem verify required curves X25519:P-256 no-tls-tickets prefer-client-ciphers ssl-min-ver TLSv1.2 ssl-max-ver TLSv1.3
  default_backend echo

backend echo
  server echo $TCP_ORIGIN_ADDR $server_tls
EOF
  haproxy -c -q -f "$abs/haproxy-tcp.cfg" >"$WORK/haproxy-tcp-c.log" 2>&1 || die "haproxy rejects its tcp configuration: $(cat "$WORK/haproxy-tcp-c.log")"
  write_openssl_no_tickets
  spawn haproxy-tcp "$SERVER_CPU" env OPENSSL_CONF="$abs/openssl-no-tickets.cnf" haproxy -db -f "$abs/haproxy-tcp.cfg"
  PIDS[haproxy]=$SPAWNED
  wait_port "${RELAY_ADDR[haproxy]}"
}

# --- mqtt: mosquitto directly over mTLS, and behind fleetgate ---

# start_mosquitto: one mosquitto, pinned to $SERVER_CPU, with two listeners:
# $MOSQUITTO_TLS_ADDR, its own mTLS (require_certificate true, the bench CA,
# use_identity_as_username), and $MOSQUITTO_PLAIN_ADDR, plain TCP for
# fleetgate. No connection limit (max_connections -1); its descriptor limit
# is the shell's (ulimit -n), copied to $WORK/mosquitto.limits.
start_mosquitto() {
  local abs
  abs=$(cd "$WORK" && pwd)
  cat >"$abs/mosquitto.conf" <<EOF
# generated by bench/lib.sh
# root: keep reading the bench PKI's key (mosquitto otherwise drops to its own user)
user root
persistence false
log_dest stderr
log_type error
log_type warning
max_connections -1
allow_anonymous true
max_keepalive 65535

listener ${MOSQUITTO_TLS_ADDR##*:} ${MOSQUITTO_TLS_ADDR%:*}
certfile $abs/pki/server.pem
keyfile $abs/pki/server-key.pem
cafile $abs/pki/root.pem
require_certificate true
use_identity_as_username true

listener ${MOSQUITTO_PLAIN_ADDR##*:} ${MOSQUITTO_PLAIN_ADDR%:*}
EOF
  # OpenSSL sends two TLS 1.3 session tickets per handshake unless told not
  # to, which fleetgate (in the rows it fronts mosquitto) does not do.
  write_openssl_no_tickets
  spawn mosquitto "$SERVER_CPU" env OPENSSL_CONF="$abs/openssl-no-tickets.cnf" mosquitto -c "$abs/mosquitto.conf"
  PIDS[mosquitto]=$SPAWNED
  wait_port "$MOSQUITTO_TLS_ADDR"
  wait_port "$MOSQUITTO_PLAIN_ADDR"
  grep 'open files' "/proc/$SPAWNED/limits" >"$WORK/mosquitto.limits" || true
}

# start_mqtt_fleetgate: fleetgate with its mqtt application (mqtt.fleet.test)
# in front of mosquitto's plain listener.
start_mqtt_fleetgate() {
  FG_MQTT_ORIGIN=$MOSQUITTO_PLAIN_ADDR start_fleetgate
}
