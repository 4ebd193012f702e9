package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/fleetgate/fleetgate/configs"
	"github.com/fleetgate/fleetgate/policy"
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
			for _, w := range list.Warnings {
				fmt.Fprintln(stderr, "warning:", w.String())
			}
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
	for _, line := range policyReport(cfg) {
		fmt.Fprintln(stdout, line)
	}
	return 0
}

// policyReport describes, per application, the selectors its policies use
// and the lists they consult with their sizes, then every list and the
// service tokens:
//
//	application "telemetry" (http, devices.fleet.test): selectors common_name, list; lists quarantine (2 entries)
//	list "quarantine": common_name, 2 entries (lists/quarantine.txt)
func policyReport(cfg *configs.Config) []string {
	sizes := map[string]int{}
	for i := range cfg.Lists {
		sizes[cfg.Lists[i].Name] = cfg.Lists[i].Len()
	}
	var out []string
	for i := range cfg.Applications {
		a := &cfg.Applications[i]
		keys, lists := map[string]bool{}, map[string]bool{}
		for j := range a.Policies {
			p := &a.Policies[j]
			for _, rule := range [][]policy.Selector{p.Include, p.Require, p.Exclude} {
				for _, sel := range rule {
					keys[sel.Key()] = true
					if l, ok := sel.(interface{ ListName() string }); ok {
						lists[l.ListName()] = true
					}
				}
			}
		}
		line := fmt.Sprintf("application %q (%s, %s): selectors %s", a.Name, a.Protocol, a.Domain, joinOr(sortedKeys(keys), "none"))
		if len(lists) > 0 {
			var ls []string
			for _, name := range sortedKeys(lists) {
				ls = append(ls, fmt.Sprintf("%s (%d entries)", name, sizes[name]))
			}
			line += "; lists " + strings.Join(ls, ", ")
		}
		out = append(out, line)
	}
	for i := range cfg.Lists {
		l := &cfg.Lists[i]
		from := "inline values"
		if l.File != "" {
			from = l.File
		}
		out = append(out, fmt.Sprintf("list %q: %s, %d entries (%s)", l.Name, l.Kind, l.Len(), from))
	}
	if n := len(cfg.ServiceTokens); n > 0 {
		out = append(out, fmt.Sprintf("service tokens: %d", n))
	}
	return out
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func joinOr(s []string, none string) string {
	if len(s) == 0 {
		return none
	}
	return strings.Join(s, ", ")
}

// loadOptions is how serve and check read a file: a missing
// signing_key_file is allowed (with a warning), the gateway then signs with
// a key generated at start.
var loadOptions = configs.Options{AllowEphemeralKey: true}
