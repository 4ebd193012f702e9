package proxyv2

import (
	"crypto/tls"
	"fmt"
)

// VersionName names a crypto/tls version as OpenSSL does, which is what the
// SSL_VERSION sub-TLV carries from HAProxy: "TLSv1.3", "TLSv1.2". Unknown
// versions are named by their hex value, "0x0305".
func VersionName(v uint16) string {
	switch v {
	case tls.VersionTLS13:
		return "TLSv1.3"
	case tls.VersionTLS12:
		return "TLSv1.2"
	case tls.VersionTLS11:
		return "TLSv1.1"
	case tls.VersionTLS10:
		return "TLSv1"
	}
	return fmt.Sprintf("0x%04x", v)
}
