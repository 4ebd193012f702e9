package gateway

import (
	"strconv"
	"strings"
	"time"
)

// sessionCookie formats the Set-Cookie value that carries a session token:
// Domain is the host the device asked for (as Access sets it; browsers then
// also send it to subdomains, where it only admits applications whose AUD it
// carries), HttpOnly and Secure always, with the configured SameSite. maxAge 0 or less expires the cookie (logout).
func sessionCookie(name, value, domain, sameSite string, now time.Time, maxAge time.Duration) string {
	secs := int64(maxAge / time.Second)
	expires := now.Add(maxAge)
	if secs <= 0 {
		secs = 0
		expires = time.Unix(0, 0)
		value = ""
	}
	var b strings.Builder
	b.Grow(len(name) + len(value) + len(domain) + 128)
	b.WriteString(name)
	b.WriteByte('=')
	b.WriteString(value)
	b.WriteString("; Path=/; Domain=")
	b.WriteString(domain)
	b.WriteString("; Expires=")
	b.WriteString(expires.UTC().Format(httpTimeFormat))
	b.WriteString("; Max-Age=")
	b.WriteString(strconv.FormatInt(secs, 10))
	b.WriteString("; HttpOnly; Secure; SameSite=")
	b.WriteString(sameSiteAttr(sameSite))
	return b.String()
}

// httpTimeFormat is the IMF-fixdate cookies and HTTP dates use.
const httpTimeFormat = "Mon, 02 Jan 2006 15:04:05 GMT"

func sameSiteAttr(s string) string {
	switch strings.ToLower(s) {
	case "strict":
		return "Strict"
	case "none":
		return "None"
	}
	return "Lax"
}
