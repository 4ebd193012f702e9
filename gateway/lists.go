package gateway

import (
	"time"

	"github.com/fleetgate/fleetgate/configs"
	"github.com/fleetgate/fleetgate/policy"
)

// Lists and service tokens live beside revocation: a request is evaluated
// against the NEWEST snapshot's lists and tokens (exchange.cur), whatever
// snapshot its connection opened under, so a device added to a quarantine
// list is refused on its next request on a keep-alive connection, and a
// service token removed from the file stops working at once. Live tcp
// relays are re-evaluated when a reload brings new lists.

// closePolicy is the close reason of a relayed connection whose decision a
// reload reversed (a list that an exclude or a deny uses now holds the
// device).
const closePolicy = "policy"

// provisionCredentials builds the snapshot's lists and service tokens.
func (s *snapshot) provisionCredentials(cfg *configs.Config) error {
	s.lists = cfg.ListsSet()
	st, err := policy.NewServiceTokens(cfg.ServiceTokens)
	if err != nil {
		return err
	}
	s.serviceTokens = st
	return nil
}

// listPaths lists the list files of the snapshot's configuration, for the
// file watch.
func (s *snapshot) listPaths() []string {
	var out []string
	for i := range s.cfg.Lists {
		if p := s.cfg.Lists[i].Path; p != "" {
			out = append(out, p)
		}
	}
	return out
}

// serviceCredential checks the request's CF-Access-Client-Id and
// CF-Access-Client-Secret against the newest service tokens and records the
// outcome in the policy input. Either header alone counts as a failed
// attempt. The headers' values are never logged: only the token's name, once
// it checked out.
func (x *exchange) serviceCredential(in *policy.Input) {
	id := x.req.Header.Peek("Cf-Access-Client-Id")
	secret := x.req.Header.Peek("Cf-Access-Client-Secret")
	if len(id) == 0 && len(secret) == 0 {
		return
	}
	in.ServiceToken, in.ServiceTokenProblem = x.cur.serviceTokens.Check(id, secret, x.now)
}

// reevaluate decides every live relay again against lists (the newest), at
// now, with the policies it was admitted under, and cuts with reason policy
// those that are no longer allowed. It returns how many it cut.
func (x *relayIndex) reevaluate(lists *policy.ListSet, now time.Time) int {
	// Copied out first: evaluating a large fleet must not hold up the
	// connections that open and close meanwhile.
	x.mu.Lock()
	all := make([]*relay, 0, x.n)
	for _, set := range x.bySHA {
		for r := range set {
			all = append(all, r)
		}
	}
	x.mu.Unlock()
	var cut []*relay
	for _, r := range all {
		in := r.adm.input
		in.Lists, in.Now = lists, now
		if d := r.app.policy.Evaluate(&in); !d.Allowed {
			cut = append(cut, r)
		}
	}
	for _, r := range cut {
		r.cut(closePolicy)
	}
	return len(cut)
}
