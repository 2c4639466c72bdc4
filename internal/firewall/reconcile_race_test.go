package firewall_test

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/ban"
	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/firewall"
	"github.com/relayguard/relayguard/internal/guard"
)

// heldReconcile is the real enforcer whose first Reconcile waits, after
// the guard has listed its bans, until the test releases it: the window in
// which a ban decided meanwhile was written and then undone.
type heldReconcile struct {
	firewall.Enforcer
	once                       sync.Once
	entered, release, returned chan struct{}
}

func (h *heldReconcile) Reconcile(ctx context.Context, bans []ban.Ban) error {
	first := false
	h.once.Do(func() { first = true })
	if !first {
		return h.Enforcer.Reconcile(ctx, bans)
	}
	close(h.entered)
	<-h.release
	defer close(h.returned)
	return h.Enforcer.Reconcile(ctx, bans)
}

// TestBanDecidedDuringReconcileStays: a ban decided while the guard's
// reconcile is between listing the bans in memory and writing them (here
// the reconcile of Run's start, as in the CI run where 2001:db8::3 was let
// through: "nftables set diff set=ban6 delete=64 add=0") is in the kernel
// once both are done — it was removed by the stale reconcile and stayed out
// until the next one, up to ReconcileEvery later.
func TestBanDecidedDuringReconcileStays(t *testing.T) {
	t.Parallel()
	b := firewall.NewTestBackend(t, config.FirewallNFTables)
	h := &heldReconcile{Enforcer: b.Enforcer, entered: make(chan struct{}), release: make(chan struct{}), returned: make(chan struct{})}
	c := config.Default().Guard
	c.MaxRetry, c.FindTime, c.BanTime = 1, config.Duration(10*time.Minute), config.Duration(2*time.Hour)
	c.Subnets = nil
	g := guard.New(guard.Options{Config: c, Enforcer: h})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { g.Run(ctx, 50*time.Millisecond, nil); close(done) }()
	defer func() { cancel(); <-done }()
	wait := func(what string, ch chan struct{}) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(30 * time.Second):
			t.Fatalf("timed out waiting for %s", what)
		}
	}
	wait("the start's reconcile", h.entered)

	published := make(chan struct{})
	go func() {
		g.Publish(ctx, event.Event{Time: time.Now(), Kind: event.AuthFailure, Source: "postfix", IP: b.Bad4})
		close(published)
	}()
	for deadline := time.Now().Add(10 * time.Second); !slices.ContainsFunc(g.Bans(), func(x guard.Ban) bool { return x.Prefix.Addr() == b.Bad4 }); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s not banned: %+v", b.Bad4, g.Bans())
		}
	}
	time.Sleep(200 * time.Millisecond) // an unserialised Add reaches the kernel now
	close(h.release)
	wait("the publish", published)
	wait("the reconcile", h.returned)
	b.MustBeBlocked(t, b.Bad4)
	b.MustConnect(t, b.Good4)
	if p := netip.PrefixFrom(b.Bad4, 32); !slices.ContainsFunc(g.Bans(), func(x guard.Ban) bool { return x.Prefix == p }) {
		t.Fatalf("ban of %s gone from memory: %+v", p, g.Bans())
	}
}
