package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"
)

// cmdTokenService creates a service token: a new client id and secret,
// printed once, and the [[service_tokens]] block to paste, which holds only
// the secret's SHA-256.
func cmdTokenService(args []string, now time.Time, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("token service", flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("name", "", "the token's `name`, as { service_token = \"NAME\" } selects it (required)")
	life := fs.Duration("duration", 365*24*time.Hour, "how long the token is valid (`duration`, Go units); 0: no expiry")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: fleetgate token service -name NAME [-duration 8760h]\n\nPrints a new client id and secret (shown once: store the secret now) and the\n[[service_tokens]] block for the configuration, which holds only the secret's SHA-256.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return parseExit(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "fleetgate token service: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *name == "" {
		fs.Usage()
		return 2
	}
	// The name goes into a TOML basic string: UTF-8 without quotes,
	// backslashes or control characters.
	if !utf8.ValidString(*name) || strings.ContainsAny(*name, "\"\\") || strings.IndexFunc(*name, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0 {
		fmt.Fprintln(stderr, "fleetgate token service: -name must be UTF-8 without quotes, backslashes or control characters")
		return 2
	}
	if *life < 0 {
		fmt.Fprintln(stderr, "fleetgate token service: -duration must not be negative")
		return 2
	}
	var id [16]byte
	var secret [32]byte
	_, _ = rand.Read(id[:]) // crypto/rand never fails (Go 1.24+)
	_, _ = rand.Read(secret[:])
	clientID := hex.EncodeToString(id[:]) + ".access"
	clientSecret := hex.EncodeToString(secret[:])
	sum := sha256.Sum256([]byte(clientSecret))
	fmt.Fprintf(stdout, "CF-Access-Client-Id: %s\nCF-Access-Client-Secret: %s\n\n", clientID, clientSecret)
	fmt.Fprintf(stdout, "# The secret above is shown once: store it now. The configuration keeps only its SHA-256.\n")
	fmt.Fprintf(stdout, "[[service_tokens]]\nname = \"%s\"\nclient_id = \"%s\"\nclient_secret_sha256 = \"%s\"\n", *name, clientID, hex.EncodeToString(sum[:]))
	if *life > 0 {
		fmt.Fprintf(stdout, "expires = \"%s\"\n", now.Add(*life).UTC().Truncate(time.Second).Format(time.RFC3339))
	}
	return 0
}
