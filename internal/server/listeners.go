package server

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/relayguard/relayguard/internal/config"
)

// openListener binds one listener. An address of the form "systemd:NAME"
// takes the socket systemd passed with FileDescriptorName=NAME (socket
// activation, sd_listen_fds(3)), so that ports 25/465/587 can be bound by
// systemd while relayguard runs unprivileged.
func openListener(lc config.ListenerConfig, activated map[string]net.Listener) (net.Listener, error) {
	if name, ok := strings.CutPrefix(lc.Address, "systemd:"); ok {
		ln := activated[name]
		if ln == nil {
			return nil, fmt.Errorf("listener %s: no socket named %q passed by systemd (LISTEN_FDNAMES)", lc.Name, name)
		}
		return ln, nil
	}
	ln, err := net.Listen("tcp", lc.Address)
	if err != nil {
		if errors.Is(err, syscall.EACCES) {
			return nil, fmt.Errorf("listener %s: %w (ports below 1024 need root, CAP_NET_BIND_SERVICE or systemd socket activation; see README)", lc.Name, err)
		}
		return nil, fmt.Errorf("listener %s: %w", lc.Name, err)
	}
	return ln, nil
}

func closeAll(lns []net.Listener) {
	for _, l := range lns {
		l.Close()
	}
}

// systemdListeners returns the sockets passed by systemd, by name
// (LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES; fds start at 3).
func systemdListeners() map[string]net.Listener {
	out := map[string]net.Listener{}
	if os.Getenv("LISTEN_PID") != strconv.Itoa(os.Getpid()) {
		return out
	}
	n, _ := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	names := strings.Split(os.Getenv("LISTEN_FDNAMES"), ":")
	for i := 0; i < n; i++ {
		fd := 3 + i
		syscall.CloseOnExec(fd)
		f := os.NewFile(uintptr(fd), "systemd-"+strconv.Itoa(fd))
		ln, err := net.FileListener(f)
		f.Close()
		if err != nil {
			continue
		}
		name := strconv.Itoa(fd)
		if i < len(names) && names[i] != "" {
			name = names[i]
		}
		out[name] = ln
	}
	return out
}
