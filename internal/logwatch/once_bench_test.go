package logwatch

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/event"
)

// BenchmarkOnce is the cost Once adds per event on the common shape, SASL
// warnings of Postfix alone (no other layer logs), in its worst case: 2,000
// addresses taking turns, each coming back only after its attempts were
// forgotten (so that every event starts an address afresh).
func BenchmarkOnce(b *testing.B) {
	evs := make([]event.Event, 100000)
	t := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	for i := range evs {
		t = t.Add(300 * time.Millisecond)
		evs[i] = event.Event{Time: t, Kind: event.AuthFailure, Source: "postfix", Mechanism: "LOGIN",
			IP: netip.MustParseAddr(fmt.Sprintf("198.51.%d.%d", i%2000/250, i%250+1))}
	}
	o := NewOnce(event.Discard{})
	ctx := context.Background()
	b.ResetTimer()
	for i := range b.N {
		e := evs[i%len(evs)]
		e.Time = e.Time.Add(time.Duration(i/len(evs)) * 9 * time.Hour)
		o.Publish(ctx, e)
	}
}
