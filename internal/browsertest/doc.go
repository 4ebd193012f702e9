// Package browsertest drives Debian's headless chromium from Go tests with
// github.com/chromedp/chromedp, presenting a client certificate the way an
// operator's laptop does. It is imported by tests only.
//
//	laptop := inter.MustIssue(pki.Device("laptop-0042")).TLSCertificate(inter)
//	b := browsertest.Start(t, browsertest.Options{
//		ClientCert: &laptop,
//		TrustedCAs: [][]byte{root.CertPEM()},
//		HostRules:  "MAP *.fleet.test 127.0.0.1",
//		AutoSelect: []string{"https://[*.]fleet.test"},
//	})
//	b.Navigate("https://console.fleet.test:" + port + "/")
//	b.Fill("#username", "ops@fleet.test")
//	b.Click("#submit")
//	b.WaitURL("https://console.fleet.test:" + port + "/")
//	session := b.Cookie("https://console.fleet.test:"+port+"/", "CF_Authorization")
//
// What Start sets up, each in a temporary folder of the test:
//
//	HOME/.pki/nssdb      NSS database (certutil -N, no password) where chromium
//	                     on Linux finds certificates:
//	                       client chain + key  openssl pkcs12 -export → pk12util -i
//	                       trusted CAs         certutil -A -t "C,," (servers: no
//	                                           certificate error to bypass)
//	HOME/profile         --user-data-dir; Default/Preferences holds the
//	                     auto_select_certificate content setting, the one the
//	                     AutoSelectCertificateForUrls policy fills (or, with
//	                     AutoSelectVia ManagedPolicy, a file in
//	                     /etc/chromium/policies/managed, removed at the end)
//	chromium             --headless --no-sandbox (as root) --disable-quic
//	                     --host-resolver-rules=… and no background networking
//
// A test is skipped only when chromium is not installed ($CHROMIUM, or
// /usr/bin/chromium from the Debian package chromium); any other failure,
// a missing certutil or pk12util (libnss3-tools) included, fails it. When
// the test ends the browser is closed and every process it started is
// gone: its children are found by the temporary folder in their command
// line. Orphaned children that have exited may show as <defunct> until
// init reaps them.
package browsertest
