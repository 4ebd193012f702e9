package policy

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"math/big"
	"testing"
)

// TestClaimsCertRef: the claims a token carries name its certificate the way
// revocation looks it up; a token naming none has no reference, and claims
// that do not decode fail closed.
func TestClaimsCertRef(t *testing.T) {
	sum := sha256.Sum256([]byte("leaf"))
	fp := hex.EncodeToString(sum[:])
	issuer := []byte{0x30, 0x03, 0x01, 0x02, 0x03}
	iss := base64.RawURLEncoding.EncodeToString(issuer)
	tests := []struct {
		name       string
		claims     Claims
		ok         bool
		malformed  bool
		wantSerial string
	}{
		{name: "no certificate", claims: Claims{CommonName: "sensor-0001"}},
		{name: "fingerprint only", claims: Claims{CommonName: "sensor-0001", CertSHA256: fp}, ok: true},
		{name: "fingerprint, serial and issuer", claims: Claims{CommonName: "sensor-0001", CertSHA256: fp, CertSerial: "4f1a09", CertIssuer: iss}, ok: true, wantSerial: "4f1a09"},
		{name: "short fingerprint", claims: Claims{CertSHA256: fp[:62]}, malformed: true},
		{name: "fingerprint not hex", claims: Claims{CertSHA256: "zz" + fp[2:]}, malformed: true},
		{name: "serial not hex", claims: Claims{CertSHA256: fp, CertSerial: "xyz", CertIssuer: iss}, malformed: true},
		{name: "issuer not base64url", claims: Claims{CertSHA256: fp, CertSerial: "01", CertIssuer: "!!"}, malformed: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ref, ok, err := tc.claims.CertRef()
			if tc.malformed {
				if !errors.Is(err, ErrMalformedToken) || ok {
					t.Fatalf("CertRef = ok %v, err %v; want ErrMalformedToken", ok, err)
				}
				return
			}
			if err != nil || ok != tc.ok {
				t.Fatalf("CertRef = ok %v, err %v; want ok %v", ok, err, tc.ok)
			}
			if !ok {
				return
			}
			if ref.SHA256 != sum || ref.Subject != tc.claims.CommonName {
				t.Errorf("ref %x %q", ref.SHA256, ref.Subject)
			}
			if tc.wantSerial == "" {
				if ref.Serial != nil || ref.RawIssuer != nil {
					t.Errorf("serial %v issuer %x without the claims", ref.Serial, ref.RawIssuer)
				}
				return
			}
			want, _ := new(big.Int).SetString(tc.wantSerial, 16)
			if ref.Serial.Cmp(want) != 0 || string(ref.RawIssuer) != string(issuer) {
				t.Errorf("serial %v issuer %x", ref.Serial, ref.RawIssuer)
			}
		})
	}
}
