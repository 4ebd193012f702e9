package policy

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/fleetgate/fleetgate/internal/verdict"
)

// Reasons that do not name a policy. They appear in access logs and 403
// bodies, so they are stable.
const (
	ReasonNoPolicyMatched = "no policy matched"
	ReasonTokenForeign    = "token not valid for this application"
	ReasonTokenExpired    = "token expired"
	// ReasonNotOnToken: no policy admitted the request, and some did not
	// because a selector tests what the session token that stood in for
	// the certificate does not carry (a SAN, O, OU); the certificate itself
	// would have to be presented.
	ReasonNotOnToken = "no policy matched: a selector needs the certificate, not the session token"
	// ReasonLoginRequired: the application has identity providers, no
	// bypass or non_identity policy admitted the request, and it carries no
	// logged-in identity: the person must log in first.
	ReasonLoginRequired = "login required"
)

// Decision is the outcome of evaluating an application's policies for one
// request.
type Decision struct {
	// Allowed is true when the request may go to the origin.
	Allowed bool
	// Action is the matched policy's action; Deny when nothing matched.
	Action Action
	// Policy is the matched policy's name, "" when none matched.
	Policy string
	// Reason is a short text for the access log and the 403 body, such as
	// `allowed by policy "fleet devices"` or "certificate expired".
	Reason string
	// ServiceAuthFailed is true when the request was refused and the
	// application has a non_identity policy (that therefore did not admit
	// it); with Application.ServiceAuth401 the gateway answers 401, not 403.
	ServiceAuthFailed bool
	// SessionDuration is the effective session length when Mint: the
	// policy's if it sets one, else the application's. 0 means "no
	// duration": a one-request token, never a cookie.
	SessionDuration time.Duration
	// Mint is true when the gateway must mint a token: allowed by an allow or
	// non_identity policy (bypass admits without any token).
	Mint bool
	// Rule names the include entry that matched in the deciding policy, as
	// written: `include[1] common_name_pattern = "sensor-*"`; "" when no
	// policy matched. For the access log and the tcp close log.
	Rule string
	// LoginRequired is set on a refusal of an application with Login when
	// the request carries no logged-in identity: the gateway starts a
	// login instead of answering 403.
	LoginRequired bool
	// BindCertificate is set on an application with Login when the
	// allowing policy uses a certificate selector in its include or
	// require: the minted token then carries the certificate's thumbprint
	// as cnf, so that a stolen cookie opens nothing without the
	// certificate's key. (A device application's session token keeps
	// standing in for the certificate, as Access's does.)
	BindCertificate bool
}

// plan is what Compile precomputes for Evaluate.
type plan struct {
	reasons  []string   // per policy: "allowed by policy …" or "denied by policy …"
	rules    [][]string // per policy, per include entry: its Rule text
	binds    []bool     // per policy: a certificate selector in include or require
	groups   []string   // groupNames(Policies)
	groupSet string     // GroupSet
}

// ruleText is the Rule of a decision made by include entry j.
func ruleText(j int, s Selector) string {
	if st, ok := s.(fmt.Stringer); ok {
		return "include[" + strconv.Itoa(j) + "] " + st.String()
	}
	return "include[" + strconv.Itoa(j) + "] " + s.Key()
}

