package oidcop

import (
	"errors"
	"html/template"
	"net/http"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// maxLoginForm bounds the body of a login POST.
const maxLoginForm = 16 << 10

// routes puts the login page, the logged-out page and the session-ending
// wrapper in front of the op library's router.
func (p *Provider) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(defaultLoginPath, p.login)
	mux.HandleFunc(defaultLoggedOutPath, p.loggedOut)
	mux.HandleFunc(p.op.EndSessionEndpoint().Relative(), p.endSession)
	mux.Handle("/", p.op)
	return mux
}

// login shows the form (GET) and checks it (POST). A GET that finds a live
// SSO session, or AutoLogin set, approves the request without the form.
func (p *Provider) login(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		p.loginGet(w, r)
	case http.MethodPost:
		p.loginPost(w, r)
	default:
		w.Header().Set("Allow", "GET, POST")
		http.Error(w, "oidcop: method not allowed", http.StatusMethodNotAllowed)
	}
}

func (p *Provider) loginGet(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("authRequestID")
	a, err := p.store.authRequestByID(id)
	if err != nil || a.Done() {
		p.page(w, http.StatusBadRequest, "Login request unknown", "This login request is unknown, expired or already used. Start again from the application.", "")
		return
	}
	if c, err := r.Cookie(defaultSessionCookieName); err == nil {
		if ss, ok := p.store.sessionByID(c.Value); ok && !a.forcesLogin(ss.authTime, p.store.now()) {
			p.finish(w, r, a, ss.subject, c.Value, ss.authTime)
			return
		}
	}
	if p.opts.AutoLogin != "" {
		u := p.store.byName[p.opts.AutoLogin]
		now := p.store.now()
		sid := p.store.newSession(u.Subject, now)
		p.setSessionCookie(w, sid)
		p.finish(w, r, a, u.Subject, sid, now)
		return
	}
	if a.promptNone() {
		// No session and no interaction allowed: the RP gets login_required.
		op.AuthRequestError(w, r, a, oidc.ErrLoginRequired(), p.op)
		return
	}
	p.form(w, http.StatusOK, a, a.req.LoginHint, "")
}

func (p *Provider) loginPost(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxLoginForm)
	if err := r.ParseForm(); err != nil {
		p.page(w, http.StatusBadRequest, "Bad request", "The login form could not be read.", "")
		return
	}
	a, err := p.store.authRequestByID(r.PostForm.Get("authRequestID"))
	if err != nil || a.Done() {
		p.page(w, http.StatusBadRequest, "Login request unknown", "This login request is unknown, expired or already used. Start again from the application.", "")
		return
	}
	name := r.PostForm.Get("username")
	u, ok := p.store.checkPassword(name, r.PostForm.Get("password"))
	if !ok {
		p.log.Info("oidcop: login refused", "username", name, "client", a.req.ClientID)
		p.form(w, http.StatusUnauthorized, a, name, "Wrong username or password.")
		return
	}
	now := p.store.now()
	sid := p.store.newSession(u.Subject, now)
	p.setSessionCookie(w, sid)
	p.log.Info("oidcop: login", "subject", u.Subject, "client", a.req.ClientID)
	p.finish(w, r, a, u.Subject, sid, now)
}

// finish approves the request and sends the browser to the op library's
// callback, which answers the RP with the code.
func (p *Provider) finish(w http.ResponseWriter, r *http.Request, a *authRequest, subject, sid string, authTime time.Time) {
	if err := p.store.approve(a.id, subject, sid, authTime); err != nil {
		p.page(w, http.StatusBadRequest, "Login request unknown", "This login request is unknown, expired or already used. Start again from the application.", "")
		return
	}
	callback := op.AuthCallbackURL(p.op)(op.ContextWithIssuer(r.Context(), p.opts.Issuer), a.id)
	http.Redirect(w, r, callback, http.StatusSeeOther)
}

// endSession ends the browser's SSO session, then lets the op library
// validate the logout request and redirect.
func (p *Provider) endSession(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(defaultSessionCookieName); err == nil {
		p.store.endSession(c.Value)
	}
	http.SetCookie(w, p.sessionCookie("", -1))
	p.op.ServeHTTP(w, r)
}

func (p *Provider) loggedOut(w http.ResponseWriter, _ *http.Request) {
	p.page(w, http.StatusOK, "Signed out", "You are signed out of the identity provider.", "")
}

func (p *Provider) setSessionCookie(w http.ResponseWriter, sid string) {
	http.SetCookie(w, p.sessionCookie(sid, int(DefaultSessionLifetime/time.Second)))
}

func (p *Provider) sessionCookie(value string, maxAge int) *http.Cookie {
	return &http.Cookie{
		Name:     defaultSessionCookieName,
		Value:    value,
		Path:     "/",
		MaxAge:   maxAge,
		HttpOnly: true,
		Secure:   p.opts.TLSCertificate != nil,
		SameSite: http.SameSiteLaxMode,
	}
}

var pageTemplate = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{.Title}}</title>
<style>body{font-family:sans-serif;max-width:24em;margin:4em auto}label{display:block;margin:.8em 0}
input{width:100%;padding:.3em}.error{color:#b00}</style></head>
<body><h1>{{.Title}}</h1>
{{if .Error}}<p class="error" id="error">{{.Error}}</p>{{end}}
{{if .Message}}<p>{{.Message}}</p>{{end}}
{{if .RequestID}}<form method="post" action="{{.Action}}">
<input type="hidden" name="authRequestID" value="{{.RequestID}}">
<label>Username <input id="username" name="username" autocomplete="username" value="{{.Username}}" autofocus></label>
<label>Password <input id="password" name="password" type="password" autocomplete="current-password"></label>
<button id="submit" type="submit">Sign in</button>
</form>{{end}}
</body></html>
`))

type pageData struct {
	Title, Message, Error       string
	Action, RequestID, Username string
}

// form renders the login form for a; username is the value to prefill.
func (p *Provider) form(w http.ResponseWriter, status int, a *authRequest, username, errMsg string) {
	p.render(w, status, pageData{
		Title:     "Sign in to " + a.req.ClientID,
		Error:     errMsg,
		Action:    defaultLoginPath,
		RequestID: a.id,
		Username:  username,
	})
}

func (p *Provider) page(w http.ResponseWriter, status int, title, msg, errMsg string) {
	p.render(w, status, pageData{Title: title, Message: msg, Error: errMsg})
}

func (p *Provider) render(w http.ResponseWriter, status int, d pageData) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Frame-Options", "DENY")
	// No form-action: Chrome applies it to the redirects that follow the
	// POST, and those go to the client's redirect URI.
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
	w.WriteHeader(status)
	if err := pageTemplate.Execute(w, d); err != nil && !errors.Is(err, http.ErrHandlerTimeout) {
		p.log.Warn("oidcop: render page", "err", err)
	}
}
