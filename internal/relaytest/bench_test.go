package relaytest

import (
	"context"
	"net/netip"
	"testing"
	"time"
)

// benchBattery runs the whole battery against addr b.N times and reports
// the seconds one battery takes and the tests run.
func benchBattery(b *testing.B, o Options, wantOutcome string) {
	b.Helper()
	ctx := context.Background()
	o.Timeout = 30 * time.Second
	if o.ErrorsPerConn == 0 {
		o.ErrorsPerConn = 8 // the command's defaults
	}
	if o.Parallel == 0 {
		o.Parallel = 8
	}
	var tests int
	b.ResetTimer()
	for b.Loop() {
		rep, err := Run(ctx, o)
		if err != nil || rep.Outcome != wantOutcome {
			b.Fatalf("err %v outcome %s counts %v", err, rep.Outcome, rep.Counts)
		}
		tests = len(rep.Results)
	}
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/battery")
	b.ReportMetric(float64(tests), "tests/battery")
}

// The tiny test server: the tester's own cost.
func BenchmarkBatteryTestServer(b *testing.B) {
	b.Run("open", func(b *testing.B) {
		s := newTestServer(b, &testServer{tls: selfSigned(b), utf8: true})
		benchBattery(b, Options{Addr: s.addr()}, "open")
	})
	b.Run("closed", func(b *testing.B) {
		s := newTestServer(b, &testServer{tls: selfSigned(b), rcpt: func(string, bool) string { return "550 5.7.1 relay access denied" }})
		benchBattery(b, Options{Addr: s.addr()}, "closed")
	})
	b.Run("closed-sequential", func(b *testing.B) {
		s := newTestServer(b, &testServer{tls: selfSigned(b), rcpt: func(string, bool) string { return "550 5.7.1 relay access denied" }})
		benchBattery(b, Options{Addr: s.addr(), Parallel: 1}, "closed")
	})
}

// relayguard serve in its default configuration (its failed-AUTH delay of
// one second per session dominates the authfail phase).
func BenchmarkBatteryRelayguard(b *testing.B) {
	s := startServe(b, "")
	b.Run("mx", func(b *testing.B) { benchBattery(b, Options{Addr: s.mx}, "closed") })
	b.Run("mx-sequential", func(b *testing.B) { benchBattery(b, Options{Addr: s.mx, Parallel: 1}, "closed") })
}

// A private Postfix with default restrictions, tested as an outsider.
func BenchmarkBatteryPostfix(b *testing.B) {
	addr, _ := startPostfix(b, "")
	src := netip.MustParseAddr("127.0.0.2")
	b.Run("default", func(b *testing.B) { benchBattery(b, Options{Addr: addr, Source: src}, "closed") })
	b.Run("default-sequential", func(b *testing.B) { benchBattery(b, Options{Addr: addr, Source: src, Parallel: 1}, "closed") })
}
