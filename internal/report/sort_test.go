package report

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestNthLargest compares the quickselect with a sort on random counts,
// mostly equal ones as in a botnet's tables.
func TestNthLargest(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		cs := make([]int64, 1+r.IntN(300))
		spread := 1 + r.IntN(20)
		for i := range cs {
			cs[i] = int64(r.IntN(spread))
		}
		n := 1 + r.IntN(len(cs))
		sorted := slices.Clone(cs)
		slices.Sort(sorted)
		want := sorted[len(sorted)-n]
		if got := nthLargest(slices.Clone(cs), n); got != want {
			t.Fatalf("nthLargest(%v, %d) = %d, want %d", cs, n, got, want)
		}
	}
}
