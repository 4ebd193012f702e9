package gateway

import (
	"errors"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/fleetgate/fleetgate/internal/verdict"
	"github.com/fleetgate/fleetgate/policy"
)

// staleRetries bounds how many times a request goes to the pooled client
// again after fasthttp found only unusable connections (errStaleConn): each
// round tries up to five, and each one tried is closed.
const staleRetries = 8

// readHeader waits for a request header and reads it. A device that
// closes, or sends nothing, before a request hangs up; a header that cannot
// be read is answered by checkFraming.
func (x *exchange) readHeader() outcome {
	c := x.c
	now := time.Now()
	c.pipe.setDeadline(now.Add(c.snap.headerTimeout))
	err := awaitHeader(x.br)
	if err == nil {
		err = x.req.Header.Read(x.br)
	}
	if x.onLoop {
		// The header was buffered whole: nothing was waited for, and the
		// event's phases go on with this reading.
		x.evAt = now
	} else {
		now = time.Now()
	}
	x.start, x.now = now, c.srv.timeAt(now)
	if err != nil && isQuietEOF(err) {
		x.silent = true
		return hangUp
	}
	x.headerErr = err
	return proceed
}

// checkFraming refuses what must never be forwarded because the origin
// could frame it differently, or because it cannot be read at all: an
// unreadable header (400, 408, 431), an HTTP version the gateway does not
// speak (505), CONNECT and TRACE (405), a smuggling shape (400, framing.go),
// too many fields (431), or an Expect: 100-continue with a body that can
// never fit (413). Each leaves the rest of the input unread.
func (x *exchange) checkFraming() outcome {
	req, s := x.req, x.c.snap
	switch {
	case x.headerErr != nil:
		return x.refuseRead(x.headerErr, false)
	case !supportedProtocol(req.Header.Protocol()):
		return x.refuseUnread(fasthttp.StatusHTTPVersionNotSupported, "HTTP version not supported")
	case refusedMethod(req):
		return x.refuseMethod()
	}
	if why := framingError(req); why != "" {
		return x.refuseUnread(fasthttp.StatusBadRequest, "malformed request: "+why)
	}
	switch {
	case s.maxHeaderCount > 0 && req.Header.Len() > s.maxHeaderCount:
		return x.refuseUnread(fasthttp.StatusRequestHeaderFieldsTooLarge, "too many header fields")
	case req.MayContinue() && req.Header.ContentLength() > int(s.maxBodyBytes):
		// The body may follow anyway: it is never read.
		return x.refuseUnread(fasthttp.StatusRequestEntityTooLarge, "request body too large")
	}
	// Read now: forwarding strips the hop-by-hop Connection header, and
	// fasthttp's close flag (HTTP/1.0, Connection: close) with it.
	x.http10 = !req.Header.IsHTTP11()
	x.deviceClose = req.Header.ConnectionClose()
	return proceed
}

// readBody reads the body of an admitted request, after answering its
// Expect: 100-continue. Between two reads it waits at most idle_timeout: a
// slow, steady upload is fine (nginx's client_body_timeout).
func (x *exchange) readBody() outcome {
	c, s := x.c, x.c.snap
	if x.req.MayContinue() {
		if _, err := x.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n"); err != nil || x.bw.Flush() != nil {
			x.cut = true
			return hangUp
		}
	}
	c.pipe.setIdleTimeout(s.idleTimeout, x.clock())
	if err := x.req.ContinueReadBody(x.br, int(s.maxBodyBytes), false); err != nil {
		return x.refuseRead(err, true)
	}
	c.pipe.setDeadline(time.Time{})
	x.bodyRead = true
	return proceed
}

