package egress

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// sock_diag (linux/sock_diag.h, linux/inet_diag.h): an exact lookup of one
// TCP socket by its addresses and ports. It is O(1) in the kernel, where
// reading /proc/net/tcp walks the whole socket hash table; /proc stays the
// fallback for kernels without inet_diag.
const (
	sockDiagByFamily = 20 // SOCK_DIAG_BY_FAMILY
	inetDiagReqLen   = 56 // sizeof(struct inet_diag_req_v2)
	inetDiagMsgLen   = 72 // sizeof(struct inet_diag_msg)
)

// diagSocket is what sock_diag says about one socket.
type diagSocket struct {
	State int
	UID   uint32
	Inode uint64
}

// diagLookup asks NETLINK_SOCK_DIAG for the TCP socket local→remote. IPv4
// connections of dual-stack IPv6 sockets are looked up as ::ffff:a.b.c.d
// when the IPv4 lookup finds nothing.
func diagLookup(local, remote netip.AddrPort) (diagSocket, error) {
	c, err := netlink.Dial(unix.NETLINK_SOCK_DIAG, nil)
	if err != nil {
		return diagSocket{}, fmt.Errorf("sock_diag: %w", err)
	}
	defer c.Close()
	l, r := local.Addr().Unmap(), remote.Addr().Unmap()
	type try struct {
		family uint8
		l, r   netip.Addr
	}
	tries := []try{{unix.AF_INET6, l, r}}
	if l.Is4() && r.Is4() {
		tries = []try{
			{unix.AF_INET, l, r},
			{unix.AF_INET6, netip.AddrFrom16(l.As16()), netip.AddrFrom16(r.As16())},
		}
	}
	var last error
	for _, t := range tries {
		s, err := diagOne(c, t.family, netip.AddrPortFrom(t.l, local.Port()), netip.AddrPortFrom(t.r, remote.Port()))
		if err == nil {
			return s, nil
		}
		last = err
	}
	return diagSocket{}, last
}

func diagOne(c *netlink.Conn, family uint8, local, remote netip.AddrPort) (diagSocket, error) {
	// struct inet_diag_req_v2 { u8 family, protocol, ext, pad; u32 states;
	//   struct inet_diag_sockid { be16 sport, dport; be32 src[4], dst[4];
	//   u32 if; u32 cookie[2]; } }
	req := make([]byte, inetDiagReqLen)
	req[0] = family
	req[1] = unix.IPPROTO_TCP
	binary.NativeEndian.PutUint32(req[4:], 0xffffffff) // all states
	binary.BigEndian.PutUint16(req[8:], local.Port())
	binary.BigEndian.PutUint16(req[10:], remote.Port())
	putAddr(req[12:28], local.Addr())
	putAddr(req[28:44], remote.Addr())
	// idiag_if = 0; cookie = INET_DIAG_NOCOOKIE: match without a cookie.
	binary.NativeEndian.PutUint32(req[48:], 0xffffffff)
	binary.NativeEndian.PutUint32(req[52:], 0xffffffff)
	msgs, err := c.Execute(netlink.Message{
		Header: netlink.Header{Type: sockDiagByFamily, Flags: netlink.Request},
		Data:   req,
	})
	if err != nil {
		return diagSocket{}, fmt.Errorf("sock_diag %s -> %s: %w", local, remote, err)
	}
	for _, m := range msgs {
		d := m.Data
		if len(d) < inetDiagMsgLen {
			continue
		}
		// struct inet_diag_msg { u8 family, state, timer, retrans;
		//   struct inet_diag_sockid id; u32 expires, rqueue, wqueue, uid, inode; }
		// The kernel's lookup falls back to a listening socket on the
		// local port: accept only the connection itself.
		if binary.BigEndian.Uint16(d[4:]) != local.Port() || binary.BigEndian.Uint16(d[6:]) != remote.Port() ||
			!sameAddr(d[8:24], local.Addr()) || !sameAddr(d[24:40], remote.Addr()) {
			return diagSocket{}, fmt.Errorf("sock_diag %s -> %s: no such connection", local, remote)
		}
		return diagSocket{
			State: int(d[1]),
			UID:   binary.NativeEndian.Uint32(d[64:]),
			Inode: uint64(binary.NativeEndian.Uint32(d[68:])),
		}, nil
	}
	return diagSocket{}, errors.New("sock_diag: empty reply")
}

func putAddr(dst []byte, a netip.Addr) {
	if a.Is4() {
		b := a.As4()
		copy(dst, b[:])
		return
	}
	b := a.As16()
	copy(dst, b[:])
}

func sameAddr(b []byte, a netip.Addr) bool {
	if a.Is4() {
		x := a.As4()
		return string(b[:4]) == string(x[:])
	}
	x := a.As16()
	return string(b[:16]) == string(x[:])
}
