package guard

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/store"
)

// gatedCounters is a real SQLite Counters whose first AddFailure waits for
// gate to close (a slow Primary: a remote Redis, a busy disk), saying so on
// entered.
type gatedCounters struct {
	*SQLiteCounters
	once          sync.Once
	entered, gate chan struct{}
}

func (g *gatedCounters) AddFailure(ctx context.Context, ip netip.Addr, t time.Time, w time.Duration) (int, error) {
	g.once.Do(func() {
		close(g.entered)
		<-g.gate
	})
	return g.SQLiteCounters.AddFailure(ctx, ip, t, w)
}

// TestWriteBackDoesNotStallCounting: while the failures counted during an
// outage are written back to Primary, another counting call goes on: the
// write-back held FallbackCounters' lock for all its calls (up to
// MaxWriteBack: seconds against a remote Redis), and every failure the
// guard read meanwhile waited for it (breaker10). Here the write-back's
// first call waits until the test lets it go; a failure of another address
// must be counted in the meantime.
func TestWriteBackDoesNotStallCounting(t *testing.T) {
	ctx := t.Context()
	db, err := store.OpenSQLite(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	sqlc, err := NewSQLiteCounters(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	g := &gatedCounters{SQLiteCounters: sqlc, entered: make(chan struct{}), gate: make(chan struct{})}
	c := &FallbackCounters{Primary: g, Fallback: NewMemoryFor(testConfig()), Health: &store.Health{Retry: 50 * time.Millisecond}}
	now := time.Now()
	const w = 10 * time.Minute
	c.Health.Failed(errors.New("outage"))
	a, b := netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("203.0.113.9")
	for k := range 3 {
		if n, err := c.AddFailure(ctx, a, now.Add(time.Duration(k)*time.Second), w); err != nil || n != k+1 {
			t.Fatalf("failure %d during the outage: %d %v", k+1, n, err)
		}
	}
	time.Sleep(100 * time.Millisecond) // past Health.Retry: Primary is tried again

	first := make(chan int)
	go func() {
		n, _ := c.AddFailure(ctx, a, now.Add(3*time.Second), w) // writes back, then counts
		first <- n
	}()
	<-g.entered
	other := make(chan error, 1)
	go func() {
		_, err := c.AddAttacker(ctx, netip.MustParsePrefix("203.0.113.0/24"), b, now.Add(3*time.Second), w)
		other <- err
	}()
	select {
	case err := <-other:
		if err != nil {
			t.Errorf("counting during the write-back: %v", err)
		}
	case <-time.After(10 * time.Second): // (a liveness bound, not a speed one)
		t.Error("a failure of another address waited for the write-back to end")
	}
	close(g.gate)
	if n := <-first; n != 4 {
		t.Errorf("the failure that wrote back: count %d, want 4 (3 during the outage)", n)
	}
}
