package queue_test

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/deliver"
	"github.com/relayguard/relayguard/internal/deliver/delivertest"
	"github.com/relayguard/relayguard/internal/queue"
)

// countingDeliverer counts the delivery attempts per domain of the real
// Deliverer it wraps, and those in progress.
type countingDeliverer struct {
	queue.Deliverer
	mu     sync.Mutex
	calls  map[string]int
	active int
}

func (c *countingDeliverer) Deliver(ctx context.Context, domain string, req *queue.Request) []queue.Result {
	c.mu.Lock()
	c.calls[domain]++
	c.active++
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.active--
		c.mu.Unlock()
	}()
	return c.Deliverer.Deliver(ctx, domain, req)
}

func (c *countingDeliverer) state(domain string) (calls, active int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[domain], c.active
}

// gateFS holds the first file the spool creates once armed until released:
// the delivery notice that finishing a delivery round spools.
type gateFS struct {
	queue.OSFS
	armed   atomic.Bool
	held    chan struct{} // closed when the gate holds a writer
	release chan struct{}
	once    sync.Once
}

func (g *gateFS) Create(p string) (queue.File, error) {
	if g.armed.Load() {
		g.once.Do(func() {
			close(g.held)
			<-g.release
		})
	}
	return g.OSFS.Create(p)
}

// rescanCounter counts the scheduler's rescans (its "queue: rescan" debug
// record) and passes warnings on to stderr.
type rescanCounter struct {
	n    *atomic.Int64
	next slog.Handler
}

func (h rescanCounter) Enabled(context.Context, slog.Level) bool { return true }
func (h rescanCounter) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "queue: rescan" {
		h.n.Add(1)
	}
	if r.Level >= slog.LevelWarn {
		return h.next.Handle(ctx, r)
	}
	return nil
}
func (h rescanCounter) WithAttrs(a []slog.Attr) slog.Handler {
	return rescanCounter{h.n, h.next.WithAttrs(a)}
}
func (h rescanCounter) WithGroup(g string) slog.Handler {
	return rescanCounter{h.n, h.next.WithGroup(g)}
}

// A message stays in flight until the end of its delivery round is on
// disk: rescans of the spool while the round is being finished (here,
// while its failure notice is spooled, which takes fsyncs) find it still
// queued on disk, and must not start it again. Before the fix the
// scheduler forgot the message as in flight before saving its round, and
// a rescan in between delivered the delivered recipient a second time.
func TestNoSecondDeliveryWhileRoundIsSaved(t *testing.T) {
	t.Parallel()
	peer := delivertest.StartGoPeer(t, delivertest.GoPeerOptions{})
	rejecter := delivertest.StartRejecter(t)
	cfg := testConfig(map[string]string{
		"ok.test": "smtp:" + peer.Addr, "bad.test": "smtp:" + rejecter, "sender.test": "smtp:" + peer.Addr,
	})
	cfg.Delivery.RescanInterval = config.Duration(10 * time.Millisecond)
	gate := &gateFS{held: make(chan struct{}), release: make(chan struct{})}
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(gate.release) }) }
	t.Cleanup(release)
	sp, err := queue.OpenSpoolFS(t.TempDir(), time.Millisecond, testLog(), gate)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })

	res, _ := deliver.NewResolver("127.0.0.1:1", time.Second)
	dl, err := deliver.New(cfg.Delivery, cfg.Hostname, testLog(), deliver.Options{Resolver: res})
	if err != nil {
		t.Fatal(err)
	}
	defer dl.Close()
	d := &countingDeliverer{Deliverer: dl, calls: map[string]int{}}
	var rescans atomic.Int64
	log := slog.New(rescanCounter{&rescans, slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})})
	s := queue.NewScheduler(sp, d, cfg.Delivery, cfg.Hostname, log)

	id := put(t, sp, &queue.Envelope{From: "alice@sender.test", AuthUser: "alice", Mode: "submission",
		Recipients: rcpts("postmaster@ok.test", "nosuchuser@bad.test")}, 1)
	gate.armed.Store(true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			release()
			cancel()
			if err := <-done; err != nil {
				t.Errorf("scheduler: %v", err)
			}
		}
	}
	defer stop()

	select {
	case <-gate.held:
	case <-time.After(90 * time.Second):
		t.Fatal("the round never finished: no failure notice spooled")
	}
	// The round is being saved: let the scheduler rescan the spool (where
	// the message is still queued) a few times, each followed by a
	// dispatch, before the notice is written.
	from := rescans.Load()
	waitFor(t, "rescans while the round is saved", func() bool {
		calls, _ := d.state("ok.test")
		return calls > 1 || rescans.Load() >= from+3
	})
	release()
	waitFor(t, "the message to leave the spool and the notice to reach alice", func() bool {
		if !gone(sp, id) {
			return false
		}
		for _, m := range peer.Messages() {
			if len(m.Rcpts) == 1 && m.Rcpts[0] == "alice@sender.test" {
				_, active := d.state("ok.test")
				return active == 0
			}
		}
		return false
	})
	stop()

	if calls, _ := d.state("ok.test"); calls != 1 {
		t.Errorf("postmaster@ok.test was attempted %d times, want 1", calls)
	}
	if calls, _ := d.state("bad.test"); calls != 1 {
		t.Errorf("nosuchuser@bad.test was attempted %d times, want 1", calls)
	}
	n := 0
	for _, m := range peer.Messages() {
		for _, r := range m.Rcpts {
			if r == "postmaster@ok.test" {
				n++
			}
		}
	}
	if n != 1 {
		t.Errorf("the peer received the message for postmaster@ok.test %d times, want 1", n)
	}
}
