package firewall

import (
	"testing"
	"time"
)

// TestNFTablesOwnCommitThatChangesNothing: a batch of the enforcer's that
// changes nothing (an element added again as it is, on a kernel that does
// not update element timeouts or for a permanent element; a set flushed
// while empty) creates no kernel transaction, so the ruleset generation does not
// move. Counting it as one of its own commits made the enforcer expect one
// generation more than the kernel's, so the next commit by anyone else
// (here `nft delete element` by hand) matched the expected generation and
// went unnoticed: a ban believed in the kernel that was not there.
func TestNFTablesOwnCommitThatChangesNothing(t *testing.T) {
	n, e := newNFTTest(t, nftConfig())
	bans := append(hostBans(10, time.Now().Add(time.Hour)), banOf(n.bad4)) // bad4 permanent
	if err := e.Reconcile(bg(), bans); err != nil {
		t.Fatal(err)
	}
	n.mustBeBlocked(t, n.bad4)
	e.mu.Lock()
	nl, err := e.gc()
	if err != nil {
		e.mu.Unlock()
		t.Fatal(err)
	}
	g0, _ := generation(nl)
	c, err := e.c()
	if err == nil { // the permanent element again, as it is: one commit
		err = e.write(c, perm4, nil, []segment{{rng: prefixRange(banOf(n.bad4).Prefix)}})
	}
	g1, _ := generation(nl)
	e.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if g1 != g0 {
		t.Fatalf("the commit that changes nothing moved the generation %d to %d: the test does not reach its case on this kernel", g0, g1)
	}
	n.inside(t, "nft", "delete", "element", "inet", "relayguard", "perm4", "{", n.bad4.String(), "}")
	n.mustConnect(t, n.bad4)
	if err := e.Reconcile(bg(), bans); err != nil {
		t.Fatal(err)
	}
	n.mustBeBlocked(t, n.bad4)
}

// TestNFTablesReadsNowAndThen: whatever the generation says, one reconcile
// in fullReadEvery+1 reads the sets (the backstop for an outside commit
// between an own commit that changed nothing and the generation read
// after it).
func TestNFTablesReadsNowAndThen(t *testing.T) {
	n, e := newNFTTest(t, nftConfig())
	bans := hostBans(10, time.Now().Add(time.Hour))
	n.inside(t, "nft", "add", "table", "inet", "rgother") // another commit: this reconcile reads
	reads := e.reads
	if err := e.Reconcile(bg(), bans); err != nil {
		t.Fatal(err)
	}
	if e.reads != reads+1 {
		t.Fatalf("%d reads after another commit, want 1", e.reads-reads)
	}
	reads = e.reads
	for range fullReadEvery {
		if err := e.Reconcile(bg(), bans); err != nil {
			t.Fatal(err)
		}
	}
	if e.reads != reads {
		t.Fatalf("%d reads in %d reconciles while only the enforcer wrote", e.reads-reads, fullReadEvery)
	}
	if err := e.Reconcile(bg(), bans); err != nil {
		t.Fatal(err)
	}
	if e.reads != reads+1 {
		t.Fatalf("%d reads in %d reconciles, want 1", e.reads-reads, fullReadEvery+1)
	}
}
