package firewall

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/relayguard/relayguard/internal/ban"
)

// Benchmarks run in a network namespace of their own (no veth needed):
//
//	go test -run '^$' -bench . -benchtime 2000x ./internal/firewall/   (as root)

func benchNS(b *testing.B) (name string, fd int) {
	b.Helper()
	needBinaries(b, "ip", "nft")
	name = fmt.Sprintf("rgfwb%d-%d", os.Getpid(), nsSeq.Add(1))
	run(b, "ip", "netns", "add", name)
	b.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	fd, err := unix.Open("/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { unix.Close(fd) })
	return name, fd
}

// addrN is the n-th address of 10.0.0.0/8 (for IPv4) or of 2001:db8::/32.
func addrN(n int, v6 bool) netip.Addr {
	if v6 {
		return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, byte(n >> 16), byte(n >> 8), byte(n), 0, 0, 0, 0, 0, 0, 1})
	}
	return netip.AddrFrom4([4]byte{10, byte(n >> 16), byte(n >> 8), byte(n)})
}

// banList is n bans: a quarter each IPv4 /32, IPv4 /24, IPv6 /128, IPv6
// /64; every third one permanent, the others expiring within 1-3 hours.
func banList(n int, now time.Time) []ban.Ban {
	out := make([]ban.Ban, 0, n)
	for i := 0; i < n; i++ {
		var p netip.Prefix
		switch i % 4 {
		case 0:
			p = netip.PrefixFrom(addrN(i*2, false), 32)
		case 1:
			p = netip.PrefixFrom(addrN(i<<8, false), 24).Masked()
		case 2:
			p = netip.PrefixFrom(addrN(i, true), 128)
		default:
			p = netip.PrefixFrom(addrN(i, true), 64).Masked()
		}
		b := ban.Ban{Prefix: p}
		if i%3 != 0 {
			b.Until = now.Add(time.Hour + time.Duration(i%7200)*time.Second)
		}
		out = append(out, b)
	}
	return out
}

func BenchmarkNFTablesAdd(b *testing.B) {
	_, fd := benchNS(b)
	e := newNFT(nftConfig(), discardLogger(), fd)
	if err := e.Setup(bg()); err != nil {
		b.Fatal(err)
	}
	if err := e.Reconcile(bg(), banList(10000, time.Now())); err != nil {
		b.Fatal(err)
	}
	until := time.Now().Add(time.Hour)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 16 + byte(i>>16)&15, byte(i >> 8), byte(i)}), 32)
		if err := e.Add(bg(), ban.Ban{Prefix: p, Until: until}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkNFTCommandAddElement is the comparison: one `nft add element`
// process per ban, as a shell-script enforcer (fail2ban's nftables action)
// does it.
func BenchmarkNFTCommandAddElement(b *testing.B) {
	ns, fd := benchNS(b)
	e := newNFT(nftConfig(), discardLogger(), fd)
	if err := e.Setup(bg()); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		a := netip.AddrFrom4([4]byte{172, 16 + byte(i>>16)&15, byte(i >> 8), byte(i)})
		out, err := exec.Command("ip", "netns", "exec", ns, "nft", "add", "element", "inet", "relayguard", "ban4", "{ "+a.String()+" timeout 1h }").CombinedOutput()
		if err != nil {
			b.Fatalf("%v: %s", err, out)
		}
	}
}

// BenchmarkNFTablesReconcile10k: from an empty table to 10,000 bans.
func BenchmarkNFTablesReconcile10k(b *testing.B) {
	_, fd := benchNS(b)
	e := newNFT(nftConfig(), discardLogger(), fd)
	bans := banList(10000, time.Now())
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		if err := e.Teardown(bg()); err != nil {
			b.Fatal(err)
		}
		if err := e.Setup(bg()); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := e.Reconcile(bg(), bans); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkNFTablesReconcile10kSteady: the kernel already holds the 10,000
// bans and 1% of them changed (50 lifted, 50 new): read, diff, write.
func BenchmarkNFTablesReconcile10kSteady(b *testing.B) {
	_, fd := benchNS(b)
	e := newNFT(nftConfig(), discardLogger(), fd)
	if err := e.Setup(bg()); err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	a, c := banList(10000, now), banList(10100, now)[100:]
	if err := e.Reconcile(bg(), a); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		next := c
		if i%2 == 1 {
			next = a
		}
		if err := e.Reconcile(bg(), next); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkNFTCommandLoad10k is the comparison for a bulk load: the same
// 10,000 bans as one `nft -f` script (how a script enforcer would restore).
func BenchmarkNFTCommandLoad10k(b *testing.B) {
	ns, fd := benchNS(b)
	e := newNFT(nftConfig(), discardLogger(), fd)
	now := time.Now()
	m := normalize(banList(10000, now), now)
	p4, p6, t4, t6 := split(m)
	var sb strings.Builder
	for _, x := range []struct {
		set  string
		segs []segment
	}{{"perm4", p4}, {"perm6", p6}, {"ban4", t4}, {"ban6", t6}} {
		for _, s := range x.segs {
			el := s.Start.String() + "-" + s.End.String()
			if !s.Until.IsZero() {
				el += fmt.Sprintf(" timeout %ds", int(s.Until.Sub(now).Seconds()))
			}
			fmt.Fprintf(&sb, "add element inet relayguard %s { %s }\n", x.set, el)
		}
	}
	script := filepath.Join(b.TempDir(), "load.nft")
	if err := os.WriteFile(script, []byte(sb.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		if err := e.Teardown(bg()); err != nil {
			b.Fatal(err)
		}
		if err := e.Setup(bg()); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if out, err := exec.Command("ip", "netns", "exec", ns, "nft", "-f", script).CombinedOutput(); err != nil {
			b.Fatalf("%v: %s", err, out)
		}
	}
}

// BenchmarkIPSetReconcile10k: iptables+ipset backend, empty to 10,000 bans
// (one `ipset save` per family and one `ipset restore`).
func BenchmarkIPSetReconcile10k(b *testing.B) {
	needBinaries(b, "ipset", "iptables")
	ns, _ := benchNS(b)
	e := newIPSet(nftConfig(), discardLogger(), []string{"ip", "netns", "exec", ns})
	bans := banList(10000, time.Now())
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		if err := e.Teardown(bg()); err != nil {
			b.Fatal(err)
		}
		if err := e.Setup(bg()); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := e.Reconcile(bg(), bans); err != nil {
			b.Fatal(err)
		}
	}
}
