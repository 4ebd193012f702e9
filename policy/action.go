package policy

import "fmt"

var actionNames = [...]string{
	Deny:        "deny",
	Allow:       "allow",
	Bypass:      "bypass",
	NonIdentity: "non_identity",
}

// String returns the action's TOML / API name, such as "non_identity".
func (a Action) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return fmt.Sprintf("action(%d)", uint8(a))
}

// ParseAction parses a policy's decision key: "allow", "deny", "bypass" or
// "non_identity". Matching is exact (case-sensitive), like every TOML key.
func ParseAction(s string) (Action, error) {
	for i, name := range actionNames {
		if s == name {
			return Action(i), nil
		}
	}
	return Deny, fmt.Errorf("policy: unknown decision %q (want allow, deny, bypass or non_identity)", s)
}

// early reports whether the action belongs to the first evaluation pass
// (bypass and non_identity), which runs before allow and deny.
func (a Action) early() bool { return a == Bypass || a == NonIdentity }
