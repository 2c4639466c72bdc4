package egress

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
)

// TestListeners finds this test process behind real listening sockets,
// IPv4 and IPv6, through sock_diag and through /proc, and no connected
// socket among them.
func TestListeners(t *testing.T) {
	var want []netip.AddrPort
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("listen %s: %v", addr, err)
			}
			t.Logf("skipping %s: %v", addr, err)
			continue
		}
		defer ln.Close()
		want = append(want, netip.MustParseAddrPort(ln.Addr().String()))
		// A connection to it must not be listed as listening.
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	if len(want) == 0 {
		t.Fatal("no loopback listener")
	}
	for _, a := range []Attributor{{}, {NoSockDiag: true}} {
		t.Run(fmt.Sprintf("procfs=%v", a.NoSockDiag), func(t *testing.T) {
			ls, err := a.Listeners()
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range want {
				var found *Listening
				for i := range ls {
					if ls[i].Addr == w {
						found = &ls[i]
					}
				}
				if found == nil {
					t.Fatalf("%s not among %d listeners", w, len(ls))
				}
				if found.UID != uint32(os.Geteuid()) || found.Inode == 0 {
					t.Errorf("%s: uid %d inode %d", w, found.UID, found.Inode)
				}
				me := false
				for _, p := range found.Processes {
					me = me || p.PID == os.Getpid()
				}
				if !me {
					t.Errorf("%s: pid %d not among %+v", w, os.Getpid(), found.Processes)
				}
			}
			for _, l := range ls {
				for _, w := range want {
					if l.Addr.Port() == w.Port() && l.Addr != w {
						t.Errorf("listed %s: not a listener", l.Addr)
					}
				}
			}
		})
	}
}
