package limits

import (
	"context"
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"sync"
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

// clock is a settable time for the limiter.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newLimiter(levels []Level) (*AuthLimiter, *clock) {
	c := &clock{t: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)}
	l := NewAuthLimiter(levels, nil, nil)
	l.Now = c.now
	return l, c
}

// fail makes one failed attempt; it reports whether the attempt was let
// through (refused attempts are not failures).
func fail(t *testing.T, l *AuthLimiter, ip string) bool {
	t.Helper()
	r, err := l.Reserve(t.Context(), netip.MustParseAddr(ip), false)
	if err != nil {
		var e *Exceeded
		if !errors.As(err, &e) {
			t.Fatalf("Reserve %s: %v", ip, err)
		}
		return false
	}
	r.End(t.Context(), true)
	return true
}

func refusedFor(t *testing.T, l *AuthLimiter, ip string, recent bool) string {
	t.Helper()
	r, err := l.Reserve(t.Context(), netip.MustParseAddr(ip), recent)
	if err != nil {
		return err.Error()
	}
	r.End(t.Context(), false)
	return ""
}

func TestPerAddressCap(t *testing.T) {
	l, c := newLimiter(testLevels())
	a := "212.70.149.4"
	for i := range 3 {
		if !fail(t, l, a) {
			t.Fatalf("attempt %d refused", i)
		}
	}
	if why := refusedFor(t, l, a, false); !strings.Contains(why, "212.70.149.4/32") {
		t.Fatalf("4th attempt: %q", why)
	}
	// The address's own cap applies even when it logged in recently.
	if why := refusedFor(t, l, a, true); !strings.Contains(why, "212.70.149.4/32") {
		t.Fatalf("4th attempt after a recent login: %q", why)
	}
	// Two minutes later the minute cap has rolled away; the daily cap (5)
	// counts on: two more failures, then refused.
	c.t = c.t.Add(2 * time.Minute)
	if !fail(t, l, a) || !fail(t, l, a) {
		t.Fatal("refused after the minute window rolled")
	}
	if why := refusedFor(t, l, a, false); !strings.Contains(why, "24h0m0s") {
		t.Fatalf("daily cap: %q", why)
	}
}

// TestRefusedAttemptsAreNotFailures: hammering a full window does not keep
// it full (the cause of the day-long lockouts of issue 12 item 1).
func TestRefusedAttemptsAreNotFailures(t *testing.T) {
	l, c := newLimiter([]Level{{Bits: 32, Windows: []Window{{time.Minute, 3}}}})
	a := "198.51.100.7"
	for range 3 {
		fail(t, l, a)
	}
	for range 100 {
		if fail(t, l, a) {
			t.Fatal("attempt over the cap let through")
		}
		c.t = c.t.Add(500 * time.Millisecond) // 50 s of hammering
	}
	c.t = c.t.Add(70 * time.Second)
	if !fail(t, l, a) {
		t.Fatal("still refused two minutes after the last failure: refusals were counted")
	}
}

// TestSuccessIsNotAFailure: a reservation ended without failure is taken
// back.
func TestSuccessIsNotAFailure(t *testing.T) {
	l, _ := newLimiter(testLevels())
	for i := range 50 {
		if why := refusedFor(t, l, "192.0.2.1", false); why != "" {
			t.Fatalf("login %d refused: %s", i, why)
		}
	}
}

// TestWindowsRoll: a cap covers the last Period, not a calendar bucket:
// failures just before a minute boundary still count just after it.
func TestWindowsRoll(t *testing.T) {
	l, c := newLimiter([]Level{{Bits: 32, Windows: []Window{{time.Minute, 3}}}})
	c.t = time.Date(2026, 11, 23, 10, 0, 50, 0, time.UTC)
	for range 3 {
		fail(t, l, "198.51.100.7")
	}
	c.t = time.Date(2026, 11, 23, 10, 1, 10, 0, time.UTC) // a fixed window would be empty here
	if fail(t, l, "198.51.100.7") {
		t.Fatal("20 s after 3 failures the cap of 3 per minute let a 4th through")
	}
	c.t = time.Date(2026, 11, 23, 10, 1, 45, 0, time.UTC) // 55 s after: the estimate is 0.75
	if !fail(t, l, "198.51.100.7") {
		t.Fatal("refused although the failures have almost left the window")
	}
}

