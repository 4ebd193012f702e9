package gateway

import (
	"encoding/json"
	"strings"

	"github.com/valyala/fasthttp"
)

// The Access endpoints served on every application domain.
const (
	pathCerts       = "/cdn-cgi/access/certs"
	pathGetIdentity = "/cdn-cgi/access/get-identity"
	pathLogout      = "/cdn-cgi/access/logout"
)

// accessEndpoints answers the Access endpoints under /cdn-cgi/access/ itself;
// every other path goes on to the policy decision.
func (x *exchange) accessEndpoints() outcome {
	path := string(x.req.URI().Path())
	if !strings.HasPrefix(path, "/cdn-cgi/access/") {
		return proceed
	}
	if o, ok := x.loginEndpoint(path); ok {
		return o
	}
	switch path {
	case pathCerts:
		// The JWKS origins use to validate assertions: public, no auth.
		x.reason = "jwks"
		// The newest keys: after a rotation, an open connection must not
		// keep serving a key that was taken out of service.
		return x.json(fasthttp.StatusOK, x.cur.jwks)
	case pathGetIdentity:
		return x.getIdentity()
	case pathLogout:
		x.c.session = nil // the next request on this connection starts a new session
		s := x.app.snap
		if end := x.loginLogout(); end != "" {
			x.redirect(end, "logout")
			x.resp.Header.Add("Set-Cookie", sessionCookie(s.cookieName, "", x.host, s.sameSite, x.now, 0))
			return respond
		}
		x.resp.Header.Add("Set-Cookie", sessionCookie(s.cookieName, "", x.host, s.sameSite, x.now, 0))
		x.reason = "logout"
		x.status = fasthttp.StatusOK
		x.resp.SetStatusCode(fasthttp.StatusOK)
		x.resp.Header.SetContentType("text/plain; charset=utf-8")
		x.resp.Header.Set("Cache-Control", "no-store")
		x.resp.SetBodyString("logged out\n")
		return respond
	}
	return x.refuse(fasthttp.StatusNotFound, "unknown Access endpoint")
}

// identity is the JSON answer of /cdn-cgi/access/get-identity.
type identity struct {
	CommonName string   `json:"common_name"`
	CertSHA256 string   `json:"cert_sha256,omitempty"`
	Serial     string   `json:"cert_serial,omitempty"`
	IssuerCN   string   `json:"cert_issuer_cn,omitempty"`
	Aud        []string `json:"aud"`
	Iss        string   `json:"iss"`
	Exp        int64    `json:"exp,omitempty"`
	Iat        int64    `json:"iat,omitempty"`
	Type       string   `json:"type"`
	Source     string   `json:"source"` // "token" or "certificate"
	// Email, Groups and IdP are the logged-in person's (identity
	// providers), from the session token.
	Email  string   `json:"email,omitempty"`
	Groups []string `json:"groups,omitempty"`
	IdP    string   `json:"idp,omitempty"`
}

// getIdentity reports the identity behind the caller's token or certificate.
func (x *exchange) getIdentity() outcome {
	s := x.app.snap
	var id identity
	switch v := x.c.tc.Verdict(); {
	case v.Presented() && !v.OK():
		// A bad certificate never falls back to a token (policy.Subject).
		return x.refuse(fasthttp.StatusUnauthorized, v.Kind.Reason())
	case x.claims != nil:
		c := x.claims
		id = identity{CommonName: c.CommonName, CertSHA256: c.CertSHA256, Aud: c.Aud, Iss: c.Iss, Exp: c.Exp, Iat: c.Iat, Type: c.Type, Source: "token",
			Email: c.Email, Groups: c.Groups, IdP: c.IdP}
	case v.OK():
		id = identity{
			CommonName: v.Identity.CommonName, CertSHA256: v.Identity.SHA256,
			Serial: v.Identity.SerialHex, IssuerCN: v.Identity.IssuerCN,
			Aud: []string{x.app.aud}, Iss: s.issuer, Type: "app", Source: "certificate",
		}
	default:
		reason := v.Kind.Reason()
		if x.tokenErr != nil {
			reason = "invalid session token"
		}
		return x.refuse(fasthttp.StatusUnauthorized, reason)
	}
	body, err := json.Marshal(id)
	if err != nil {
		return x.internalError("identity json", err)
	}
	x.reason = "get-identity"
	return x.json(fasthttp.StatusOK, body)
}

func (x *exchange) json(status int, body []byte) outcome {
	x.status = status
	x.resp.SetStatusCode(status)
	x.resp.Header.SetContentType("application/json")
	x.resp.Header.Set("Cache-Control", "no-store")
	x.resp.SetBody(body)
	return respond
}
