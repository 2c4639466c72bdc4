package egress

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
)

// TestAttributeLoopback finds this test process behind a real TCP
// connection over loopback, IPv4 and IPv6, through /proc.
func TestAttributeLoopback(t *testing.T) {
	for _, tc := range []struct {
		network string
		a       Attributor
	}{
		{"tcp4", Attributor{}}, {"tcp6", Attributor{}},
		{"tcp4", Attributor{NoSockDiag: true}}, {"tcp6", Attributor{NoSockDiag: true}},
	} {
		network := tc.network
		t.Run(fmt.Sprintf("%s/procfs=%v", network, tc.a.NoSockDiag), func(t *testing.T) {
			addr := "127.0.0.1:0"
			if network == "tcp6" {
				addr = "[::1]:0"
			}
			ln, err := net.Listen(network, addr)
			if err != nil {
				if os.Getenv("CI") == "true" {
					t.Fatalf("no %s loopback: %v", network, err)
				}
				t.Skipf("no %s loopback: %v", network, err)
			}
			defer ln.Close()
			c, err := net.Dial(network, ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			local := netip.MustParseAddrPort(c.LocalAddr().String())
			remote := netip.MustParseAddrPort(c.RemoteAddr().String())
			ps, state, err := tc.a.Attribute(local, remote)
			if err != nil {
				t.Fatal(err)
			}
			if state != 1 { // TCP_ESTABLISHED
				t.Errorf("state %d, want 1 (ESTABLISHED)", state)
			}
			var me *Process
			for i := range ps {
				if ps[i].PID == os.Getpid() {
					me = &ps[i]
				}
			}
			if me == nil {
				t.Fatalf("pid %d not among %+v", os.Getpid(), ps)
			}
			exe, _ := os.Executable()
			if me.Exe != exe || !strings.HasPrefix(me.Cmdline, os.Args[0]) || me.PPID != os.Getppid() {
				t.Errorf("process %+v; want exe %s, cmdline starting %s, ppid %d", me, exe, os.Args[0], os.Getppid())
			}
			wd, _ := os.Getwd()
			if me.Cwd != wd {
				t.Errorf("cwd %q, want %q", me.Cwd, wd)
			}
			// The reverse direction is the accepted socket, not ours.
			if _, err := tc.a.SocketInode(remote, netip.AddrPortFrom(remote.Addr(), 1)); err == nil {
				t.Error("found a socket that does not exist")
			}
		})
	}
}

func TestParseProcAddr(t *testing.T) {
	// Host byte order words, as the kernel prints them on little-endian
	// machines (the test machine's order is what NativeEndian decodes).
	got, err := parseProcAddr("0100007F:0019")
	if err != nil {
		t.Fatal(err)
	}
	want := netip.MustParseAddrPort("127.0.0.1:25")
	le := got == want
	if !le && got != netip.MustParseAddrPort("1.0.0.127:25") {
		t.Fatalf("got %v", got)
	}
	for _, bad := range []string{"", "0100007F", "XYZ:0019", "0100007F:XYZ", "01007F:0019"} {
		if _, err := parseProcAddr(bad); err == nil {
			t.Errorf("parseProcAddr(%q) accepted", bad)
		}
	}
}

// BenchmarkAttribute measures one attribution (socket lookup by sock_diag,
// /proc/*/fd scan of the owner's processes) of a live loopback connection;
// BenchmarkAttributeProcfs the /proc/net/tcp fallback.
func BenchmarkAttribute(b *testing.B) { benchAttribute(b, Attributor{}) }

func BenchmarkAttributeProcfs(b *testing.B) { benchAttribute(b, Attributor{NoSockDiag: true}) }

func benchAttribute(b *testing.B, a Attributor) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	local := netip.MustParseAddrPort(c.LocalAddr().String())
	remote := netip.MustParseAddrPort(c.RemoteAddr().String())
	for b.Loop() {
		if _, _, err := a.Attribute(local, remote); err != nil {
			b.Fatal(err)
		}
	}
}