// checkHost refuses a request whose Host differs from the name the
// connection's TLS session was verified under: it must never reach another
// application's policy (421 Misdirected Request, RFC 9110 section 15.5.20).
func (x *exchange) checkHost() outcome {
	sni := x.c.tc.ServerName()
	var host string
	if h := x.req.Header.Host(); sni != "" && string(h) == sni && plainHostName(sni) {
		host = sni // what hostWithoutPort would return, without a copy
	} else {
		host = hostWithoutPort(h)
	}
	x.host = host
	site := x.c.tc.Site()
	switch {
	case host == "":
		x.malformed = true // as for every 400, do not trust what follows
		return x.refuse(fasthttp.StatusBadRequest, "missing Host header")
	case sni != "" && !strings.EqualFold(host, sni):
		return x.refuse(fasthttp.StatusMisdirectedRequest, "host "+quote(host)+" does not match the TLS server name "+quote(sni))
	case sni == "" && !x.app.snap.servedBy(host, site): // the snapshot that built site
		// Without SNI the connection landed on the default site; a host
		// it covers may still belong to a more specific site, with other
		// CAs and policies, which this handshake never consulted.
		return x.refuse(fasthttp.StatusMisdirectedRequest, "host "+quote(host)+" is not served on this connection")
	}
	return proceed
}

// readToken verifies a session token presented in the cookie or the
// cf-access-token header. A bad token is not an error by itself: the request
// may still carry a valid certificate.
//
// A browser may send several cookies of the name (a parent domain's, set
// with Domain=, often first), so each candidate is tried in turn, cookies
// before the header, and the first that verifies is used; at most
// maxTokenCandidates are checked, since each costs a signature check.
// Tokens are verified against the newest configuration, not the one the
// connection opened under: a signing key a reload took out of service, or a
// certificate revoked since, stops working on open connections too. A token
// minted for a service token is refused: a service token never makes a
// session (mint sets no cookie for it), so one presented back was taken
// from an origin; the headers must come with every request.
func (x *exchange) readToken() outcome {
	var cands [maxTokenCandidates][]byte
	n := 0
	name := x.app.snap.cookieName
	for k, v := range x.req.Header.Cookies() {
		if n < len(cands) && len(v) > 0 && string(k) == name {
			cands[n] = v
			n++
		}
	}
	if v := x.req.Header.Peek("Cf-Access-Token"); n < len(cands) && len(v) > 0 {
		cands[n] = v
		n++
	}
	if n == 0 {
		return proceed
	}
	s := x.cur
	for i, tok := range cands[:n] {
		claims, err := s.verifyToken(string(tok), x.app.aud, x.now)
		if claims != nil {
			err = s.tokenCertStatus(claims, x.now)
		}
		if err == nil && claims.ServiceTokenName != "" {
			err = errTokenServiceToken
		}
		if err == nil && !x.app.trustsRoot(claims.CertRoot) {
			err = errTokenUntrustedRoot
		}
		if err == nil && !claims.BoundTo(x.presentedSHA256()) {
			err = errTokenUnbound // as if no session were presented
		}
		if err == nil {
			x.token, x.claims, x.tokenErr = string(tok), claims, nil
			return proceed
		}
		if i == 0 {
			x.token, x.tokenErr = string(tok), err // what the log names when none verifies
		}
	}
	return proceed
}

// presentedSHA256 is the hex SHA-256 of the certificate the connection
// presented and verified, "" when none: what a token's cnf must name.
func (x *exchange) presentedSHA256() string {
	if v := x.c.tc.Verdict(); v.OK() {
		return v.Identity.SHA256
	}
	return ""
}

// maxTokenCandidates bounds the session tokens one request may make the
// gateway verify.
const maxTokenCandidates = 3

