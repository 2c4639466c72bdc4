package egress

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/nflog"
)

func TestWatcherHandle(t *testing.T) {
	rec := &event.Recorder{}
	reg := prometheus.NewRegistry()
	alerts := make(chan Alert, 4)
	var attempts []Attempt
	w := &Watcher{
		Sink: rec, Metric: NewMetrics(reg),
		AlertThreshold: 2, AlertWindow: time.Hour,
		OnAlert:   func(_ context.Context, a Alert) { alerts <- a },
		OnAttempt: func(a Attempt) { attempts = append(attempts, a) },
	}
	pkt := func(sport uint16, uid uint32) nflog.Packet {
		return nflog.Packet{
			Time: time.Unix(1700000000, 0), TCP: true, UID: uid, GID: uid, HasUID: true,
			Src: netip.MustParseAddr("192.0.2.1"), SrcPort: sport,
			Dst: netip.MustParseAddr("203.0.113.25"), DstPort: 25,
		}
	}
	ctx := context.Background()
	if _, ok := w.Handle(ctx, pkt(40000, 0)); !ok {
		t.Fatal("first SYN not reported")
	}
	if _, ok := w.Handle(ctx, pkt(40000, 0)); ok {
		t.Fatal("retransmitted SYN reported as a new attempt")
	}
	if _, ok := w.Handle(ctx, nflog.Packet{}); ok {
		t.Fatal("non-TCP packet reported")
	}
	a, ok := w.Handle(ctx, pkt(40001, 0))
	if !ok {
		t.Fatal("second connection not reported")
	}
	if a.User != "root" || a.Process != nil || a.Unknown == "" {
		t.Errorf("attempt %+v: want user root and an attribution error (no such socket)", a)
	}
	if len(attempts) != 2 {
		t.Errorf("OnAttempt called %d times, want 2", len(attempts))
	}
	line := a.String()
	for _, want := range []string{"blocked uid=0 user=root dst=203.0.113.25:25 src=192.0.2.1:40001", "process=unknown (egress: no TCP socket"} {
		if !strings.Contains(line, want) {
			t.Errorf("text line %q lacks %q", line, want)
		}
	}
	a.Process, a.Unknown = &Process{PID: 7, Exe: "/x", Cmdline: "x -y", Cwd: "/", PPID: 1, ParentCmdline: "init"}, ""
	if line := a.String(); !strings.Contains(line, `pid=7 exe="/x" cmdline="x -y" cwd="/" ppid=1 parent="init"`) {
		t.Errorf("text line %q", line)
	}
	evs := rec.Snapshot()
	if len(evs) != 2 || evs[0].Kind != event.EgressBlocked || evs[0].Source != "kernel" ||
		evs[0].IP != netip.MustParseAddr("203.0.113.25") || evs[0].User != "root" ||
		!strings.Contains(evs[0].Detail, "uid=0") {
		t.Errorf("events %+v", evs)
	}
	if v := counterValue(t, w.Metric.Blocked.WithLabelValues("0", "root")); v != 2 {
		t.Errorf("blocked counter for uid 0 = %v, want 2", v)
	}
	select {
	case al := <-alerts:
		if al.UID != 0 || al.Count != 2 {
			t.Errorf("alert %+v", al)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no alert after 2 attempts with threshold 2")
	}
	// One alert per window.
	w.Handle(ctx, pkt(40002, 0))
	select {
	case al := <-alerts:
		t.Errorf("second alert within the window: %+v", al)
	default:
	}
	if v := counterValue(t, w.Metric.Alerts.WithLabelValues("0", "root")); v != 1 {
		t.Errorf("alerts counter = %v, want 1", v)
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func TestWatcherAttributionRateLimit(t *testing.T) {
	w := &Watcher{AttributeRate: 2}
	var limited int
	for i := 0; i < 5; i++ {
		a, ok := w.Handle(context.Background(), nflog.Packet{
			TCP: true, HasUID: true, UID: 0,
			Src: netip.MustParseAddr("192.0.2.1"), SrcPort: uint16(41000 + i),
			Dst: netip.MustParseAddr("203.0.113.25"), DstPort: 25,
		})
		if !ok {
			t.Fatalf("attempt %d not reported", i)
		}
		if strings.Contains(a.Unknown, "rate limit") {
			limited++
		}
	}
	// All five happen within a second or two: at least one is limited,
	// and the first two never are.
	if limited == 0 || limited > 3 {
		t.Errorf("%d of 5 attempts rate-limited with a limit of 2/s", limited)
	}
}

// A SYN retransmitted on the kernel's backoff (1, 2, 4, ... s, capped at
// TCP_RTO_MAX = 120 s) is one attempt however long the retries go on
// (net.ipv4.tcp_syn_retries raised to 10 here: retries for about 10
// minutes); a new connection from another source port is a new attempt.
func TestWatcherFoldsLongSYNRetries(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	clock := t0
	w := &Watcher{now: func() time.Time { return clock }, AttributeRate: 1000}
	syn := func(sport uint16) nflog.Packet {
		return nflog.Packet{
			Time: clock, TCP: true, UID: 4343, HasUID: true,
			Src: netip.MustParseAddr("2001:db8::1"), SrcPort: sport,
			Dst: netip.MustParseAddr("2001:db8::25"), DstPort: 25,
		}
	}
	ctx := context.Background()
	reported := 0
	rto := time.Second
	for i := 0; i <= 10; i++ {
		if _, ok := w.Handle(ctx, syn(40000)); ok {
			reported++
		}
		clock = clock.Add(rto)
		rto = min(2*rto, 120*time.Second)
	}
	if reported != 1 {
		t.Errorf("one connection retrying for %s reported as %d attempts, want 1", clock.Sub(t0), reported)
	}
	if _, ok := w.Handle(ctx, syn(40001)); !ok {
		t.Error("a new connection (new source port) was folded into the old one")
	}
	// Long after the last retransmission the same 5-tuple is a new attempt.
	clock = clock.Add(10 * time.Minute)
	if _, ok := w.Handle(ctx, syn(40000)); !ok {
		t.Error("same 5-tuple 10 minutes after its last SYN not reported")
	}
}
