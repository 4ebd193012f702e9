// Package proxyv2 builds the PROXY protocol header that a tcp application's
// origin receives before the device's bytes: who connected (addresses), to
// what (SNI), over which TLS, with which verified client certificate, and the
// session token the gateway minted for the connection. It also reads the
// header a load balancer in front of the gateway sends (Parse): the device's
// address, before its first TLS byte. It owns only the bytes of those
// headers; it opens no sockets, starts no goroutines and reads no clock. The
// encoding is github.com/pires/go-proxyproto's: this package chooses what
// goes into a header and finds where a received one ends, the library writes
// and reads them.
//
// Its part of the flow:
//
//	gateway (after the handshake and the policy decision)
//	  │ Conn{Source, Destination, SNI, ID, TLS, Verified, CN, LeafDER, Token}
//	  ▼
//	V2 ─▶ go-proxyproto Header + TLVs ─▶ bytes written first on the origin socket
//	V1 ─▶ "PROXY TCP4 src dst sport dport\r\n" (addresses only)
//
// What a v2 header carries (TLV types of the PROXY protocol specification):
//
//	PP2_TYPE_AUTHORITY (0x02)   the SNI the device sent
//	PP2_TYPE_UNIQUE_ID (0x05)   the 16-byte connection id (also in the gateway's logs, as hex)
//	PP2_TYPE_SSL (0x20)         client bits and verify, then sub-TLVs:
//	  SSL_VERSION (0x21)        "TLSv1.3"
//	  SSL_CN (0x22)             the verified client certificate's common name
//	  SSL_CIPHER (0x23)         the cipher suite
//	  SSL_SIG_ALG (0x24)        signature algorithm of the gateway's certificate
//	  SSL_KEY_ALG (0x25)        key algorithm of the gateway's certificate
//	  SSL_CLIENT_CERT (0x28)    the client leaf certificate, DER (only when asked)
//	0xE0 (first custom type)    the session token (a JWT) minted for the connection
//
// A verified certificate is sent as HAProxy, ghostunnel and Mosquitto 2.1
// read it: client = SSL|CERT_CONN|CERT_SESS and verify = 0. Without one (a
// bypass decision admitting a device without a verified certificate) the SSL
// TLV has only the SSL bit and verify = 1, and no CN, certificate or token is
// sent. HAProxy leaves verify at 0 in that case; the specification says
// non-zero, and a receiver that looks only at verify (go-proxyproto's
// PP2SSL.Verified does) must not take an anonymous device for a verified one.
//
// SSL_SIG_ALG and SSL_KEY_ALG describe "the certificate presented by the
// frontend" in the specification, that is the gateway's own certificate, not
// the device's: they are connection facts and are sent with or without a
// client certificate.
//
// Receivers bound the header they accept: go-proxyproto's reader refuses
// headers longer than proxyproto.MaxV2HeaderSize (4096 bytes by default), so
// an origin that wants SSL_CLIENT_CERT with large certificates must raise it.
// The header itself may be up to 65535 bytes after its fixed 16.
package proxyv2
