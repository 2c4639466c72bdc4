package logwatch

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/relayguard/relayguard/internal/event"
)

// onceEvents turns bytes into a run of events that exercises every branch
// of the pairing: few addresses (some IPv4-mapped, one invalid), every
// layer, sessions (none, short, long), login summaries with spans, times
// going back and forth and jumping past keepAttempts (rotations), counts.
func onceEvents(data []byte) []event.Event {
	addrs := []netip.Addr{
		netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"),
		netip.MustParseAddr("::ffff:192.0.2.1"), netip.MustParseAddr("2001:db8::7"),
		netip.MustParseAddr("198.51.100.9"), netip.MustParseAddr("fe80::1%eth0"),
		{}, netip.MustParseAddr("203.0.113.77"),
	}
	sessions := []string{"", "", "s1", "s2", "mWy5+e5h18V/AAAD", "a-session-id-longer-than-sixteen-bytes", "s1", ""}
	t := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	var evs []event.Event
	for len(data) >= 4 {
		a, b, c, d := data[0], data[1], data[2], data[3]
		data = data[4:]
		switch {
		case d < 200:
			t = t.Add(time.Duration(int(d)-40) * time.Second / 4)
		case d < 250:
			t = t.Add(time.Duration(d-199) * 7 * time.Second)
		default:
			t = t.Add(keepAttempts + time.Duration(d-250)*time.Minute)
		}
		e := event.Event{Time: t, Kind: event.AuthFailure, IP: addrs[a&7], Session: sessions[(a>>3)&7]}
		switch b & 7 {
		case 0, 1:
			e.Source, e.Service = "postfix", "smtp"
		case 2, 3:
			e.Source = "dovecot" // passdb
		case 4:
			e.Source, e.Service = "dovecot", "imap" // a login process's summary
			e.Detail = fmt.Sprintf("%d attempts in %d secs", c&3+1, int(c>>2)%40)
		case 5:
			e.Source, e.Rule = "dovecot", "pam_unix"
		case 6:
			e.Source = "relayguard-log"
		default:
			e.Source, e.Kind = "dovecot", event.LoginSuccess
		}
		if b&8 != 0 {
			e.Attempts = int(c & 3)
		}
		if b&16 != 0 {
			e.Time = time.Time{}
		}
		evs = append(evs, e)
	}
	return evs
}

// sameAsReference runs evs through Once and through refOnce (Once as it
// was, once_ref_test.go) with the same Max, and fails if what they pass on,
// or the addresses they dropped, differ.
func sameAsReference(t *testing.T, max int, reuse bool, evs []event.Event) {
	t.Helper()
	got, want := &event.Recorder{}, &event.Recorder{}
	o, r := NewOnce(got), newRefOnce(want)
	o.Max, r.Max = max, max
	o.Reuse = reuse
	if reuse && max%2 == 0 {
		o.chunk = 20 // (sessions' chunks filled and reused within a run)
	}
	ctx := context.Background()
	seen := 0
	for i, e := range evs {
		// (the session in a buffer that is overwritten after, as a
		// replay's: Once must keep its own copy)
		buf := []byte(e.Session)
		e.Session = unsafe.String(unsafe.SliceData(buf), len(buf))
		o.Publish(ctx, e)
		r.Publish(ctx, e)
		for i := range buf {
			buf[i] = '#'
		}
		if len(got.Events) != len(want.Events) || !reflect.DeepEqual(got.Events[seen:], want.Events[seen:]) {
			t.Fatalf("Max %d, Reuse %v, after event %d (%+v):\n got  %+v\n want %+v", max, reuse, i, e, got.Events[seen:], want.Events[seen:])
		}
		seen = len(got.Events)
	}
	if o.Dropped() != r.Dropped() {
		t.Fatalf("Max %d, Reuse %v: dropped %d, want %d", max, reuse, o.Dropped(), r.Dropped())
	}
}

// TestOnceSameAsReference holds Once to refOnce over random runs of events
// (onceEvents), with and without a bound on the addresses, reusing the
// dropped addresses' attempts (the report) or not (the guard).
func TestOnceSameAsReference(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(19, 6))
	for run := range 300 {
		data := make([]byte, 4*(1+rng.IntN(600)))
		for i := range data {
			data[i] = byte(rng.UintN(256))
		}
		sameAsReference(t, []int{0, 0, 1, 2, 3, 5}[run%6], run%4 >= 2, onceEvents(data))
	}
}

func FuzzOnceSameAsReference(f *testing.F) {
	f.Add(byte(0), []byte(strings.Repeat("\x02\x02\x00\x28\x02\x04\x05\x30\x02\x00\x00\x29", 20)))
	f.Add(byte(2), []byte(strings.Repeat("\x10\x03\x07\xff\x21\x02\x01\x05\x0a\x04\x33\xc8", 30)))
	f.Fuzz(func(t *testing.T, max byte, data []byte) {
		sameAsReference(t, int(max%6), max&8 != 0, onceEvents(data))
	})
}
