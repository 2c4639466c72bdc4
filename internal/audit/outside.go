package audit

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The outsider's view. A relay test run from the host itself says little:
// Postfix trusts the host's own addresses (mynetworks_style = host) and
// loopback, so every Postfix "relays" for a local client. The audit
// therefore tests from a private network namespace it creates and joins to
// the host with a veth pair, whose only address is a random one of the
// benchmarking ranges (198.18.0.0/15, RFC 2544; 2001:2::/48, RFC 5180),
// which no mynetworks contains unless it trusts the world. The host side of
// the pair gets no IPv4 address and only a link-local IPv6 one, so that
// Postfix's mynetworks_style = subnet computes nothing new from it. The
// namespace is unnamed: when the audit ends (or dies) the kernel removes it
// and the veth pair with it.
//
// The host's own firewall applies to the probe as to any outsider.

// outside is the probe namespace.
type outside struct {
	ns       netns.NsHandle
	host     string // host-side interface
	Src4     netip.Addr
	Src6     netip.Addr // invalid when the host has no IPv6
	v6Reason string     // why there is no IPv6 source
}

// randomIn returns a random host address of p, avoiding the first and last.
func randomIn(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	r := make([]byte, len(b))
	rand.Read(r)
	bits := p.Bits()
	for i := range b {
		keep := min(max(bits-i*8, 0), 8)
		mask := byte(0xff << (8 - keep))
		if keep == 0 {
			mask = 0
		}
		b[i] = b[i]&mask | r[i]&^mask
	}
	a, _ := netip.AddrFromSlice(b)
	if a == p.Addr() || !p.Contains(a.Next()) {
		return randomIn(p)
	}
	return a
}

var (
	probeNet4 = netip.MustParsePrefix("198.18.0.0/15")
	probeNet6 = netip.MustParsePrefix("2001:2::/48")
	llHost    = netip.MustParseAddr("fe80::1")
	llProbe   = netip.MustParseAddr("fe80::2")
)

func ipNet(a netip.Addr, bits int) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, a.BitLen())}
}

// newOutside creates the probe namespace and its link to the current
// network namespace (which must be the host's: the caller's thread's).
func newOutside() (o *outside, err error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	hostNS, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("outside view: current network namespace: %w", err)
	}
	defer hostNS.Close()
	probeNS, err := netns.New() // switches this thread into it
	if err != nil {
		return nil, fmt.Errorf("outside view: new network namespace (needs CAP_SYS_ADMIN): %w", err)
	}
	if err := netns.Set(hostNS); err != nil {
		probeNS.Close()
		// The thread is in the wrong namespace: let it die with the
		// goroutine rather than serve anybody else.
		runtime.LockOSThread()
		return nil, fmt.Errorf("outside view: back to the host namespace: %w", err)
	}
	o = &outside{ns: probeNS, Src4: randomIn(probeNet4), Src6: randomIn(probeNet6)}
	defer func() {
		if err != nil {
			o.Close()
		}
	}()
	var suffix [3]byte
	rand.Read(suffix[:])
	o.host = fmt.Sprintf("rgaudit%xh", suffix)
	peer := fmt.Sprintf("rgaudit%xp", suffix)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: o.host}, PeerName: peer, PeerNamespace: netlink.NsFd(int(probeNS))}
	if err := netlink.LinkAdd(veth); err != nil {
		return o, fmt.Errorf("outside view: add veth %s: %w", o.host, err)
	}
	hl, err := netlink.LinkByName(o.host)
	if err != nil {
		return o, fmt.Errorf("outside view: %s: %w", o.host, err)
	}
	ph, err := netlink.NewHandleAt(probeNS)
	if err != nil {
		return o, fmt.Errorf("outside view: netlink in the probe namespace: %w", err)
	}
	defer ph.Close()
	pl, err := ph.LinkByName(peer)
	if err != nil {
		return o, fmt.Errorf("outside view: %s: %w", peer, err)
	}
	lo, err := ph.LinkByName("lo")
	if err == nil {
		err = ph.LinkSetUp(lo)
	}
	if err != nil {
		return o, fmt.Errorf("outside view: probe loopback: %w", err)
	}
	// IPv4: the probe's /32 and a default route out of its link; the host
	// reaches it by a host route on its side.
	if err := ph.AddrAdd(pl, &netlink.Addr{IPNet: ipNet(o.Src4, 32)}); err != nil {
		return o, fmt.Errorf("outside view: probe address %s: %w", o.Src4, err)
	}
	if err := ph.LinkSetUp(pl); err != nil {
		return o, fmt.Errorf("outside view: %s up: %w", peer, err)
	}
	if err := netlink.LinkSetUp(hl); err != nil {
		return o, fmt.Errorf("outside view: %s up: %w", o.host, err)
	}
	if err := ph.RouteAdd(&netlink.Route{LinkIndex: pl.Attrs().Index, Scope: netlink.SCOPE_LINK, Dst: ipNet(netip.IPv4Unspecified(), 0)}); err != nil {
		return o, fmt.Errorf("outside view: probe default route: %w", err)
	}
	if err := netlink.RouteAdd(&netlink.Route{LinkIndex: hl.Attrs().Index, Scope: netlink.SCOPE_LINK, Dst: ipNet(o.Src4, 32)}); err != nil {
		return o, fmt.Errorf("outside view: route to %s: %w", o.Src4, err)
	}
	// IPv6: link-local addresses without duplicate address detection on
	// both sides (a neighbour is only answered for an address of the
	// interface asked), the probe's global address, and routes.
	if err := o.setup6(hl, pl, ph); err != nil {
		o.v6Reason = err.Error()
		o.Src6 = netip.Addr{}
	}
	// A veth pair has carrier a moment after both ends are up; a SYN sent
	// before is lost and costs a second's retransmission.
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if l, err := ph.LinkByName(peer); err == nil && l.Attrs().OperState == netlink.OperUp {
			break
		}
	}
	return o, nil
}

