package gateway

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/panjf2000/gnet/v2/pkg/socket"
	"golang.org/x/sys/unix"
)

// checkPortFree refuses an address another listener already holds.
//
// The event loops bind [gateway].listen with SO_REUSEPORT, one socket per
// loop, so that the kernel spreads new connections over them. The kernel
// lets any process of the same user join such a group: a second fleetgate
// started on the port (an old one that never stopped, a copy with another
// configuration and admin port) would bind without an error and silently
// take half of the devices, with its own CA pools, deny-lists and CRLs.
// nginx and Go's net.Listen refuse an address in use; so does fleetgate.
//
// The probe binds the address without SO_REUSEPORT, as gnet would resolve
// it, and closes it again without listening: no connection can reach it.
// SO_REUSEADDR lets it past the TIME_WAIT connections of a previous run, and
// any listening socket on the port still makes it fail with EADDRINUSE,
// which /proc/net confirms before the start is refused.
// Port 0 (any free port) cannot be in use and is not probed.
func checkPortFree(addr string) error {
	sa, family, tcpAddr, ipv6only, err := socket.GetTCPSockAddr("tcp", addr)
	if err != nil {
		return err
	}
	if tcpAddr.Port == 0 {
		return nil
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return os.NewSyscallError("socket", err)
	}
	defer unix.Close(fd)
	if family == unix.AF_INET6 && ipv6only {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			return os.NewSyscallError("setsockopt", err)
		}
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return os.NewSyscallError("setsockopt", err)
	}
	err = unix.Bind(fd, sa)
	switch {
	case err == nil:
		return nil
	case err != unix.EADDRINUSE:
		return os.NewSyscallError("bind", err)
	case !listenerOnPort(tcpAddr.Port):
		// Only connections hold the port: the TIME_WAIT ones of a build
		// that listened without SO_REUSEADDR. gnet's bind passes them.
		return nil
	}
	return fmt.Errorf("bind: %w (another listener holds the port)", err)
}

// listenerOnPort reports whether a socket of this network namespace listens
// on TCP port, on any address, from /proc/net/tcp and /proc/net/tcp6. When
// neither can be read it says yes: the bind's refusal stands.
func listenerOnPort(port int) bool {
	read := 0
	for _, name := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(name)
		if err != nil {
			continue
		}
		read++
		// Each line after the header: "sl local_address rem_address st …",
		// the local address as hex "ADDR:PORT", the state in hex (0A: LISTEN).
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 4 || f[3] != "0A" {
				continue
			}
			_, hexPort, ok := strings.Cut(f[1], ":")
			if p, err := strconv.ParseUint(hexPort, 16, 16); ok && err == nil && int(p) == port {
				return true
			}
		}
	}
	return read == 0
}