// recheckCertificate: a connection's verdict was computed at its handshake;
// revocation is checked again on every request, against the newest
// configuration, before anything uses the certificate (the policy, the
// get-identity endpoint), so a device revoked while it holds a keep-alive
// connection is refused on its next request. So is expiry: a certificate
// of the path that expired while the connection was open makes the
// verdict Expired.
func (x *exchange) recheckCertificate() outcome {
	v := x.c.tc.Verdict()
	if rev := x.cur.revocation; rev != nil {
		rev.Recheck(v, x.now)
	}
	if v.OK() {
		if until := v.PathNotAfter(); !until.IsZero() && x.now.After(until) {
			v.Kind, v.Detail = verdict.Expired, "a certificate of the path expired at "+until.UTC().Format(time.RFC3339)+", while the connection was open"
		}
	}
	return proceed
}

// policyInput is what the policies see of the request.
func (x *exchange) policyInput() policy.Input {
	return policy.Input{
		Cert:     x.c.tc.Verdict(),
		Token:    x.claims,
		ClientIP: x.c.remoteAddr,
		Host:     x.host,
		Now:      x.now,
		Lists:    x.cur.lists, // the newest, as revocation
	}
}

// decide evaluates the application's policies. On an application with
// identity providers, a request without a logged-in person is sent to
// log in (login.go), and a person refused gets the denial page.
func (x *exchange) decide() outcome {
	x.input = x.policyInput()
	in := &x.input
	x.serviceCredential(in)
	x.decision = x.app.policy.Evaluate(in)
	x.decided = true
	if x.decision.Allowed {
		x.reason = x.decision.Reason
		return proceed
	}
	if x.decision.LoginRequired {
		return x.needLogin()
	}
	if _, ok := in.LoggedIn(); ok && len(x.app.idps) > 0 {
		return x.identityDenied(x.decision.Reason)
	}
	reason := x.decision.Reason
	if x.tokenErr != nil && !in.Cert.OK() && x.decision.Policy == "" {
		reason = "invalid session token: " + tokenRefusal(x.tokenErr)
	}
	status := fasthttp.StatusForbidden
	if x.decision.ServiceAuthFailed && x.app.serviceAuth401 {
		status = fasthttp.StatusUnauthorized
	}
	// A "no duration" application takes one request per handshake: a
	// refused one ends its connection as an admitted one does, and the
	// device's next try is judged on a fresh handshake.
	x.perRequest = x.app.policy.SessionDuration == 0
	return x.refuse(status, reason)
}

// mint issues the token that goes to the origin: a fresh one when the
// request carries a valid certificate, else the session token it presented.
// With a session duration the token also goes back as a cookie; with no
// duration it exists for this one request and the connection closes after
// the response, so the device's next request makes a fresh handshake.
//
// A decision made on a service token never sets a cookie: as with Access,
// the machine presents its headers with every request. Its token is still
// kept for the connection's next requests that present the same service
// token (session.service), never for one without the headers.
func (x *exchange) mint() outcome {
	if !x.decision.Mint {
		return proceed // bypass: no identity, no token
	}
	v := x.c.tc.Verdict()
	service := ""
	if st := x.input.ServiceToken; st != nil {
		service = st.Name
	}
	if !v.OK() && x.claims != nil && service == "" {
		x.assertion = x.token
		return proceed
	}
	s := x.app.snap // the connection's: the cookie's attributes
	// The newest configuration signs: a key a reload took out of service
	// signs nothing more, on open connections too.
	cur := x.cur
	d := x.decision.SessionDuration
	ident, _ := x.input.LoggedIn()
	if ss := x.c.session; d > 0 && ss.reusable(x.app, x.decision.Policy, service, ident.Nonce, d, x.now) && ss.minted == cur {
		x.assertion = ss.token
		if service == "" && ss.sentFor != x.host {
			// A device that did not keep the cookie gets it once per
			// connection, not with every response.
			x.cookie = sessionCookie(s.cookieName, ss.token, x.host, s.sameSite, x.now, ss.exp.Sub(x.now))
		}
		return proceed
	}
	if x.onLoop {
		// A signature is CPU the event loop does not spend: a worker signs.
		x.wantWorker = true
		return suspend
	}
	tok, exp, identNonce, err := cur.mintFor(x.app, &x.input, x.decision)
	if err != nil {
		return x.internalError("mint token", err)
	}
	x.assertion = tok
	if d > 0 {
		x.c.session = &session{app: x.app, policy: x.decision.Policy, service: service, ident: identNonce, dur: d, token: tok, exp: exp, minted: cur,
			capped: exp.Before(x.now.Add(d - time.Second))}
		x.c.srv.metrics.tokenMinted(x.app.name, "session")
		if service != "" {
			return proceed // no cookie: the headers come with each request
		}
		// exp is in whole seconds and falls short of now+d by more than a
		// second only when the certificate expires first: a token, and its
		// cookie, never outlive the certificate.
		maxAge := d
		if left := exp.Sub(x.now); left < d-time.Second {
			maxAge = left
		}
		x.cookie = sessionCookie(s.cookieName, tok, x.host, s.sameSite, x.now, maxAge)
	} else {
		x.perRequest = true // the next request makes a fresh handshake
		x.c.srv.metrics.tokenMinted(x.app.name, "no_duration")
	}
	return proceed
}

