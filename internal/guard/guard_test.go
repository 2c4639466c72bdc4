package guard

import (
	"context"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/firewall"
	"github.com/relayguard/relayguard/internal/store"
)

var t0 = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)

func testConfig() config.GuardConfig {
	c := config.Default().Guard
	c.MaxRetry = 3
	c.FindTime = config.Duration(10 * time.Minute)
	c.BanTime = config.Duration(time.Hour)
	c.BanTimeFactor = 2
	c.BanTimeMax = config.Duration(5 * time.Hour)
	return c
}

type recorder struct{ bans []Ban }

func newTestGuard(t *testing.T, c config.GuardConfig, never ...string) (*Guard, *recorder, *time.Time) {
	t.Helper()
	now := t0
	rec := &recorder{}
	var nv []netip.Prefix
	for _, n := range never {
		nv = append(nv, netip.MustParsePrefix(n))
	}
	g := New(Options{Config: c, Never: nv, Replay: true, Now: func() time.Time { return now }, OnBan: func(b Ban) { rec.bans = append(rec.bans, b) }})
	return g, rec, &now
}

func fail(g *Guard, ip string, at time.Time) {
	g.Publish(context.Background(), event.Event{Time: at, Kind: event.AuthFailure, Source: "postfix", IP: netip.MustParseAddr(ip), Mechanism: "LOGIN"})
}

func TestMaxRetryAndEscalation(t *testing.T) {
	g, rec, now := newTestGuard(t, testConfig())
	ip := "198.51.100.7"
	// Two failures, then a third outside findtime: no ban.
	fail(g, ip, t0)
	fail(g, ip, t0.Add(time.Minute))
	fail(g, ip, t0.Add(11*time.Minute))
	if len(rec.bans) != 0 {
		t.Fatalf("banned too early: %+v", rec.bans)
	}
	// Third within findtime of the second-last: banned for bantime.
	at := t0.Add(12 * time.Minute)
	fail(g, ip, at)
	fail(g, ip, at.Add(time.Second))
	if len(rec.bans) != 1 {
		t.Fatalf("bans = %+v, want 1", rec.bans)
	}
	b := rec.bans[0]
	if b.Prefix != netip.MustParsePrefix("198.51.100.7/32") || b.Until != at.Add(time.Second).Add(time.Hour) || b.Count != 1 {
		t.Fatalf("first ban = %+v", b)
	}
	*now = at.Add(2 * time.Second)
	if ok, reason := g.Admit(netip.MustParseAddr(ip)); ok || !strings.Contains(reason, "198.51.100.7/32") {
		t.Fatalf("Admit = %v %q", ok, reason)
	}
	// Failures while banned (lines in flight) do not re-ban.
	fail(g, ip, at.Add(3*time.Second))
	if len(rec.bans) != 1 {
		t.Fatalf("re-banned while banned")
	}
	// After expiry, a repeat offender gets 2h, then 4h, then the 5h cap.
	want := []time.Duration{2 * time.Hour, 4 * time.Hour, 5 * time.Hour, 5 * time.Hour}
	for i, d := range want {
		last := rec.bans[len(rec.bans)-1]
		at := last.Until.Add(time.Minute)
		for k := range 3 {
			fail(g, ip, at.Add(time.Duration(k)*time.Second))
		}
		if len(rec.bans) != i+2 {
			t.Fatalf("repeat %d: %d bans", i+1, len(rec.bans))
		}
		b := rec.bans[i+1]
		if got := b.Until.Sub(b.Created); got != d || b.Count != i+2 {
			t.Errorf("repeat %d: ban of %s count %d, want %s count %d", i+1, got, b.Count, d, i+2)
		}
	}
	*now = rec.bans[len(rec.bans)-1].Until.Add(time.Second)
	if ok, _ := g.Admit(netip.MustParseAddr(ip)); !ok {
		t.Fatal("expired ban still refuses")
	}
}

