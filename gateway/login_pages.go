package gateway

import (
	"crypto/rand"
	"encoding/hex"
	"html"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
)

// The pages of the login: every value in them is HTML-escaped, and none
// reflects the request (no path, no query, no header): only the
// application's configured name and a request id.

// loginPage answers with a small HTML page; reason goes to the access log.
func (x *exchange) loginPage(status int, title, message, reason string) outcome {
	x.fail(status, "")
	x.reason = reason
	x.resp.Header.SetContentType("text/html; charset=utf-8")
	x.resp.Header.Set("X-Frame-Options", "DENY")
	x.resp.Header.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	x.resp.SetBodyString(page(title, "<p>"+html.EscapeString(message)+"</p>"))
	return respond
}

// identityDenied answers a logged-in person the policies refuse: 403,
// naming the application and a request id, never the rule (the access log
// line, which carries the same request id, says which).
func (x *exchange) identityDenied(reason string) outcome {
	x.requestID = newRequestID()
	o := x.loginPage(fasthttp.StatusForbidden, "Access denied", "", reason)
	x.resp.SetBodyString(page("Access denied",
		"<p>You are signed in, but you do not have access to <strong>"+html.EscapeString(x.app.name)+"</strong>.</p>"+
			"<p>Request id: <code>"+x.requestID+"</code></p>"))
	return o
}

// chooser lists the application's providers, each a link that starts the
// login with it and returns to ret.
func (x *exchange) chooser(ret string) outcome {
	var b strings.Builder
	b.WriteString("<p>Sign in to <strong>" + html.EscapeString(x.app.name) + "</strong> with:</p><ul>")
	for _, p := range x.app.idps {
		href := pathLoginPrefix + url.PathEscape(p.Name()) + "?redirect_url=" + url.QueryEscape(ret)
		b.WriteString(`<li><a href="` + html.EscapeString(href) + `">` + html.EscapeString(p.Name()) + "</a></li>")
	}
	b.WriteString("</ul>")
	o := x.loginPage(fasthttp.StatusOK, "Sign in", "", "login chooser")
	x.resp.SetBodyString(page("Sign in", b.String()))
	return o
}

// redirect answers 302 to location (a path on this host, or the
// provider's URL).
func (x *exchange) redirect(location, reason string) {
	x.reason = reason
	x.status = fasthttp.StatusFound
	x.resp.Reset()
	x.resp.SetStatusCode(fasthttp.StatusFound)
	x.resp.Header.Set("Location", location)
	x.resp.Header.Set("Cache-Control", "no-store")
}

// page is a minimal HTML document; title and body are already safe.
func page(title, body string) string {
	return "<!doctype html><html><head><meta charset=\"utf-8\"><title>" + html.EscapeString(title) +
		"</title></head><body style=\"font-family:sans-serif;max-width:36em;margin:4em auto\"><h1>" +
		html.EscapeString(title) + "</h1>" + body + "</body></html>\n"
}

// loginCookie is the Set-Cookie of a login state: host-only, sent only to
// the callback, HttpOnly and Secure, and SameSite=Lax whatever
// cookie_same_site says (under Strict the provider's redirect back would
// arrive without it). maxAge 0 clears it.
func loginCookie(state, value string, now time.Time, maxAge time.Duration) string {
	name := loginCookiePrefix
	if len(state) >= 16 {
		name += state[:16]
	}
	secs := int64(maxAge / time.Second)
	expires := now.Add(maxAge)
	if secs <= 0 {
		secs, value, expires = 0, "", time.Unix(0, 0)
	}
	return name + "=" + value + "; Path=" + pathCallback + "; Expires=" + expires.UTC().Format(httpTimeFormat) +
		"; Max-Age=" + strconv.FormatInt(secs, 10) + "; HttpOnly; Secure; SameSite=Lax"
}

// newRequestID is 16 random hex digits.
func newRequestID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
