package policyd

import (
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/policy"
)

// BenchmarkInstanceFull is the cost of a new message's instance once the
// table holds maxInstances of them (a submission server counting over
// 73 messages/s for an hour).
func BenchmarkInstanceFull(b *testing.B) {
	l := &Limits{}
	req := &policy.Request{ClientAddress: netip.MustParseAddr("192.0.2.1"), SASLUsername: "u"}
	for i := range maxInstances {
		req.Instance = strconv.Itoa(i)
		l.instance(req)
	}
	b.ResetTimer()
	for i := range b.N {
		req.Instance = "n" + strconv.Itoa(i)
		l.instance(req)
	}
}

// The instances of message transactions are bounded (maxInstances), an
// instance is kept while its message goes on, and one left alone longer
// than instanceTTL is forgotten.
func TestInstances(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	l := &Limits{Now: func() time.Time { return now }}
	req := func(inst string) *policy.Request {
		return &policy.Request{Instance: inst, ClientAddress: netip.MustParseAddr("192.0.2.1"), SASLUsername: "u"}
	}
	first := l.instance(req("first"))
	first.counted = true
	for i := range 3 * maxInstances {
		if i%1000 == 0 { // the first message's transaction goes on
			if in := l.instance(req("first")); in != first || !in.counted {
				t.Fatalf("after %d other messages: the first message's instance was forgotten while in use", i)
			}
		}
		l.instance(req(strconv.Itoa(i)))
		if n := l.instances(); n > maxInstances {
			t.Fatalf("%d instances held, bound %d", n, maxInstances)
		}
	}
	// A different login or client is a different transaction.
	other := req("first")
	other.SASLUsername = "v"
	if in := l.instance(other); in == first || in.counted {
		t.Fatal("another login's instance of the same name shares the first's state")
	}
	// Left alone past instanceTTL: forgotten.
	l.instance(req("late"))
	now = now.Add(instanceTTL / 2)
	if in := l.instance(req("late")); in.counted {
		t.Fatal("fresh instance counted")
	} else {
		in.counted = true
	}
	now = now.Add(instanceTTL - time.Minute)
	if !l.instance(req("late")).counted {
		t.Fatal("an instance used within instanceTTL was forgotten")
	}
	now = now.Add(3 * instanceTTL)
	l.instance(req("x"))
	now = now.Add(time.Second)
	if l.instance(req("late")).counted {
		t.Fatal("an instance left alone for 3 x instanceTTL was kept")
	}
}