// Compile checks the application's policies, fills AUD with
// DeriveAUD(Name) when it is empty, and precomputes the reason texts so that
// Evaluate does not allocate. Call it once after building the Application and
// before sharing it between goroutines; call it again after changing
// Policies. Evaluate works without it (it then allocates one string per
// decision that names a policy).
func (a *Application) Compile() error {
	var errs []error
	reasons := make([]string, len(a.Policies))
	rules := make([][]string, len(a.Policies))
	for i := range a.Policies {
		p := &a.Policies[i]
		if p.Action > NonIdentity {
			errs = append(errs, fmt.Errorf("policy: application %q: policies[%d] %q: unknown action %d", a.Name, i, p.Name, p.Action))
		}
		for _, list := range [...]struct {
			name string
			sels []Selector
		}{{"include", p.Include}, {"require", p.Require}, {"exclude", p.Exclude}} {
			for j, s := range list.sels {
				if s == nil {
					errs = append(errs, fmt.Errorf("policy: application %q: policies[%d] %q: %s[%d] is nil", a.Name, i, p.Name, list.name, j))
				}
			}
		}
		reasons[i] = policyReason(p)
		for j, sel := range p.Include {
			if sel != nil {
				rules[i] = append(rules[i], ruleText(j, sel))
			} else {
				rules[i] = append(rules[i], "")
			}
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if a.AUD == "" {
		a.AUD = DeriveAUD(a.Name)
	}
	binds := make([]bool, len(a.Policies))
	for i := range a.Policies {
		binds[i] = usesCertificate(&a.Policies[i])
	}
	groups := groupNames(a.Policies)
	a.plan = &plan{reasons: reasons, rules: rules, binds: binds, groups: groups, groupSet: groupSetOf(groups)}
	return nil
}

// policyReason is the reason text of a decision made by p.
func policyReason(p *Policy) string {
	if p.Action == Deny {
		return "denied by policy " + strconv.Quote(p.Name)
	}
	return "allowed by policy " + strconv.Quote(p.Name)
}

// Evaluate decides one request. Order, as Cloudflare Access does it:
// bypass and non_identity policies first in file order, then allow and deny
// in file order; the first policy that matches decides; no match denies.
//
// A certificate that was presented but is not valid denies the request with
// the certificate's reason, even when a token is present: only bypass
// policies, which admit without checks, are evaluated before that. When no
// certificate was presented, a verified token for this application (see
// Input.Subject) stands in for the certificate it was minted after, so a
// session cookie keeps working while the policies are still evaluated on
// every request.
//
// A service token that was presented but did not check out
// (Input.ServiceTokenProblem) refuses the request after the bypass pass, as
// a Service Auth failure (ServiceAuthFailed: 401 with service_auth_401).
//
// Evaluate never allocates once Compile has run, and is safe for concurrent
// use.
func (a *Application) Evaluate(in *Input) Decision {
	if in == nil {
		return a.refuse(verdict.Missing.Reason())
	}
	kind := verdict.Missing
	if in.Cert != nil {
		kind = in.Cert.Kind
	}
	certBad := kind != verdict.Valid && kind != verdict.Missing
	tokenReason := ""
	if kind == verdict.Missing { // only then does a token stand in for anything
		tokenReason = a.tokenProblem(in)
	}

	// Pass 1: bypass and non_identity, in file order.
	for i := range a.Policies {
		p := &a.Policies[i]
		if !p.Action.early() {
			continue
		}
		if p.Action == NonIdentity && (certBad || tokenReason != "" || in.ServiceTokenProblem != "") {
			continue
		}
		if j, _ := p.matches(in); j >= 0 {
			return a.decide(i, j)
		}
	}
	if certBad {
		return a.refuse(kind.Reason())
	}
	if tokenReason != "" {
		return a.refuse(tokenReason)
	}
	if in.ServiceTokenProblem != "" {
		// A machine that presents a service token means to use it: a wrong
		// or expired one is refused as Service Auth failure (401 with
		// service_auth_401), whatever else the request carries.
		d := a.refuse(in.ServiceTokenProblem)
		d.ServiceAuthFailed = true
		return d
	}
	if a.Login {
		// Allow and deny policies are evaluated with the identity and the
		// certificate together, so only once the person has logged in.
		// A session minted under other group rules cannot be judged by
		// these: its token records only the groups those named.
		if _, ok := in.LoggedIn(); !ok || in.Identity == nil && in.Token.GroupSet != a.GroupSet() {
			d := a.refuse(ReasonLoginRequired)
			d.LoginRequired = true
			return d
		}
	}
	// Pass 2: allow and deny, in file order.
	unknown := false
	for i := range a.Policies {
		p := &a.Policies[i]
		if p.Action.early() {
			continue
		}
		j, u := p.matches(in)
		if j >= 0 {
			return a.decide(i, j)
		}
		unknown = unknown || u
	}
	if kind != verdict.Valid && in.Token == nil {
		return a.refuse(kind.Reason())
	}
	if unknown {
		return a.refuse(ReasonNotOnToken)
	}
	return a.refuse(ReasonNoPolicyMatched)
}

// tokenProblem returns why in.Token must not be trusted for this application,
// or "" when it may (or when there is none). The gateway verifies tokens
// before evaluation; this is a cheap second check so that a wiring mistake
// fails closed.
func (a *Application) tokenProblem(in *Input) string {
	t := in.Token
	if t == nil {
		return ""
	}
	if t.NoDuration || a.AUD == "" || !t.hasAudience(a.AUD) {
		return ReasonTokenForeign
	}
	if !in.Now.IsZero() && in.Now.Unix() >= t.Exp+skewSeconds {
		return ReasonTokenExpired
	}
	return ""
}

// decide builds the decision of policy i, whose include entry j matched.
func (a *Application) decide(i, j int) Decision {
	p := &a.Policies[i]
	d := Decision{Action: p.Action, Policy: p.Name, Reason: a.reason(i), Rule: a.rule(i, j)}
	if p.Action == Deny {
		d.ServiceAuthFailed = a.hasNonIdentity()
		return d
	}
	d.Allowed = true
	if p.Action != Bypass {
		d.BindCertificate = a.Login && a.binds(i)
		d.Mint = true
		d.SessionDuration = a.SessionDuration
		if p.HasSessionDuration {
			d.SessionDuration = p.SessionDuration
		}
	}
	return d
}

// refuse builds a denial that no policy made.
func (a *Application) refuse(reason string) Decision {
	return Decision{Action: Deny, Reason: reason, ServiceAuthFailed: a.hasNonIdentity()}
}

// reason returns policy i's precomputed reason, or builds it when Compile
// has not run (or Policies changed since).
func (a *Application) reason(i int) string {
	if pl := a.plan; pl != nil && len(pl.reasons) == len(a.Policies) {
		return pl.reasons[i]
	}
	return policyReason(&a.Policies[i])
}

// rule returns the Rule text of include entry j of policy i, precomputed
// when Compile has run.
func (a *Application) rule(i, j int) string {
	if pl := a.plan; pl != nil && len(pl.rules) == len(a.Policies) && j < len(pl.rules[i]) {
		return pl.rules[i][j]
	}
	return ruleText(j, a.Policies[i].Include[j])
}

// binds reports whether policy i uses a certificate selector in its
// include or require, precomputed when Compile has run.
func (a *Application) binds(i int) bool {
	if pl := a.plan; pl != nil && len(pl.binds) == len(a.Policies) {
		return pl.binds[i]
	}
	return usesCertificate(&a.Policies[i])
}

// usesCertificate reports whether p's include or require has a
// certificate selector (an exclude only narrows, it proves nothing).
func usesCertificate(p *Policy) bool {
	for _, list := range [...][]Selector{p.Include, p.Require} {
		for _, s := range list {
			if s != nil && s.NeedsCertificate() {
				return true
			}
		}
	}
	return false
}

func (a *Application) hasNonIdentity() bool {
	for i := range a.Policies {
		if a.Policies[i].Action == NonIdentity {
			return true
		}
	}
	return false
}

// matches applies the rules: include OR (an empty include never matches),
// require AND, exclude NOT. It returns the index of the include entry that
// matched, or -1 when the policy does not match; unknown is true when the
// policy did not match because of a selector that could not be evaluated.
//
// A selector that cannot be evaluated on the input (Unknown) never lets a
// request in: for an allow, bypass or non_identity policy it is no match in
// the include, unmet in the require and a match in the exclude; for a deny
// policy, whose match refuses, the other way round.
func (p *Policy) matches(in *Input) (m int, unknown bool) {
	deny := p.Action == Deny // an Unknown makes a deny policy match
	m = -1
	for j, s := range p.Include {
		if s == nil {
			continue
		}
		o := judge(s, in)
		if o == Matched || o == Unknown && deny {
			m = j
			break
		}
		unknown = unknown || o == Unknown
	}
	if m < 0 {
		return -1, unknown
	}
	for _, s := range p.Require {
		if s == nil {
			return -1, false
		}
		if o := judge(s, in); o == NoMatch || o == Unknown && !deny {
			return -1, o == Unknown
		}
	}
	for _, s := range p.Exclude {
		if s == nil {
			return -1, false
		}
		if o := judge(s, in); o == Matched || o == Unknown && !deny {
			return -1, o == Unknown
		}
	}
	return m, false
}

// judge returns s's outcome on in: its Judge when it has one, else Match.
func judge(s Selector, in *Input) Outcome {
	if j, ok := s.(Judge); ok {
		return j.Judge(in)
	}
	if s.Match(in) {
		return Matched
	}
	return NoMatch
}
