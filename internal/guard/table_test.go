package guard

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/event"
)

// A guard whose counters are full (twenty times max_tracked fresh
// addresses failing, one in fifty twice) tracks no more than max_tracked
// addresses and prefixes per rule, and still bans every address that fails
// maxretry times within findtime and every /24 with five failing addresses
// within the window, and nothing else: the flood's single failures are
// dropped first, so an address (a prefix) is kept as long as its failures
// come less than max_tracked fresh addresses apart, and once it has more
// failures than the flood's addresses it stays.
func TestBoundedCountersKeepAttackers(t *testing.T) {
	c := config.Default().Guard
	c.MaxTracked = 1000
	var bans []Ban
	g := New(Options{Config: c, Replay: true, OnBan: func(b Ban) { bans = append(bans, b) }})
	m := g.o.Counters.(*Memory)
	r := rand.New(rand.NewPCG(1, 2))
	at := t0
	publish := func(a netip.Addr) {
		at = at.Add(100 * time.Millisecond)
		g.Publish(context.Background(), event.Event{Time: at, Kind: event.AuthFailure, Source: "postfix", IP: a})
	}
	noise := func(n int) {
		for range n {
			a := netip.AddrFrom4([4]byte{byte(20 + r.IntN(180)), byte(r.IntN(256)), byte(r.IntN(256)), byte(1 + r.IntN(250))})
			publish(a)
			if r.IntN(50) == 0 {
				publish(a)
			}
		}
	}
	want := map[netip.Prefix]bool{}
	for i := range 20 {
		attacker := netip.AddrFrom4([4]byte{10, 1, byte(i), 7})
		want[netip.PrefixFrom(attacker, 32)] = true
		sub := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 2, byte(i), 0}), 24)
		want[sub] = true
		for k := range c.MaxRetry {
			publish(attacker)
			publish(netip.AddrFrom4([4]byte{10, 2, byte(i), byte(10 + k)}))
			noise(200) // the tables are full all along
		}
	}
	got := map[netip.Prefix]bool{}
	for _, b := range bans {
		got[b.Prefix] = true
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("banned %d prefixes, want %d:\n%v\nwant\n%v", len(got), len(want), got, want)
	}
	checkBounds(t, m, c.MaxTracked)
	if m.Evicted() == 0 {
		t.Errorf("nothing was dropped: the test did not fill the tables")
	}
}

// checkBounds fails t if m holds more than max records of addresses or of
// any rule's prefixes, or more than FirstsPerTracked × max first entries.
func checkBounds(t *testing.T, m *Memory, max int) {
	t.Helper()
	if m.failures.len() > max {
		t.Errorf("%d address records, max_tracked %d", m.failures.len(), max)
	}
	for _, f := range []*firsts{m.first4, m.first6} {
		if f.len() > FirstsPerTracked*max {
			t.Errorf("%d first failures of addresses, at most %d", f.len(), FirstsPerTracked*max)
		}
	}
	for fb, p := range m.prefixes {
		if p.table.len() > max {
			t.Errorf("%d prefix records of rule %d, max_tracked %d", p.table.len(), fb, max)
		}
		if p.firsts.len() > FirstsPerTracked*max {
			t.Errorf("%d first addresses of rule %d's prefixes, at most %d", p.firsts.len(), fb, FirstsPerTracked*max)
		}
	}
}