// TestPrefixCapSparesAddressesThatDidNotFail: issue 12 item 1.
func TestPrefixCapSparesAddressesThatDidNotFail(t *testing.T) {
	l, _ := newLimiter(testLevels())
	// Two guessers fill the /24's cap of 6.
	for _, a := range []string{"212.70.149.4", "212.70.149.20"} {
		for range 3 {
			if !fail(t, l, a) {
				t.Fatalf("%s refused early", a)
			}
		}
	}
	// A neighbour that never failed may still try (and log in).
	c := "212.70.149.36"
	if why := refusedFor(t, l, c, false); why != "" {
		t.Fatalf("innocent neighbour refused: %s", why)
	}
	// Once it fails itself, the /24's cap bites on it.
	if !fail(t, l, c) {
		t.Fatal("first failure of the neighbour refused")
	}
	if why := refusedFor(t, l, c, false); !strings.Contains(why, "212.70.149.0/24") {
		t.Fatalf("neighbour that failed, /24 full: %q", why)
	}
	// ... unless an account logged in from it recently.
	if why := refusedFor(t, l, c, true); why != "" {
		t.Fatalf("neighbour with a recent login refused: %s", why)
	}
	// Another /24 is unaffected.
	if why := refusedFor(t, l, "212.70.150.1", false); why != "" {
		t.Fatalf("other /24 refused: %s", why)
	}
}

func TestIPv6(t *testing.T) {
	l, _ := newLimiter(testLevels())
	// An attacker rotating addresses inside one /64, each failing once,
	// fills the /64; its addresses that failed are then refused, a fresh
	// one is not.
	for i := range 4 {
		a := "2001:db8:1:2::" + string(rune('a'+i))
		if !fail(t, l, a) {
			t.Fatalf("address %d refused", i)
		}
	}
	if why := refusedFor(t, l, "2001:db8:1:2::a", false); !strings.Contains(why, "2001:db8:1:2::/64") {
		t.Fatalf("rotating attacker: %q", why)
	}
	if why := refusedFor(t, l, "2001:db8:1:2::ff", false); why != "" {
		t.Fatalf("fresh address of the /64 refused: %s", why)
	}
	// IPv4-mapped addresses count as IPv4.
	for range 3 {
		fail(t, l, "::ffff:192.0.2.1")
	}
	if why := refusedFor(t, l, "192.0.2.1", false); why == "" {
		t.Fatal("mapped address not counted as IPv4")
	}
}

// TestBurstCannotPassCap: attempts are counted before their credentials are
// checked, so that of many concurrent attempts only the cap's worth get
// through (issue 12 item 2: 100 were checked against a cap of 30).
func TestBurstCannotPassCap(t *testing.T) {
	l, _ := newLimiter([]Level{{Bits: 32, Windows: []Window{{time.Minute, 10}}}, {Bits: 24, Windows: []Window{{time.Minute, 30}}}})
	ctx := t.Context()
	// Every address of the /24 failed once already, so the /24 cap bites.
	for i := range 20 {
		fail(t, l, "203.0.113."+itoa(i))
	}
	var mu sync.Mutex
	var held []*Reservation
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Go(func() {
			r, err := l.Reserve(ctx, netip.MustParseAddr("203.0.113."+itoa(i%20)), false)
			if err == nil {
				mu.Lock()
				held = append(held, r)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(held) != 10 {
		t.Fatalf("%d of 100 concurrent attempts let through with 20 of 30 failures already counted, want 10", len(held))
	}
	for _, r := range held {
		r.End(ctx, true)
		r.End(ctx, false) // a second End is ignored
	}
	if why := refusedFor(t, l, "203.0.113.1", false); !strings.Contains(why, "/24") {
		t.Fatalf("after the burst: %q", why)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestMemorySweep(t *testing.T) {
	m := NewMemory()
	ctx := context.Background()
	t0 := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	for i := range 1000 {
		m.Add(ctx, "k"+itoa(i%100)+itoa(i/100), time.Minute, t0, 1)
	}
	if m.Len() != 1000 {
		t.Fatalf("%d keys", m.Len())
	}
	m.Add(ctx, "new", time.Minute, t0.Add(3*time.Minute), 1)
	if m.Len() != 1 {
		t.Fatalf("%d keys after every window passed, want 1", m.Len())
	}
	// Taking back a reservation of the previous bucket.
	m.Add(ctx, "new", time.Minute, t0.Add(4*time.Minute), 1)
	if cur, prev, _ := m.Add(ctx, "new", time.Minute, t0.Add(4*time.Minute), 0); cur != 1 || prev != 1 {
		t.Fatalf("buckets %d %d", cur, prev)
	}
	m.Add(ctx, "new", time.Minute, t0.Add(3*time.Minute), -1)
	if cur, prev, _ := m.Add(ctx, "new", time.Minute, t0.Add(4*time.Minute), 0); cur != 1 || prev != 0 {
		t.Fatalf("after taking back: %d %d", cur, prev)
	}
}
