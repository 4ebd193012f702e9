// Package fuzz holds fleetgate's fuzz targets over the public surfaces that
// face the network or the operator, with their seed corpora: bytes an attacker
// or a mistaken operator controls must be refused, never crash. It has no
// non-test code: everything lives in _test.go files, and a crash is never
// hidden behind recover().
//
// Targets (each states its invariants in its doc comment):
//
//	FuzzTLSPreHandshake   arbitrary bytes, split in fuzzed chunks, into a fresh
//	                      tlsengine connection (Engine.Open → Conn.Feed/Read →
//	                      Close), over an in-memory gnet-like loop and Transport
//	FuzzClientHello       real crypto/tls ClientHellos (TLS 1.2/1.3, SNI known,
//	                      unknown, absent, wildcard; ALPN; groups), mutated
//	FuzzTLSPostHandshake  a real handshake with a crypto/tls client, then a
//	                      script: raw bytes as records, encrypted client writes,
//	                      close_notify, gateway writes and closes
//	FuzzVerifyRawChain    mutated DER chains through tlsengine.VerifyRawChain;
//	                      never valid unless crypto/x509 agrees
//	FuzzTokenVerify       token strings through KeySet.Verify, VerifyCached and
//	                      PublicKeys.VerifyAny; nothing not minted in this run
//	                      is ever accepted
//	FuzzJWKSParse         documents through policy.ParseJWKS, then verification
//	                      with the keys parsed
//	FuzzConfigParse       TOML through configs.Parse with a folder of real PKI
//	                      files, so certificate, key and policy checks run
//	FuzzParseCRL          DER through configs.ParseCRL (version 1 and 2 lists);
//	                      a list returned is always the bytes given
//
// These are the only fuzz targets of their surfaces: the gateway's HTTP
// request parser, which needs the package's internals, has its own
// (gateway.FuzzHTTPRequest).
//
// Every engine target asserts, per connection: no panic; no hang (Close,
// then the transport closes and the handshake goroutine ends within 10 s);
// exactly one handshake event and Stats().InFlight back to 0; no goroutine
// growth across connections and a bounded heap; output made of whole,
// well-formed TLS records, bounded in size; never the server certificate
// for a name no site serves (which gets unrecognized_name); and the
// Transport contract (AsyncWrite buffers are not reused, OutboundBuffered
// runs on the loop only).
//
//	fuzz input ──▶ loop task "OnTraffic" ──▶ Conn.Feed ──▶ tlsengine ──▶ crypto/tls
//	                                          Conn.Read ◀──────────────┘
//	tlsengine ──▶ Transport.AsyncWrite / Wake / Close ──▶ loop ──▶ output checks
//
// The PKI and token keys are generated at run time (internal/pki): no
// private key is committed. Committed seeds that need this run's
// certificates or tokens name them instead of embedding them: chains by
// one-byte names (chain_test.go, decodeChain), tokens by templates such as
// "$H.$P0.$S3" (token_test.go, expandToken).
//
// Running them:
//
//	make fuzz FUZZTIME=30s                                   every target of every package
//	go test ./fuzz -run '^$' -fuzz '^FuzzTLSPreHandshake$' -fuzztime 30s -fuzzminimizetime 5s -parallel 1
//	go test -race ./fuzz                                     replay the corpora (what make test does)
//
// -fuzzminimizetime matters here: Go minimizes every new interesting input
// for up to 60 s by default, in the worker, and these targets run a few
// thousand inputs a second at best, so a 30 s run can spend all its time
// minimizing. On a busy machine the status line also under-reports
// executions (golang/go#51484); FLEETGATE_FUZZ_STATS=<file> makes each
// worker append its own count to <file> (stats_test.go).
//
// Corpora: testdata/fuzz/<FuzzName>/ (replayed by go test; new crashers
// land there too). Static seeds are tables in the _test.go files, written
// out by
//
//	FLEETGATE_WRITE_CORPUS=1 go test ./fuzz -run '^TestWriteSeedCorpus$'
//
// and TestSeedCorpus keeps the two in step and the corpora under 1 MiB.
// testdata/fuzz/<FuzzName>/regress-* are inputs that found bugs in other
// packages (now fixed); bugs_test.go keeps a regression test for each.
package fuzz
