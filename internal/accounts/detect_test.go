package accounts

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/ban"
	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/maillog"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

type bans struct {
	mu sync.Mutex
	p  []netip.Prefix
}

func (b *bans) Ban(_ context.Context, p netip.Prefix, _ time.Duration, reason string) (ban.Ban, error) {
	b.mu.Lock()
	b.p = append(b.p, p)
	b.mu.Unlock()
	return ban.Ban{Prefix: p, Reason: reason}, nil
}

type hook struct {
	mu     sync.Mutex
	alerts []Alert
	status int
}

type env struct {
	svc   *Service
	now   time.Time
	logs  *syncBuf
	bans  *bans
	hook  *hook
	store *SQLStore
}

// newEnv is a detector over real SQLite, a clock the test moves, a webhook
// on a real HTTP server, and a ban recorder.
func newEnv(t *testing.T, c config.AccountsConfig) *env {
	t.Helper()
	e := &env{now: t0, logs: &syncBuf{}, bans: &bans{}, hook: &hook{status: 200}, store: sqlStore(t)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var a Alert
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &a); err != nil || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("webhook body %q: %v", b, err)
		}
		e.hook.mu.Lock()
		e.hook.alerts = append(e.hook.alerts, a)
		st := e.hook.status
		e.hook.mu.Unlock()
		w.WriteHeader(st)
	}))
	t.Cleanup(srv.Close)
	ml := maillog.New(slog.New(slog.NewTextHandler(e.logs, nil)))
	r := NewResponder(Options{Config: c, Store: e.store, Host: "mx1", Command: "test", Banner: e.bans,
		Alerter: &Alerter{WebhookURL: srv.URL, Log: ml}, Log: ml, Now: func() time.Time { return e.now }})
	d := NewDetector(r)
	e.svc = &Service{Responder: r, Detector: d, Gate: NewGate(d)}
	return e
}

func (e *env) alerts() []Alert {
	e.hook.mu.Lock()
	defer e.hook.mu.Unlock()
	return append([]Alert(nil), e.hook.alerts...)
}

func (e *env) suspended(t *testing.T, user string) Suspension {
	sp, ok, err := e.store.Suspended(context.Background(), user)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		return Suspension{}
	}
	return sp
}

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestLoginSpreadIPv4AndIPv6(t *testing.T) {
	e := newEnv(t, config.Default().Accounts)
	ctx := context.Background()
	// The same /16 many times, and 8 networks: no signal.
	for i := range 20 {
		e.svc.Detector.Publish(ctx, event.Event{Time: e.now, Kind: event.AuthSuccess, User: "bob", IP: ip(fmt.Sprintf("10.1.%d.%d", i, i))})
	}
	for i := 2; i <= 8; i++ {
		e.svc.Detector.Publish(ctx, event.Event{Time: e.now, Kind: event.AuthSuccess, User: "bob", IP: ip(fmt.Sprintf("10.%d.0.1", i))})
	}
	if sp := e.suspended(t, "bob"); sp.User != "" {
		t.Fatalf("8 networks suspended bob: %+v", sp)
	}
	// An IPv6 /32 is the 9th network: suspended, with the evidence.
	e.svc.Detector.Publish(ctx, event.Event{Time: e.now, Kind: event.LoginSuccess, User: "bob", IP: ip("2001:db8:77::1")})
	sp := e.suspended(t, "bob")
	if sp.Signal != config.SignalLoginSpread || !strings.Contains(sp.Evidence, "2001:db8::/32") || !strings.Contains(sp.Evidence, "9 networks") {
		t.Fatalf("suspension %+v", sp)
	}
	a := e.alerts()
	if len(a) != 1 || a[0].User != "bob" || a[0].Signal != config.SignalLoginSpread || a[0].Action != "suspended" || a[0].Host != "mx1 (test)" {
		t.Fatalf("webhook alerts %+v", a)
	}
	// More logins: still one suspension, one alert.
	e.svc.Detector.Publish(ctx, event.Event{Time: e.now, Kind: event.AuthSuccess, User: "bob", IP: ip("10.99.0.1")})
	if len(e.alerts()) != 1 {
		t.Errorf("a second alert for the same suspension")
	}
	if !strings.Contains(e.logs.String(), `msg="account suspended" user=bob rule=login_spread`) {
		t.Errorf("no suspension record:\n%s", e.logs)
	}
	// Logins spread over more than an hour are no signal.
	e2 := newEnv(t, config.Default().Accounts)
	for i := 1; i <= 12; i++ {
		e2.now = e2.now.Add(10 * time.Minute)
		e2.svc.Detector.Publish(ctx, event.Event{Time: e2.now, Kind: event.AuthSuccess, User: "carol", IP: ip(fmt.Sprintf("10.%d.0.1", i))})
	}
	if sp := e2.suspended(t, "carol"); sp.User != "" {
		t.Errorf("12 networks over 2 hours suspended carol: %+v", sp)
	}
}

