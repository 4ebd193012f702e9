package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/fleetgate/fleetgate/configs"
)

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("c", "", "configuration `file` to check (required)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: fleetgate check -c FILE\n\nPrints every error and warning in FILE; exits 1 when it has errors.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return parseExit(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "fleetgate check: unexpected argument %q (the configuration file goes after -c)\n", fs.Arg(0))
		return 2
	}
	if *file == "" {
		fs.Usage()
		return 2
	}
	cfg, err := loadOptions.Load(*file)
	if err != nil {
		var list *configs.Errors
		if errors.As(err, &list) {
			fmt.Fprintln(stderr, list.Error())
		} else {
			fmt.Fprintln(stderr, err)
		}
		return 1
	}
	for _, w := range cfg.Warnings {
		fmt.Fprintln(stderr, "warning:", w.String())
	}
	fmt.Fprintf(stdout, "%s: ok: %d applications, %d client CAs, %d warnings (sha256 %.12s)\n",
		*file, len(cfg.Applications), len(cfg.ClientCAs), len(cfg.Warnings), cfg.Hash)
	return 0
}

// loadOptions is how serve and check read a file: a missing
// signing_key_file is allowed (with a warning), the gateway then signs with
// a key generated at start.
var loadOptions = configs.Options{AllowEphemeralKey: true}
