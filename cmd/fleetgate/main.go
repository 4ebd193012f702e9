// Command fleetgate is the mutual-TLS access gateway for device fleets.
//
//	fleetgate serve [-c FILE]      run the gateway (the demo when no file is given)
//	fleetgate check -c FILE        validate a configuration file
//	fleetgate pki [flags]          make a CA, an intermediate, server and device certificates
//	fleetgate token verify ...     verify a token against a JWKS
//	fleetgate token service ...    create a service token (client id and secret)
//	fleetgate bench [flags]        load a server with a simulated fleet
//	fleetgate version              print the version
package main

import (
	"fmt"
	"io"
	"os"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

const usage = `fleetgate — a mutual-TLS access gateway for device fleets

Usage:
  fleetgate serve [-c FILE]        run the gateway; without -c, the embedded demo
  fleetgate check -c FILE          print every configuration error (exit 1) or a summary
  fleetgate pki [flags]            make a root CA, an intermediate, server and device certificates
  fleetgate token verify [flags] TOKEN
                                   verify a token against a JWKS and print its claims
  fleetgate token service -name NAME
                                   create a service token: its id and secret, once, and the TOML block
  fleetgate bench [flags]          simulate a fleet of mTLS devices against a server (load test)
  fleetgate version                print the version

Run "fleetgate COMMAND -h" for the flags of a command.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches a command line and returns the process exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return cmdServe(rest, stdout, stderr)
	case "check":
		return cmdCheck(rest, stdout, stderr)
	case "pki":
		return cmdPKI(rest, stdout, stderr)
	case "token":
		return cmdToken(rest, stdout, stderr)
	case "bench":
		return cmdBench(rest, stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintf(stdout, "fleetgate %s\n", version)
		return 0
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "fleetgate: unknown command %q\n\n%s", cmd, usage)
	return 2
}
