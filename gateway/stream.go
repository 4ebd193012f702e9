package gateway

// Origin response bodies on their way to the device.
//
// The origin client streams (fasthttp's StreamResponseBody): Do returns once
// the origin's header is read. Before the response goes out, settleBody reads
// up to streamPrefix bytes of the body:
//
//   - a body that ends within them is sent whole, with a Content-Length, and
//     an origin that fails within them (closes mid-body, times out) still
//     gets the device a clean 502 or 504;
//   - a longer body is copied to the device piece by piece as it arrives
//     (writeStreamed), never held whole: memory per response is one
//     streamPrefix buffer plus what the backpressure of tlsWriter allows.
//
// max_response_bytes is enforced on both paths: a declared Content-Length
// or a prefix over it answers 502; a stream that passes it later is cut.
// Once the header is out the status cannot change, so any failure mid-stream
// (origin error, limit, a device that stopped reading) cuts the connection:
// the device sees fewer bytes than announced, or no final chunk.

import (
	"bufio"
	"errors"
	"io"
	"strconv"
	"strings"
	"sync"

	"github.com/valyala/fasthttp"
)

const (
	// streamPrefix is the most of an origin body read before the response
	// starts, and the size of the buffer each piece is copied through.
	streamPrefix = 64 << 10
	// flowCheck is how many bytes tlsWriter writes between two looks at the
	// connection's outbound buffer.
	flowCheck = 256 << 10
	// flowLowWater is how full the outbound buffer may be for tlsWriter to
	// go on writing.
	flowLowWater = 256 << 10
)

var prefixPool = sync.Pool{New: func() any { b := make([]byte, streamPrefix); return &b }}

// streamedBody is an origin body too long to hold: the part settleBody read
// and the rest of the stream.
type streamedBody struct {
	bp     *[]byte // pooled buffer: the prefix, then each piece copied
	prefix int     // bytes of *bp that hold the prefix
	src    io.Reader
	limit  int64 // max_response_bytes; 0 is unlimited
}

// settleBody reads the start of a streamed origin body. It returns nil when
// the response is now complete in memory (the whole body, or a 502/504
// replacing it), else the body to stream with writeStreamed.
func (x *exchange) settleBody() *streamedBody {
	resp := x.resp
	limit := x.app.snap.cfg.Gateway.MaxResponseBytes
	if cl := resp.Header.ContentLength(); limit > 0 && int64(cl) > limit {
		x.originBodyFailed(fasthttp.ErrBodyTooLarge)
		return nil
	}
	bp := prefixPool.Get().(*[]byte)
	buf := *bp
	src := resp.BodyStream()
	n := 0
	var err error
	for n < len(buf) && err == nil {
		var k int
		k, err = src.Read(buf[n:])
		n += k
	}
	switch {
	case limit > 0 && int64(n) > limit:
		err = fasthttp.ErrBodyTooLarge
	case errors.Is(err, io.EOF):
		// The whole body: SetBody copies it and closes the stream, which
		// gives the origin connection back to the pool.
		resp.SetBody(buf[:n])
		prefixPool.Put(bp)
		return nil
	case err == nil:
		return &streamedBody{bp: bp, prefix: n, src: src, limit: limit}
	}
	prefixPool.Put(bp)
	x.originBodyFailed(err)
	return nil
}

// originBodyFailed answers an origin that failed before the response
// started (resetting the response closes the stream and the origin
// connection with it).
func (x *exchange) originBodyFailed(err error) {
	status, kind := originFailure(err)
	x.originKind = kind
	x.c.srv.log.Warn("origin response failed", "app", x.app.name, "origin", x.app.originURL, "kind", kind, "err", err.Error())
	x.fail(status, "origin "+strings.ReplaceAll(kind, "_", " "))
}

// writeStreamed writes the response header, then the body as it comes from
// the origin: with the origin's Content-Length, or chunked when the origin
// sent none (to an HTTP/1.0 device: unframed, ended by the close). It returns the body bytes written. An error means the response
// is incomplete and the connection must close.
func (x *exchange) writeStreamed(bw *bufio.Writer, b *streamedBody) (sent int64, err error) {
	defer prefixPool.Put(b.bp)
	h := &x.resp.Header
	cl := h.ContentLength()
	chunked := cl < 0 && !x.http10
	switch {
	case chunked:
		h.SetContentLength(-1) // also a body that ran until the origin closed
	case cl < 0:
		// An HTTP/1.0 device: the body ends when the connection closes
		// (respond made this the last answer).
		h.SetContentLength(-2)
		h.Del(fasthttp.HeaderTransferEncoding)
	default:
		h.SetContentLength(cl)
	}
	if err := h.Write(bw); err != nil {
		return 0, err
	}
	if x.resp.SkipBody {
		return 0, bw.Flush()
	}
	buf := *b.bp
	pending := buf[:b.prefix]
	var rerr error
	for {
		if len(pending) > 0 {
			if b.limit > 0 && sent+int64(len(pending)) > b.limit {
				rerr = fasthttp.ErrBodyTooLarge
				break
			}
			if err := writePiece(bw, pending, chunked); err != nil {
				x.streamCut(err, "device")
				return sent, err
			}
			sent += int64(len(pending))
		}
		if rerr != nil {
			break
		}
		var k int
		k, rerr = b.src.Read(buf)
		pending = buf[:k]
	}
	if !errors.Is(rerr, io.EOF) {
		_, kind := originFailure(rerr)
		x.originKind = kind
		x.streamCut(rerr, "origin")
		return sent, rerr
	}
	if chunked {
		if _, err := bw.WriteString("0\r\n\r\n"); err != nil {
			return sent, err
		}
	}
	return sent, bw.Flush()
}

// streamCut records a response cut after its header went out.
func (x *exchange) streamCut(err error, side string) {
	x.cut = true
	x.reason = "response cut: " + side + ": " + err.Error()
	x.c.srv.log.Warn("response cut mid-body", "app", x.app.name, "side", side, "kind", x.originKind, "err", err.Error())
}

// writePiece writes one piece of a body, framed as a chunk when chunked.
func writePiece(bw *bufio.Writer, p []byte, chunked bool) error {
	if chunked {
		var hdr [20]byte
		if _, err := bw.Write(append(strconv.AppendInt(hdr[:0], int64(len(p)), 16), '\r', '\n')); err != nil {
			return err
		}
	}
	if _, err := bw.Write(p); err != nil {
		return err
	}
	if chunked {
		_, err := bw.WriteString("\r\n")
		return err
	}
	return nil
}

// tlsWriter is the response writer's sink: the TLS session, with
// backpressure. The engine's Write never blocks (it queues records on the
// event loop), so without a bound a device reading slower than its origin
// sends would make the gateway buffer the whole body. After every flowCheck
// bytes the writer waits until the connection's outbound buffer holds no
// more than flowLowWater. The count is the connection's, not the writer's:
// a device that never reads but keeps sending small requests (each served
// by a new worker) is held back too, instead of piling up their answers.
type tlsWriter struct {
	c *conn
}

func (w *tlsWriter) Write(p []byte) (int, error) {
	n, err := w.c.tc.Write(p)
	if err != nil {
		return n, err
	}
	w.c.unchecked += n
	if w.c.unchecked >= flowCheck {
		w.c.unchecked = 0
		if w.c.onLoop {
			// The loop cannot wait for itself; it serves only answers it
			// holds whole, and only while the device reads (loopserve.go).
			return n, nil
		}
		if err := w.c.tc.WaitOutbound(flowLowWater, w.c.snap.idleTimeout); err != nil {
			return n, err
		}
	}
	return n, nil
}
