# fleetgate — the whole set-up on a fresh machine is `make run` and `make test`.
GO       ?= go
PKGS     ?= ./...
FUZZTIME ?= 30s
BENCH    ?= .
BENCHTIME ?= 1s

.PHONY: all build run test test-short bench fuzz lint fmt clean bench-compare bench-relay bench-pool bench-pair bench-mqtt bench-floor bench-idle bench-profile

all: build

build:
	$(GO) build -o bin/fleetgate ./cmd/fleetgate

# run: the gateway on the embedded demo configuration, with its echo origin, MQTT broker and
# OpenID Provider (creates a demo PKI on first start).
run: build
	./bin/fleetgate serve

# test: every test, with the race detector (what CI runs).
test:
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 -timeout 15m $(PKGS)

test-short:
	$(GO) test -count=1 -short $(PKGS)

# bench: the hot-path benchmarks; compare runs with benchstat.
bench:
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchmem -benchtime $(BENCHTIME) $(PKGS)

# fuzz: each fuzz target for FUZZTIME.
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$t"; \
	    $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 5s $$pkg || exit 1; \
	  done; \
	done

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin

# bench-compare: fleetgate vs nginx, HAProxy and Go's standard library (installs
# nginx and haproxy when missing), fresh and keep-alive, at 4, 16 and 64
# clients: per server, req/s, p50 and p99 latency, server CPU per request and
# how busy the server's core was, the load client's CPU per request and how
# busy its core was (a row over 90% says the client was the limit), and the
# targets' verdicts; writes bench/results/<date>.md, .jsonl, a server-CPU
# chart (.png) and req/s-against-concurrency charts (-rps-tlsV-MODE.png),
# then the relay rows and their targets (bench-relay) unless RELAY=0.
# Knobs: RUNS, DURATION, WARMUP, CONCURRENCY (a list), DEVICES, TLS_VERSIONS,
# MODES, SERVERS, FG_GOMAXPROCS (unset, 1 or N for the Go servers; each
# server stays pinned to one core), RELAY_CONCURRENCY (the relay's one level).
RELAY ?= 1
bench-compare:
	bash bench/compare.sh
	if [ "$(RELAY)" != 0 ]; then env -u SERVERS -u CONCURRENCY bash bench/relay.sh; fi

# bench-relay: raw TCP over mTLS relayed to a TCP echo origin: fleetgate's tcp
# application vs nginx stream, HAProxy mode tcp and a Go io.Copy relay; server
# CPU per echoed message (64 B, 4 KiB) and per connect, RSS per idle relayed
# connection; writes bench/results/<date>-relay.md and .jsonl.
# Knobs: RUNS, DURATION, WARMUP, CONCURRENCY, DEVICES, SIZES, MESSAGES, TLS, HOLD_N, RELAY_SERVERS.
bench-relay:
	bash bench/relay.sh

# bench-pool: the targets' verdicts over several full runs at once: every
# sample of the runs named in STAMPS (bench/results/<stamp>.jsonl and
# -relay.jsonl) pooled into one summary, for targets that sit near their line.
# Knobs: STAMPS (required), OUT (also write the Markdown there).
bench-pool:
	bash bench/pool.sh

# bench-pair: one cell of the comparison measured closely: fleetgate and one
# other server (B, HAProxy by default) loaded in turn, A B A B …, then
# B A B A …, ROUNDS rounds; the server CPU per request (MODE=keepalive or
# fresh) or per 64 B echo (MODE=tcp, the relays), and the median of the
# rounds' own ratios with its 95% interval. POOL="<files>" summarizes
# earlier runs' output together.
# Knobs: MODE, CLIENTS, ROUNDS, DUR, A, B, POOL.
bench-pair:
	bash bench/pair.sh

# bench-mqtt: MQTT devices over mTLS against mosquitto directly (its own TLS
# listener, require_certificate true) and behind fleetgate's mqtt application
# (installs mosquitto when missing): server CPU per connect and per message
# at QoS 0 and 1, PUBACK latency, and a connect storm (time until all are
# connected, peak RSS); writes bench/results/<date>-mqtt.md and .jsonl.
# Knobs: RUNS, CONCURRENCY, CONNECT_N, PUB_DEVICES, QOS0_MESSAGES, QOS1_MESSAGES,
# SIZE, RATE_DEVICES, RATE, RATE_MESSAGES, STORM_N, STORM_CONCURRENCY, STORM_HOLD,
# STORM_KEEPALIVE, MQTT_VERSION, TLS.
bench-mqtt:
	bash bench/mqtt.sh

# bench-floor: the crypto floor of one fresh mTLS request (the CPU of its
# unavoidable operations), the reference of the "≤ 1.4× the floor" target.
bench-floor:
	$(GO) test -run '^$$' -bench CryptoFloor -benchtime $(BENCHTIME) ./bench/

# bench-idle: memory per idle mTLS connection, fleetgate vs the Go standard library.
# Knobs: IDLE_N (default "10000 100000"), SERVERS. A size the file-descriptor
# limit cannot hold is left out and named in the results (exit status 3).
bench-idle:
	bash bench/idle.sh

# bench-profile: fleetgate's CPU profile under load, as `go tool pprof -top` text
# in bench/results/. Knobs: MODES, TLS, DURATION; MODES=idle writes the heap
# kept by IDLE_N idle connections instead, MODES=tcp-idle by IDLE_N idle
# relayed connections.
bench-profile:
	bash bench/profile.sh

.PHONY: flood soak-reload storm

# storm: a reconnect storm against the real binary: STORM_DEVICES (3000) devices
# of a tcp application reconnect within one second, each retrying with backoff
# from 100 ms up to 5 s, against max_handshake_rate = STORM_RATE (500), burst
# STORM_BURST (500). Passes when all are connected within 30 s, some were shed
# (reason rate), and the gateway's RSS stays under STORM_RSS_MIB (300). The
# small version (100 devices, 20/s, in process) is part of `make test`.
storm: build
	FLEETGATE_STORM_BIN=$(CURDIR)/bin/fleetgate $(GO) test -count=1 -timeout 10m -v -run '^TestTCPReconnectStormBinary$$' ./gateway/

# flood: 60 s of fresh mTLS handshakes at three times the handshake capacity
# (the excess is shed), the gateway's RSS sampled every second: overload must
# not grow memory.
# Knobs: DURATION (seconds), QUEUE, RSS_LIMIT_MIB, GROWTH_LIMIT_MIB.
flood:
	bash scripts/hardening.sh flood

# soak-reload: 60 s of load (fresh, keep-alive, relayed tcp connections, and
# mqtt devices when mosquitto is installed) with a SIGHUP every second, zero failed requests or messages allowed, and no
# connection or descriptor left once it ends; then SIGTERM under load, exit 0:
# neither reloads nor the drain may fail a request.
# Knobs: DURATION (seconds), CONCURRENCY.
soak-reload:
	bash scripts/hardening.sh soak-reload
