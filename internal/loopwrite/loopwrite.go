// Package loopwrite writes to an event-loop socket (a gnet.Conn) from its
// own event loop with one raw write system call.
//
// gnet's Conn.Write makes the same write(2), through syscall.Syscall, with
// the runtime's entersyscall and exitsyscall around it: BenchmarkWrite
// measures 2.1 µs per 64 B write that way against 1.8 with Write on the
// project's bench machine (a paravirtualized guest, where every system call
// is expensive), and a relayed echo or a keep-alive request makes two such
// writes. A write on a non-blocking socket never blocks, so it needs none
// of that bookkeeping, which exists to let the scheduler run other
// goroutines while a call blocks. Whatever the raw write does not finish
// (the socket's buffer is full, a signal interrupted it, the peer is gone)
// goes to the Conn's own Write, which queues the rest in order or closes
// the connection as it always does.
//
// Only writes of up to MaxRaw bytes are raw. The saving is per call, and a
// large write's own time in the kernel (on loopback it also does the
// receiver's TCP work) would otherwise hold the loop's scheduler slot where
// the runtime cannot take it back, delaying a garbage collection's stop or
// the other goroutines of a small GOMAXPROCS.
package loopwrite

import (
	"syscall"
	"unsafe"
)

// MaxRaw is the largest write made raw: larger ones go through the
// connection's Write, as a system call the runtime can preempt around.
const MaxRaw = 64 << 10

// Socket is what Write needs of a connection: gnet.Conn has all of it.
type Socket interface {
	// Fd is the socket's descriptor.
	Fd() int
	// OutboundBuffered is how many bytes the connection holds queued for
	// the socket.
	OutboundBuffered() int
	// Write writes p, queueing what the socket does not take.
	Write(p []byte) (int, error)
}

// Write writes p to s. It must be called on s's event loop, the only
// goroutine that writes s or closes it (the descriptor stays s's for the
// call), as gnet's own Write, and only while s is open: the caller checks
// that s has not been closed, even earlier in the same callback, because a
// closed gnet.Conn still reports its old descriptor, which the kernel may
// have given to another socket. When s holds nothing queued and p is at
// most MaxRaw bytes, p goes straight to the socket with one raw write(2);
// the rest, or all of p when something is queued before it (the bytes must
// not overtake it) or p is larger, goes through s's Write.
func Write(s Socket, p []byte) (int, error) {
	if len(p) == 0 || len(p) > MaxRaw || s.OutboundBuffered() > 0 {
		return s.Write(p)
	}
	fd := s.Fd()
	if fd < 0 {
		return s.Write(p)
	}
	n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd),
		uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	if errno != 0 {
		// EAGAIN (queued), EINTR (written again), a broken connection
		// (closed, with the error): what s's Write does with them.
		return s.Write(p)
	}
	if int(n) >= len(p) {
		return len(p), nil
	}
	if _, err := s.Write(p[n:]); err != nil {
		return int(n), err
	}
	return len(p), nil
}
