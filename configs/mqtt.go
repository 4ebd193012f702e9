package configs

import "strings"

// The keys of an mqtt application: mqtt_client_id, mqtt_username,
// mqtt_password and max_connect_bytes. An mqtt application is a tcp
// application whose first packet is checked, so every tcp key applies to it
// too; these four are errors on any other protocol.

// The values of mqtt_username and mqtt_password.
const (
	MQTTKeep       = "keep"        // the broker sees what the device sent
	MQTTCommonName = "common_name" // mqtt_username: the certificate's CN
	MQTTToken      = "token"       // mqtt_password: the connection's signed token
)

// MQTTCNPlaceholder is what a client id template replaces with the CN.
const MQTTCNPlaceholder = "{cn}"

// Bounds and default of max_connect_bytes.
const (
	defaultMaxConnectBytes = 64 << 10
	// minMaxConnectBytes leaves room for a CONNECT with a client id,
	// username and password of ordinary sizes.
	minMaxConnectBytes = 256
	// maxMaxConnectBytes bounds what a device that has not yet been
	// admitted may make the gateway hold.
	maxMaxConnectBytes = 1 << 20
)

// MQTTSettings are an mqtt application's identity binding and CONNECT limit.
type MQTTSettings struct {
	// ClientID is the client id template (mqtt_client_id): "" for "any"
	// (the default, no binding), "{cn}" for "common_name", or a template
	// with exactly one "{cn}", such as "fleet-{cn}". When set, the CONNECT's
	// client id must equal the template with the certificate's CN filled
	// in; an empty client id is replaced by that value.
	ClientID string
	// Username is MQTTKeep (the default) or MQTTCommonName: the broker sees
	// the CN as the username (mosquitto's use_identity_as_username).
	Username string
	// Password is MQTTKeep (the default) or MQTTToken: the broker sees the
	// connection's signed token as the password (and, under MQTT 5, in the
	// user property cf-access-jwt-assertion). Token needs Username =
	// MQTTCommonName: MQTT 3.1.1 allows no password without a username.
	Password string
	// MaxConnectBytes bounds the first packet, the CONNECT
	// (max_connect_bytes = "64KiB", between 256 bytes and 1MiB).
	MaxConnectBytes int
}

// ExpectedClientID returns the client id the device with common name cn
// must use, and false when any client id is accepted.
func (m *MQTTSettings) ExpectedClientID(cn string) (string, bool) {
	if m == nil || m.ClientID == "" {
		return "", false
	}
	return strings.Replace(m.ClientID, MQTTCNPlaceholder, cn, 1), true
}

// article returns " tcp" or "n mqtt" for "a tcp application" / "an mqtt
// application".
func article(p Protocol) string {
	if p == ProtocolTCP {
		return " tcp"
	}
	return "n " + string(p) // an http, an mqtt
}

// refusalOf names how a relayed application refuses a device.
func refusalOf(p Protocol) string {
	if p == ProtocolMQTT {
		return "CONNACK with a reason code"
	}
	return "TLS alert"
}

// mqtt checks and applies the keys of an mqtt application, and refuses them
// on any other protocol.
func (l *loader) mqtt(path string, fa *fileApplication, app *Application) {
	key := func(k string) string { return joinKey(path, k) }
	if app.Protocol != ProtocolMQTT {
		if app.Protocol == "" {
			return // protocol itself is wrong: already reported
		}
		for _, k := range []struct {
			key string
			set bool
		}{
			{"mqtt_client_id", fa.MQTTClientID != nil},
			{"mqtt_username", fa.MQTTUsername != nil},
			{"mqtt_password", fa.MQTTPassword != nil},
			{"max_connect_bytes", fa.MaxConnectBytes != nil},
		} {
			if k.set {
				l.errorf(key(k.key), "only for protocol = \"mqtt\": a%s application reads no MQTT CONNECT; remove it", article(app.Protocol))
			}
		}
		return
	}
	m := &MQTTSettings{Username: MQTTKeep, Password: MQTTKeep, MaxConnectBytes: defaultMaxConnectBytes}
	app.MQTT = m
	if fa.RejectInvalidCert {
		l.errorf(key("reject_invalid_cert"), "not for an mqtt application: it always completes the handshake and refuses a device with a CONNACK (not authorized) that its firmware understands; remove it")
	}
	if fa.MQTTClientID != nil {
		switch v := *fa.MQTTClientID; {
		case v == "any":
		case v == MQTTCommonName:
			m.ClientID = MQTTCNPlaceholder
		case strings.Count(v, MQTTCNPlaceholder) != 1:
			l.errorf(key("mqtt_client_id"), "%q is not \"any\", \"common_name\" or a template with one %q, such as \"fleet-{cn}\"", v, MQTTCNPlaceholder)
		case strings.ContainsAny(strings.Replace(v, MQTTCNPlaceholder, "", 1), "{}"):
			l.errorf(key("mqtt_client_id"), "%q: a template may hold no braces other than %q", v, MQTTCNPlaceholder)
		case len(v) > 1024:
			l.errorf(key("mqtt_client_id"), "a template of %d bytes is too long (at most 1024)", len(v))
		default:
			m.ClientID = v
		}
	}
	if fa.MQTTUsername != nil {
		switch v := *fa.MQTTUsername; v {
		case MQTTKeep, MQTTCommonName:
			m.Username = v
		default:
			l.errorf(key("mqtt_username"), "%q is not \"keep\" or \"common_name\"", v)
		}
	}
	if fa.MQTTPassword != nil {
		switch v := *fa.MQTTPassword; v {
		case MQTTKeep:
		case MQTTToken:
			m.Password = v
			if m.Username != MQTTCommonName && !l.bad(key("mqtt_username")) {
				l.errorf(key("mqtt_password"), "\"token\" needs mqtt_username = \"common_name\": MQTT 3.1.1 allows no password without a username, and the token's subject is the CN")
			}
		default:
			l.errorf(key("mqtt_password"), "%q is not \"keep\" or \"token\"", v)
		}
	}
	if fa.MaxConnectBytes != nil {
		switch n := int64(*fa.MaxConnectBytes); {
		case n < minMaxConnectBytes:
			l.errorf(key("max_connect_bytes"), "must be at least 256 bytes, not %d", n)
		case n > maxMaxConnectBytes:
			l.errorf(key("max_connect_bytes"), "must be at most 1MiB: a device not yet admitted may make the gateway hold this much, not %d bytes", n)
		default:
			m.MaxConnectBytes = int(n)
		}
	}
}