func TestSubnetAggregation(t *testing.T) {
	g, rec, now := newTestGuard(t, testConfig())
	// The example: five addresses of one /24, each failing once or
	// twice (below maxretry), are banned as 212.70.149.0/24.
	for i, a := range []string{"212.70.149.4", "212.70.149.20", "212.70.149.36", "212.70.149.52"} {
		fail(g, a, t0.Add(time.Duration(i)*time.Minute))
		fail(g, a, t0.Add(time.Duration(i)*time.Minute+time.Second))
	}
	if len(rec.bans) != 0 {
		t.Fatalf("banned with 4 addresses: %+v", rec.bans)
	}
	fail(g, "212.70.149.83", t0.Add(5*time.Minute))
	if len(rec.bans) != 1 || rec.bans[0].Prefix != netip.MustParsePrefix("212.70.149.0/24") {
		t.Fatalf("bans = %+v, want 212.70.149.0/24", rec.bans)
	}
	*now = t0.Add(6 * time.Minute)
	if ok, _ := g.Admit(netip.MustParseAddr("212.70.149.200")); ok {
		t.Fatal("an address of the banned /24 is admitted")
	}
	if ok, _ := g.Admit(netip.MustParseAddr("212.70.150.1")); !ok {
		t.Fatal("the next /24 is refused")
	}
	// An address ban inside is dropped when the /24 ban covers it.
	g2, rec2, _ := newTestGuard(t, testConfig())
	for k := range 3 {
		fail(g2, "212.70.149.4", t0.Add(time.Duration(k)*time.Second))
	}
	for i, a := range []string{"212.70.149.20", "212.70.149.36", "212.70.149.52", "212.70.149.83"} {
		fail(g2, a, t0.Add(time.Minute+time.Duration(i)*time.Second))
	}
	if len(rec2.bans) != 2 {
		t.Fatalf("bans = %+v", rec2.bans)
	}
	if bans := g2.Bans(); len(bans) != 1 || bans[0].Prefix.Bits() != 24 {
		t.Fatalf("bans in force = %+v, want only the /24", bans)
	}
}

func TestSubnetAggregationIPv6(t *testing.T) {
	g, rec, _ := newTestGuard(t, testConfig())
	// Three addresses of one /64 (default threshold 3): the /64 is banned.
	for i, a := range []string{"2001:db8:1:2::10", "2001:db8:1:2::20", "2001:db8:1:2:abcd::1"} {
		fail(g, a, t0.Add(time.Duration(i)*time.Second))
	}
	if len(rec.bans) != 1 || rec.bans[0].Prefix != netip.MustParsePrefix("2001:db8:1:2::/64") {
		t.Fatalf("bans = %+v, want 2001:db8:1:2::/64", rec.bans)
	}
	// Ten addresses in ten different /64s of one /48: the /48.
	g, rec, _ = newTestGuard(t, testConfig())
	for i := range 10 {
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 9, 0, byte(i), 15: 1})
		fail(g, a.String(), t0.Add(time.Duration(i)*time.Second))
	}
	if len(rec.bans) != 1 || rec.bans[0].Prefix != netip.MustParsePrefix("2001:db8:9::/48") {
		t.Fatalf("bans = %+v, want 2001:db8:9::/48", rec.bans)
	}
}

func TestNeverBan(t *testing.T) {
	c := testConfig()
	c.Allow = []string{"203.0.113.0/28"}
	g, rec, _ := newTestGuard(t, c, "192.0.2.0/24" /* mynetworks */, "198.51.100.25/32" /* own address */)
	for _, a := range []string{"192.0.2.9", "198.51.100.25", "203.0.113.5", "127.0.0.1", "::1"} {
		for k := range 10 {
			fail(g, a, t0.Add(time.Duration(k)*time.Second))
		}
	}
	if len(rec.bans) != 0 {
		t.Fatalf("banned a never-ban address: %+v", rec.bans)
	}
	// Five attackers in 198.51.100.0/24, which holds our own address: each
	// address may be banned, the /24 never.
	for i := range 5 {
		for k := range 3 {
			fail(g, netip.AddrFrom4([4]byte{198, 51, 100, byte(100 + i)}).String(), t0.Add(time.Duration(k)*time.Second))
		}
	}
	for _, b := range rec.bans {
		if b.Prefix.Bits() != 32 {
			t.Fatalf("banned %s, which contains our own address", b.Prefix)
		}
	}
	if len(rec.bans) != 5 {
		t.Fatalf("bans = %d, want 5 single addresses", len(rec.bans))
	}
	if _, err := g.Ban(t.Context(), netip.MustParsePrefix("192.0.0.0/16"), 0, ""); err == nil {
		t.Fatal("manual ban of a prefix containing mynetworks accepted")
	}
}

