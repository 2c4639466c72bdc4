package console

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/ban"
	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/guard"
	"github.com/relayguard/relayguard/internal/queue"
)

// benchDir is where the benchmarks' spools go: memory when there is
// /dev/shm (they measure the index, not the disk).
func benchDir(b *testing.B) string {
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		d, err := os.MkdirTemp("/dev/shm", "rgbench")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(d) })
		return d
	}
	return b.TempDir()
}

func benchSpool(b *testing.B, n int) (*queue.Spool, []string) {
	sp, err := queue.OpenSpool(benchDir(b), time.Millisecond, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { sp.Close() })
	var ids []string
	for i := range n {
		env := &queue.Envelope{Received: time.Now(), From: "a@x.test", Recipients: []queue.Recipient{{Addr: fmt.Sprintf("r%d@d%d.test", i, i%500), Status: queue.StatusQueued}}}
		id, err := sp.Put(context.Background(), env, strings.NewReader("Subject: x\r\n\r\nbody\r\n"))
		if err != nil {
			b.Fatal(err)
		}
		ids = append(ids, id)
	}
	return sp, ids
}

// BenchmarkQueueIndex: the index of a 50,000-message spool brought up to
// date when nothing changed (a stat of the directory), after one message
// changed behind its back (a full listing, one envelope read), and from
// nothing (every envelope read).
func BenchmarkQueueIndex(b *testing.B) {
	sp, ids := benchSpool(b, 50000)
	q := &queueIndex{spool: sp, now: time.Now, log: slog.New(slog.DiscardHandler)}
	if _, err := q.all(context.Background()); err != nil {
		b.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // the first scan's changes are a second old
	b.Run("unchanged", func(b *testing.B) {
		for b.Loop() {
			q.invalidate()
			q.all(context.Background())
		}
	})
	b.Run("one-changed", func(b *testing.B) {
		i := 0
		for b.Loop() {
			queue.Hold(sp, ids[i%len(ids)], "bench")
			i++
			q.invalidate()
			q.all(context.Background())
		}
	})
	b.Run("cold", func(b *testing.B) {
		for b.Loop() {
			q := &queueIndex{spool: sp, now: time.Now, log: slog.New(slog.DiscardHandler)}
			q.all(context.Background())
		}
	})
}

// BenchmarkBanIndex: 100,000 bans in the guard; the list copied and
// sorted (after a change), a page of it, a search by address and by text.
func BenchmarkBanIndex(b *testing.B) {
	g := guard.New(guard.Options{})
	ctx := context.Background()
	for i := range 100000 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10 + byte(i>>16), byte(i >> 8), byte(i), 1}), 32)
		if _, err := g.Ban(ctx, p, time.Hour, fmt.Sprintf("%d failures", i%50)); err != nil {
			b.Fatal(err)
		}
	}
	bi := &banIndex{g: g, now: time.Now}
	b.Run("copy", func(b *testing.B) {
		for b.Loop() {
			bi.have = false
			bi.all()
		}
	})
	b.Run("page", func(b *testing.B) {
		for b.Loop() {
			pageOf(bi.all(), 50000, 100)
		}
	})
	b.Run("search-address", func(b *testing.B) {
		for b.Loop() {
			bi.search("10.1.2.1")
		}
	})
	b.Run("search-text", func(b *testing.B) {
		for b.Loop() {
			bi.search("49 failures")
		}
	})
	b.Run("summary", func(b *testing.B) {
		for b.Loop() {
			bi.sum = nil
			bi.summary()
		}
	})
	_ = ban.Ban{}
}

// BenchmarkOverview: the overview's data with 100,000 bans in the guard
// and 50,000 messages in the spool, both indexes current (what an open
// page asks for every few seconds).
func BenchmarkOverview(b *testing.B) {
	g := guard.New(guard.Options{})
	ctx := context.Background()
	for i := range 100000 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10 + byte(i>>16), byte(i >> 8), byte(i), 1}), 32)
		if _, err := g.Ban(ctx, p, time.Hour, fmt.Sprintf("%d failures", i%50)); err != nil {
			b.Fatal(err)
		}
	}
	sp, _ := benchSpool(b, 50000)
	cfg := config.Default()
	if err := cfg.Finish(b.TempDir()); err != nil {
		b.Fatal(err)
	}
	c, err := New(Options{Config: cfg, Guard: g, Spool: sp, Command: "serve"})
	if err != nil {
		b.Fatal(err)
	}
	c.overviewData(ctx) // the first reading of the spool
	for b.Loop() {
		c.overviewData(ctx)
	}
}
