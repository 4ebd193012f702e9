package main

import (
	"errors"
	"flag"
)

// parseExit is the exit code of a command whose flags failed to parse: 0 for
// -h / --help (the usage was asked for and printed), 2 for a usage error.
func parseExit(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 2
}
