package deliver_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/deliver"
	"github.com/relayguard/relayguard/internal/deliver/delivertest"
	"github.com/relayguard/relayguard/internal/msgauth/authtest"
)

// tlsResults collects what the deliverer reports for TLS-RPT.
type tlsResults struct {
	mu sync.Mutex
	r  []deliver.TLSResult
}

func (r *tlsResults) Record(x deliver.TLSResult) { r.mu.Lock(); r.r = append(r.r, x); r.mu.Unlock() }

func (r *tlsResults) take() []deliver.TLSResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.r
	r.r = nil
	return out
}

// policyServer serves MTA-STS policies over HTTPS with a certificate of
// the test CA for every mta-sts.DOMAIN name; bodies maps domain to the
// policy ("" answers 404, "redirect" a redirect).
type policyServer struct {
	port   int
	mu     sync.Mutex
	bodies map[string]string
	hits   int
}

func startPolicyServer(t *testing.T, ca *authtest.CA, domains ...string) *policyServer {
	t.Helper()
	var names []string
	for _, d := range domains {
		names = append(names, "mta-sts."+d)
	}
	cert := ca.Issue(t, time.Time{}, names...)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	ps := &policyServer{port: ln.Addr().(*net.TCPAddr).Port, bodies: map[string]string{}}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ps.mu.Lock()
		ps.hits++
		body, ok := ps.bodies[strings.TrimPrefix(r.Host, "mta-sts.")]
		ps.mu.Unlock()
		switch {
		case r.URL.Path != "/.well-known/mta-sts.txt" || !ok || body == "":
			http.NotFound(w, r)
		case body == "redirect":
			http.Redirect(w, r, "https://elsewhere.test/", http.StatusFound)
		default:
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			fmt.Fprint(w, body)
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ps
}

func (ps *policyServer) count() int {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.hits
}

func (ps *policyServer) set(domain, body string) {
	ps.mu.Lock()
	ps.bodies[domain] = body
	ps.mu.Unlock()
}

func stsPolicy(mode string, mx ...string) string {
	b := "version: STSv1\r\nmode: " + mode + "\r\n"
	for _, m := range mx {
		b += "mx: " + m + "\r\n"
	}
	return b + "max_age: 86400\r\n"
}

// MTA-STS (RFC 8461) against a local HTTPS policy server with a test CA:
// an enforced policy delivers only to its MX hosts, over TLS with a
// certificate valid for the MX name, and defers otherwise (wrong name, no
// STARTTLS, an MX outside the policy); testing mode delivers and reports;
// the policy is cached on disk and outlives its server and its TXT
// record; a policy that cannot be fetched (404, redirect) is no policy,
// reported as sts-policy-fetch-error. Every session is reported for TLS-RPT.
func TestMTASTS(t *testing.T) {
	ca := authtest.NewCA(t)
	good := ca.Issue(t, time.Time{}, "mx.sts.test", "mx.testing.test", "mx.nofetch.test")
	wrong := ca.Issue(t, time.Time{}, "somewhere.else.test")
	goodPeer := delivertest.StartGoPeer(t, delivertest.GoPeerOptions{Cert: &good})
	wrongPeer := delivertest.StartGoPeer(t, delivertest.GoPeerOptions{Cert: &wrong})
	plainPeer := delivertest.StartGoPeer(t, delivertest.GoPeerOptions{})
	ps := startPolicyServer(t, ca, "sts.test", "testing.test", "nofetch.test", "redirect.test")
	ps.set("sts.test", stsPolicy("enforce", "mx.sts.test", "*.backup.sts.test"))
	ps.set("testing.test", stsPolicy("testing", "mx.testing.test"))
	ps.set("nofetch.test", "")
	ps.set("redirect.test", "redirect")
	s := newSetup(t,
		"sts.test. 300 IN MX 10 mx.sts.test.", "mx.sts.test. 300 IN A 127.0.0.1",
		`_mta-sts.sts.test. 300 IN TXT "v=STSv1; id=20261206"`, "mta-sts.sts.test. 300 IN A 127.0.0.1",
		"testing.test. 300 IN MX 10 mx.testing.test.", "mx.testing.test. 300 IN A 127.0.0.1",
		`_mta-sts.testing.test. 300 IN TXT "v=STSv1; id=1"`, "mta-sts.testing.test. 300 IN A 127.0.0.1",
		"nofetch.test. 300 IN MX 10 mx.nofetch.test.", "mx.nofetch.test. 300 IN A 127.0.0.1",
		`_mta-sts.nofetch.test. 300 IN TXT "v=STSv1; id=1"`, "mta-sts.nofetch.test. 300 IN A 127.0.0.1",
		"redirect.test. 300 IN MX 10 mx.redirect.test.", "mx.redirect.test. 300 IN A 127.0.0.1",
		`_mta-sts.redirect.test. 300 IN TXT "v=STSv1; id=1"`, "mta-sts.redirect.test. 300 IN A 127.0.0.1",
	)
	s.rootCAs = ca.Pool()
	dataDir := t.TempDir()
	rep := &tlsResults{}
	deliverer := func(peer *delivertest.GoPeer) *deliver.Deliverer {
		t.Helper()
		res, _ := deliver.NewResolver(s.dns.Addr, 5*time.Second)
		port, _ := strconv.Atoi(tlsPeerPort(peer.Addr))
		d, err := deliver.New(s.cfg, "relay.test", slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
			deliver.Options{Resolver: res, MXPort: port, RootCAs: ca.Pool(), DataDir: dataDir, STSPort: ps.port, Reporter: rep})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(d.Close)
		return d
	}
	ctx := context.Background()
	expectResult := func(what string, want ...string) {
		t.Helper()
		got := rep.take()
		var kinds []string
		for _, r := range got {
			k := r.Type + ":" + r.Domain + ":"
			if r.OK {
				k += "ok"
			} else {
				k += r.Failure
			}
			kinds = append(kinds, k)
		}
		if strings.Join(kinds, " ") != strings.Join(want, " ") {
			t.Fatalf("%s: TLS results %v, want %v (%+v)", what, kinds, want, got)
		}
	}

	// Enforce, right MX, valid certificate: delivered over TLS.
	wantOK(t, deliverer(goodPeer).Deliver(ctx, "sts.test", request("b@sts.test")), 1)
	if m := goodPeer.Messages(); len(m) != 1 || !m[0].TLS {
		t.Fatalf("enforce: %+v", m)
	}
	expectResult("enforce ok", "sts:sts.test:ok")

	// Enforce, a certificate for another name: deferred, nothing sent.
	r := deliverer(wrongPeer).Deliver(ctx, "sts.test", request("b@sts.test"))[0]
	if r.OK || !r.Temp || len(wrongPeer.Messages()) != 0 {
		t.Fatalf("enforce, wrong certificate: %+v", r)
	}
	expectResult("enforce wrong cert", "sts:sts.test:certificate-host-mismatch")

	// Enforce, no STARTTLS: deferred.
	r = deliverer(plainPeer).Deliver(ctx, "sts.test", request("b@sts.test"))[0]
	if r.OK || !r.Temp || len(plainPeer.Messages()) != 0 {
		t.Fatalf("enforce, no STARTTLS: %+v", r)
	}
	expectResult("enforce no starttls", "sts:sts.test:starttls-not-supported")

	// Enforce, an MX host outside the policy (a forged MX): not contacted.
	s.dns.Add(t, "sts.test. 300 IN MX 5 mx.attacker.test.")
	s.dns.Add(t, "mx.attacker.test. 300 IN A 127.0.0.1")
	d := deliverer(goodPeer)
	before := len(goodPeer.Messages())
	res := d.Deliver(ctx, "sts.test", request("b@sts.test"))
	if !res[0].OK || len(goodPeer.Messages()) != before+1 {
		t.Fatalf("enforce with a forged better MX: %+v", res)
	}
	expectResult("forged MX", "sts:sts.test:validation-failure", "sts:sts.test:ok")

	// Testing mode: a wrong certificate is delivered to anyway, and reported.
	wantOK(t, deliverer(wrongPeer).Deliver(ctx, "testing.test", request("b@testing.test")), 1)
	expectResult("testing", "sts:testing.test:certificate-host-mismatch")

	// No policy to be had (404, a redirect): delivered as without MTA-STS,
	// reported as a fetch error.
	d = deliverer(wrongPeer)
	hits := ps.count()
	wantOK(t, d.Deliver(ctx, "nofetch.test", request("b@nofetch.test")), 1)
	expectResult("404", "sts:nofetch.test:sts-policy-fetch-error")
	// The failure is remembered for the policy id (RFC 8461 §3.3): the
	// next message does not ask the policy host again, and is still
	// reported.
	if ps.count() != hits+1 {
		t.Fatalf("404: the policy host was asked %d times, want once", ps.count()-hits)
	}
	wantOK(t, d.Deliver(ctx, "nofetch.test", request("c@nofetch.test")), 1)
	expectResult("404 remembered", "sts:nofetch.test:sts-policy-fetch-error")
	if ps.count() != hits+1 {
		t.Fatalf("the policy host that failed was asked again for the next message")
	}
	wantOK(t, deliverer(wrongPeer).Deliver(ctx, "redirect.test", request("b@redirect.test")), 1)
	expectResult("redirect", "sts:redirect.test:sts-policy-fetch-error")

	// The cached policy outlives its server, its TXT record and a restart
	// (a new deliverer reads the cache in the data directory).
	ps.set("sts.test", "")
	s.dns.SetRcode("_mta-sts.sts.test.", 3) // NXDOMAIN
	hits = ps.count()
	r = deliverer(wrongPeer).Deliver(ctx, "sts.test", request("b@sts.test"))[0]
	if r.OK || !r.Temp {
		t.Fatalf("cached enforce policy not applied: %+v", r)
	}
	if ps.count() != hits {
		t.Fatalf("the policy was fetched again although cached")
	}
	if _, err := os.Stat(dataDir + "/mta-sts/sts.test.json"); err != nil {
		t.Fatal(err)
	}
	rep.take()
}
