package proxyv2

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
)

// ID identifies one relayed connection: PP2_TYPE_UNIQUE_ID in the v2 header
// and the connection's id in the gateway's logs.
type ID [16]byte

// NewID returns a random ID from crypto/rand: unguessable, so an origin may
// use it as a correlation key without it revealing connection counts.
func NewID() (ID, error) {
	var id ID
	if _, err := rand.Read(id[:]); err != nil {
		return ID{}, fmt.Errorf("proxyv2: connection id: %w", err)
	}
	return id, nil
}

// String returns the id as 32 lower-case hex digits, as logs show it.
func (id ID) String() string { return hex.EncodeToString(id[:]) }