// The volume signal is relative to the account's own busiest hour.
func TestVolumeAnomaly(t *testing.T) {
	c := config.Default().Accounts
	c.VolumeFactor, c.VolumeMinimum = 10, 20
	e := newEnv(t, c)
	ctx := context.Background()
	send := func(user string, n int) {
		for range n {
			e.svc.Detector.Publish(ctx, event.Event{Time: e.now, Kind: event.MessageSubmitted, User: user})
		}
	}
	// A week of 3 messages an hour, one busy hour of 8.
	for h := 0; h < 7*24; h++ {
		n := 3
		if h == 50 {
			n = 8
		}
		send("bob", n)
		e.now = e.now.Add(time.Hour)
	}
	send("bob", 80) // 10 times the busiest hour: not more
	if sp := e.suspended(t, "bob"); sp.User != "" {
		t.Fatalf("80 messages suspended bob: %+v", sp)
	}
	send("bob", 1)
	sp := e.suspended(t, "bob")
	if sp.Signal != config.SignalVolume || !strings.Contains(sp.Evidence, "81 messages") || !strings.Contains(sp.Evidence, "busiest hour of the last 336h0m0s: 8") {
		t.Fatalf("suspension %+v", sp)
	}
	// A new account: its first busy hour needs volume_minimum.
	send("newbie", 20)
	if sp := e.suspended(t, "newbie"); sp.User != "" {
		t.Errorf("20 messages of a new account: %+v", sp)
	}
	send("newbie", 1)
	if sp := e.suspended(t, "newbie"); sp.Signal != config.SignalVolume {
		t.Errorf("21 messages of a new account: %+v", sp)
	}
}

// A high share of refused recipients, once there are enough of them.
func TestBadRecipients(t *testing.T) {
	c := config.Default().Accounts
	c.BadRecipientMinimum = 10
	e := newEnv(t, c)
	ctx := context.Background()
	for i := range 9 {
		e.svc.Detector.Publish(ctx, event.Event{Time: e.now, Kind: event.DeliveryFailed, User: "bob", Detail: fmt.Sprintf("dead%d@remote.test", i)})
	}
	if sp := e.suspended(t, "bob"); sp.User != "" {
		t.Fatalf("9 recipients: %+v", sp)
	}
	e.svc.Detector.Publish(ctx, event.Event{Time: e.now, Kind: event.Delivered, User: "bob", Detail: "friend@remote.test"})
	e.svc.Detector.Publish(ctx, event.Event{Time: e.now, Kind: event.DeliveryFailed, User: "bob", Detail: "dead9@remote.test"})
	sp := e.suspended(t, "bob")
	if sp.Signal != config.SignalBadRcpts || !strings.Contains(sp.Evidence, "10 of 11 recipients") || !strings.Contains(sp.Evidence, "dead9@remote.test") {
		t.Fatalf("suspension %+v", sp)
	}
	// A Postfix delivery line names only the queue id: the user is the one
	// the queue id was tied to.
	e.svc.Detector.Tie(ctx, "carol", "4QID", e.now)
	for range 12 {
		e.svc.Detector.Publish(ctx, event.Event{Time: e.now, Kind: event.DeliveryFailed, QueueID: "4QID", Detail: "x@remote.test"})
	}
	if sp := e.suspended(t, "carol"); sp.Signal != config.SignalBadRcpts {
		t.Errorf("carol through the queue id: %+v", sp)
	}
	// Mostly good recipients: never.
	for i := range 50 {
		k := event.Delivered
		if i%3 == 0 {
			k = event.DeliveryFailed
		}
		e.svc.Detector.Publish(ctx, event.Event{Time: e.now, Kind: k, User: "dave", Detail: "r@remote.test"})
	}
	if sp := e.suspended(t, "dave"); sp.User != "" {
		t.Errorf("a third bad: %+v", sp)
	}
}

