package browsertest

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// DefaultChromium is where Debian's chromium package puts the browser's
// launcher; the CHROMIUM environment variable names another.
const DefaultChromium = "/usr/bin/chromium"

// DefaultTimeout bounds each helper call (a navigation, a wait, a click)
// when Options.Timeout is zero. It is a safety net for a test that would
// otherwise hang, not what a test measures.
const DefaultTimeout = 20 * time.Second

// startTimeout bounds the start of chromium, whatever Options.Timeout says:
// on a loaded machine the first start takes several seconds.
const startTimeout = time.Minute

// closeTimeout bounds the graceful close of a browser before it is killed.
const closeTimeout = 2 * time.Second

// Options configures one browser. The zero value is a browser without a
// client certificate that trusts no private CA.
type Options struct {
	// ClientCert is the certificate chromium presents when a server asks
	// for one: the leaf, then its intermediates, with the private key. It
	// is imported into the browser's NSS database with pk12util.
	ClientCert *tls.Certificate
	// ClientCertFile and ClientKeyFile are PEM files (the chain, then the
	// key), an alternative to ClientCert; both or neither.
	ClientCertFile, ClientKeyFile string
	// TrustedCAs are PEM data, each with one or more certificates, imported
	// as authorities trusted to identify servers, so that no certificate
	// error has to be bypassed.
	TrustedCAs [][]byte
	// HostRules is chromium's --host-resolver-rules, for example
	// "MAP *.fleet.test 127.0.0.1": test names resolve to loopback without
	// touching /etc/hosts. Empty: the system resolver.
	HostRules string
	// AutoSelect are the URL patterns of the AutoSelectCertificateForUrls
	// policy (for example "https://[*.]fleet.test" or
	// "https://portal.fleet.test:8443") for which chromium presents the
	// client certificate without asking; its filter is the certificate's
	// issuer CN. Empty with a client certificate: "*", every URL.
	//
	// Why it matters: when a server asks for a certificate and the NSS
	// database holds one, a URL outside these patterns makes chromium wait
	// for the user to pick one in a dialog that a headless browser never
	// shows, so the navigation hangs until the timeout. With no
	// certificate in the database chromium sends none at once.
	AutoSelect []string
	// AutoSelectVia says where the rules go: the profile's own preferences
	// (the default, no root) or the machine's managed policy folder.
	AutoSelectVia AutoSelectVia
	// NoAutoSelect writes no rule even with a client certificate.
	NoAutoSelect bool
	// Timeout bounds each helper call; zero means DefaultTimeout.
	Timeout time.Duration
	// Verbose copies chromium's own output to the test log.
	Verbose bool
}

// Browser is a headless chromium driven through the DevTools protocol,
// with its own temporary profile. It is closed when the test ends.
type Browser struct {
	tb      testing.TB
	ctx     context.Context // the tab; cancelled by Close
	cancel  func()
	home    string // temporary HOME, holding the profile and NSS database
	timeout time.Duration
	// policyFile is the managed policy file of AutoSelectVia
	// ManagedPolicy, "" otherwise.
	policyFile string
}

// PolicyFile returns the path of the managed policy file this browser's
// Start wrote (AutoSelectVia ManagedPolicy), "" when it wrote none. The
// file is removed when the test ends: a test can check that it is gone.
func (b *Browser) PolicyFile() string { return b.policyFile }

