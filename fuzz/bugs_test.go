package fuzz

// Regression tests for bugs the fuzz targets found in other packages. Each
// also replays its inputs (testdata/fuzz/<FuzzName>/regress-*, listed in
// regressionCorpus) through the target's own checks.

import (
	"strings"
	"testing"
)

// TestRegressionTokenNewlineInSignature: policy.(*KeySet).Verify and
// (*PublicKeys).VerifyAny accept a minted token with CR or LF bytes added
// anywhere in its signature segment (or after it), because
// base64.RawURLEncoding.Strict() still skips '\r' and '\n'. A token then
// has many spellings, against policy's own "one token has exactly one
// spelling" and the fuzz invariant "a token that was not minted by us is
// never accepted"; TokenCache keys each spelling apart.
func TestRegressionTokenNewlineInSignature(t *testing.T) {
	ts := getTokenSet(t)
	tok := ts.minted[0].token
	dot := strings.LastIndexByte(tok, '.')
	for _, bad := range []string{tok + "\n", tok + "\r\n", tok[:dot+5] + "\n" + tok[dot+5:]} {
		if _, err := ts.ks.Verify(bad, tokAUD, tokIssuer, tokNow); err == nil {
			t.Errorf("KeySet.Verify accepted %q", bad)
		}
		if _, err := ts.pub.VerifyAny(bad, "", "", tokNow); err == nil {
			t.Errorf("PublicKeys.VerifyAny accepted %q", bad)
		}
	}
	replayKnownTokenBugs(t, ts, "newline", "crlf")
}

// TestRegressionTokenHighS: policy accepts an ES256 token whose signature s was
// replaced by N-s (ECDSA malleability: both verify with ecdsa.Verify), so
// anyone holding one token can make a second, different token with the
// same claims that verifies. Fix: require s <= N/2 in tokenKey.verify and
// have Mint produce low-s signatures (replace s by N-s when s > N/2).
func TestRegressionTokenHighS(t *testing.T) {
	ts := getTokenSet(t)
	tok := ts.expand("$H.$P0.$M0")
	if tok == ts.minted[0].token {
		t.Fatal("highS did not change the signature")
	}
	if _, err := ts.ks.Verify(tok, tokAUD, tokIssuer, tokNow); err == nil {
		t.Errorf("KeySet.Verify accepted the high-s twin of a minted token")
	}
	replayKnownTokenBugs(t, ts, "high-s")
}

// replayKnownTokenBugs runs FuzzTokenVerify's checks on the known-bug
// inputs whose file names contain one of the words.
func replayKnownTokenBugs(t *testing.T, ts *tokenSet, words ...string) {
	t.Helper()
	for name, vals := range readKnownBugs(t, "FuzzTokenVerify") {
		for _, w := range words {
			if strings.Contains(name, w) {
				t.Run(name, func(t *testing.T) { checkToken(t, ts, ts.expand(vals[0].(string))) })
				break
			}
		}
	}
}

// TestRegressionUnknownSNIEventServerName: for a ClientHello naming a host no site
// serves, the engine's HandshakeEvent has Reason "unknown_sni" but
// ServerName "": tlsengine's configForClient records the name only when a
// site matched (c.site, c.serverName = …), although HandshakeEvent.ServerName
// is documented as "the SNI the client sent". Metrics and logs of refused
// names cannot say which name was refused. Found by reading the events of
// FuzzClientHello's seed hello-tls13-unknown-sni.
func TestRegressionUnknownSNIEventServerName(t *testing.T) {
	h := getHarness(t)
	var hello []byte
	for _, s := range helloSeeds(t) {
		if s.name == "tls13-unknown-sni" {
			hello = s.hello
		}
	}
	s := h.open(t)
	s.feedRaw(t, [][]byte{hello})
	_, ev := s.finish(t, finishOpts{maxOut: maxPreHandshake})
	if ev.Reason != "unknown_sni" || ev.ServerName != "unknown.example" {
		t.Errorf("event reason %q, server name %q; want unknown_sni for \"unknown.example\"", ev.Reason, ev.ServerName)
	}
}
