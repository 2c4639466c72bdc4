package firewall

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/ban"
)

// TestNFTablesReconcileLarge writes 10,000 bans (nested IPv6 prefixes with
// different expiries among them) and reads the sets back: they must hold
// exactly the computed segments. Then 1% of the bans change.
func TestNFTablesReconcileLarge(t *testing.T) {
	needBinaries(t, "ip", "nft")
	n := newTestNet(t)
	e := newNFT(nftConfig(), discardLogger(), n.srvFD)
	t.Cleanup(func() { e.Teardown(bg()) })
	if err := e.Setup(bg()); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, bans := range [][]ban.Ban{banList(10000, now), banList(10100, now)[100:]} {
		if err := e.Reconcile(bg(), bans); err != nil {
			t.Fatal(err)
		}
		want := map[setKind][]segment{}
		want[perm4], want[perm6], want[temp4], want[temp6] = split(normalize(bans, now))
		c, err := e.c()
		if err != nil {
			t.Fatal(err)
		}
		total := 0
		for k, w := range want {
			got, err := e.readSet(c, k)
			if err != nil {
				t.Fatal(err)
			}
			total += len(got)
			if !slices.EqualFunc(got, w, func(a, b segment) bool { return a.rng == b.rng && sameExpiry(a.Until, b.Until) }) {
				t.Fatalf("set %s: %d ranges in the kernel, %d wanted; first difference at %s", e.set(k).Name, len(got), len(w), firstDiff(got, w))
			}
		}
		t.Logf("%d bans → %d kernel ranges", len(bans), total)
	}
}

func firstDiff(a, b []segment) string {
	for i := range min(len(a), len(b)) {
		if a[i].rng != b[i].rng || !sameExpiry(a[i].Until, b[i].Until) {
			return fmt.Sprintf("%d: kernel %v, want %v", i, a[i], b[i])
		}
	}
	return "the end"
}
