package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/fleetgate/fleetgate/configs"
	"github.com/fleetgate/fleetgate/gateway"
	"github.com/fleetgate/fleetgate/internal/demo"
	"github.com/fleetgate/fleetgate/internal/oidcop"
)

func cmdServe(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("c", "", "configuration `file` (TOML); without it, the embedded demo runs")
	demoDir := fs.String("demo-dir", "demo", "`folder` for the demo PKI, created on first start (used without -c)")
	listen := fs.String("listen", "", "override [gateway].listen (`host:port`)")
	adminListen := fs.String("admin-listen", "-", "override [gateway].admin_listen (`host:port`; \"\" disables)")
	logFormat := fs.String("log-format", "json", "log format: json or text")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: fleetgate serve [-c FILE]\n\nRuns the gateway. SIGHUP reloads the file; SIGTERM or SIGINT drains and exits (a second one stops at once, exit 1).\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return parseExit(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "fleetgate serve: unexpected argument %q (the configuration file goes after -c)\n", fs.Arg(0))
		return 2
	}
	// The overrides replace keys that have been validated: they are
	// checked as those keys are, and refused as a usage error.
	for _, o := range []struct{ flag, value string }{{"-listen", *listen}, {"-admin-listen", *adminListen}} {
		if o.value == "" || o.value == "-" && o.flag == "-admin-listen" {
			continue
		}
		if err := configs.CheckListen(o.value); err != nil {
			fmt.Fprintf(stderr, "fleetgate serve: %s: %v\n", o.flag, err)
			return 2
		}
	}
	logger, err := newLogger(stderr, *logFormat, *logLevel)
	if err != nil {
		fmt.Fprintln(stderr, "fleetgate:", err)
		return 2
	}
	// A SIGHUP while the gateway starts (a deployment tool reloading the
	// service it has just started) must not end the process, as Go's
	// default action would: it waits, and reloads once the gateway runs.
	// SIGTERM and SIGINT keep their default until then: a start that hangs
	// can still be stopped.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP)
	defer signal.Stop(sigs)

	load := func() (*configs.Config, error) { return loadOptions.Load(*file) }
	if *file == "" {
		dir := *demoDir
		created, err := demo.Prepare(dir)
		if err != nil {
			fmt.Fprintln(stderr, "fleetgate: demo:", err)
			return 1
		}
		abs, _ := filepath.Abs(dir)
		if created {
			fmt.Fprintf(stdout, "fleetgate: created the demo PKI, token key and identity provider secret in %s\n", abs)
		} else {
			fmt.Fprintf(stdout, "fleetgate: using the demo PKI in %s\n", abs)
		}
		load = func() (*configs.Config, error) {
			cfg, err := configs.Parse("demo.toml", configs.Demo(), dir)
			if err != nil {
				return nil, err
			}
			// The gateway reaches the demo IdP on loopback whatever
			// /etc/hosts says (as curl's --resolve), so that the curl
			// steps work without a hosts line; the browser needs one.
			for i := range cfg.IdentityProviders {
				if cfg.IdentityProviders[i].Name == configs.DemoIdP {
					cfg.IdentityProviders[i].Resolve = configs.DemoIdPListen
				}
			}
			return cfg, nil
		}
		origin, err := demo.StartOrigin(strings.TrimPrefix(configs.DemoOrigin, "http://"))
		if err != nil {
			fmt.Fprintln(stderr, "fleetgate: demo origin:", err)
			return 1
		}
		defer origin.Close()
		fmt.Fprintf(stdout, "fleetgate: demo echo origin on %s\n", configs.DemoOrigin)
		// The broker's own log: warnings and errors only, in the gateway's format.
		brokerLog, _ := newLogger(stderr, *logFormat, "warn")
		broker, err := demo.StartBroker(strings.TrimPrefix(configs.DemoMQTTOrigin, "tcp://"), brokerLog.With("component", "demo mqtt broker"))
		if err != nil {
			fmt.Fprintln(stderr, "fleetgate:", err)
			return 1
		}
		defer func() {
			if err := demo.CloseBroker(broker, 5*time.Second); err != nil {
				fmt.Fprintln(stderr, "fleetgate:", err)
			}
		}()
		fmt.Fprintf(stdout, "fleetgate: demo mqtt broker (mochi-mqtt, admits every client) on %s\n", configs.DemoMQTTOrigin)
	}

	loadFile := load
	load = func() (*configs.Config, error) {
		cfg, err := loadFile()
		if err != nil {
			return nil, err
		}
		if *listen != "" {
			cfg.Gateway.Listen = *listen
		}
		if *adminListen != "-" {
			cfg.Gateway.AdminListen = *adminListen
		}
		return cfg, nil
	}
	srv, err := gateway.New(gateway.Options{Load: load, Logger: logger, TuneRuntime: true})
	if err != nil {
		fmt.Fprintln(stderr, "fleetgate:", err)
		return 1
	}
	if *file == "" {
		// The demo IdP registers the console's callback on the port the
		// gateway listens on, so it starts once that is known.
		idpLog, _ := newLogger(stderr, *logFormat, "warn")
		idp, err := demo.StartIdP(*demoDir, configs.DemoIdPListen, demo.CallbackURL(srv.Addr()), idpLog.With("component", "demo identity provider"))
		if err != nil {
			fmt.Fprintln(stderr, "fleetgate:", err)
			return 1
		}
		defer idp.Close()
		fmt.Fprintf(stdout, "fleetgate: demo identity provider (zitadel/oidc, user %s) at %s on %s; its client secret is in %s\n",
			oidcop.DemoEmail, configs.DemoIdPIssuer, configs.DemoIdPListen, filepath.Join(*demoDir, configs.DemoIdPSecret))
		printSteps(stdout, *demoDir, srv.Addr())
	}

	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	runErr := make(chan error, 1)
	go func() { runErr <- srv.Run() }()
	for {
		select {
		case err := <-runErr:
			if err != nil {
				fmt.Fprintln(stderr, "fleetgate:", err)
				return 1
			}
			return 0
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				_ = srv.Reload() // errors are logged; the old configuration keeps serving
				continue
			}
			logger.Info("draining", "signal", sig.String())
			ctx, cancel := context.WithTimeout(context.Background(), srv.DrainTimeout())
			// A second SIGTERM or SIGINT ends the drain at once, as with
			// nginx's fast shutdown: requests still in flight are cut.
			forced := make(chan bool, 1)
			drained := make(chan struct{})
			go func() {
				for {
					select {
					case sig := <-sigs:
						if sig != syscall.SIGHUP {
							logger.Warn("second signal: stopping without waiting for requests in flight", "signal", sig.String())
							forced <- true
							cancel()
							return
						}
					case <-drained:
						return
					}
				}
			}()
			err := srv.Shutdown(ctx)
			close(drained)
			cancel()
			if err != nil {
				logger.Warn("shutdown", "err", err.Error())
			}
			// Run may also have failed on its own while the signal came:
			// that is still a failure.
			if err := <-runErr; err != nil {
				fmt.Fprintln(stderr, "fleetgate:", err)
				return 1
			}
			logger.Info("stopped")
			select {
			case <-forced:
				return 1
			default:
				return 0
			}
		}
	}
}

