package guard

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/ban"
	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/firewall"
)

// kernel is an in-memory enforcer: the prefixes a real one would hold. The
// kernel behaviour of the real backends is tested in internal/firewall
// (TestSubnetBanCarvedAroundLogins); this one shows what the guard asks.
type kernel struct {
	mu  sync.Mutex
	set map[netip.Prefix]bool
}

func (k *kernel) Setup(context.Context) error    { return nil }
func (k *kernel) Teardown(context.Context) error { return nil }
func (k *kernel) Status(context.Context) (string, error) {
	return "", nil
}
func (k *kernel) Reconcile(_ context.Context, bans []ban.Ban) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	clear(k.set)
	for _, b := range bans {
		k.set[b.Prefix] = true
	}
	return nil
}
func (k *kernel) Add(_ context.Context, b ban.Ban) error {
	k.mu.Lock()
	k.set[b.Prefix] = true
	k.mu.Unlock()
	return nil
}
func (k *kernel) Remove(_ context.Context, p netip.Prefix) error {
	k.mu.Lock()
	delete(k.set, p)
	k.mu.Unlock()
	return nil
}

// blocks reports whether a prefix the kernel holds covers a.
func (k *kernel) blocks(a netip.Addr) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	for p := range k.set {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func (k *kernel) list() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var s []string
	for p := range k.set {
		s = append(s, p.String())
	}
	slices.Sort(s)
	return strings.Join(s, " ")
}

func TestSubnetBanCarvesGracedAddresses(t *testing.T) {
	ctx := context.Background()
	c := testConfig() // maxretry 3; /24 after 5 addresses
	c.SuccessGrace = config.Duration(30 * time.Minute)
	now := t0
	k := &kernel{set: map[netip.Prefix]bool{}}
	g := New(Options{Config: c, Enforcer: k, Now: func() time.Time { return now }})
	user := netip.MustParseAddr("212.70.149.7")
	g.Publish(ctx, event.Event{Time: now, Kind: event.AuthSuccess, Source: "postfix", IP: user})
	for i, a := range []string{"212.70.149.4", "212.70.149.20", "212.70.149.36", "212.70.149.52", "212.70.149.83"} {
		fail(g, a, now.Add(time.Duration(i)*time.Second))
	}
	if !slices.ContainsFunc(g.Bans(), func(b Ban) bool { return b.Prefix == netip.MustParsePrefix("212.70.149.0/24") }) {
		t.Fatalf("bans %+v, want 212.70.149.0/24", g.Bans())
	}
	// In process and in the kernel, the /24 bans everyone but the user.
	if ok, why := g.Admit(user); !ok {
		t.Fatalf("the user who just logged in is refused: %s", why)
	}
	if ok, _ := g.Admit(netip.MustParseAddr("212.70.149.200")); ok {
		t.Fatal("another address of the banned /24 is admitted")
	}
	want := strings.Join(func() []string {
		var s []string
		for _, p := range firewall.Exclude(netip.MustParsePrefix("212.70.149.0/24"), []netip.Addr{user}) {
			s = append(s, p.String())
		}
		slices.Sort(s)
		return s
	}(), " ")
	if got := k.list(); got != want || k.blocks(user) || !k.blocks(netip.MustParseAddr("212.70.149.6")) {
		t.Fatalf("kernel holds %s, want %s", got, want)
	}
	// A full reconcile gives the same carving.
	if err := g.Sync(ctx, true); err != nil {
		t.Fatal(err)
	}
	if got := k.list(); got != want {
		t.Fatalf("after a reconcile the kernel holds %s, want %s", got, want)
	}

	// The user, graced, fails six times (twice maxretry): its own ban
	// applies, carved or not.
	for i := range 6 {
		fail(g, user.String(), now.Add(time.Minute+time.Duration(i)*time.Second))
	}
	if ok, _ := g.Admit(user); ok || !k.blocks(user) {
		t.Fatalf("a graced address failing twice maxretry is not banned: kernel %s", k.list())
	}
	if err := g.Sync(ctx, true); err != nil {
		t.Fatal(err)
	}
	if !k.blocks(user) {
		t.Fatalf("the graced address's own ban was lost in a reconcile: %s", k.list())
	}
	if _, err := g.Unban(ctx, netip.PrefixFrom(user, 32)); err != nil {
		t.Fatal(err)
	}
	if k.blocks(user) {
		t.Fatalf("unbanned, still blocked: %s", k.list())
	}

	// The grace runs out: the subnet is whole again (Run reconciles).
	now = now.Add(31 * time.Minute)
	if !g.holesExpired(now) {
		t.Fatal("Run would not notice that the grace ran out")
	}
	if err := g.Sync(ctx, true); err != nil {
		t.Fatal(err)
	}
	if got := k.list(); got != "212.70.149.0/24" {
		t.Fatalf("after the grace the kernel holds %s, want the whole /24", got)
	}
	if ok, _ := g.Admit(user); ok {
		t.Fatal("after the grace the user is still admitted")
	}

	// A login seen while the subnet is banned (over a service the ban does
	// not cover) asks for a reconcile that carves it out.
	other := netip.MustParseAddr("212.70.149.99")
	g.Publish(ctx, event.Event{Time: now, Kind: event.LoginSuccess, Source: "dovecot", Service: "imap", IP: other})
	if !g.stale.Load() {
		t.Fatal("a login inside a banned subnet did not ask for a reconcile")
	}
	if err := g.Sync(ctx, true); err != nil {
		t.Fatal(err)
	}
	if k.blocks(other) || !k.blocks(user) {
		t.Fatalf("kernel %s: want %s carved out, %s blocked", k.list(), other, user)
	}
	if ok, _ := g.Admit(other); !ok {
		t.Fatal("the user who logged in inside the banned subnet is refused")
	}
	// Lifting the subnet ban removes every piece.
	if _, err := g.Unban(ctx, netip.MustParsePrefix("212.70.149.0/24")); err != nil {
		t.Fatal(err)
	}
	if got := k.list(); got != "" {
		t.Fatalf("after lifting the subnet ban the kernel holds %s", got)
	}
}

// Without success_grace nothing is carved.
func TestNoGraceNoCarving(t *testing.T) {
	c := testConfig()
	c.SuccessGrace = 0
	k := &kernel{set: map[netip.Prefix]bool{}}
	g := New(Options{Config: c, Enforcer: k, Now: func() time.Time { return t0 }})
	g.Publish(context.Background(), event.Event{Time: t0, Kind: event.AuthSuccess, Source: "postfix", IP: netip.MustParseAddr("212.70.149.7")})
	for i, a := range []string{"212.70.149.4", "212.70.149.20", "212.70.149.36", "212.70.149.52", "212.70.149.83"} {
		fail(g, a, t0.Add(time.Duration(i)*time.Second))
	}
	if got := k.list(); got != "212.70.149.0/24" {
		t.Fatalf("kernel holds %s", got)
	}
}
