package configs

import (
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/fleetgate/fleetgate/policy"
)

// maxSessionDuration is the longest session an application or policy may
// set: one month, the longest Access offers. Longer-lived tokens outlive the
// revocation of the certificates that earned them.
const maxSessionDuration = 31 * 24 * time.Hour

// defaultSessionDuration is an http application's session_duration when the
// key is absent.
const defaultSessionDuration = 24 * time.Hour

// applications checks every [[applications]] entry and fills
// cfg.Applications with those that load. It runs after clientCAs.
func (l *loader) applications(fas []fileApplication, cfg *Config) {
	names, auds := map[string]int{}, map[string]int{}
	for i := range fas {
		fa, path := &fas[i], indexPath("applications", i)
		key := func(k string) string { return joinKey(path, k) }
		errs := len(l.errs)
		app := Application{
			ForwardClientCert: fa.ForwardClientCert,
			RejectInvalidCert: fa.RejectInvalidCert,
		}
		app.Name = fa.Name
		app.Protocol = l.protocol(key("protocol"), fa.Protocol)
		tcp := app.Protocol.Relayed()
		nameDup := false
		if fa.Name == "" {
			l.errorf(key("name"), "required: the application's name")
		} else if j, dup := names[fa.Name]; dup {
			l.errorf(key("name"), "%q is also the name of applications[%d]", fa.Name, j)
			nameDup = true
		} else {
			names[fa.Name] = i
		}

		if fa.Domain == "" {
			l.errorf(key("domain"), "required: the FQDN devices dial, such as \"devices.fleet.test\"")
		} else if d, err := checkDomain(fa.Domain); err != nil {
			l.errorf(key("domain"), "%v", err)
		} else if j, dup := l.domains[d]; dup {
			l.errorf(key("domain"), "%q is also the domain of applications[%d]", d, j)
		} else {
			l.domains[d] = i
			app.Domain = d
		}

		app.Origin = l.origin(key("origin"), fa.Origin, app.Protocol)
		if fa.OriginCAFile != "" {
			app.OriginCAs, app.OriginCAsSum = l.originCAs(key("origin_ca_file"), fa.OriginCAFile, app.Origin)
		}
		app.OriginCertificate, app.OriginCertSum = l.originCertificate(path, fa, app.Origin)
		if fa.OriginServerName != "" {
			app.OriginServerName = l.originServerName(key("origin_server_name"), fa.OriginServerName, app.Origin)
		}

		switch {
		case fa.SessionDuration != nil && tcp:
			l.errorf(key("session_duration"), "not for a%s application: it has no sessions (each connection gets a token of its own); remove it", article(app.Protocol))
		case fa.SessionDuration != nil:
			app.SessionDuration = time.Duration(*fa.SessionDuration)
			l.checkSession(key("session_duration"), app.SessionDuration)
		case !tcp:
			app.SessionDuration = defaultSessionDuration
		}
		if fa.ServiceAuth401 != nil {
			if tcp {
				l.errorf(key("service_auth_401"), "not for a%s application: a refused device gets a %s, not an HTTP status; remove it", article(app.Protocol), refusalOf(app.Protocol))
			} else {
				app.ServiceAuth401 = *fa.ServiceAuth401
			}
		}
		if fa.SessionTickets != nil {
			if tcp {
				l.errorf(key("session_tickets"), "not for a%s application: a resumed session skips the device's proof of its key (CertificateVerify), and its certificate would be admitted again on that old proof; remove it", article(app.Protocol))
			} else {
				app.SessionTickets = *fa.SessionTickets
			}
		}
		l.appIdentityProviders(key("identity_providers"), fa.IdentityProviders, &app, strings.HasPrefix(fa.Domain, "*."))
		l.transport(path, fa, &app, &cfg.Gateway)
		l.mqtt(path, fa, &app)

		audPath := key("name")
		if fa.AUD != "" {
			audPath = key("aud")
			if a, err := checkAUD(fa.AUD); err != nil {
				l.errorf(audPath, "%v", err)
			} else {
				app.AUD = a
			}
		} else if fa.Name != "" {
			app.AUD = policy.DeriveAUD(fa.Name)
		}
		// A duplicate name already explains a duplicate derived AUD.
		if j, dup := auds[app.AUD]; dup && app.AUD != "" && (fa.AUD != "" || !nameDup) {
			l.errorf(audPath, "AUD %s is also the AUD of applications[%d]: tokens would be valid for both", app.AUD, j)
		} else if app.AUD != "" {
			auds[app.AUD] = i
		}

		if app.Domain != "" {
			app.ClientCAs = cfg.ClientCAsFor(app.Domain)
			if fa.RejectInvalidCert && !l.associated[app.Domain] {
				l.errorf(key("reject_invalid_cert"), "needs a client CA associated with %q: without one every device would be rejected", app.Domain)
			}
		}
		app.Certificate, _ = l.serverCertificate(path, fa, app.Domain)
		l.env.NoHTTP = app.Protocol != ProtocolHTTP
		app.Policies = l.policies(key("policies"), fa.Policies, app.Domain, tcp)
		l.checkLoginSessions(key("policies"), &app)
		if len(l.errs) == errs {
			l.checkIdentitySelectors(key("policies"), &app)
		}
		if len(fa.Policies) == 0 && !l.bad(key("policies")) {
			l.warnf(path, "no policies: every request to %q is denied", fa.Domain)
		}
		if len(l.errs) == errs {
			if err := app.Compile(); err != nil {
				l.errorf(path, "%s", strings.TrimPrefix(err.Error(), "policy: "))
				continue
			}
			cfg.Applications = append(cfg.Applications, app)
		}
	}
}

