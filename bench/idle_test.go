package bench

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// A few idle connections to the in-process gateway: all stay open, and the
// RSS figures are read (their difference is not asserted: it is a
// measurement, and this process's RSS moves for many reasons).
func TestMeasureIdle(t *testing.T) {
	f := newFixture(t)
	addr := startGateway(t, f)
	o := f.options(t, addr, "app.fleet.test", ModeKeepalive)
	res, err := MeasureIdle(context.Background(), IdleOptions{Run: o, N: 20, PID: os.Getpid(), PerSource: 7, Settle: time.Millisecond, Label: "fleetgate"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Open != 20 || len(res.Errors) != 0 {
		t.Errorf("open %d of 20, errors %v", res.Open, res.Errors)
	}
	if res.RSSBefore <= 0 || res.RSSAfter <= 0 {
		t.Errorf("RSS before %d, after %d", res.RSSBefore, res.RSSAfter)
	}
	var b strings.Builder
	if err := res.WriteText(&b); err != nil || !strings.Contains(b.String(), "20 of 20 open") {
		t.Errorf("text: %q, %v", b.String(), err)
	}
}

// On a no-duration application the gateway closes after the request: the
// connections cannot idle, and the result says why.
func TestMeasureIdleServerCloses(t *testing.T) {
	f := newFixture(t)
	addr := startGateway(t, f)
	o := f.options(t, addr, "devices.fleet.test", ModeKeepalive)
	res, err := MeasureIdle(context.Background(), IdleOptions{Run: o, N: 5, PID: os.Getpid(), Settle: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Open != 0 || res.Errors["server_closed"] != 5 {
		t.Errorf("open %d, errors %v; want 5 × server_closed", res.Open, res.Errors)
	}
}