// Distributed guessing: the name is refused from new networks only, never
// from the owner's; a suspended account is refused everywhere.
func TestGuessingGate(t *testing.T) {
	e := newEnv(t, config.Default().Accounts)
	ctx := context.Background()
	g := e.svc.Gate
	e.svc.Detector.Publish(ctx, event.Event{Time: e.now, Kind: event.AuthSuccess, User: "carol", IP: ip("198.51.100.7")})
	for i := range 10 {
		e.svc.Detector.Publish(ctx, event.Event{Time: e.now, Kind: event.AuthFailure, User: "carol", IP: ip(fmt.Sprintf("203.0.113.%d", i))})
	}
	if ok, why := g.AuthAllowed(ctx, "carol", ip("192.0.2.55")); !ok {
		t.Fatalf("10 addresses already refuse a new network: %s", why)
	}
	e.svc.Detector.Publish(ctx, event.Event{Time: e.now, Kind: event.AuthFailure, User: "carol", IP: ip("203.0.113.200")})
	if ok, _ := g.AuthAllowed(ctx, "carol", ip("192.0.2.55")); ok {
		t.Error("11 addresses guessing: a new network is still allowed")
	}
	if ok, why := g.AuthAllowed(ctx, "carol", ip("198.51.7.7")); !ok {
		t.Errorf("the owner's network (same /16) refused: %s", why)
	}
	if ok, _ := g.AuthAllowed(ctx, "dave", ip("192.0.2.55")); !ok {
		t.Error("another name refused")
	}
	if !strings.Contains(e.logs.String(), `msg="account compromise signal" user=carol rule=distributed_guessing`) {
		t.Errorf("guessing not logged:\n%s", e.logs)
	}
	if sp := e.suspended(t, "carol"); sp.User != "" {
		t.Errorf("guessing suspended the account: %+v", sp)
	}
	// An hour later the guessing has stopped counting.
	e.now = e.now.Add(61 * time.Minute)
	if ok, _ := g.AuthAllowed(ctx, "carol", ip("192.0.2.55")); !ok {
		t.Error("still refused an hour after the guessing")
	}
	e.svc.Suspend(ctx, "dave", config.SignalManual, "test")
	if ok, why := g.AuthAllowed(ctx, "dave", ip("198.51.100.7")); ok || why != "account suspended" {
		t.Errorf("suspended dave: %v %q", ok, why)
	}
}

// A decoy name bans the source's prefix at once; a name in the decoy list
// that logs in successfully is a real account and bans nobody.
func TestDecoys(t *testing.T) {
	e := newEnv(t, config.Default().Accounts)
	ctx := context.Background()
	e.svc.Detector.Publish(ctx, event.Event{Time: e.now, Kind: event.AuthFailure, User: "Admin", IP: ip("203.0.113.9")})
	e.svc.Detector.Publish(ctx, event.Event{Time: e.now, Kind: event.AuthFailure, User: "test", IP: ip("2001:db8:1:2:3::9")})
	want := []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("2001:db8:1:2::/64")}
	if len(e.bans.p) != 2 || e.bans.p[0] != want[0] || e.bans.p[1] != want[1] {
		t.Fatalf("bans %v, want %v", e.bans.p, want)
	}
	e.svc.Detector.Publish(ctx, event.Event{Time: e.now, Kind: event.AuthSuccess, User: "support", IP: ip("198.51.100.1")})
	e.svc.Detector.Publish(ctx, event.Event{Time: e.now, Kind: event.AuthFailure, User: "support", IP: ip("198.51.100.2")})
	if len(e.bans.p) != 2 {
		t.Errorf("a decoy name that is a real account banned %v", e.bans.p[2:])
	}
	if !strings.Contains(e.logs.String(), "decoy name has logged in successfully") {
		t.Errorf("the misconfigured decoy is not logged:\n%s", e.logs)
	}
}