func TestRecentSuccessGrace(t *testing.T) {
	g, rec, _ := newTestGuard(t, testConfig())
	ip := netip.MustParseAddr("198.51.100.20")
	g.Publish(context.Background(), event.Event{Time: t0, Kind: event.AuthSuccess, Source: "postfix", IP: ip, User: "alice"})
	// One typo too many: maxretry failures are not enough.
	for k := range 5 {
		fail(g, ip.String(), t0.Add(time.Minute+time.Duration(k)*time.Second))
	}
	if len(rec.bans) != 0 {
		t.Fatalf("user with a recent login banned: %+v", rec.bans)
	}
	fail(g, ip.String(), t0.Add(2*time.Minute))
	if len(rec.bans) != 1 {
		t.Fatalf("twice maxretry: bans = %+v", rec.bans)
	}
	// After the grace period, maxretry applies again.
	g2, rec2, _ := newTestGuard(t, testConfig())
	g2.Publish(context.Background(), event.Event{Time: t0, Kind: event.AuthSuccess, IP: ip})
	for k := range 3 {
		fail(g2, ip.String(), t0.Add(2*time.Hour+time.Duration(k)*time.Second))
	}
	if len(rec2.bans) != 1 {
		t.Fatalf("after grace: bans = %+v", rec2.bans)
	}
}

func TestPopBeforeSMTP(t *testing.T) {
	c := testConfig()
	g, _, now := newTestGuard(t, c)
	ip := netip.MustParseAddr("198.51.100.30")
	g.Publish(context.Background(), event.Event{Time: t0, Kind: event.LoginSuccess, Source: "dovecot", Service: "pop3", IP: ip})
	if g.PopBeforeSMTP(ip) {
		t.Fatal("POP-before-SMTP permitted while off")
	}
	c.PopBeforeSMTP = config.Duration(10 * time.Minute)
	g, _, now = newTestGuard(t, c)
	g.Publish(context.Background(), event.Event{Time: t0, Kind: event.LoginSuccess, Source: "dovecot", Service: "imap", IP: ip})
	*now = t0.Add(9 * time.Minute)
	if !g.PopBeforeSMTP(ip) {
		t.Fatal("not permitted within the window")
	}
	if g.PopBeforeSMTP(netip.MustParseAddr("198.51.100.31")) {
		t.Fatal("another address permitted")
	}
	*now = t0.Add(11 * time.Minute)
	if g.PopBeforeSMTP(ip) {
		t.Fatal("permitted after the window")
	}
}

