package egress

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// tcpListen is TCP_LISTEN (include/net/tcp_states.h).
const tcpListen = 10

// Listening is one listening TCP socket of the current network namespace
// and the processes that hold it (a forking server's children share their
// parent's listening socket).
type Listening struct {
	Addr      netip.AddrPort `json:"addr"`
	UID       uint32         `json:"uid"` // the socket's owner (its creator)
	Inode     uint64         `json:"inode"`
	Processes []Process      `json:"processes,omitempty"`
}

// Listeners lists the listening TCP sockets (IPv4 and IPv6) of the reader's
// network namespace with the processes holding them: by a sock_diag dump,
// or else from /proc/net/tcp{,6}. The processes are found the way
// Attribute finds them, by the socket inode among /proc/*/fd.
func (a Attributor) Listeners() ([]Listening, error) {
	var ls []Listening
	var err error
	if !a.NoSockDiag {
		ls, err = diagListeners()
	}
	if a.NoSockDiag || err != nil {
		ls, err = a.procListeners()
		if err != nil {
			return nil, err
		}
	}
	slices.SortFunc(ls, func(x, y Listening) int { return x.Addr.Compare(y.Addr) })
	for i := range ls {
		ls[i].Processes = a.processesBySocket(ls[i].Inode, ls[i].UID, true)
	}
	return ls, nil
}

// diagListeners dumps the listening sockets of both families
// (SOCK_DIAG_BY_FAMILY with NLM_F_DUMP and the state mask of TCP_LISTEN).
func diagListeners() ([]Listening, error) {
	c, err := netlink.Dial(unix.NETLINK_SOCK_DIAG, nil)
	if err != nil {
		return nil, fmt.Errorf("sock_diag: %w", err)
	}
	defer c.Close()
	var out []Listening
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		req := make([]byte, inetDiagReqLen)
		req[0] = family
		req[1] = unix.IPPROTO_TCP
		binary.NativeEndian.PutUint32(req[4:], 1<<tcpListen)
		msgs, err := c.Execute(netlink.Message{
			Header: netlink.Header{Type: sockDiagByFamily, Flags: netlink.Request | netlink.Dump},
			Data:   req,
		})
		if err != nil {
			return nil, fmt.Errorf("sock_diag dump of listening sockets: %w", err)
		}
		for _, m := range msgs {
			d := m.Data
			if len(d) < inetDiagMsgLen || d[1] != tcpListen {
				continue
			}
			var addr netip.Addr
			if d[0] == unix.AF_INET {
				addr = netip.AddrFrom4([4]byte(d[8:12]))
			} else {
				addr = netip.AddrFrom16([16]byte(d[8:24]))
			}
			out = append(out, Listening{
				Addr:  netip.AddrPortFrom(addr, binary.BigEndian.Uint16(d[4:])),
				UID:   binary.NativeEndian.Uint32(d[64:]),
				Inode: uint64(binary.NativeEndian.Uint32(d[68:])),
			})
		}
	}
	return out, nil
}

// procListeners reads the listening sockets from /proc/net/tcp{,6}.
func (a Attributor) procListeners() ([]Listening, error) {
	var out []Listening
	read := 0
	for _, f := range []string{"net/tcp", "net/tcp6"} {
		b, err := os.ReadFile(filepath.Join(a.root(), f))
		if err != nil {
			continue
		}
		read++
		procTCPRows(b, func(f []string) bool {
			st, _ := strconv.ParseUint(f[3], 16, 8)
			l, err := parseProcAddr(f[1])
			if st != tcpListen || err != nil {
				return true
			}
			uid, _ := strconv.ParseUint(f[7], 10, 32)
			ino, _ := strconv.ParseUint(f[9], 10, 64)
			out = append(out, Listening{Addr: l, UID: uint32(uid), Inode: ino})
			return true
		})
	}
	if read == 0 {
		return nil, fmt.Errorf("egress: cannot read %s/net/tcp or net/tcp6", a.root())
	}
	return out, nil
}
