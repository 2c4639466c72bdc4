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