// With accounts.suspend = false a signal alerts (once an hour) and
// suspends nothing; a webhook that fails is logged and nothing else.
func TestAlertOnlyAndFailingWebhook(t *testing.T) {
	c := config.Default().Accounts
	c.Suspend = false
	e := newEnv(t, c)
	ctx := context.Background()
	e.hook.status = 500
	for i := 1; i <= 12; i++ {
		e.svc.Detector.Publish(ctx, event.Event{Time: e.now, Kind: event.AuthSuccess, User: "bob", IP: ip(fmt.Sprintf("10.%d.0.1", i))})
	}
	if sp := e.suspended(t, "bob"); sp.User != "" {
		t.Fatalf("suspended with suspend = false: %+v", sp)
	}
	a := e.alerts()
	if len(a) != 1 || !strings.HasPrefix(a[0].Action, "alert only") {
		t.Fatalf("alerts %+v, want one alert-only", a)
	}
	if !strings.Contains(e.logs.String(), "alert webhook failed") || !strings.Contains(e.logs.String(), "500") {
		t.Errorf("the failing webhook is not logged:\n%s", e.logs)
	}
	e.now = e.now.Add(61 * time.Minute)
	e.svc.Detector.Publish(ctx, event.Event{Time: e.now, Kind: event.AuthSuccess, User: "bob", IP: ip("10.50.0.1")})
	for i := 13; i <= 22; i++ {
		e.svc.Detector.Publish(ctx, event.Event{Time: e.now, Kind: event.AuthSuccess, User: "bob", IP: ip(fmt.Sprintf("10.%d.0.1", i))})
	}
	if n := len(e.alerts()); n != 2 {
		t.Errorf("%d alerts after an hour, want 2", n)
	}
}

// TestGateKeepsSuspendedWhenStoreFails: when the state store fails (here
// its SQLite database closed under it), an account the gate last saw
// suspended stays refused at login and at MAIL FROM, while the others are
// let through as before (a broken store must not lock everyone out). The
// error let the suspended account through like the others.
func TestGateKeepsSuspendedWhenStoreFails(t *testing.T) {
	e := newEnv(t, config.Default().Accounts)
	ctx := context.Background()
	if _, err := e.svc.Responder.Suspend(ctx, "bob", "manual", "test"); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"bob", "carol"} {
		e.svc.Gate.Suspended(ctx, u) // (asked before: the gate's last answers)
	}
	e.now = e.now.Add(2 * SuspendedTTL)
	e.store.db.Close()
	if susp, err := e.svc.Gate.Suspended(ctx, "bob"); err != nil || !susp {
		t.Errorf("store failed: bob suspended=%v err=%v, want still suspended", susp, err)
	}
	if ok, _ := e.svc.Gate.AuthAllowed(ctx, "bob", ip("192.0.2.1")); ok {
		t.Error("store failed: the suspended bob may log in again")
	}
	if ok, _ := e.svc.Gate.AuthAllowed(ctx, "carol", ip("192.0.2.1")); !ok {
		t.Error("store failed: carol, never suspended, is locked out")
	}
}

// The gate's last answers are bounded (100,000 accounts); a client that
// asks about that many distinct names (an AUTH or MAIL FROM each) while the
// store works must not wipe what the gate knows of a suspended account,
// which then logged in as soon as the store failed (breaker10: at ae41b66
// the bound cleared every answer, bob's suspension with them).
func TestGateKeepsSuspendedAfterManyNames(t *testing.T) {
	e := newEnv(t, config.Default().Accounts)
	ctx := context.Background()
	if _, err := e.svc.Responder.Suspend(ctx, "bob", "manual", "test"); err != nil {
		t.Fatal(err)
	}
	if susp, _ := e.svc.Gate.Suspended(ctx, "bob"); !susp {
		t.Fatal("bob not suspended")
	}
	for i := range 100_001 {
		if _, err := e.svc.Gate.Suspended(ctx, "guess"+strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	e.now = e.now.Add(2 * SuspendedTTL)
	e.store.db.Close()
	if susp, err := e.svc.Gate.Suspended(ctx, "bob"); err != nil || !susp {
		t.Errorf("store failed after 100,001 other names: bob suspended=%v err=%v, want still suspended", susp, err)
	}
}
