package limits

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func testLevels() []Level {
	return []Level{
		{Bits: 32, Windows: []Window{{time.Minute, 3}, {24 * time.Hour, 5}}},
		{Bits: 24, Windows: []Window{{time.Minute, 6}}},
		{IPv6: true, Bits: 128, Windows: []Window{{time.Minute, 3}}},
		{IPv6: true, Bits: 64, Windows: []Window{{time.Minute, 4}}},
	}
}

func TestAuthLimiterPerAddressAndSubnet(t *testing.T) {
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	l := NewAuthLimiter(testLevels(), nil, nil)
	l.Now = func() time.Time { return now }
	ctx := t.Context()
	a := netip.MustParseAddr("212.70.149.4")
	for i := range 3 {
		if ok, _ := l.Allowed(ctx, a); !ok {
			t.Fatalf("attempt %d refused", i)
		}
		l.Fail(ctx, a)
	}
	ok, reason := l.Allowed(ctx, a)
	if ok || !strings.Contains(reason, "212.70.149.4/32") {
		t.Fatalf("4th attempt: ok=%v reason=%q", ok, reason)
	}
	// A neighbour is still allowed: the /24 has 3 of 6.
	b := netip.MustParseAddr("212.70.149.20")
	if ok, _ := l.Allowed(ctx, b); !ok {
		t.Fatal("neighbour refused")
	}
	for range 3 {
		l.Fail(ctx, b)
	}
	// Now the /24 is full: a third address is refused before its first try.
	c := netip.MustParseAddr("212.70.149.36")
	ok, reason = l.Allowed(ctx, c)
	if ok || !strings.Contains(reason, "212.70.149.0/24") {
		t.Fatalf("third address: ok=%v reason=%q", ok, reason)
	}
	// Another /24 is unaffected.
	if ok, _ := l.Allowed(ctx, netip.MustParseAddr("212.70.150.1")); !ok {
		t.Fatal("other /24 refused")
	}
	// The next minute: the per-minute caps reset, the daily one counts on.
	now = now.Add(time.Minute)
	if ok, _ := l.Allowed(ctx, a); !ok {
		t.Fatal("next minute: refused")
	}
	l.Fail(ctx, a)
	l.Fail(ctx, a)
	ok, reason = l.Allowed(ctx, a)
	if ok || !strings.Contains(reason, "24h0m0s") {
		t.Fatalf("daily cap: ok=%v reason=%q", ok, reason)
	}
}

func TestAuthLimiterIPv6(t *testing.T) {
	l := NewAuthLimiter(testLevels(), nil, nil)
	ctx := t.Context()
	// An attacker rotating addresses inside one /64 hits the /64 cap.
	for i := range 4 {
		a := netip.MustParseAddr("2001:db8:1:2::" + string(rune('a'+i)))
		if ok, _ := l.Allowed(ctx, a); !ok {
			t.Fatalf("address %d refused", i)
		}
		l.Fail(ctx, a)
	}
	ok, reason := l.Allowed(ctx, netip.MustParseAddr("2001:db8:1:2::ff"))
	if ok || !strings.Contains(reason, "2001:db8:1:2::/64") {
		t.Fatalf("ok=%v reason=%q", ok, reason)
	}
	if ok, _ := l.Allowed(ctx, netip.MustParseAddr("2001:db8:1:3::1")); !ok {
		t.Fatal("other /64 refused")
	}
	// IPv4-mapped addresses count as IPv4.
	m := netip.MustParseAddr("::ffff:192.0.2.1")
	for range 3 {
		l.Fail(ctx, m)
	}
	if ok, _ := l.Allowed(ctx, netip.MustParseAddr("192.0.2.1")); ok {
		t.Fatal("mapped address not counted as IPv4")
	}
}
