package policy

import (
	"crypto/sha256"
	"encoding/hex"
)

// audPrefix separates AUD derivation from every other use of SHA-256 over an
// application name. Changing it changes every derived AUD: never do.
const audPrefix = "fleetgate/aud/v1\x00"

// DeriveAUD returns the audience tag of the application named appName: 64
// lower-case hex characters, SHA-256 over a fixed domain-separation prefix and
// the name. It is deterministic, so a tag survives restarts and reloads as
// long as the application keeps its name.
func DeriveAUD(appName string) string {
	h := sha256.New()
	h.Write([]byte(audPrefix))
	h.Write([]byte(appName))
	return hex.EncodeToString(h.Sum(nil))
}
