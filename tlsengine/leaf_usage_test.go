package tlsengine

import (
	"crypto/x509"
	"strings"
	"testing"

	"github.com/fleetgate/fleetgate/internal/pki"
	"github.com/fleetgate/fleetgate/internal/verdict"
)

// TestVerifyChainLeafUsage: a device leaf that is itself a CA, or whose
// KeyUsage extension lacks digitalSignature, is refused as bad usage even
// though it chains to the site's root with ExtKeyUsage clientAuth; a leaf
// without a KeyUsage extension is fine. The cache must answer the same, on
// the miss and on the hit.
func TestVerifyChainLeafUsage(t *testing.T) {
	p := vtNewPKI(t)
	leaf := func(cn string, edit func(*pki.Options)) *pki.Cert {
		o := pki.Device(cn)
		edit(&o)
		return p.inter.MustIssue(o)
	}
	cases := []struct {
		name   string
		leaf   *pki.Cert
		want   verdict.Kind
		detail string // a substring of Detail for a refusal
	}{
		{name: "CA:TRUE leaf", leaf: leaf("sensor-ca", func(o *pki.Options) { o.IsCA, o.MaxPathLen = true, 0 }),
			want: verdict.BadUsage, detail: "is a CA"},
		{name: "key usage certSign only", leaf: leaf("sensor-certsign", func(o *pki.Options) { o.KeyUsage = x509.KeyUsageCertSign }),
			want: verdict.BadUsage, detail: "without digitalSignature"},
		{name: "key usage keyEncipherment only", leaf: leaf("sensor-kenc", func(o *pki.Options) { o.KeyUsage = x509.KeyUsageKeyEncipherment }),
			want: verdict.BadUsage, detail: "without digitalSignature"},
		{name: "key usage digitalSignature", leaf: leaf("sensor-ds", func(o *pki.Options) { o.KeyUsage = x509.KeyUsageDigitalSignature }),
			want: verdict.Valid},
		{name: "key usage digitalSignature and keyEncipherment", leaf: leaf("sensor-ds-kenc", func(o *pki.Options) {
			o.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
		}), want: verdict.Valid},
		{name: "no key usage extension", leaf: leaf("sensor-noku", func(o *pki.Options) { o.NoKeyUsage = true }),
			want: verdict.Valid},
		{name: "intermediate presented as the leaf", leaf: p.inter, want: verdict.BadUsage, detail: "is a CA"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			certs := []*pki.Cert{tc.leaf, p.inter}
			if tc.leaf == p.inter {
				certs = certs[:1]
			}
			chain := vtChain(certs...)
			cache := NewVerdictCache(64)
			for _, got := range []struct {
				how string
				v   verdict.Verdict
			}{
				{"VerifyChain", VerifyChain(p.site, chain, vtNow)},
				{"VerifyRawChain", VerifyRawChain(p.site, vtRaw(certs...), vtNow)},
				{"cache miss", cache.Verdict(p.site, chain, vtNow)},
				{"cache hit", cache.Verdict(p.site, chain, vtNow)},
			} {
				v := got.v
				if v.Kind != tc.want {
					t.Errorf("%s: kind = %v, want %v (detail %q)", got.how, v.Kind, tc.want, v.Detail)
					continue
				}
				if v.Identity.CommonName != tc.leaf.Cert.Subject.CommonName {
					t.Errorf("%s: identity CN = %q", got.how, v.Identity.CommonName)
				}
				if tc.want == verdict.Valid {
					continue
				}
				if !strings.Contains(v.Detail, tc.detail) || !strings.Contains(v.Detail, "leaf certificate") {
					t.Errorf("%s: detail %q does not say %q about the leaf certificate", got.how, v.Detail, tc.detail)
				}
				if v.Path != nil {
					t.Errorf("%s: a bad-usage verdict carries a path", got.how)
				}
			}
			if hits, misses := cache.Stats(); hits != 1 || misses != 1 {
				t.Errorf("cache: %d hits, %d misses; want 1 and 1", hits, misses)
			}
		})
	}
}
