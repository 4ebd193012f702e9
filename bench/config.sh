# bench/config.sh: the fleetgate configuration the load scripts run
# (bench/compare.sh, bench/idle.sh, bench/profile.sh through bench/lib.sh,
# and scripts/hardening.sh), in one place. Sourced, not run.
#
# fleetgate_toml prints it: two applications in front of one origin, both
# admitting any device of the bench PKI's fleet (bench -init):
# devices.fleet.test with no session (a fresh handshake per request, the
# connection closes after it) and app.fleet.test with a 24h session cookie.
# Paths are relative to the configuration file, which sits beside pki/.
#
# Knobs (environment): FG_LISTEN and FG_ORIGIN (host:port, required),
# FG_ADMIN (admin listener, none when empty), FG_PROCS (event loops and
# handshake workers, 1), FG_IDLE_TIMEOUT (60s), and, when set,
# FG_QUEUE (handshake_queue), FG_HANDSHAKE_TIMEOUT, FG_DRAIN_TIMEOUT and
# FG_VERDICT_CACHE_SIZE; fleetgate's defaults otherwise. FG_TCP_ORIGIN
# (host:port), when set, adds a tcp application on bench.fleet.test relaying
# to that TCP origin (bench/relay.sh), with no PROXY header, so that an echo
# origin sends back exactly the device's bytes; with FG_TCP_ORIGIN_TLS=1 it
# speaks TLS to it (tls://, the bench PKI's root and the name
# bench.fleet.test, which the bench server certificate carries). FG_MQTT_ORIGIN (host:port),
# when set, adds an mqtt application on mqtt.fleet.test in front of that
# broker (bench/mqtt.sh): client id bound to the device's CN, the CN as the
# username the broker sees.
fleetgate_toml() {
  : "${FG_LISTEN:?FG_LISTEN is required}" "${FG_ORIGIN:?FG_ORIGIN is required}"
  cat <<EOT
[gateway]
listen = "$FG_LISTEN"
admin_listen = "${FG_ADMIN:-}"
event_loops = ${FG_PROCS:-1}
handshake_workers = ${FG_PROCS:-1}
idle_timeout = "${FG_IDLE_TIMEOUT:-60s}"
${FG_QUEUE:+handshake_queue = $FG_QUEUE}
${FG_HANDSHAKE_TIMEOUT:+handshake_timeout = \"$FG_HANDSHAKE_TIMEOUT\"}
${FG_DRAIN_TIMEOUT:+drain_timeout = \"$FG_DRAIN_TIMEOUT\"}
${FG_VERDICT_CACHE_SIZE:+verdict_cache_size = $FG_VERDICT_CACHE_SIZE}

[tokens]
signing_key_file = "pki/token.pem"

[[client_cas]]
name = "bench-fleet"
pem_file = "pki/ca-chain.pem"
associated_hostnames = ["devices.fleet.test", "app.fleet.test", "bench.fleet.test"${FG_MQTT_ORIGIN:+, \"mqtt.fleet.test\"}]

# fresh: no duration, a token per request, the connection closes after it.
[[applications]]
name = "devices"
domain = "devices.fleet.test"
origin = "http://$FG_ORIGIN"
tls_cert_file = "pki/server.pem"
tls_key_file = "pki/server-key.pem"
session_duration = "0s"

[[applications.policies]]
name = "fleet devices"
decision = "non_identity"
include = [{ valid_certificate = true }]

# keepalive: a 24h session, connections stay open.
[[applications]]
name = "app"
domain = "app.fleet.test"
origin = "http://$FG_ORIGIN"
tls_cert_file = "pki/server.pem"
tls_key_file = "pki/server-key.pem"
session_duration = "24h"

[[applications.policies]]
name = "fleet devices"
decision = "non_identity"
include = [{ valid_certificate = true }]
EOT
  if [ -n "${FG_TCP_ORIGIN:-}" ]; then
    local scheme=tcp
    [ -z "${FG_TCP_ORIGIN_TLS:-}" ] || scheme=tls
    cat <<EOT

# relay: raw TCP over mTLS to a TCP origin, decided in the handshake.
[[applications]]
name = "relay"
domain = "bench.fleet.test"
protocol = "tcp"
origin = "$scheme://$FG_TCP_ORIGIN"
${FG_TCP_ORIGIN_TLS:+origin_ca_file = \"pki/root.pem\"}
${FG_TCP_ORIGIN_TLS:+origin_server_name = \"bench.fleet.test\"}
tls_cert_file = "pki/server.pem"
tls_key_file = "pki/server-key.pem"
proxy_protocol = ""
idle_timeout = "10m"

[[applications.policies]]
name = "fleet devices"
decision = "non_identity"
include = [{ valid_certificate = true }]
EOT
  fi
  if [ -n "${FG_MQTT_ORIGIN:-}" ]; then
    cat <<EOT

# mqtt: the CONNECT checked and bound to the certificate, then relayed to the broker.
[[applications]]
name = "mqtt"
domain = "mqtt.fleet.test"
protocol = "mqtt"
origin = "tcp://$FG_MQTT_ORIGIN"
tls_cert_file = "pki/server.pem"
tls_key_file = "pki/server-key.pem"
proxy_protocol = ""
idle_timeout = "10m"
mqtt_client_id = "common_name"
mqtt_username = "common_name"

[[applications.policies]]
name = "fleet devices"
decision = "non_identity"
include = [{ valid_certificate = true }]
EOT
  fi
}
