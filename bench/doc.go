// Package bench is fleetgate's load generator and the tooling of its
// comparison with nginx, HAProxy and Go's standard library. It backs the
// `fleetgate bench` subcommand and the `make bench-*` targets; the gateway
// never imports it.
//
//	fleetgate bench ──▶ Run(Options) ──▶ workers (Concurrency of them)
//	                                      │ fresh:     dial, mTLS handshake, 1 request, close
//	                                      │ keepalive: one mTLS connection, many requests
//	                                      │ cookie:    a certificate once for a CF_Authorization
//	                                      │            cookie, then requests with the cookie only
//	                                      ▼
//	                                    target (fleetgate, nginx, HAProxy, StdlibServer)
//	                                      │
//	                                      ▼
//	                                    Origin (a tiny keep-alive HTTP server)
//
// Relays (tcp applications and their peers) have their own modes:
//
//	tcp:      dial, mTLS handshake, Messages messages of MessageSize bytes
//	          echoed one at a time (each checked), close_notify
//	tcp-hold: MeasureIdle with Echo: N connections, one echo each, then idle
//	          ──▶ relay (fleetgate tcp application, nginx stream, HAProxy
//	              mode tcp, StartGoRelay) ──▶ StartEchoOrigin (TCP echo)
//
// MQTT devices have theirs (RunMQTT, not Run):
//
//	mqtt:     each device once: dial, mTLS, CONNECT (client id = its CN) →
//	          CONNACK; then Messages PUBLISH at QoS 0 or 1 at a Rate; then
//	          idle for Hold (PINGREQ at the keep-alive); DISCONNECT
//	          ──▶ mosquitto's own mTLS listener, or fleetgate's mqtt
//	              application ──▶ mosquitto's plain listener
//
// What each file owns:
//
//   - devices.go: the simulated fleet's certificates, generated once into a
//     folder (InitPKI, LoadFleet) and reused on later runs.
//   - options.go, run.go, client.go: the simulator itself; result.go its
//     report (text or JSON) with errors by kind and an HDR latency histogram.
//   - cpu.go: server CPU from /proc/<pid>/stat and the client's own rusage.
//   - origin.go, stdlib.go: the origin and the standard-library reverse proxy
//     the comparison runs against.
//   - floor.go: the crypto floor, the unavoidable cryptography of one fresh
//     mTLS request on the server side (MeasureFloor, BenchmarkCryptoFloor).
//   - summary.go, targets.go, chart.go: the comparison's Markdown tables at
//     every concurrency (throughput, latency, server and client CPU, how
//     busy each core was, the rows where the client was the limit), the
//     targets' verdicts, and its charts drawn with gonum.org/v1/plot.
//   - idle.go: memory per idle mTLS connection (relayed ones too).
//   - tcp.go: the tcp mode's worker and its figures (TCPStats);
//     tcpserver.go the TCP echo origin and the server type of the raw TCP
//     servers; gorelay.go the Go crypto/tls + io.Copy relay (two goroutines
//     per connection) the relay comparison runs against; relaysummary.go
//     its Markdown tables.
//   - mqtt.go: the mqtt mode (RunMQTT, MQTTResult), its packets encoded and
//     decoded by mochi-mqtt's packets package; mqttsummary.go its Markdown
//     tables.
//
// The scripts (bash, bounded, every process they start killed on exit):
// compare.sh (`make bench-compare`: the side-by-side tables and charts at
// several concurrencies in bench/results/), relay.sh (`make bench-relay`, also run by bench-compare:
// the relays' CPU per message and per connect, and memory per idle relayed
// connection), mqtt.sh (`make bench-mqtt`: mosquitto directly over mTLS vs
// behind fleetgate, per connect and per message, and a connect storm),
// idle.sh (`make bench-idle`), profile.sh (`make
// bench-profile`: fleetgate's CPU profile under load, with
// cmd/fleetgate-prof), and lib.sh, which starts the servers for all of them.
//
// Numbers from this package are measurements, never test assertions: the
// tests check that the machinery works (no errors, ordered percentiles), and
// speed is judged by the harness (bench/compare.sh) on a quiet machine.
package bench