// session is a session token minted on a connection. The requests that
// follow on the same connection come from the same certificate (it was
// proven in the handshake and its revocation is re-checked per request), so
// while most of the token's life remains they reuse it instead of paying a
// signature each: on keep-alive connections that do not send the cookie
// back, minting was most of the gateway's CPU per request.
type session struct {
	app    *application
	policy string
	// service names the service token the token was minted for, "" for a
	// device's: it serves only requests that present that same service
	// token (checked again on each), never one without the headers.
	service string
	// ident is the identity nonce of the person the token was minted for
	// ("" for a device): it serves only requests of that same login.
	ident  string
	dur    time.Duration
	token  string
	exp    time.Time
	minted *snapshot // the configuration whose key signed it
	// capped is true when exp fell short of the session duration (the
	// certificate's expiry, or a login's auth_time + session_duration): a
	// new token would end at the same time, so the token serves until exp.
	capped bool
	// sentFor is the host whose Set-Cookie (its Domain) carried the token
	// in a response on this connection: a device that reaches several hosts
	// of a wildcard site over one connection gets the cookie for each.
	sentFor string
}

// reusable reports whether the token may serve a request of app admitted by
// policy, on service token service ("" for none), with session duration d
// at now: same decision, same service token, and more than half of its life
// left (or, when capped, any: a re-mint would not extend it).
func (s *session) reusable(app *application, policy, service, ident string, d time.Duration, now time.Time) bool {
	return s != nil && s.app == app && s.policy == policy && s.service == service && s.ident == ident && s.dur == d &&
		(s.exp.Sub(now) > d/2 || s.capped && s.exp.After(now))
}

// forward sends the request to the application's origin and copies the
// answer back. On the event loop the request goes out on one of the loop's
// own origin connections and the exchange suspends until the answer is in
// (loopclient.go); elsewhere the pooled client carries it, or the rest of a
// response too long for the loop streams from its connection.
func (x *exchange) forward() outcome {
	if !x.prepared {
		var ident *verdict.Identity
		if v := x.c.tc.Verdict(); x.app.forwardClientCert && v.OK() {
			ident = &v.Identity
		}
		x.fwd = forwardInfo{
			Token:      x.assertion,
			ClientIP:   x.c.remoteIP,
			Host:       x.host,
			CookieName: x.app.snap.cookieName,
			ClientCert: ident,
			OriginTLS:  x.app.origin.IsTLS,
		}
		// The gateway's own headers wait for the writer: the loop appends
		// them as it writes the request (loopOrigin.send), the pooled
		// client gets them in the header (forwardedSet).
		cleanRequest(x.req, x.fwd)
		x.prepared = true
	}
	switch {
	case x.answered:
	case x.onLoop:
		return x.sendOnLoop()
	case x.streamFrom != nil:
		x.originErr = x.readStreamedResponse()
		x.answered = true
	case x.loopCarries():
		x.toLoop = true
		return suspend // the worker hands x to the loop (conn.moveToLoop)
	default:
		x.setForwarded()
		start := time.Now()
		x.originErr = x.app.origin.Do(x.req, x.resp)
		// fasthttp tries a few pooled connections; when each turned out
		// unusable (errStaleConn: closed by the origin, or after an answer
		// that leaves its next bytes unknown), nothing was sent: try again,
		// a bounded number of times, rather than fail the request.
		for i := 0; i < staleRetries && errors.Is(x.originErr, errStaleConn); i++ {
			x.originErr = x.app.origin.Do(x.req, x.resp) // it resets resp itself, keeping its options
		}
		x.originDur = time.Since(start)
		x.answered = true
	}
	return x.originAnswered()
}

