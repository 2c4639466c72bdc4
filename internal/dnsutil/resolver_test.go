package dnsutil_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/relayguard/relayguard/internal/dnsutil"
	"github.com/relayguard/relayguard/internal/dnsutil/dnstest"
)

func TestErrorKinds(t *testing.T) {
	s := dnstest.Start(t)
	s.Add(t, "a.test. 60 IN A 192.0.2.1", "a.test. 60 IN A 192.0.2.2", "mx.test. 60 IN MX 0 .")
	s.ServFail("sf.test", true)
	s.Dead("dead.test", true)
	r, err := dnsutil.New([]string{s.Addr}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	addrs, ttl, err := r.LookupA4(ctx, "a.test")
	if err != nil || len(addrs) != 2 || ttl != time.Minute {
		t.Errorf("A a.test: %v %v %v", addrs, ttl, err)
	}
	for name, want := range map[string]dnsutil.Kind{
		"nx.test": dnsutil.NXDomain, "mx.test": dnsutil.NoData, "x.sf.test": dnsutil.ServFail, "x.dead.test": dnsutil.Timeout,
	} {
		_, _, err := r.LookupA4(ctx, name)
		var de *dnsutil.Error
		if !errors.As(err, &de) || de.Kind != want {
			t.Errorf("%s: %v, want %v", name, err, want)
			continue
		}
		if de.NotFound() != (want == dnsutil.NXDomain || want == dnsutil.NoData) {
			t.Errorf("%s: NotFound() = %v", name, de.NotFound())
		}
		if want == dnsutil.NXDomain && de.TTL != 120*time.Second {
			t.Errorf("%s: negative TTL %v, want the SOA's 120s (RFC 2308)", name, de.TTL)
		}
	}
	// The net-style methods give *net.DNSError with the right flags.
	_, err = r.LookupMX(ctx, "nx.test")
	var ne *net.DNSError
	if !errors.As(err, &ne) || !ne.IsNotFound || ne.IsTemporary {
		t.Errorf("MX nx.test: %#v", err)
	}
	_, err = r.LookupTXT(ctx, "x.sf.test")
	if !errors.As(err, &ne) || ne.IsNotFound || !ne.Temporary() {
		t.Errorf("TXT x.sf.test: %#v", err)
	}
	mx, err := r.LookupMX(ctx, "mx.test")
	if err != nil || len(mx) != 1 || mx[0].Host != "." {
		t.Errorf("null MX: %v %v", mx, err)
	}
	ips, err := r.LookupIPAddr(ctx, "a.test")
	if err != nil || len(ips) != 2 {
		t.Errorf("LookupIPAddr: %v %v", ips, err)
	}
}

func TestSystemServersAndPublicResolvers(t *testing.T) {
	p := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(p, []byte("# comment\nnameserver 127.0.0.53\nnameserver ::1\nsearch example.test\nnameserver bogus\n"), 0o644)
	got, err := dnsutil.SystemServers(p)
	if err != nil || len(got) != 2 || got[0] != "127.0.0.53:53" || got[1] != "[::1]:53" {
		t.Errorf("SystemServers = %v, %v", got, err)
	}
	if _, err := dnsutil.New([]string{"not-an-ip"}, time.Second); err == nil {
		t.Errorf("New accepted a bad server")
	}
	for s, public := range map[string]bool{"8.8.8.8": true, "1.1.1.1:53": true, "[2620:fe::fe]:53": true, "127.0.0.1": false, "192.0.2.53": false} {
		if _, ok := dnsutil.PublicResolver(s); ok != public {
			t.Errorf("PublicResolver(%s) = %v", s, ok)
		}
	}
}

func TestLookupNetIPPerFamily(t *testing.T) {
	s := dnstest.Start(t)
	s.Add(t, "d.test. 60 IN A 192.0.2.1", "d.test. 60 IN AAAA 2001:db8::1", "four.test. 60 IN A 192.0.2.4")
	s.ServFailType("d.test", 28)
	r, err := dnsutil.New([]string{s.Addr}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if a, err := r.LookupNetIP(ctx, "ip4", "d.test"); err != nil || len(a) != 1 || a[0].String() != "192.0.2.1" {
		t.Errorf("ip4 d.test: %v %v", a, err)
	}
	var ne *net.DNSError
	if a, err := r.LookupNetIP(ctx, "ip6", "d.test"); !errors.As(err, &ne) || ne.IsNotFound || !ne.IsTemporary {
		t.Errorf("ip6 d.test (AAAA SERVFAIL): %v %#v, want a temporary error", a, err)
	}
	if a, err := r.LookupNetIP(ctx, "ip6", "four.test"); !errors.As(err, &ne) || !ne.IsNotFound {
		t.Errorf("ip6 four.test (no AAAA): %v %v, want not found", a, err)
	}
	if a, err := r.LookupNetIP(ctx, "ip", "four.test"); err != nil || len(a) != 1 {
		t.Errorf("ip four.test: %v %v", a, err)
	}
	if _, err := r.LookupNetIP(ctx, "tcp", "four.test"); err == nil || !strings.Contains(err.Error(), "tcp") {
		t.Errorf("network tcp: %v, want an error naming it", err)
	}
}

// TestBadNameIsNotFound: a name that cannot be a domain name is a definite
// "not found", asked of no server, never a temporary failure.
func TestBadNameIsNotFound(t *testing.T) {
	s := dnstest.Start(t)
	r, err := dnsutil.New([]string{s.Addr}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, name := range []string{"a..b.test", strings.Repeat("x", 64) + ".test"} {
		_, _, err := r.LookupA4(ctx, name)
		var de *dnsutil.Error
		if !errors.As(err, &de) || de.Kind != dnsutil.BadName || !de.NotFound() || !strings.Contains(err.Error(), name) {
			t.Errorf("LookupA4(%q): %v, want a not-found BadName naming the input", name, err)
		}
		_, err = r.LookupMX(ctx, name)
		var ne *net.DNSError
		if !errors.As(err, &ne) || !ne.IsNotFound || ne.IsTemporary {
			t.Errorf("LookupMX(%q): %#v, want not found", name, err)
		}
	}
	if n := s.Queries.Load(); n != 0 {
		t.Errorf("%d queries sent for invalid names", n)
	}
}

// TestReferralIsNotNoData: a server that does not recurse answers with a
// referral; that is no answer, and must not read as "no such record".
func TestReferralIsNotNoData(t *testing.T) {
	s := dnstest.Start(t)
	s.Referral("ref.test", true)
	s.Add(t, "nodata.test. 60 IN TXT \"x\"")
	r, err := dnsutil.New([]string{s.Addr}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	_, _, err = r.LookupA4(ctx, "x.ref.test")
	var de *dnsutil.Error
	if !errors.As(err, &de) || de.NotFound() || !de.Temporary() || !strings.Contains(err.Error(), "referral") {
		t.Errorf("referral: %v, want a temporary error saying referral", err)
	}
	_, err = r.LookupMX(ctx, "x.ref.test")
	var ne *net.DNSError
	if !errors.As(err, &ne) || ne.IsNotFound {
		t.Errorf("MX through a referral: %#v, want not IsNotFound", err)
	}
	// A real NODATA (SOA in the authority section) stays a negative answer.
	if _, _, err = r.LookupA4(ctx, "nodata.test"); !errors.As(err, &de) || de.Kind != dnsutil.NoData {
		t.Errorf("NODATA: %v", err)
	}
}

// TestRetransmitsLostQueries: a lost UDP packet costs one retransmission
// interval, not the whole timeout (issue 13 item 5).
func TestRetransmitsLostQueries(t *testing.T) {
	t.Parallel()
	s := dnstest.Start(t)
	s.Add(t, "a.lossy.test. 60 IN A 192.0.2.1")
	r, err := dnsutil.New([]string{s.Addr}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	s.Drop("lossy.test", 2)
	t0 := time.Now()
	addrs, _, err := r.LookupA4(context.Background(), "a.lossy.test")
	if err != nil || len(addrs) != 1 {
		t.Fatalf("after two lost packets: %v %v, want the answer from the third attempt", addrs, err)
	}
	// Attempts go out at 0, 0.4 s and 1.2 s; the third is answered.
	if el := time.Since(t0); el < dnsutil.FirstRetransmit*3 {
		t.Errorf("answered after %v: the first two packets were to be lost", el)
	}
	if n := s.Queries.Load(); n != 3 {
		t.Errorf("server saw %d queries, want 3", n)
	}
}

// TestNextServerOnFailure: a server that does not answer or answers
// SERVFAIL is not waited out; the query moves on to the next server.
func TestNextServerOnFailure(t *testing.T) {
	t.Parallel()
	good, dead, sf := dnstest.Start(t), dnstest.Start(t), dnstest.Start(t)
	good.Add(t, "a.list.test. 60 IN A 192.0.2.1")
	dead.Dead("test", true)
	sf.ServFail("test", true)
	for _, tc := range []struct {
		name    string
		servers []string
	}{
		{"dead first", []string{dead.Addr, good.Addr}},
		{"servfail first", []string{sf.Addr, good.Addr}},
		{"servfail, dead, good", []string{sf.Addr, dead.Addr, good.Addr}},
	} {
		r, err := dnsutil.New(tc.servers, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		// The first server asked rotates; ask enough times that every
		// order is seen.
		for range 3 {
			t0 := time.Now()
			addrs, _, err := r.LookupA4(context.Background(), "a.list.test")
			if err != nil || len(addrs) != 1 {
				t.Fatalf("%s: %v %v", tc.name, addrs, err)
			}
			// The good server is asked at 0.4 s at the latest; the
			// 5 s timeout is never waited out.
			if el := time.Since(t0); el > 2500*time.Millisecond {
				t.Errorf("%s: took %v: a failing server was waited out", tc.name, el)
			}
		}
	}
	// Every server failing: SERVFAIL wins over silence, and comes back
	// before the deadline once every server has said so.
	r, _ := dnsutil.New([]string{sf.Addr}, 5*time.Second)
	t0 := time.Now()
	_, _, err := r.LookupA4(context.Background(), "a.list.test")
	var de *dnsutil.Error
	if !errors.As(err, &de) || de.Kind != dnsutil.ServFail || time.Since(t0) > time.Second {
		t.Errorf("only server SERVFAIL: %v after %v", err, time.Since(t0))
	}
	r, _ = dnsutil.New([]string{dead.Addr, sf.Addr}, 2*time.Second)
	_, _, err = r.LookupA4(context.Background(), "a.list.test")
	if !errors.As(err, &de) || de.Kind != dnsutil.ServFail {
		t.Errorf("dead and SERVFAIL servers: %v, want SERVFAIL", err)
	}
}

// TestDeadlineBoundsRetransmissions: a server that never answers costs
// exactly the caller's deadline, and the error says timeout.
func TestDeadlineBoundsRetransmissions(t *testing.T) {
	t.Parallel()
	s := dnstest.Start(t)
	s.Dead("test", true)
	r, _ := dnsutil.New([]string{s.Addr}, 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	_, _, err := r.LookupA4(ctx, "a.test")
	var de *dnsutil.Error
	if !errors.As(err, &de) || de.Kind != dnsutil.Timeout {
		t.Fatalf("dead server: %v, want timeout", err)
	}
	if el := time.Since(t0); el < 1400*time.Millisecond || el > 2500*time.Millisecond {
		t.Errorf("returned after %v, want the 1.5 s deadline", el)
	}
	// 0, 0.4 and 1.2 s: three attempts within 1.5 s.
	time.Sleep(50 * time.Millisecond)
	if n := s.Queries.Load(); n != 3 {
		t.Errorf("%d attempts within 1.5 s, want 3 (backoff 0.4 s, doubling)", n)
	}
}

// TestRefusedPortFailsAtOnce: a resolver that is not running (its port
// refuses) is known at once, not after the timeout; with a second server
// the query goes there.
func TestRefusedPortFailsAtOnce(t *testing.T) {
	t.Parallel()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := pc.LocalAddr().String()
	pc.Close()
	r, _ := dnsutil.New([]string{closed}, 5*time.Second)
	t0 := time.Now()
	_, _, err = r.LookupA4(context.Background(), "a.test")
	var de *dnsutil.Error
	if !errors.As(err, &de) || de.Kind != dnsutil.Other || !strings.Contains(err.Error(), "refused") {
		t.Errorf("closed port: %v, want a refused connection", err)
	}
	if el := time.Since(t0); el > 2*time.Second {
		t.Errorf("closed port: %v, want an answer well before the 5 s timeout", el)
	}
	good := dnstest.Start(t)
	good.Add(t, "a.test. 60 IN A 192.0.2.1")
	r, _ = dnsutil.New([]string{closed, good.Addr}, 5*time.Second)
	for range 2 { // either server first
		if addrs, _, err := r.LookupA4(context.Background(), "a.test"); err != nil || len(addrs) != 1 {
			t.Errorf("closed port, then a good server: %v %v", addrs, err)
		}
	}
}

// TestIgnoresForeignReplies: with several servers the socket is not
// connected; an answer from an address that was not asked (a forgery with
// the right ID) is dropped, and the server's own answer is taken.
func TestIgnoresForeignReplies(t *testing.T) {
	t.Parallel()
	srv, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	forger, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer forger.Close()
	go func() {
		buf := make([]byte, 1500)
		n, from, err := srv.ReadFrom(buf)
		if err != nil {
			return
		}
		q := new(dns.Msg)
		if q.Unpack(buf[:n]) != nil {
			return
		}
		reply := func(ip string) []byte {
			m := new(dns.Msg)
			m.SetReply(q)
			m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP(ip)}}
			b, _ := m.Pack()
			return b
		}
		forger.WriteTo(reply("192.0.2.66"), from)
		time.Sleep(100 * time.Millisecond)
		srv.WriteTo(reply("192.0.2.1"), from)
	}()
	r, _ := dnsutil.New([]string{srv.LocalAddr().String(), srv.LocalAddr().String()}, 3*time.Second)
	addrs, _, err := r.LookupA4(context.Background(), "a.test")
	if err != nil || len(addrs) != 1 || addrs[0].String() != "192.0.2.1" {
		t.Errorf("forged answer from another port: got %v %v, want the server's 192.0.2.1", addrs, err)
	}
}
