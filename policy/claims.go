package policy

// Claims are the JWT claims fleetgate mints and verifies. The JSON names
// follow Cloudflare Access tokens, so origins written for Access work as-is.
type Claims struct {
	Aud           []string `json:"aud"`
	Iss           string   `json:"iss"`
	Sub           string   `json:"sub"`
	Type          string   `json:"type"`
	Iat           int64    `json:"iat"`
	Nbf           int64    `json:"nbf"`
	Exp           int64    `json:"exp"`
	IdentityNonce string   `json:"identity_nonce"`
	CommonName    string   `json:"common_name,omitempty"`
	CertSHA256    string   `json:"cert_sha256,omitempty"`
	// CertSerial (lower-case hex) and CertIssuer (the leaf's issuer name,
	// DER, base64url) name the certificate the way a CRL does, so that a
	// session token dies with its certificate when a CRL revokes it.
	CertSerial string `json:"cert_serial,omitempty"`
	CertIssuer string `json:"cert_issuer,omitempty"`
	// CertRoot is the lower-case hex SHA-256 of the root the certificate's
	// verified chain ended at, so that a session token stops working where
	// that root is no longer trusted (a CA removed from the application).
	CertRoot string `json:"cert_root,omitempty"`
	// Policy names the policy that admitted the request that minted the token.
	Policy string `json:"policy,omitempty"`
	// NoDuration marks a token minted for one request only: it goes to the
	// origin and is refused if ever presented back.
	NoDuration bool `json:"no_duration,omitempty"`
}
