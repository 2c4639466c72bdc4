package userdb

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestHashMemoryBounded: concurrent verifications hold at most
// Options.HashMemory together; logins beyond it wait and then succeed
// (delayed, not failed). Not parallel: it sets verifyHook.
func TestHashMemoryBounded(t *testing.T) {
	db, _ := openTest(t, Options{HashMemory: 2 * argonMemoryKiB << 10}) // two argon2id verifications
	mustAdd(t, db, "alice", "right")
	var active, peak atomic.Int32
	verifyHook = func(string) {
		n := active.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(20 * time.Millisecond) // inside the budget: overlapping logins would show
		active.Add(-1)
	}
	t.Cleanup(func() { verifyHook = nil })
	var wg sync.WaitGroup
	var okCount atomic.Int32
	for i := range 12 {
		wg.Go(func() {
			pw := "right"
			if i%2 == 1 {
				pw = "wrong"
			}
			_, ok, err := db.CheckPassword(context.Background(), "alice", pw)
			if err != nil {
				t.Errorf("login %d failed instead of waiting: %v", i, err)
			}
			if ok != (pw == "right") {
				t.Errorf("login %d: ok=%v", i, ok)
			}
			if ok {
				okCount.Add(1)
			}
		})
	}
	wg.Wait()
	if p := peak.Load(); p != 2 {
		t.Errorf("peak concurrent verifications %d, want 2 (the budget)", p)
	}
	if okCount.Load() != 6 {
		t.Errorf("%d good logins succeeded, want 6", okCount.Load())
	}
}

// TestHashWaitGivesUp: a login that cannot get a slot before its context
// ends gets an error (a temporary failure, 454), not "wrong password".
func TestHashWaitGivesUp(t *testing.T) {
	db, _ := openTest(t, Options{HashMemory: argonMemoryKiB << 10})
	mustAdd(t, db, "alice", "right")
	hold, release := make(chan struct{}), make(chan struct{})
	verifyHook = func(string) { close(hold); <-release }
	t.Cleanup(func() { verifyHook = nil })
	done := make(chan struct{})
	go func() {
		defer close(done)
		db.CheckPassword(context.Background(), "alice", "right")
	}()
	<-hold
	verifyHook = nil // the waiting login must not block in the hook
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, ok, err := db.CheckPassword(ctx, "alice", "right")
	if ok || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("waiting login: ok=%v err=%v, want a deadline error", ok, err)
	}
	close(release)
	<-done
}

func TestHashBudgetDefault(t *testing.T) {
	b := hashBudgetKiB(0)
	if b < argonMemoryKiB || b > int64(runtime.GOMAXPROCS(0))*argonMemoryKiB {
		t.Errorf("automatic budget %d KiB: want between one verification and one per CPU", b)
	}
	if hashBudgetKiB(100<<20) != 100<<10 {
		t.Error("configured budget not used")
	}
	if physicalMemory() <= 0 {
		t.Error("physical memory unknown")
	}
	if w := hashWeightKiB("$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"); w != 65536 {
		t.Errorf("weight of an m=64MiB hash: %d KiB", w)
	}
}
