package tlsengine

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/tlsengine/enginetest"
)

// onLoop runs f on the loop and waits for it.
func onLoop(t *testing.T, loop *enginetest.Loop, f func()) {
	t.Helper()
	done := make(chan struct{})
	if !loop.Post(func() { f(); close(done) }) {
		t.Fatal("loop stopped")
	}
	if !closedWithin(done, 10*time.Second) {
		t.Fatal("loop task did not run")
	}
}

// deviceReads returns a check that the device reads exactly want next.
func deviceReads(t *testing.T, client net.Conn) func(want string) {
	return func(want string) {
		t.Helper()
		_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
		got := make([]byte, len(want))
		if _, err := io.ReadFull(client, got); err != nil {
			t.Fatalf("reading %q: %v", want, err)
		}
		if string(got) != want {
			t.Fatalf("read %q, want %q", got, want)
		}
	}
}

// TestWriteLoop: on the loop, WriteLoop's records go out in one direct
// write; behind a queued AsyncWrite they queue too, so the device reads
// every record in order (an overtaking record would fail its MAC check).
func TestWriteLoop(t *testing.T) {
	e, loop, f := memEngine(t, nil)
	mt, client := memHandshake(t, e, loop, f.client(teDevices, &f.deviceTLS))
	read := deviceReads(t, client)

	before := mt.DirectWrites()
	onLoop(t, mt.Loop(), func() {
		if n, err := mt.conn.WriteLoop([]byte("direct")); n != 6 || err != nil {
			t.Errorf("WriteLoop = %d, %v", n, err)
		}
	})
	read("direct")
	if got := mt.DirectWrites() - before; got != 1 {
		t.Fatalf("%d direct writes for one WriteLoop, want 1", got)
	}

	// A record queued by Write (from any goroutine) has not run yet when
	// WriteLoop comes on the loop: WriteLoop must queue behind it.
	before = mt.DirectWrites()
	onLoop(t, mt.Loop(), func() {
		if _, err := mt.conn.Write([]byte("first,")); err != nil {
			t.Errorf("Write: %v", err)
		}
		if _, err := mt.conn.WriteLoop([]byte("second")); err != nil {
			t.Errorf("WriteLoop: %v", err)
		}
	})
	read("first,second")
	if got := mt.DirectWrites() - before; got != 0 {
		t.Fatalf("WriteLoop wrote directly (%d) ahead of a queued AsyncWrite", got)
	}

	// Once the queue has run, the direct path is back; a large write is
	// several records in that one write.
	big := make([]byte, 40<<10)
	for i := range big {
		big[i] = byte('a' + i%26)
	}
	before = mt.DirectWrites()
	onLoop(t, mt.Loop(), func() {
		if n, err := mt.conn.WriteLoop(big); n != len(big) || err != nil {
			t.Errorf("WriteLoop(40 KiB) = %d, %v", n, err)
		}
	})
	read(string(big))
	if got := mt.DirectWrites() - before; got != 1 {
		t.Fatalf("%d direct writes for a 40 KiB WriteLoop, want 1", got)
	}
	if v := mt.Violations(); len(v) > 0 {
		t.Fatalf("transport contract: %v", v)
	}

	// Closed: refused.
	_ = mt.conn.Close()
	onLoop(t, mt.Loop(), func() {
		if _, err := mt.conn.WriteLoop([]byte("late")); err == nil {
			t.Error("WriteLoop after Close succeeded")
		}
	})
}

// TestFlushOnLoopBehindQueued: FlushOnLoop writes corked records directly
// only when nothing of the connection is still queued on the loop; behind a
// queued AsyncWrite (a cork that overflowed, a KeyUpdate answered) they
// queue too, so the device reads every record in order.
func TestFlushOnLoopBehindQueued(t *testing.T) {
	e, loop, f := memEngine(t, nil)
	mt, client := memHandshake(t, e, loop, f.client(teDevices, &f.deviceTLS))
	read := deviceReads(t, client)
	before := mt.DirectWrites()
	onLoop(t, mt.Loop(), func() {
		if _, err := mt.conn.Write([]byte("first,")); err != nil { // queued, not run yet
			t.Errorf("Write: %v", err)
		}
		mt.conn.Cork()
		if _, err := mt.conn.Write([]byte("second")); err != nil {
			t.Errorf("corked Write: %v", err)
		}
		if err := mt.conn.FlushOnLoop(); err != nil {
			t.Errorf("FlushOnLoop: %v", err)
		}
	})
	read("first,second")
	if got := mt.DirectWrites() - before; got != 0 {
		t.Fatalf("FlushOnLoop wrote directly (%d) ahead of a queued AsyncWrite", got)
	}
	// With the queue run, the direct write is back.
	before = mt.DirectWrites()
	onLoop(t, mt.Loop(), func() {
		mt.conn.Cork()
		if _, err := mt.conn.Write([]byte("third")); err != nil {
			t.Errorf("corked Write: %v", err)
		}
		if err := mt.conn.FlushOnLoop(); err != nil {
			t.Errorf("FlushOnLoop: %v", err)
		}
	})
	read("third")
	if got := mt.DirectWrites() - before; got != 1 {
		t.Fatalf("%d direct writes for one FlushOnLoop, want 1", got)
	}
	if v := mt.Violations(); len(v) > 0 {
		t.Fatalf("transport contract: %v", v)
	}
}