// Chromium returns the path of the browser to run: $CHROMIUM when set,
// else DefaultChromium; ok is false when it is not an executable file.
func Chromium() (path string, ok bool) {
	path = os.Getenv("CHROMIUM")
	if path == "" {
		path = DefaultChromium
	}
	fi, err := os.Stat(path)
	return path, err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// Start launches a headless chromium configured by opts and returns it. It
// skips the test when chromium is not installed, and fails it on any other
// error. Everything it creates (processes, profile, policy) is removed
// when the test ends.
func Start(tb testing.TB, opts Options) *Browser {
	tb.Helper()
	exe, ok := Chromium()
	if !ok {
		tb.Skipf("browsertest: no chromium at %s: install the Debian packages chromium and libnss3-tools (`apt-get install chromium libnss3-tools`), or set CHROMIUM to a chromium binary", exe)
	}
	clientCert, err := opts.clientCert()
	if err != nil {
		tb.Fatal(err)
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}

	// One temporary folder is HOME (where chromium finds ~/.pki/nssdb) and
	// holds the profile: nothing of the machine's user is read or changed.
	home := tb.TempDir()
	dataDir := filepath.Join(home, "profile")
	policyFile := ""
	clearStalePolicies(tb)
	db, err := newNSSDB(home)
	if err != nil {
		tb.Fatal(err)
	}
	for i, ca := range opts.TrustedCAs {
		if err := db.trustCA(ca, fmt.Sprintf("browsertest CA %d", i)); err != nil {
			tb.Fatal(err)
		}
	}
	if clientCert != nil {
		if err := db.importClient(*clientCert, "browsertest client"); err != nil {
			tb.Fatal(err)
		}
		if !opts.NoAutoSelect {
			if policyFile, err = autoSelect(tb, opts.AutoSelectVia, dataDir, clientCert, opts.AutoSelect); err != nil {
				tb.Fatal(err)
			}
		}
	}

	allocOpts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe),
		chromedp.UserDataDir(dataDir),
		chromedp.Env("HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, ".config"), "XDG_CACHE_HOME="+filepath.Join(home, ".cache")),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Headless,
		chromedp.DisableGPU,
		// Without these, chromium reaches for Google's services (updates,
		// sync, metrics, safe browsing) at start and keeps logging refused
		// connections on a machine that cannot reach them.
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-breakpad", true),
		chromedp.Flag("disable-domain-reliability", true),
		chromedp.Flag("no-pings", true),
		chromedp.Flag("metrics-recording-only", true),
		chromedp.Flag("disable-client-side-phishing-detection", true),
		chromedp.Flag("safebrowsing-disable-auto-update", true),
		// QUIC would try UDP to the test server first.
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("password-store", "basic"),
		chromedp.Flag("use-mock-keychain", true),
		chromedp.Flag("enable-automation", true),
	}
	if os.Geteuid() == 0 {
		// chromium refuses to run its sandbox as root.
		allocOpts = append(allocOpts, chromedp.NoSandbox)
	}
	if opts.HostRules != "" {
		allocOpts = append(allocOpts, chromedp.Flag("host-resolver-rules", opts.HostRules))
	}
	logs := &logWriter{tb: tb}
	if opts.Verbose {
		allocOpts = append(allocOpts, chromedp.CombinedOutput(logs))
	}

	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), allocOpts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx)
	b := &Browser{tb: tb, ctx: ctx, home: home, timeout: timeout, policyFile: policyFile}
	b.cancel = func() {
		// Browser.close first, so chromium ends its children itself;
		// cancelling the contexts then kills a browser that did not close
		// in time (a tab stuck on a certificate dialog) and waits for it to
		// exit, and killLeftovers ends any child that outlived it.
		closed := make(chan struct{})
		go func() {
			_ = chromedp.Cancel(ctx)
			close(closed)
		}()
		select {
		case <-closed:
		case <-time.After(closeTimeout):
		}
		cancelTab()
		cancelAlloc()
		killLeftovers(home)
		logs.stop()
	}
	tb.Cleanup(b.Close)
	// The first Do starts the browser and binds it to the context it gets,
	// so that context has no deadline; a timer bounds the start instead.
	stuck := time.AfterFunc(startTimeout, cancelTab)
	err = chromedp.Do(ctx)
	if !stuck.Stop() {
		err = fmt.Errorf("no answer within %v (%v)", startTimeout, err)
	}
	if err != nil {
		tb.Fatalf("browsertest: start %s: %v", exe, err)
	}
	return b
}

// Close stops the browser and every process it started. It is safe to call
// more than once; Start registers it with the test's Cleanup.
func (b *Browser) Close() {
	if b.cancel != nil {
		b.cancel()
		b.cancel = nil
	}
}

// clientCert returns the configured client certificate, nil for none.
func (o *Options) clientCert() (*tls.Certificate, error) {
	switch {
	case o.ClientCert != nil && (o.ClientCertFile != "" || o.ClientKeyFile != ""):
		return nil, fmt.Errorf("browsertest: both ClientCert and ClientCertFile/ClientKeyFile are set")
	case o.ClientCert != nil:
		return o.ClientCert, nil
	case o.ClientCertFile == "" && o.ClientKeyFile == "":
		return nil, nil
	case o.ClientCertFile == "" || o.ClientKeyFile == "":
		return nil, fmt.Errorf("browsertest: ClientCertFile and ClientKeyFile go together (got %q and %q)", o.ClientCertFile, o.ClientKeyFile)
	}
	c, err := tls.LoadX509KeyPair(o.ClientCertFile, o.ClientKeyFile)
	if err != nil {
		return nil, fmt.Errorf("browsertest: client certificate %s, %s: %w", o.ClientCertFile, o.ClientKeyFile, err)
	}
	return &c, nil
}

// logWriter copies chromium's output to the test log until stop: a test
// may not log once it has ended, and the copy runs in chromedp's goroutine.
type logWriter struct {
	mu      sync.Mutex
	tb      testing.TB
	stopped bool
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopped {
		w.tb.Logf("chromium: %s", bytes.TrimRight(p, "\n"))
	}
	return len(p), nil
}

func (w *logWriter) stop() {
	w.mu.Lock()
	w.stopped = true
	w.mu.Unlock()
}
