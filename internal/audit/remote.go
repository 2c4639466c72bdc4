package audit

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
)

// Remote hosts the operator owns can be named on the command line: their
// SMTP ports are probed and relay-tested from this host, as an outsider
// (unless this host is in their mynetworks, which the report says), with
// the same listener and certificate checks as the host's own listeners.

// parseRemote reads HOST, HOST:PORT, [V6]:PORT or a bare IPv6 address;
// without a port, 25, 465 and 587 are tried.
func parseRemote(arg string) (host string, ports []uint16, err error) {
	if a, err := netip.ParseAddr(arg); err == nil {
		return a.String(), []uint16{25, 465, 587}, nil
	}
	if h, p, err := net.SplitHostPort(arg); err == nil {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 || h == "" {
			return "", nil, fmt.Errorf("remote host %q: want HOST or HOST:PORT", arg)
		}
		return h, []uint16{uint16(n)}, nil
	}
	if arg == "" || strings.ContainsAny(arg, "[]/ :") {
		return "", nil, fmt.Errorf("remote host %q: want HOST or HOST:PORT", arg)
	}
	return arg, []uint16{25, 465, 587}, nil
}

// remoteListeners probes (and with battery relay-tests) the named hosts.
func (r *run) remoteListeners(ctx context.Context, battery bool) {
	var ls []*Listener
	for _, arg := range r.o.Remote {
		host, ports, err := parseRemote(arg)
		if err != nil {
			r.problem(AreaListeners, "remote", err)
			continue
		}
		var addrs []netip.Addr
		if a, err := netip.ParseAddr(host); err == nil {
			addrs = []netip.Addr{a}
		} else {
			var res interface {
				LookupNetIP(context.Context, string, string) ([]netip.Addr, error)
			} = net.DefaultResolver
			if r.res != nil {
				res = r.res
			}
			addrs, err = res.LookupNetIP(ctx, "ip", host)
			if err != nil || len(addrs) == 0 {
				r.problem(AreaListeners, "remote", fmt.Errorf("remote host %s: %v (no address)", host, err))
				continue
			}
		}
		for _, port := range ports {
			l := &Listener{Port: port, Remote: host, Role: smtpPorts[port], explicit: len(ports) == 1}
			if l.Role == "" {
				l.Role = "other"
			}
			var v4, v6 bool
			for _, a := range addrs {
				a = a.Unmap()
				if a.Is6() && !v6 || a.Is4() && !v4 {
					l.Addrs = append(l.Addrs, netip.AddrPortFrom(a, port).Addr().String())
					l.remoteT = append(l.remoteT, netip.AddrPortFrom(a, port))
					v4, v6 = v4 || a.Is4(), v6 || a.Is6()
				}
			}
			ls = append(ls, l)
		}
	}
	var wg sync.WaitGroup
	for _, l := range ls {
		wg.Go(func() { r.probeRemote(ctx, l, battery) })
	}
	wg.Wait()
	for _, l := range ls {
		if l.SMTP {
			r.listeners = append(r.listeners, l)
			if battery {
				r.listenerFindings(l)
			}
		} else if l.explicit {
			r.problem(AreaListeners, "remote", fmt.Errorf("%s:%d does not answer as an SMTP server", l.Remote, l.Port))
		}
	}
}

// probeRemote probes each address of a remote listener from this host.
func (r *run) probeRemote(ctx context.Context, l *Listener, battery bool) {
	for _, t := range l.remoteT {
		r.probeTarget(ctx, l, t, "remote", nil, battery)
	}
}
