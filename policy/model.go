package policy

import (
	"net/netip"
	"time"

	"github.com/fleetgate/fleetgate/internal/verdict"
)

// Action is what a policy does when it matches (the API's "decision").
type Action uint8

// The actions, as Cloudflare Access names them.
const (
	Deny        Action = iota // "deny" (Block)
	Allow                     // "allow"
	Bypass                    // "bypass": no checks at all, no token
	NonIdentity               // "non_identity" (Service Auth)
)

// Input is everything a policy may look at for one request.
type Input struct {
	// Cert is the connection's certificate verdict; Kind Missing when none.
	Cert *verdict.Verdict
	// Token holds the claims of a verified token presented with the request
	// (cookie or cf-access-token header), nil when none.
	Token *Claims
	// ClientIP is the device's address.
	ClientIP netip.Addr
	// Host is the request's host, lower-case, without port.
	Host string
	// Now is the evaluation time; policy never reads the clock itself.
	Now time.Time
	// Lists are the newest [[lists]] the `list` selector looks values up
	// in; nil holds none. They are swapped on reload independently of the
	// application, so a device added to a list is refused on its next
	// request on a connection opened before.
	Lists *ListSet
	// ServiceToken is the service token the request presented
	// (CF-Access-Client-Id and CF-Access-Client-Secret) once the gateway
	// checked it with ServiceTokens.Check; nil when none, or when it did not
	// check out (then ServiceTokenProblem says why).
	ServiceToken *ServiceToken
	// ServiceTokenProblem is why a presented service token was refused
	// ("service token expired", …), "" when none was presented or it is
	// valid. A non-empty problem refuses the request after bypass policies.
	ServiceTokenProblem string
	// Identity is the person who just logged in with an identity provider
	// (the login's callback), nil otherwise; on later requests the session
	// token carries it (LoggedIn).
	Identity *Identity
}

// Selector is one rule entry such as { common_name = "sensor-0001" }.
// Each selector is a small type registered by its TOML key, so new selectors
// need no change to the evaluator.
type Selector interface {
	// Key is the selector's TOML key, e.g. "common_name".
	Key() string
	// Match reports whether the request satisfies the selector.
	Match(in *Input) bool
	// NeedsCertificate is true for mTLS selectors: they are only allowed on
	// an application whose domain has a client CA associated.
	NeedsCertificate() bool
}

// Outcome is a selector's answer for one input: it matches, it does not,
// or it cannot tell.
type Outcome uint8

// The outcomes.
const (
	NoMatch Outcome = iota
	Matched
	// Unknown: the selector cannot be evaluated on the input, because the
	// field it tests is not carried by the session token that stands in for
	// a certificate not presented (a SAN, O, OU: a token names the
	// certificate by common name, fingerprint, serial and root only).
	// Unknown never admits: in an exclude, or in a deny policy's include, it
	// counts as a match; in a require, or in an allow policy's include, as
	// no match.
	Unknown
)

// Judge is implemented by the selectors whose answer can be Unknown. Their
// Match reports Judge(in) == Matched; the evaluator uses Judge.
type Judge interface {
	Judge(in *Input) Outcome
}

// Policy is one ordered entry of an application's policy list.
type Policy struct {
	Name   string
	Action Action
	// SessionDuration overrides the application's when HasSessionDuration.
	SessionDuration    time.Duration
	HasSessionDuration bool
	Include            []Selector // OR: at least one must match
	Require            []Selector // AND: all must match
	Exclude            []Selector // NOT: none may match
}

// Application is the Access application behind one domain.
type Application struct {
	Name   string
	Domain string // lower-case FQDN or "*.fleet.test"
	// AUD is the application's audience tag: 64 hex characters.
	AUD string
	// SessionDuration is the application's default; 0 means no duration.
	SessionDuration time.Duration
	// ServiceAuth401 answers 401 instead of 403 when a non_identity policy
	// fails.
	ServiceAuth401 bool
	// Login is set when the application has identity providers: then
	// allow and deny policies are evaluated only for a logged-in identity
	// (a request without one gets Decision.LoginRequired), so `everyone`
	// there means any logged-in person. Bypass and non_identity policies
	// are unchanged: they never start a login.
	Login    bool
	Policies []Policy

	// plan holds what Compile precomputes (the reason strings), so that
	// Evaluate does not allocate. Nil until Compile is called.
	plan *plan
}
