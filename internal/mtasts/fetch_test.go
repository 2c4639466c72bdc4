package mtasts_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/msgauth/authtest"
	"github.com/relayguard/relayguard/internal/mtasts"
)

// stsServer is an HTTPS policy server with a certificate of a test CA
// for mta-sts.down.test; its answer is set by the test: a policy, an HTTP
// status, or a hang until released.
type stsServer struct {
	addr string
	mu   sync.Mutex
	hits int
	body string        // the policy; "" answers status
	code int           // status when body is ""
	hold chan struct{} // non-nil: requests wait for it to close
}

func startSTSServer(t *testing.T, ca *authtest.CA) *stsServer {
	t.Helper()
	cert := ca.Issue(t, time.Time{}, "mta-sts.down.test")
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	s := &stsServer{addr: ln.Addr().String(), code: http.StatusServiceUnavailable}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.hits++
		hold, body, code := s.hold, s.body, s.code
		s.mu.Unlock()
		if hold != nil {
			select {
			case <-hold:
			case <-r.Context().Done():
				return
			}
		}
		if body == "" {
			http.Error(w, "down", code)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprint(w, body)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return s
}

func (s *stsServer) count() int { s.mu.Lock(); defer s.mu.Unlock(); return s.hits }

func (s *stsServer) set(body string, hold chan struct{}) {
	s.mu.Lock()
	s.body, s.hold = body, hold
	s.mu.Unlock()
}

// A policy host that fails is not asked again for the same policy id
// for RetryAfter (RFC 8461 §3.3), whether no policy is cached (the
// message goes without MTA-STS, as a fetch error) or an older one is (it
// stays in force); a new id is fetched at once; deliveries waiting on a
// hung policy host share one request, which outlives a delivery that
// stops waiting (it is cached for the others).
func TestFetchFailureRemembered(t *testing.T) {
	t.Parallel()
	ca := authtest.NewCA(t)
	srv := startSTSServer(t, ca)
	var mu sync.Mutex
	id := "1"
	now := time.Date(2026, 12, 6, 8, 0, 0, 0, time.UTC)
	dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, srv.addr)
	}
	f := &mtasts.Fetcher{
		Dir: t.TempDir(),
		TXT: func(_ context.Context, name string) ([]string, error) {
			if name != "_mta-sts.down.test" {
				return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
			}
			mu.Lock()
			defer mu.Unlock()
			return []string{"v=STSv1; id=" + id}, nil
		},
		Client: mtasts.NewClient(ca.Pool(), dial),
		Now:    func() time.Time { mu.Lock(); defer mu.Unlock(); return now },
	}
	setID := func(s string) { mu.Lock(); id = s; mu.Unlock() }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	ctx := context.Background()
	get := func(what string, wantPolicy bool, wantHits int) mtasts.Result {
		t.Helper()
		r := f.Get(ctx, "down.test")
		if (r.Policy != nil) != wantPolicy {
			t.Fatalf("%s: policy %+v err %v, want a policy: %v", what, r.Policy, r.Err, wantPolicy)
		}
		if !wantPolicy && (!r.FetchFailed || r.Err == nil) {
			t.Fatalf("%s: %+v, want a fetch failure", what, r)
		}
		if got := srv.count(); got != wantHits {
			t.Fatalf("%s: the policy host was asked %d times in all, want %d", what, got, wantHits)
		}
		return r
	}

	// Down (503): one request, then the failure is remembered.
	get("first message", false, 1)
	r := get("second message", false, 1)
	if !strings.Contains(r.Err.Error(), "503") || !strings.Contains(r.Err.Error(), "not fetched again before 08:05:00") {
		t.Errorf("remembered failure: %v", r.Err)
	}
	advance(mtasts.RetryAfter - time.Second)
	get("just before the retry time", false, 1)

	// A new id is a new policy version: fetched at once.
	setID("2")
	get("new id", false, 2)
	get("new id again", false, 2)

	// After RetryAfter the host is asked again, and now answers.
	advance(mtasts.RetryAfter)
	srv.set("version: STSv1\nmode: enforce\nmx: mx.down.test\nmax_age: 86400\n", nil)
	get("retry", true, 3)
	get("cached", true, 3)

	// A cached policy, a new id, the host down: the cached policy stays in
	// force and the host is asked once.
	srv.set("", nil)
	setID("3")
	get("new id, host down", true, 4)
	get("new id, host down, again", true, 4)

	// A hung host: concurrent deliveries share one request.
	setID("4")
	advance(time.Hour) // the cached policy (max_age one day) is still valid
	hold := make(chan struct{})
	srv.set("version: STSv1\nmode: testing\nmx: mx.down.test\nmax_age: 86400\n", hold)
	var wg sync.WaitGroup
	modes := make(chan string, 8)
	for range 8 {
		wg.Go(func() {
			if r := f.Get(ctx, "down.test"); r.Policy != nil {
				modes <- r.Policy.Mode
			}
		})
	}
	for deadline := time.Now().Add(10 * time.Second); srv.count() < 5 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // the other seven join the request in flight
	close(hold)
	wg.Wait()
	close(modes)
	for m := range modes {
		if m != mtasts.Testing {
			t.Errorf("a concurrent delivery got mode %s, want the fetched testing policy", m)
		}
	}
	if got := srv.count(); got != 5 {
		t.Fatalf("8 concurrent deliveries asked the policy host %d times, want once (5 in all)", got-4)
	}

	// A delivery that gives up waiting (its context ends) does not end the
	// fetch the others share: it completes and is cached.
	setID("5")
	hold = make(chan struct{})
	srv.set("version: STSv1\nmode: enforce\nmx: mx.down.test\nmax_age: 86400\n", hold)
	cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	r = f.Get(cctx, "down.test")
	cancel()
	if r.Policy == nil || r.Policy.Mode != mtasts.Testing {
		t.Fatalf("a delivery that gave up: %+v, want the cached testing policy", r)
	}
	close(hold)
	if r := get("after a delivery gave up", true, 6); r.Policy.Mode != mtasts.Enforce {
		t.Fatalf("after a delivery gave up: %+v, want the new enforce policy", r.Policy)
	}
}