// Manual bans persist in SQLite, expire, and are seen by another Guard on
// the same database after a Sync.
func TestManualBansPersist(t *testing.T) {
	dir := t.TempDir()
	db, err := store.OpenSQLite(t.Context(), filepath.Join(dir, "data"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	st, err := NewSQLiteStore(t.Context(), db)
	if err != nil {
		t.Fatal(err)
	}
	now := t0
	clock := func() time.Time { return now }
	a := New(Options{Config: testConfig(), Store: st, Now: clock})
	if _, err := a.Ban(t.Context(), netip.MustParsePrefix("203.0.113.0/24"), time.Hour, "scanner"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Ban(t.Context(), netip.MustParsePrefix("2001:db8:bad::/48"), 0, ""); err != nil {
		t.Fatal(err)
	}
	b := New(Options{Config: testConfig(), Store: st, Now: clock})
	if err := b.Sync(t.Context(), true); err != nil {
		t.Fatal(err)
	}
	if ok, _ := b.Admit(netip.MustParseAddr("203.0.113.77")); ok {
		t.Fatal("stored ban not loaded")
	}
	if ok, _ := b.Admit(netip.MustParseAddr("2001:db8:bad:1::1")); ok {
		t.Fatal("stored IPv6 ban not loaded")
	}
	now = t0.Add(61 * time.Minute)
	if err := b.Sync(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	bans := b.Bans()
	if len(bans) != 1 || !bans[0].Permanent() {
		t.Fatalf("after expiry: %+v", bans)
	}
	stored, _ := st.ListBans(t.Context())
	if len(stored) != 1 {
		t.Fatalf("expired ban still stored: %+v", stored)
	}
	if found, err := a.Unban(t.Context(), netip.MustParsePrefix("2001:db8:bad::/48")); !found || err != nil {
		t.Fatalf("Unban = %v %v", found, err)
	}
	b.Sync(t.Context(), false)
	if len(b.Bans()) != 0 {
		t.Fatalf("unban not seen: %+v", b.Bans())
	}
}

// countingEnforcer records the calls the guard makes (firewall.None
// otherwise).
type countingEnforcer struct {
	firewall.None
	adds []Ban
}

func (c *countingEnforcer) Add(_ context.Context, b Ban) error {
	c.adds = append(c.adds, b)
	return nil
}

// A ban the guard decided and stored is not written to the firewall again
// by the next Sync: the stored expiry (no monotonic clock reading) equals the
// one in memory.
func TestSyncDoesNotRewriteOwnBans(t *testing.T) {
	db, err := store.OpenSQLite(t.Context(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	st, err := NewSQLiteStore(t.Context(), db)
	if err != nil {
		t.Fatal(err)
	}
	enf := &countingEnforcer{}
	g := New(Options{Config: testConfig(), Store: st, Enforcer: enf}) // live: bans last from time.Now()
	now := time.Now()
	for k := range 3 {
		fail(g, "198.51.100.7", now.Add(time.Duration(k)*time.Millisecond))
	}
	if len(enf.adds) != 1 {
		t.Fatalf("firewall adds after the ban: %d, want 1", len(enf.adds))
	}
	if err := g.Sync(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	if len(enf.adds) != 1 {
		t.Fatalf("Sync wrote the unchanged ban again: %d adds", len(enf.adds))
	}
}

// Successful logins are forgotten once they no longer matter, so a
// long-running server does not keep every address that ever logged in.
func TestLoginsForgotten(t *testing.T) {
	c := testConfig()
	c.SuccessGrace = config.Duration(time.Hour)
	c.PopBeforeSMTP = config.Duration(10 * time.Minute)
	g, _, _ := newTestGuard(t, c)
	for i := range 20000 {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		g.Publish(t.Context(), event.Event{Time: t0.Add(time.Duration(i) * time.Second), Kind: event.LoginSuccess, Source: "dovecot", Service: "imap", IP: ip})
	}
	// 20000 logins one second apart: only about the last hour's (3600)
	// can matter, plus at most one sweep interval (4096).
	g.mu.RLock()
	ns, np := len(g.success), len(g.pop)
	g.mu.RUnlock()
	if ns > 3600+4096 || np > 3600+4096 {
		t.Fatalf("remembered %d successes and %d POP/IMAP logins of 20000", ns, np)
	}
	// The latest login still counts.
	last := netip.AddrFrom4([4]byte{10, 0, byte(19999 >> 8), byte(19999 & 0xff)})
	g.o.Now = func() time.Time { return t0.Add(19999*time.Second + time.Minute) }
	if !g.PopBeforeSMTP(last) {
		t.Fatal("the latest login was forgotten")
	}
}

// TestUnknownRecipientsCountWhenConfigured: unknown-recipient events (recipient
// enumeration, issue 12 item 3) ban only when guard.count lists them.
func TestUnknownRecipientsCountWhenConfigured(t *testing.T) {
	enumerate := func(g *Guard, ip string) {
		for k := range 5 {
			g.Publish(context.Background(), event.Event{Time: t0.Add(time.Duration(k) * time.Second), Kind: event.UnknownRecipient,
				Source: "smtpd", IP: netip.MustParseAddr(ip), Rule: "reject_unlisted_recipient", Detail: "guess@example.org"})
		}
	}
	g, rec, _ := newTestGuard(t, testConfig())
	enumerate(g, "198.51.100.30")
	if len(rec.bans) != 0 {
		t.Fatalf("banned for unknown recipients by default: %+v", rec.bans)
	}
	c := testConfig()
	c.Count = append(c.Count, "unknown_recipient")
	g, rec, _ = newTestGuard(t, c)
	enumerate(g, "198.51.100.30")
	if len(rec.bans) != 1 || rec.bans[0].Prefix != netip.MustParsePrefix("198.51.100.30/32") {
		t.Fatalf("bans %+v, want 198.51.100.30/32", rec.bans)
	}
}

// TestRecentLogin: the success grace the AUTH limiter asks about.
func TestRecentLogin(t *testing.T) {
	g, _, now := newTestGuard(t, testConfig())
	ip := netip.MustParseAddr("198.51.100.21")
	if g.RecentLogin(ip) {
		t.Fatal("recent login before any")
	}
	g.Publish(context.Background(), event.Event{Time: t0, Kind: event.AuthSuccess, Source: "smtpd", IP: ip, User: "alice"})
	*now = t0.Add(30 * time.Minute)
	if !g.RecentLogin(ip) {
		t.Fatal("no recent login 30 minutes after one")
	}
	*now = t0.Add(2 * time.Hour)
	if g.RecentLogin(ip) {
		t.Fatal("recent login after success_grace")
	}
}

// Version moves with every change of the ban list, wherever it comes from
// (decided, added, removed, learnt from or expired in the store), and not
// when a Sync finds nothing new.
func TestVersionMovesWithTheBans(t *testing.T) {
	db, err := store.OpenSQLite(t.Context(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	st, err := NewSQLiteStore(t.Context(), db)
	if err != nil {
		t.Fatal(err)
	}
	now := t0
	clock := func() time.Time { return now }
	a := New(Options{Config: testConfig(), Store: st, Now: clock, Replay: true})
	b := New(Options{Config: testConfig(), Store: st, Now: clock})
	step := func(what string, g *Guard, do func(), moves bool) {
		t.Helper()
		v := g.Version()
		do()
		if got := g.Version() != v; got != moves {
			t.Errorf("%s: version moved %v, want %v", what, got, moves)
		}
	}
	step("decided", a, func() {
		for k := range 3 {
			fail(a, "198.51.100.7", t0.Add(time.Duration(k)*time.Second))
		}
	}, true)
	step("added", a, func() { a.Ban(t.Context(), netip.MustParsePrefix("203.0.113.0/24"), 2*time.Hour, "x") }, true)
	step("learnt from the store", b, func() { b.Sync(t.Context(), false) }, true)
	step("nothing new", b, func() { b.Sync(t.Context(), false) }, false)
	step("removed", a, func() { a.Unban(t.Context(), netip.MustParsePrefix("203.0.113.0/24")) }, true)
	step("removing what is not there", a, func() { a.Unban(t.Context(), netip.MustParsePrefix("192.0.2.0/24")) }, false)
	step("removed elsewhere", b, func() { b.Sync(t.Context(), false) }, true)
	now = t0.Add(3 * time.Hour)
	step("expired", b, func() { b.Sync(t.Context(), false) }, true)
	if len(b.Bans()) != 0 {
		t.Errorf("bans left: %v", b.Bans())
	}
}
