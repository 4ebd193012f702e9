package policy

import (
	"encoding/json"
	"strconv"
)

// appendJSON appends c as JSON to b, byte for byte what json.Marshal(c)
// writes (the same fields, order, omissions and escaping), without
// reflection: a token is minted for every admitted fresh request, and
// encoding/json's reflective walk was most of the mint's non-crypto cost.
// TestClaimsAppendJSON pins the equality against json.Marshal.
func (c *Claims) appendJSON(b []byte) []byte {
	b = append(b, `{"aud":`...)
	b = appendJSONStrings(b, c.Aud)
	b = append(b, `,"iss":`...)
	b = appendJSONString(b, c.Iss)
	b = append(b, `,"sub":`...)
	b = appendJSONString(b, c.Sub)
	b = append(b, `,"type":`...)
	b = appendJSONString(b, c.Type)
	b = append(b, `,"iat":`...)
	b = strconv.AppendInt(b, c.Iat, 10)
	b = append(b, `,"nbf":`...)
	b = strconv.AppendInt(b, c.Nbf, 10)
	b = append(b, `,"exp":`...)
	b = strconv.AppendInt(b, c.Exp, 10)
	b = append(b, `,"identity_nonce":`...)
	b = appendJSONString(b, c.IdentityNonce)
	b = appendJSONField(b, `,"common_name":`, c.CommonName)
	b = appendJSONField(b, `,"cert_sha256":`, c.CertSHA256)
	b = appendJSONField(b, `,"cert_serial":`, c.CertSerial)
	b = appendJSONField(b, `,"cert_issuer":`, c.CertIssuer)
	b = appendJSONField(b, `,"cert_root":`, c.CertRoot)
	b = appendJSONField(b, `,"service_token_name":`, c.ServiceTokenName)
	b = appendJSONField(b, `,"policy":`, c.Policy)
	b = appendJSONField(b, `,"email":`, c.Email)
	if len(c.Groups) > 0 {
		b = append(b, `,"groups":`...)
		b = appendJSONStrings(b, c.Groups)
	}
	b = appendJSONField(b, `,"group_set":`, c.GroupSet)
	b = appendJSONField(b, `,"idp":`, c.IdP)
	if c.AuthTime != 0 {
		b = append(b, `,"auth_time":`...)
		b = strconv.AppendInt(b, c.AuthTime, 10)
	}
	if c.Cnf != nil {
		b = append(b, `,"cnf":{"x5t#S256":`...)
		b = appendJSONString(b, c.Cnf.X5tS256)
		b = append(b, '}')
	}
	if c.NoDuration {
		b = append(b, `,"no_duration":true`...)
	}
	return append(b, '}')
}

// appendJSONField appends an omitempty string field: key (with its leading
// comma and colon) and value, or nothing when v is empty.
func appendJSONField(b []byte, key, v string) []byte {
	if v == "" {
		return b
	}
	return appendJSONString(append(b, key...), v)
}

// appendJSONStrings appends a []string as json.Marshal does (nil is null).
func appendJSONStrings(b []byte, ss []string) []byte {
	if ss == nil {
		return append(b, "null"...)
	}
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, s)
	}
	return append(b, ']')
}

// appendJSONString appends s as a JSON string. The claims are almost always
// printable ASCII that needs no escaping (names, hex, base64url, URLs), which
// is copied as is; anything else goes through encoding/json, so the escaping
// (control characters, HTML characters, U+2028, invalid UTF-8) is exactly
// json.Marshal's.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, err := json.Marshal(s)
			if err != nil { // unreachable: json.Marshal of a string never fails
				return append(b, `""`...)
			}
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