// checkLoginSessions refuses, on an application with identity providers,
// an allow policy whose session_duration is "0s": the person's login would
// end with the one request, and every next request would log in again.
func (l *loader) checkLoginSessions(path string, app *Application) {
	if !app.Login {
		return
	}
	for i := range app.Policies {
		p := &app.Policies[i]
		if p.Action == policy.Allow && p.HasSessionDuration && p.SessionDuration == 0 {
			l.errorf(joinKey(indexPath(path, i), "session_duration"),
				"\"0s\" is not for an allow policy of an application with identity_providers: the login's result could never be kept; give a duration such as \"8h\" or remove it")
		}
	}
}

// checkSession reports a session duration longer than maxSessionDuration.
func (l *loader) checkSession(path string, d time.Duration) {
	if d > maxSessionDuration {
		l.errorf(path, "%v is longer than one month (%v)", d, maxSessionDuration)
	}
}

// policies checks the [[applications.policies]] of the application whose
// domain is domain ("" when the domain itself is invalid); tcp is set for a
// tcp application.
//
// Every decision works on a tcp application: allow, non_identity, bypass and
// deny look only at the certificate verdict, the address and the token, and
// none of them needs an HTTP exchange (identity selectors are refused there:
// a login needs HTTP). What a tcp application cannot have is a session, so a policy's
// session_duration is refused there.
func (l *loader) policies(path string, fps []filePolicy, domain string, tcp bool) []policy.Policy {
	out := make([]policy.Policy, 0, len(fps))
	var names []string
	for i := range fps {
		fp, pp := &fps[i], indexPath(path, i)
		key := func(k string) string { return joinKey(pp, k) }
		p := policy.Policy{Name: fp.Name}
		if fp.Name == "" {
			l.errorf(key("name"), "required: the policy's name (it appears in access logs and 403 bodies)")
		} else if slices.Contains(names, fp.Name) {
			l.errorf(key("name"), "%q is also the name of another policy of this application", fp.Name)
		}
		names = append(names, fp.Name)

		if fp.Decision == "" {
			l.errorf(key("decision"), "required: allow, deny, bypass or non_identity")
		} else if a, err := policy.ParseAction(fp.Decision); err != nil {
			l.errorf(key("decision"), "%s", strings.TrimPrefix(err.Error(), "policy: "))
		} else {
			p.Action = a
		}

		if fp.SessionDuration != nil && tcp {
			l.errorf(key("session_duration"), "not for a policy of a tcp application: it has no sessions (each connection gets a token of its own); remove it")
		} else if fp.SessionDuration != nil {
			p.SessionDuration, p.HasSessionDuration = time.Duration(*fp.SessionDuration), true
			l.checkSession(key("session_duration"), p.SessionDuration)
		}

		if len(fp.Include) == 0 && !l.bad(key("include")) {
			l.errorf(key("include"), "must list at least one selector, such as [{ valid_certificate = true }]")
		}
		p.Include = l.rule(key("include"), fp.Include, domain)
		p.Require = l.rule(key("require"), fp.Require, domain)
		p.Exclude = l.rule(key("exclude"), fp.Exclude, domain)
		out = append(out, p)
	}
	return out
}

// caServes reports whether the [[client_cas]] entry called name lists
// domain in its associated_hostnames (true when the entry did not load: its
// own error explains it).
func (l *loader) caServes(name, domain string) bool {
	if l.env.ClientCAs[name] == nil {
		return true
	}
	for _, h := range l.caHosts[name] {
		if h == domain {
			return true
		}
	}
	return false
}

// rule parses the selector entries of one include, require or exclude list.
func (l *loader) rule(path string, entries []selector, domain string) []policy.Selector {
	var out []policy.Selector
	for i, e := range entries {
		sp := indexPath(path, i)
		if l.bad(sp) {
			continue
		}
		if len(e) != 1 {
			keys := make([]string, 0, len(e))
			for k := range e {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			if len(keys) == 0 {
				l.errorf(sp, "empty selector: write exactly one key, such as { valid_certificate = true }")
			} else {
				l.errorf(sp, "%d selectors in one entry (%s): write each as its own entry", len(keys), strings.Join(keys, ", "))
			}
			continue
		}
		for k, v := range e {
			sel, err := policy.ParseSelectorIn(&l.env, k, v)
			if err != nil {
				msg := strings.TrimPrefix(err.Error(), "policy: ")
				if se := (*policy.SelectorError)(nil); errors.As(err, &se) {
					msg = se.Msg
				}
				l.errorf(sp, "%s", msg)
				continue
			}
			if sel.NeedsCertificate() && domain != "" && !l.associated[domain] {
				l.errorf(sp, "%s needs a client CA associated with %q: add %q to the associated_hostnames of a [[client_cas]] entry", k, domain, domain)
				continue
			}
			if name, _ := v.(string); k == "client_ca" && domain != "" && !l.caServes(name, domain) {
				l.errorf(sp, "client CA %q is not associated with %q: no device of this application can verify against it", name, domain)
				continue
			}
			out = append(out, sel)
		}
	}
	return out
}
