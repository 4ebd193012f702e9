package gateway

import (
	"errors"
	"io"
	"testing"
	"time"
)

// TestRelayListReloadBeforeIndex: a list reload that lands between a tcp
// relay's admission (the handshake) and its entry in the live index, where
// the reload's re-evaluation cannot see it, still closes it with reason
// policy: the relay decides again with the newest lists once indexed.
func TestRelayListReloadBeforeIndex(t *testing.T) {
	s := sharedSelPKI()
	o := startTCPOrigin(t, echoHandler)
	h, _, _ := newSelHarness(t, "", func(c *fileConfig, e selEnv) {
		a := e.app("tcp-late", "tcp-late.sel.fleet.test", policySection{Name: "devices", Decision: "allow",
			Include: []selector{{"valid_certificate": true}}, Exclude: []selector{{"list": "quarantine"}}})
		a.Protocol, a.Origin = "tcp", o.url()
		c.Applications = append(c.Applications, a)
		c.ClientCAs = append(c.ClientCAs, clientCASection{Name: "sel-late", PEMFile: "ca-chain.pem", AssociatedHostnames: []string{"tcp-late.sel.fleet.test"}})
	})
	f := &tcpFixture{harness: h.harness}
	reloaded := make(chan error, 1)
	hook := func() {
		h.srv.testBeforeRelayAdd.Store(nil) // once
		h.writeSel("quarantine.txt", []byte("meter-0017\n"))
		go func() { reloaded <- h.srv.Reload() }()
		select {
		case err := <-reloaded:
			reloaded <- err
		case <-time.After(10 * time.Second):
			reloaded <- errors.New("the reload did not finish")
		}
	}
	h.srv.testBeforeRelayAdd.Store(&hook)
	c, err := f.dialTCP(t, "tcp-late.sel.fleet.test", s.meter)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "ping")
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, err := io.ReadFull(c, make([]byte, 4))
	select {
	case rerr := <-reloaded:
		if rerr != nil {
			t.Fatalf("reload: %v", rerr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the relay never reached the index")
	}
	if err == nil {
		t.Fatalf("the device quarantined before its relay was indexed was relayed (%d bytes)", n)
	}
	f.closeLine(t, "tcp-late", closePolicy)
}
