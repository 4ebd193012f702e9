package configs

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// Checks of single values. Each returns an error whose text is the message of
// a Problem (no location, no prefix).

// CheckListen reports whether s is a listen address as [gateway].listen and
// admin_listen take it, for the command line's overrides of those keys;
// the error says what was wrong, without a location.
func CheckListen(s string) error { return checkListen(s) }

// checkListen accepts "host:port", ":port", "[::1]:port"; port 0 asks the
// system for a free port.
func checkListen(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err == nil {
		_, err = strconv.ParseUint(port, 10, 16)
	}
	if err == nil && host != "" && net.ParseIP(host) == nil {
		err = checkLabels(strings.ToLower(host), 1)
	}
	if err != nil {
		return fmt.Errorf("%q is not host:port (e.g. \"127.0.0.1:8443\" or \":8443\")", s)
	}
	return nil
}

// sharesPort reports whether two listen addresses (both host:port) would
// bind one port: the same port, other than 0 (a port of the system's
// choosing), on the same host or with either on every address ("",
// "0.0.0.0" or "::"). Linux refuses the second bind.
func sharesPort(a, b string) bool {
	ha, pa, errA := net.SplitHostPort(a)
	hb, pb, errB := net.SplitHostPort(b)
	if errA != nil || errB != nil {
		return false
	}
	na, errA := strconv.ParseUint(pa, 10, 16)
	nb, errB := strconv.ParseUint(pb, 10, 16)
	if errA != nil || errB != nil || na == 0 || na != nb {
		return false
	}
	everywhere := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	return everywhere(ha) || everywhere(hb) || strings.EqualFold(ha, hb)
}

// checkDomain validates an application domain or an associated hostname and
// returns it in lower case: an FQDN of at least two labels, or a wildcard
// "*.example.com" (the star is a whole first label, followed by at least two
// labels). No scheme, port, path, trailing dot or IP address.
func checkDomain(s string) (string, error) {
	d := strings.ToLower(s)
	switch {
	case d == "":
		return "", errors.New("empty domain")
	case strings.ContainsAny(d, "/:?#@ "):
		return "", fmt.Errorf("%q is not a domain name: write the bare hostname, without scheme, port or path", s)
	case net.ParseIP(d) != nil:
		return "", fmt.Errorf("%q is an IP address, not a domain name", s)
	case strings.HasSuffix(d, "."):
		return "", fmt.Errorf("%q: write the domain without the trailing dot", s)
	}
	rest := strings.TrimPrefix(d, "*.")
	if err := checkLabels(rest, 2); err != nil {
		if strings.Contains(rest, "*") {
			return "", fmt.Errorf("%q: a wildcard must be the whole first label, as in \"*.fleet.test\"", s)
		}
		return "", fmt.Errorf("%q is not a valid domain name: %v", s, err)
	}
	return d, nil
}

// checkLabels checks a lower-case hostname of at least minLabels labels.
func checkLabels(h string, minLabels int) error {
	if len(h) > 253 {
		return errors.New("longer than 253 characters")
	}
	labels := strings.Split(h, ".")
	if len(labels) < minLabels {
		return fmt.Errorf("want at least %d labels", minLabels)
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return errors.New("each label must have 1 to 63 characters")
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("label %q starts or ends with a hyphen", l)
		}
		for i := 0; i < len(l); i++ {
			if c := l[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("label %q holds %q (letters, digits and hyphens only)", l, c)
			}
		}
	}
	if last := labels[len(labels)-1]; strings.Trim(last, "0123456789") == "" {
		return errors.New("the last label is numeric")
	}
	return nil
}

// checkURL parses an http or https URL with a host. With bare, only
// scheme://host[:port] is allowed (an origin); otherwise a path is allowed
// (an issuer). Queries, fragments and user info are always refused.
func checkURL(s string, bare bool) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Opaque != "" {
		return nil, fmt.Errorf("%q is not an http:// or https:// URL with a host", s)
	}
	if u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return nil, fmt.Errorf("%q: user info, query and fragment are not allowed", s)
	}
	if p := u.Port(); p != "" {
		if _, err := strconv.ParseUint(p, 10, 16); err != nil {
			return nil, fmt.Errorf("%q: invalid port %q", s, p)
		}
	}
	if bare && u.Path != "" && u.Path != "/" {
		return nil, fmt.Errorf("%q: an origin is scheme://host[:port], without a path", s)
	}
	if bare {
		u.Path, u.RawPath = "", ""
	}
	return u, nil
}

// checkCookieName accepts an RFC 6265 cookie name (an RFC 7230 token).
func checkCookieName(s string) error {
	if s == "" {
		return errors.New("empty cookie name")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0 {
			continue
		}
		return fmt.Errorf("%q is not a valid cookie name: %q is not allowed (letters, digits and !#$%%&'*+-.^_`|~ only)", s, c)
	}
	return nil
}

// checkAUD accepts an explicit audience tag: 64 hex characters, returned in
// lower case.
func checkAUD(s string) (string, error) {
	a := strings.ToLower(s)
	if len(a) != 64 || strings.Trim(a, "0123456789abcdef") != "" {
		return "", fmt.Errorf("%q is not an AUD tag: want 64 hex characters", s)
	}
	return a, nil
}

// checkTCPOrigin parses a tcp application's origin: tcp://host:port, or
// tls://host:port for TLS to the origin, where host is an IP address (IPv6
// in brackets) or a hostname, and port is 1 to 65535. http(s):// is refused
// with what to write instead.
func checkTCPOrigin(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || u.Opaque != "" {
		return nil, fmt.Errorf("%q is not a tcp://host:port address", s)
	}
	switch u.Scheme {
	case "tcp", "tls":
	case "http", "https":
		return nil, fmt.Errorf("%q is an HTTP origin: a tcp application relays raw TCP to tcp://host:port (protocol = \"http\" proxies HTTP)", s)
	default:
		return nil, fmt.Errorf("%q is not a tcp://host:port address", s)
	}
	if u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || (u.Path != "" && u.Path != "/") {
		return nil, fmt.Errorf("%q: a tcp origin is tcp://host:port, without user info, path, query or fragment", s)
	}
	host, port := u.Hostname(), u.Port()
	if host == "" {
		return nil, fmt.Errorf("%q: a tcp origin needs a host, as in \"tcp://127.0.0.1:7000\"", s)
	}
	if port == "" {
		return nil, fmt.Errorf("%q: a tcp origin needs a port, as in \"tcp://127.0.0.1:7000\"", s)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return nil, fmt.Errorf("%q: invalid port %q (1 to 65535)", s, port)
	}
	if ip := net.ParseIP(host); ip == nil {
		if strings.Contains(u.Host, "[") {
			return nil, fmt.Errorf("%q: %q is not an IPv6 address", s, host)
		}
		if err := checkLabels(strings.ToLower(host), 1); err != nil {
			return nil, fmt.Errorf("%q: invalid host %q: %v", s, host, err)
		}
	} else if strings.Contains(host, ":") != strings.Contains(u.Host, "[") {
		return nil, fmt.Errorf("%q: write an IPv6 address in brackets, as in \"tcp://[::1]:7000\"", s)
	}
	return &url.URL{Scheme: u.Scheme, Host: u.Host}, nil
}
