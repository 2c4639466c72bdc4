package accounts

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/queue"
)

// TestResponderRunWaitsForItsSubscriber: with Redis shared, Responder.Run
// listens to the suspensions announced elsewhere in a goroutine of its
// own; when its context ends, Run returns only after that goroutine has
// ended, since its caller closes the Redis client next. Found by review
// (issue 14, "every goroutine owned by a context and waited for"): Run
// returned with the subscriber still running.
func TestResponderRunWaitsForItsSubscriber(t *testing.T) {
	st, _ := redisStores(t)
	ctx := context.Background()
	s, err := NewStore(ctx, st, 30*24*time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.(*Shared); !ok {
		t.Fatalf("NewStore with Redis gave %T, want *Shared", s)
	}
	spool, err := queue.OpenSpool(t.TempDir(), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer spool.Close()
	r := NewResponder(Options{Store: s, Holders: []Holder{SpoolHolder{Spool: spool}}})
	for i := 0; i < 3; i++ {
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); r.Run(rctx, time.Hour) }()
		// Wait until Redis sees the subscriber, so that it is running.
		channel := st.Redis.Prefix + "acct"
		for deadline := time.Now().Add(10 * time.Second); ; {
			n, err := st.Redis.C.PubSubNumSub(ctx, channel).Result()
			if err == nil && n[channel] > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no subscriber on %s: %v %v", channel, n, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
		<-done
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtime.Stack(buf, true)])
		if strings.Contains(stacks, "accounts.(*RedisStore).Subscribe") {
			t.Fatalf("Run returned with its subscriber still running:\n%s", stacks)
		}
	}
}