func (o *outside) setup6(hl, pl netlink.Link, ph *netlink.Handle) error {
	nodad := unix.IFA_F_NODAD
	if err := netlink.AddrAdd(hl, &netlink.Addr{IPNet: ipNet(llHost, 64), Flags: nodad}); err != nil {
		return fmt.Errorf("host side link-local address: %w", err)
	}
	if err := ph.AddrAdd(pl, &netlink.Addr{IPNet: ipNet(llProbe, 64), Flags: nodad}); err != nil {
		return fmt.Errorf("probe link-local address: %w", err)
	}
	if err := ph.AddrAdd(pl, &netlink.Addr{IPNet: ipNet(o.Src6, 128), Flags: nodad}); err != nil {
		return fmt.Errorf("probe address %s: %w", o.Src6, err)
	}
	if err := ph.RouteAdd(&netlink.Route{LinkIndex: pl.Attrs().Index, Dst: ipNet(netip.IPv6Unspecified(), 0), Gw: llHost.AsSlice()}); err != nil {
		return fmt.Errorf("probe default route: %w", err)
	}
	if err := netlink.RouteAdd(&netlink.Route{LinkIndex: hl.Attrs().Index, Dst: ipNet(o.Src6, 128), Gw: llProbe.AsSlice()}); err != nil {
		return fmt.Errorf("route to %s: %w", o.Src6, err)
	}
	return nil
}

// Dial connects from the probe namespace: the socket is made on a thread
// switched into it, and stays there.
func (o *outside) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := o.in(func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// in runs fn on a thread inside the probe namespace.
func (o *outside) in(fn func() error) error {
	runtime.LockOSThread()
	cur, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer cur.Close()
	if err := netns.Set(o.ns); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("outside view: enter probe namespace: %w", err)
	}
	ferr := fn()
	if err := netns.Set(cur); err == nil {
		runtime.UnlockOSThread()
	} // else the thread stays locked and dies with its goroutine
	return ferr
}

// Close removes the veth pair and releases the namespace (the kernel
// deletes it once nothing refers to it).
func (o *outside) Close() {
	if o == nil {
		return
	}
	if o.host != "" {
		if l, err := netlink.LinkByName(o.host); err == nil {
			_ = netlink.LinkDel(l)
		}
	}
	if o.ns.IsOpen() {
		o.ns.Close()
	}
}

var errNoOutside = errors.New("no outside view")
