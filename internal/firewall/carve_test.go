package firewall_test

import (
	"context"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/firewall"
	"github.com/relayguard/relayguard/internal/guard"
)

// TestSubnetBanCarvedAroundLogins (issue 12 item 10) runs the guard over
// each kernel backend in network namespaces the test creates: a user logs
// in from Good4 (and Good6), then other addresses of its /24 (/64) guess
// passwords until the whole subnet is banned. Bad4 (Bad6), in the same
// subnet, is dropped by the kernel; the user is not. When the user's grace
// runs out the subnet is whole again; a user who logs in while the subnet
// is banned is carved out at once.
func TestSubnetBanCarvedAroundLogins(t *testing.T) {
	for _, backend := range []string{config.FirewallNFTables, config.FirewallIPTables, config.FirewallUFW} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			b := firewall.NewTestBackend(t, backend)
			var offset atomic.Int64 // the guard's clock runs ahead when the test says so
			now := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
			c := config.Default().Guard
			c.MaxRetry, c.FindTime, c.BanTime = 3, config.Duration(10*time.Minute), config.Duration(2*time.Hour)
			c.SuccessGrace = config.Duration(30 * time.Minute)
			c.Subnets = []config.SubnetRule{
				{Family: "ipv4", Bits: 24, Addresses: 3, Window: config.Duration(time.Hour)},
				{Family: "ipv6", Bits: 64, Addresses: 3, Window: config.Duration(time.Hour)},
			}
			g := guard.New(guard.Options{Config: c, Enforcer: b.Enforcer, Now: now})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan struct{})
			go func() { g.Run(ctx, 100*time.Millisecond, nil); close(done) }()
			defer func() { cancel(); <-done }()
			publish := func(kind event.Kind, addrs ...string) {
				for _, a := range addrs {
					g.Publish(ctx, event.Event{Time: now(), Kind: kind, Source: "postfix", IP: netip.MustParseAddr(a)})
				}
			}
			eventually := func(what string, cond func() bool) {
				t.Helper()
				for deadline := time.Now().Add(60 * time.Second); !cond(); time.Sleep(200 * time.Millisecond) {
					if time.Now().After(deadline) {
						t.Fatalf("timed out waiting for %s", what)
					}
				}
			}
			banned := func(p string) bool {
				return slices.ContainsFunc(g.Bans(), func(x guard.Ban) bool { return x.Prefix == netip.MustParsePrefix(p) })
			}
			// ufw writes one rule per prefix at about a second each: the
			// IPv6 /64 minus one address is 64 rules, so ufw is tried on
			// IPv4 only.
			v6 := backend != config.FirewallUFW

			publish(event.AuthSuccess, b.Good4.String())
			publish(event.AuthFailure, "192.0.2.50", "192.0.2.51", "192.0.2.52")
			if v6 {
				publish(event.AuthSuccess, b.Good6.String())
				publish(event.AuthFailure, "2001:db8::50", "2001:db8::51", "2001:db8::52")
			}
			if !banned("192.0.2.0/24") || (v6 && !banned("2001:db8::/64")) {
				t.Fatalf("bans %+v", g.Bans())
			}
			b.MustBeBlocked(t, b.Bad4)
			b.MustConnect(t, b.Good4)
			if v6 {
				b.MustBeBlocked(t, b.Bad6)
				b.MustConnect(t, b.Good6)
			}

			// The user's grace runs out: the whole subnet is banned again.
			offset.Store(int64(31 * time.Minute))
			eventually("the subnet to be whole again", func() bool { return b.Blocked(b.Good4) == nil })
			b.MustBeBlocked(t, b.Bad4)

			// A user logs in from Bad4 while its subnet is banned (over a
			// service or another server the ban does not cover): carved out.
			publish(event.AuthSuccess, b.Bad4.String())
			b.MustConnect(t, b.Bad4)
			b.MustBeBlocked(t, b.Good4)
			if v6 {
				b.MustBeBlocked(t, b.Good6)
			}
		})
	}
}