// setForwarded sets the gateway's own headers in the request's header, for
// the pooled client, which writes the header itself; once, as the request
// may be sent again.
func (x *exchange) setForwarded() {
	if !x.forwardedSet {
		setForwarded(&x.req.Header, x.fwd)
		x.forwardedSet = true
	}
}

// originAnswered turns the origin's answer, or its failure, into the
// device's response.
func (x *exchange) originAnswered() outcome {
	if err := x.originErr; err != nil {
		status, kind := originFailure(err)
		x.originKind = kind
		x.c.srv.log.Warn("origin request failed", "app", x.app.name, "origin", x.app.originURL, "kind", kind, "err", err.Error())
		x.resp.Reset()
		return x.fail(status, "origin "+strings.ReplaceAll(kind, "_", " "))
	}
	if x.resp.StatusCode() == fasthttp.StatusSwitchingProtocols {
		// The device's Upgrade never reached the origin (hop-by-hop): an
		// origin that switches anyway speaks something the gateway cannot
		// relay.
		x.originKind = "bad_response"
		x.c.srv.log.Warn("origin request failed", "app", x.app.name, "origin", x.app.originURL, "kind", x.originKind, "err", "101 Switching Protocols to a request without Upgrade")
		x.resp.Reset()
		return x.fail(fasthttp.StatusBadGateway, "origin switched protocols")
	}
	if limit := x.app.snap.cfg.Gateway.MaxResponseBytes; limit > 0 && !x.resp.IsBodyStream() && int64(len(x.resp.Body())) > limit {
		// An answer gathered whole (on the loop) meets max_response_bytes
		// here; a streamed one as it is copied (settleBody).
		x.originBodyFailed(fasthttp.ErrBodyTooLarge)
		return respond
	}
	// The origin's headers as sent: fasthttp would add a Content-Type to a
	// response that has none.
	x.resp.Header.SetNoDefaultContentType(true)
	cleanOriginResponse(x.resp)
	if x.cookie != "" {
		x.resp.Header.Add("Set-Cookie", x.cookie)
		x.cookieSet = true
	}
	x.status = x.resp.StatusCode()
	return respond
}

// hostWithoutPort lower-cases a Host header value and drops its port,
// handling bracketed IPv6 literals.
func hostWithoutPort(h []byte) string {
	s := string(h)
	if strings.HasPrefix(s, "[") {
		if i := strings.IndexByte(s, ']'); i > 0 {
			return strings.ToLower(s[1:i])
		}
		return ""
	}
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		s = s[:i]
	}
	return strings.ToLower(strings.TrimSuffix(s, "."))
}

// plainHostName reports whether hostWithoutPort(s) is s itself: ASCII
// without a port or brackets, upper case or a trailing dot.
func plainHostName(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == ':' || c == '[' || 'A' <= c && c <= 'Z' || c >= 0x80 {
			return false
		}
	}
	return !strings.HasSuffix(s, ".")
}

func quote(s string) string {
	if len(s) > 100 {
		s = s[:100] + "…"
	}
	return `"` + strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == '"' {
			return '?'
		}
		return r
	}, s) + `"`
}
