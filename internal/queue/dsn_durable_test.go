package queue_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/deliver"
	"github.com/relayguard/relayguard/internal/deliver/delivertest"
	"github.com/relayguard/relayguard/internal/queue"
)

// noNewMessagesFS refuses new message files while full is set, as a full
// disk would; envelope updates still go through.
type noNewMessagesFS struct {
	queue.OSFS
	full *atomic.Bool
}

func (f noNewMessagesFS) Create(p string) (queue.File, error) {
	if f.full.Load() && strings.HasSuffix(p, ".msg") {
		return nil, errors.New("injected: no space left on device")
	}
	return f.OSFS.Create(p)
}

// A permanent failure is final only once its notice is spooled: when the
// notice cannot be written, the recipient stays queued and the notice is
// made on the next round, instead of the message vanishing unreported.
func TestFailureNoticeNotLostWhenSpoolFull(t *testing.T) {
	sink := delivertest.StartSink(t, "-f", "RCPT")
	mbox := t.TempDir()
	var full atomic.Bool
	sp, err := queue.OpenSpoolFS(t.TempDir(), time.Millisecond, nil, noNewMessagesFS{full: &full})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	cfg := config.Default()
	cfg.Hostname = "relay.test"
	cfg.Delivery.RetrySchedule = []config.Duration{config.Duration(100 * time.Millisecond)}
	cfg.Delivery.Transports = map[string]string{"a.test": "smtp:" + sink.Addr, "sender.test": "maildir:" + mbox}
	res, _ := deliver.NewResolver("127.0.0.1:1", time.Second)
	d, err := deliver.New(cfg.Delivery, cfg.Hostname, nil, deliver.Options{Resolver: res})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	id, err := sp.Put(context.Background(), &queue.Envelope{From: "alice@sender.test", AuthUser: "alice", Mode: "submission",
		Recipients: []queue.Recipient{{Addr: "nobody@a.test"}}}, strings.NewReader("Subject: x\r\n\r\nbody\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	full.Store(true)
	s := queue.NewScheduler(sp, d, cfg.Delivery, cfg.Hostname, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()

	wait := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("gave up waiting for %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	wait("a failed attempt", func() bool {
		env, err := sp.Load(id)
		return err == nil && env.Recipients[0].Attempts >= 1
	})
	env, err := sp.Load(id)
	if err != nil {
		t.Fatalf("the message vanished although its notice could not be spooled: %v", err)
	}
	if r := env.Recipients[0]; r.Status != queue.StatusQueued || r.LastCode != 500 {
		t.Fatalf("recipient after an unreported failure: %+v", r)
	}
	full.Store(false) // space again
	wait("the notice", func() bool {
		_, err := sp.Load(id)
		return errors.Is(err, os.ErrNotExist) && len(delivertest.ReadMaildir(t, filepath.Join(mbox, "alice"))) == 1
	})
	if n := len(delivertest.ReadMaildir(t, filepath.Join(mbox, "alice"))); n != 1 {
		t.Fatalf("%d notices", n)
	}
}
