# fleetgate — the whole set-up on a fresh machine is `make run` and `make test`.
GO       ?= go
PKGS     ?= ./...
FUZZTIME ?= 30s
BENCH    ?= .
BENCHTIME ?= 1s

.PHONY: all build run test test-short bench fuzz lint fmt clean

all: build

build:
	$(GO) build -o bin/fleetgate ./cmd/fleetgate

# run: the gateway on the embedded demo configuration (creates a demo PKI on first start).
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
	    $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin
