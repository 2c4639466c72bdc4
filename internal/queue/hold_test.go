package queue_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/deliver"
	"github.com/relayguard/relayguard/internal/deliver/delivertest"
	"github.com/relayguard/relayguard/internal/queue"
)

// A hold check (serve: "is the sender's account suspended?") holds a
// message as it is spooled, before the scheduler can start it; a message
// the operator releases is not held again.
func TestHoldCheckOnArrival(t *testing.T) {
	sink := delivertest.StartSink(t)
	sp := openSpool(t, t.TempDir())
	cfg := testConfig(map[string]string{"a.test": "smtp:" + sink.Addr})
	res, _ := deliver.NewResolver("127.0.0.1:1", time.Second)
	d, err := deliver.New(cfg.Delivery, cfg.Hostname, testLog(), deliver.Options{Resolver: res})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	s := queue.NewScheduler(sp, d, cfg.Delivery, cfg.Hostname, testLog())
	s.SetHoldCheck(nil, func(env *queue.Envelope) string {
		if env.AuthUser == "mallory" {
			return "account mallory suspended"
		}
		return ""
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()

	held := put(t, sp, &queue.Envelope{From: "mallory@sender.test", AuthUser: "mallory", Recipients: rcpts("x@a.test", "y@a.test")}, 1)
	// Held before Put returned, i.e. before the SMTP reply.
	env, err := sp.Load(held)
	if err != nil {
		t.Fatal(err)
	}
	if !env.Held || env.HoldReason != "account mallory suspended" || env.Recipients[0].Status != queue.StatusHeld || env.Recipients[1].Status != queue.StatusHeld {
		t.Fatalf("message of the suspended account on arrival: %+v", env)
	}
	ok := put(t, sp, &queue.Envelope{From: "alice@sender.test", AuthUser: "alice", Recipients: rcpts("z@a.test")}, 2)
	waitFor(t, "alice's delivery", func() bool { return gone(sp, ok) })
	msgs := sink.Messages(t)
	if len(msgs) != 1 || msgs[0].From != "alice@sender.test" {
		t.Fatalf("sink got %+v; only alice's message may go out", msgs)
	}
	if _, err := queue.Release(sp, held); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "delivery after release", func() bool { return gone(sp, held) })
	if n := len(sink.Messages(t)); n != 2 {
		t.Fatalf("sink got %d messages after the release, want 2", n)
	}
	var from []string
	for _, m := range sink.Messages(t) {
		from = append(from, m.From+" "+strings.Join(m.Rcpts, ","))
	}
	if got := strings.Join(from, "|"); !strings.Contains(got, "mallory@sender.test x@a.test,y@a.test") {
		t.Fatalf("released message not delivered: %s", got)
	}
}

// A message deleted by the queue command of another process while its
// delivery was under way leaves, once the round is saved, an envelope
// without its message: the scheduler drops it instead of retrying a
// message that no longer exists (and is not listed) until the next restart.
func TestEnvelopeWithoutMessageIsDropped(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	greet := make(chan struct{})
	connected := make(chan struct{}, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			connected <- struct{}{}
			go func() {
				defer c.Close()
				<-greet // the test deletes the message meanwhile
				io.WriteString(c, "220 late.test ESMTP\r\n")
				br := bufio.NewReader(c)
				for {
					l, err := br.ReadString('\n')
					if err != nil {
						return
					}
					io.WriteString(c, map[bool]string{true: "221 bye\r\n", false: "250 late.test\r\n"}[strings.HasPrefix(l, "QUIT")])
				}
			}()
		}
	}()
	sp := openSpool(t, t.TempDir())
	cfg := testConfig(map[string]string{"a.test": "smtp:" + ln.Addr().String()})
	cfg.Delivery.RetrySchedule = []config.Duration{config.Duration(50 * time.Millisecond)}
	id := put(t, sp, &queue.Envelope{From: "a@sender.test", AuthUser: "a", Recipients: rcpts("x@a.test")}, 1)
	env, err := sp.Load(id)
	if err != nil {
		t.Fatal(err)
	}
	if err := sp.Update(env); err != nil { // msg/ID.env exists, as after a first attempt
		t.Fatal(err)
	}
	queue.SettleJournal(sp) // msg/ID.msg too, as another process sees it
	startScheduler(t, sp, cfg)
	<-connected
	// The delivery is connecting; the message file goes (the first half of
	// a removal by another process), then the peer answers.
	if err := os.Remove(filepath.Join(sp.Dir(), "msg", id+".msg")); err != nil {
		t.Fatal(err)
	}
	close(greet)
	waitFor(t, "the orphan envelope removed", func() bool {
		_, err := os.Stat(filepath.Join(sp.Dir(), "msg", id+".env"))
		return errors.Is(err, os.ErrNotExist)
	})
}