func printSteps(w io.Writer, dir, listen string) {
	fmt.Fprintf(w, "\nTry it (each command prints the HTTP status):\n\n")
	for _, s := range demo.Steps(dir, listen) {
		fmt.Fprintf(w, "# %s\n%s\n\n", s.Title, s.Cmd)
	}
	fmt.Fprintf(w, "MQTT on %s: mosquitto_pub and mosquitto_sub come with `apt-get install mosquitto-clients`.\n", configs.DemoMQTTDomain)
	fmt.Fprintf(w, "They connect to the name they are given and send it as SNI (there is no --resolve): first add\n")
	fmt.Fprintf(w, "this line to /etc/hosts:\n\n    %s\n\n", demo.MQTTHostsLine(listen))
	for _, s := range demo.MQTTSteps(dir, listen) {
		fmt.Fprintf(w, "# %s\n%s\n", s.Title, s.Cmd)
		for _, l := range s.Output {
			fmt.Fprintf(w, "#   %s\n", l)
		}
		fmt.Fprintln(w)
	}
	printConsole(w, dir, listen)
}

// printConsole prints how to log in to console.fleet.test with a browser.
func printConsole(w io.Writer, dir, listen string) {
	c := demo.Console(dir, listen)
	fmt.Fprintf(w, "People on %s: log in at the demo IdP, with the laptop's certificate as the second factor.\n\n", configs.DemoConsoleDomain)
	fmt.Fprintf(w, "1. A browser resolves both names itself: add to /etc/hosts\n\n")
	for _, l := range c.HostsLines {
		fmt.Fprintf(w, "    %s\n", l)
	}
	fmt.Fprintf(w, "\n2. Import the demo root CA and the laptop's certificate (%s, password %s).\n", filepath.Join(dir, demo.LaptopP12), demo.LaptopP12Password)
	fmt.Fprintf(w, "   Chromium or Chrome on Linux (certutil and pk12util: apt-get install libnss3-tools):\n\n")
	for _, cmd := range c.Chromium {
		fmt.Fprintf(w, "    %s\n", cmd)
	}
	fmt.Fprintf(w, "\n   Firefox: %s.\n", c.Firefox)
	fmt.Fprintf(w, "\n3. Open %s, choose the certificate %q when asked, and log in as\n", c.URL, demo.Laptop)
	fmt.Fprintf(w, "   user %s, password %s: the demo origin shows the request and the token's claims.\n\n", c.User, c.Password)
	fmt.Fprintf(w, "# %s\n%s\n#   %s…\n\n", c.Redirect.Title, c.Redirect.Cmd, c.RedirectPrefix)
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("bad -log-level %q", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("bad -log-format %q (json or text)", format)
}
