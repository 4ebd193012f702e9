package gateway

import (
	"bytes"
	"testing"
)

// TestPipeKeepsSmallBuffer: a drained pipe keeps a request's worth of
// buffer for the next one (a keep-alive device's next request costs no
// allocation) and lets a large burst's buffer go; the bytes read are the
// bytes pushed, in order, either way.
func TestPipeKeepsSmallBuffer(t *testing.T) {
	p := newPlainPipe(1 << 20)
	read := func(want []byte, chunk int) {
		t.Helper()
		var got []byte
		b := make([]byte, chunk)
		for len(got) < len(want) {
			n, err := p.Read(b)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			got = append(got, b[:n]...)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("read %q; want %q", got, want)
		}
	}
	small := []byte("GET / HTTP/1.1\r\nHost: app.fleet.test\r\n\r\n")
	if _, err := p.push(small); err != nil {
		t.Fatal(err)
	}
	read(small, 4096)
	if len(p.buf) != 0 || cap(p.buf) == 0 || cap(p.buf) > pipeKeep {
		t.Fatalf("after a small request: len %d cap %d; want an empty buffer kept (cap 1–%d)", len(p.buf), cap(p.buf), pipeKeep)
	}
	kept := &p.buf[:1][0]
	if _, err := p.push(small); err != nil {
		t.Fatal(err)
	}
	if &p.buf[0] != kept {
		t.Fatal("the next request's bytes went to a new buffer, not the one kept")
	}
	read(small, 7) // in pieces: what is left moves up
	large := bytes.Repeat([]byte("x"), 4*pipeKeep)
	if _, err := p.push(large); err != nil {
		t.Fatal(err)
	}
	read(large, 64<<10)
	if p.buf != nil {
		t.Fatalf("after a large burst the pipe keeps %d bytes of buffer; want none", cap(p.buf))
	}
}
