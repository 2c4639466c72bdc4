// Package listen opens the listeners of relayguard's Postfix-facing
// services (the policy service, the milter): "unix:/path" for a unix socket
// Postfix can reach, or host:port for TCP.
package listen

import (
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// Listen opens addr for the service named what (for errors: "policy
// listener"). A unix socket file left by a dead process is replaced; one
// with a live server behind it is not. The socket is made writable by
// everyone: Postfix's daemons (user postfix) must be able to connect, and
// the answers are no secret.
func Listen(what, addr string) (net.Listener, error) {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		if path == "" {
			return nil, fmt.Errorf("%s %q: no socket path after unix:", what, addr)
		}
		if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
			if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
				c.Close()
				return nil, fmt.Errorf("%s %q: another process is serving this socket", what, addr)
			}
			os.Remove(path)
		} else if err == nil {
			// Never removed (it may be anyone's file); bind would say
			// "address already in use", which reads as a busy socket.
			kind := "a file"
			if fi.IsDir() {
				kind = "a directory"
			}
			return nil, fmt.Errorf("%s %q: %s is %s, not a socket: remove it or choose another path", what, addr, path, kind)
		}
		ln, err := net.Listen("unix", path)
		if err != nil {
			return nil, fmt.Errorf("%s %q: %w", what, addr, err)
		}
		if err := os.Chmod(path, 0o666); err != nil {
			ln.Close()
			return nil, fmt.Errorf("%s %q: %w", what, addr, err)
		}
		return ln, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s %q: %w", what, addr, err)
	}
	return ln, nil
}
