package browsertest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetgate/fleetgate/internal/pki"
)

// These tests need no browser: they check the inputs Start refuses and the
// files it writes.

func TestClientCertOptions(t *testing.T) {
	ca := pki.MustRoot(pki.Root("options CA"))
	laptop := ca.MustIssue(pki.Device("laptop"))
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	if err := laptop.WriteFiles(certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	tc := laptop.TLSCertificate()
	tests := []struct {
		name    string
		opts    Options
		wantCN  string // "" with wantErr "": no certificate
		wantErr string
	}{
		{name: "none", opts: Options{}},
		{name: "tls.Certificate", opts: Options{ClientCert: &tc}, wantCN: "laptop"},
		{name: "PEM files", opts: Options{ClientCertFile: certFile, ClientKeyFile: keyFile}, wantCN: "laptop"},
		{name: "both", opts: Options{ClientCert: &tc, ClientCertFile: certFile, ClientKeyFile: keyFile}, wantErr: "both ClientCert and"},
		{name: "cert file without key", opts: Options{ClientCertFile: certFile}, wantErr: "go together"},
		{name: "key file without cert", opts: Options{ClientKeyFile: keyFile}, wantErr: "go together"},
		{name: "missing file", opts: Options{ClientCertFile: filepath.Join(dir, "nope.pem"), ClientKeyFile: keyFile}, wantErr: "nope.pem"},
		{name: "swapped files", opts: Options{ClientCertFile: keyFile, ClientKeyFile: certFile}, wantErr: "client certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tt.opts.clientCert()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.HasPrefix(err.Error(), "browsertest: ") {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantCN == "" {
				if c != nil {
					t.Fatalf("got a certificate, want none")
				}
				return
			}
			f, err := filterFor(c)
			if err != nil {
				t.Fatal(err)
			}
			if f.Issuer == nil || f.Issuer.CN != "options CA" {
				t.Errorf("filter = %+v, want the issuer CN", f)
			}
		})
	}
}

func TestParseCertsPEM(t *testing.T) {
	a, b := pki.MustRoot(pki.Root("A")), pki.MustRoot(pki.Root("B"))
	certs, err := parseCertsPEM(append(append(a.CertPEM(), a.KeyPEM()...), b.CertPEM()...))
	if err != nil || len(certs) != 2 || certs[1].Subject.CommonName != "B" {
		t.Fatalf("parse two certificates and a key: %d, %v", len(certs), err)
	}
	for _, bad := range []string{"", "not PEM", string(a.KeyPEM()), "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"} {
		if _, err := parseCertsPEM([]byte(bad)); err == nil || !strings.HasPrefix(err.Error(), "browsertest: trusted CA") {
			t.Errorf("parseCertsPEM(%.20q) = %v, want a refusal", bad, err)
		}
	}
}

func TestWritePreferences(t *testing.T) {
	dir := t.TempDir()
	filter := selectFilter{Issuer: &nameFilter{CN: "Laptops"}}
	if err := writePreferences(dir, filter, []string{"https://[*.]fleet.test", "*"}); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "Default", "Preferences"))
	if err != nil {
		t.Fatal(err)
	}
	var prefs struct {
		Profile struct {
			ContentSettings struct {
				Exceptions struct {
					AutoSelect map[string]struct {
						Setting struct {
							Filters []map[string]map[string]string `json:"filters"`
						} `json:"setting"`
					} `json:"auto_select_certificate"`
				} `json:"exceptions"`
			} `json:"content_settings"`
		} `json:"profile"`
	}
	if err := json.Unmarshal(data, &prefs); err != nil {
		t.Fatal(err)
	}
	got := prefs.Profile.ContentSettings.Exceptions.AutoSelect
	for _, key := range []string{"https://[*.]fleet.test,*", "*,*"} {
		f := got[key].Setting.Filters
		if len(f) != 1 || f[0]["ISSUER"]["CN"] != "Laptops" {
			t.Errorf("exception %q = %+v in %s", key, got[key], data)
		}
	}
}

func TestRefersTo(t *testing.T) {
	dir := "/tmp/T1/001"
	tests := []struct {
		arg  string
		want bool
	}{
		{"--user-data-dir=/tmp/T1/001/profile", true},
		{"--database=/tmp/T1/001/.config/chromium/Crash", true},
		{"--user-data-dir=/tmp/T1/001", true},
		{"--user-data-dir=/tmp/T1/0010/profile", false},
		{"--user-data-dir=/tmp/T1/00", false},
		{"/tmp/T1/001/profile", false},
		{"--type=renderer", false},
	}
	for _, tt := range tests {
		if got := refersTo([]byte(tt.arg), dir); got != tt.want {
			t.Errorf("refersTo(%q) = %v, want %v", tt.arg, got, tt.want)
		}
	}
}
