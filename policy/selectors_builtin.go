package policy

import (
	"errors"
	"fmt"
	"strconv"
)

// The TOML keys of the built-in selectors.
const (
	keyValidCertificate = "valid_certificate"
	keyCommonName       = "common_name"
	keyEveryone         = "everyone"
)

// validCertificate is { valid_certificate = true }: the request has a
// certificate that chains to the hostname's CA, or a token minted after one.
type validCertificate struct{}

func parseValidCertificate(v any) (Selector, error) {
	if err := parseTrue(v); err != nil {
		return nil, err
	}
	return validCertificate{}, nil
}

func (validCertificate) Key() string            { return keyValidCertificate }
func (validCertificate) NeedsCertificate() bool { return true }
func (validCertificate) String() string         { return "valid_certificate = true" }

func (validCertificate) Match(in *Input) bool {
	_, ok := in.Subject()
	return ok
}

// commonName is { common_name = "sensor-0001" }: the identity's CN is exactly
// this string (case-sensitive, as X.509 stores it).
type commonName string

func parseCommonName(v any) (Selector, error) {
	s, ok := v.(string)
	if !ok {
		return nil, fmt.Errorf("want a string, got %s", typeName(v))
	}
	if s == "" {
		return nil, errors.New("must not be empty")
	}
	return commonName(s), nil
}

func (commonName) Key() string            { return keyCommonName }
func (commonName) NeedsCertificate() bool { return true }
func (c commonName) String() string       { return "common_name = " + strconv.Quote(string(c)) }

func (c commonName) Match(in *Input) bool {
	s, ok := in.Subject()
	return ok && s.CommonName == string(c)
}

// everyone is { everyone = true }: matches every request, certificate or not.
type everyone struct{}

func parseEveryone(v any) (Selector, error) {
	if err := parseTrue(v); err != nil {
		return nil, err
	}
	return everyone{}, nil
}

func (everyone) Key() string            { return keyEveryone }
func (everyone) NeedsCertificate() bool { return false }
func (everyone) String() string         { return "everyone = true" }
func (everyone) Match(*Input) bool      { return true }
