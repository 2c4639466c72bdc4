package store

import (
	"github.com/relayguard/relayguard/internal/redistest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/ban"
)

// startRedis runs a real redis-server and returns its URL.
func startRedis(t *testing.T) string { return redistest.Start(t).URL() }

func TestRedisBans(t *testing.T) {
	url := startRedis(t)
	ctx := t.Context()
	r, err := OpenRedis(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	msgs := make(chan string, 10)
	go r.Subscribe(ctx, func(m string) { msgs <- m })
	// Pub/sub drops messages sent before the subscription: wait for it.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if m, err := r.C.PubSubNumSub(ctx, r.Prefix+"bans").Result(); err == nil && m[r.Prefix+"bans"] == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("subscription not established")
		}
	}

	until := time.Date(2026, 11, 24, 10, 0, 0, 123, time.UTC)
	created := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	b4 := ban.Ban{Prefix: netip.MustParsePrefix("212.70.149.0/24"), Until: until, Reason: "5 addresses", Source: "guard", Created: created, Count: 2}
	b6 := ban.Ban{Prefix: netip.MustParsePrefix("2001:db8:bad::/48"), Reason: "manual", Source: "manual", Created: created, Count: 1}
	for _, b := range []ban.Ban{b4, b6} {
		if err := r.PutBan(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	// The announcements carry the ban (the subscribers apply it without
	// reading the hash).
	for _, want := range []ban.Ban{b4, b6} {
		select {
		case msg := <-msgs:
			m, err := ParseBanMessage(msg)
			if err != nil || m.Delete || m.Prefix != want.Prefix || !m.Ban.Until.Equal(want.Until) ||
				!m.Ban.Created.Equal(want.Created) || m.Ban.Reason != want.Reason || m.Ban.Count != want.Count || m.Origin != "" {
				t.Fatalf("message %q read as %+v, %v; want the ban %+v", msg, m, err, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no pub/sub message for %s", want.Prefix)
		}
	}
	list, err := r.ListBans(ctx)
	if err != nil || len(list) != 2 {
		t.Fatalf("ListBans = %+v, %v", list, err)
	}
	for _, b := range list {
		want := b4
		if b.Prefix.Addr().Is6() {
			want = b6
		}
		if !b.Until.Equal(want.Until) || !b.Created.Equal(want.Created) || b.Reason != want.Reason || b.Count != want.Count || b.Permanent() != want.Permanent() {
			t.Errorf("stored %+v, want %+v", b, want)
		}
	}
	if n, _ := r.BanCount(ctx, b4.Prefix); n != 2 {
		t.Errorf("BanCount = %d, want 2", n)
	}
	// History only grows.
	b4.Count = 1
	r.PutBan(ctx, b4)
	if n, _ := r.BanCount(ctx, b4.Prefix); n != 2 {
		t.Errorf("BanCount after a lower count = %d, want 2", n)
	}
	if err := r.DeleteBan(ctx, b6.Prefix); err != nil {
		t.Fatal(err)
	}
	list, _ = r.ListBans(ctx)
	if len(list) != 1 {
		t.Fatalf("after delete: %+v", list)
	}
	e1, n1, err := r.Epoch(ctx)
	e2, n2, _ := r.Epoch(ctx)
	if err != nil || e1 == "" || e1 != e2 || n1 == 0 || n1 != n2 {
		t.Fatalf("epoch %q %q, change counter %d %d, %v", e1, e2, n1, n2, err)
	}
	if n, err := r.DeleteBanFrom(ctx, b6.Prefix, "x"); err != nil || n != n1+1 {
		t.Fatalf("change counter after a delete: %d (was %d), %v", n, n1, err)
	}
	// a rotation by one server; a second one that saw the old token too
	// keeps the first one's
	e3, err := r.RotateEpoch(ctx, e1)
	if err != nil || e3 == e1 || e3 == "" {
		t.Fatalf("rotated epoch %q from %q: %v", e3, e1, err)
	}
	if e4, err := r.RotateEpoch(ctx, e1); err != nil || e4 != e3 {
		t.Fatalf("second rotation from the old epoch: %q, want %q (%v)", e4, e3, err)
	}
}

func TestRedisCounters(t *testing.T) {
	url := startRedis(t)
	ctx := t.Context()
	r, err := OpenRedis(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ip := netip.MustParseAddr("198.51.100.7")
	t0 := time.Now()
	for i := range 4 {
		n, err := r.AddFailure(ctx, ip, t0.Add(time.Duration(i)*time.Minute), 10*time.Minute)
		if err != nil || n != i+1 {
			t.Fatalf("failure %d: n=%d err=%v", i, n, err)
		}
	}
	// 12 minutes later: only the failures in (t-10m, t] count: 3m and 12m.
	if n, _ := r.AddFailure(ctx, ip, t0.Add(12*time.Minute), 10*time.Minute); n != 2 {
		t.Fatalf("after the window: n=%d, want 2", n)
	}
	r.Forget(ctx, ip)
	if n, _ := r.AddFailure(ctx, ip, t0.Add(13*time.Minute), 10*time.Minute); n != 1 {
		t.Fatalf("after Forget: n=%d", n)
	}
	p := netip.MustParsePrefix("212.70.149.0/24")
	for i, a := range []string{"212.70.149.4", "212.70.149.20", "212.70.149.4", "212.70.149.36"} {
		n, err := r.AddAttacker(ctx, p, netip.MustParseAddr(a), t0.Add(time.Duration(i)*time.Second), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if want := []int{1, 2, 2, 3}[i]; n != want {
			t.Fatalf("attacker %d: distinct=%d, want %d", i, n, want)
		}
	}
	// Limit counters: a bucket and the one before it, taken back with -1.
	now := time.Date(2026, 11, 23, 10, 0, 30, 0, time.UTC)
	for i := range 3 {
		if cur, prev, err := r.Add(ctx, "auth:198.51.100.0/24:60", time.Minute, now, 1); err != nil || cur != int64(i+1) || prev != 0 {
			t.Fatalf("Add %d: %d %d %v", i, cur, prev, err)
		}
	}
	if cur, prev, err := r.Add(ctx, "auth:198.51.100.0/24:60", time.Minute, now, -1); err != nil || cur != 2 || prev != 0 {
		t.Fatalf("Add -1: %d %d %v", cur, prev, err)
	}
	if cur, prev, err := r.Add(ctx, "auth:198.51.100.0/24:60", time.Minute, now.Add(time.Minute), 1); err != nil || cur != 1 || prev != 2 {
		t.Fatalf("next bucket: %d %d %v", cur, prev, err)
	}
	if _, err := OpenRedis(ctx, "http://nope", nil); err == nil {
		t.Fatal("bad URL accepted")
	}
}

// A bad URL is named in the error, without its password.
func TestOpenRedisBadURLHidesPassword(t *testing.T) {
	_, err := OpenRedis(t.Context(), "redis://user:s3cret@127.0.0.1:6379/notanumber", nil)
	if err == nil {
		t.Fatal("bad database number accepted")
	}
	if strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "127.0.0.1:6379/notanumber") {
		t.Fatalf("error: %v", err)
	}
}

// Open refuses a URL that is not Redis's, naming it without its password,
// and opens (reporting nothing but Health) when Redis does not answer.
func TestOpenStores(t *testing.T) {
	ctx := t.Context()
	_, err := Open(ctx, t.TempDir(), "http://user:s3cret@127.0.0.1:6379/0", nil)
	if err == nil || strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "[store] url") {
		t.Fatalf("http URL: %v", err)
	}
	rs := redistest.Start(t)
	rs.Stop()
	st, err := Open(ctx, t.TempDir(), rs.URL(), nil)
	if err != nil {
		t.Fatalf("Redis down: %v", err)
	}
	defer st.Close()
	if !st.Shared() || !st.Redis.Health.Down() || st.Redis.Health.Usable() {
		t.Fatal("Redis down at open, but Health says usable")
	}
	if err := st.DB.PingContext(ctx); err != nil {
		t.Fatal(err)
	}
}

// SubscribeBans says when the subscription is (re)established, so that the
// subscriber reads the whole list after an outage (what was announced
// meanwhile is lost), and carries deletions and pushes ("sync").
func TestSubscribeBansAcrossRestart(t *testing.T) {
	rs := redistest.Start(t)
	ctx := t.Context()
	r, err := OpenRedis(ctx, rs.URL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	msgs := make(chan string, 10)
	subs := make(chan struct{}, 10)
	go r.SubscribeBans(ctx, func(m string) { msgs <- m }, func() { subs <- struct{}{} })
	waitSub := func(what string) {
		t.Helper()
		select {
		case <-subs:
		case <-time.After(20 * time.Second):
			t.Fatalf("no subscription confirmation %s", what)
		}
	}
	next := func() BanMessage {
		t.Helper()
		select {
		case msg := <-msgs:
			m, err := ParseBanMessage(msg)
			if err != nil {
				t.Fatalf("message %q: %v", msg, err)
			}
			return m
		case <-time.After(10 * time.Second):
			t.Fatal("no message")
		}
		return BanMessage{}
	}
	waitSub("at start")
	p := netip.MustParsePrefix("198.51.100.0/24")
	if _, err := r.DeleteBanFrom(ctx, p, "node1"); err != nil {
		t.Fatal(err)
	}
	if m := next(); !m.Delete || m.Prefix != p || m.Origin != "node1" {
		t.Fatalf("delete announced as %+v", m)
	}
	rs.Stop()
	rs.Restart()
	waitSub("after Redis restarted")
	b := ban.Ban{Prefix: p, Until: time.Now().Add(time.Hour), Reason: "r", Source: "guard", Created: time.Now(), Count: 3}
	if _, err := r.PutBans(ctx, []ban.Ban{b}, "node2"); err != nil {
		t.Fatal(err)
	}
	if m := next(); !m.Resync || m.Origin != "node2" {
		t.Fatalf("push announced as %+v", m)
	}
	if n, _ := r.BanCount(ctx, p); n != 3 {
		t.Fatalf("history after the push: %d, want 3", n)
	}
	if _, err := ParseBanMessage("add 198.51.100.0/24"); err == nil {
		t.Fatal("an announcement without the ban accepted")
	}
}
