package console

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/hosttest"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relayguard/relayguard/internal/accounts"
	"github.com/relayguard/relayguard/internal/audit"
	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/guard"
	"github.com/relayguard/relayguard/internal/queue"
	"github.com/relayguard/relayguard/internal/ratelimit"
	"github.com/relayguard/relayguard/internal/store"
	"github.com/relayguard/relayguard/internal/userdb"
)

// syncBuffer is a log destination read while goroutines write.
type syncBuffer = hosttest.LogBuffer

// rig is a console over real parts: the SQLite store, the guard, a spool,
// the mail accounts, the accounts' detection and response, the send
// limiter; served by an httptest server.
type rig struct {
	t       *testing.T
	cfg     *config.Config
	st      *store.Stores
	guard   *guard.Guard
	spool   *queue.Spool
	users   *userdb.DB
	acct    *accounts.Service
	bus     *event.Bus
	events  *event.Recorder
	reg     *prometheus.Registry
	admins  *Admins
	console *Console
	rep     *audit.Monitor
	srv     *httptest.Server
	log     *syncBuffer
}

const (
	adminName = "ops"
	adminPass = "correct horse battery staple"
	roName    = "auditor"
	roPass    = "read only but long enough"
)

func newRig(t *testing.T, tweak func(*config.Config)) *rig {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Hostname = "mx.test"
	cfg.LocalDomains = []string{"mx.test"}
	cfg.OwnAddresses = []string{"192.0.2.1"}
	cfg.Limits.AuthFailureDelay = 0
	cfg.Report.Logs = nil
	if tweak != nil {
		tweak(cfg)
	}
	if err := cfg.Finish(dir); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	st, err := store.Open(ctx, cfg.DataDir, "", log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	r := &rig{t: t, cfg: cfg, st: st, log: logs, bus: &event.Bus{}, events: &event.Recorder{}, reg: prometheus.NewRegistry()}
	if r.guard, err = guard.Open(ctx, cfg.Guard, cfg.Site, log, st, guard.Options{}); err != nil {
		t.Fatal(err)
	}
	r.bus.Subscribe(r.guard)
	r.bus.Subscribe(r.events)
	if r.spool, err = queue.OpenSpool(cfg.Spool.Dir, 0, log); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.spool.Close() })
	if r.users, err = userdb.Open(ctx, st.DB, userdb.Options{Logger: log}); err != nil {
		t.Fatal(err)
	}
	if r.acct, err = accounts.Open(ctx, cfg, st, accounts.Setup{Command: "serve", Holders: []accounts.Holder{accounts.SpoolHolder{Spool: r.spool}},
		Log: log}); err != nil {
		t.Fatal(err)
	}
	counters, err := ratelimit.NewStore(ctx, st, log)
	if err != nil {
		t.Fatal(err)
	}
	lim, err := ratelimit.New(cfg.Delivery.RateLimits, counters, ratelimit.Options{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	if r.admins, err = OpenAdmins(ctx, st.DB, 0); err != nil {
		t.Fatal(err)
	}
	if err := r.admins.Add(ctx, adminName, adminPass, RoleAdmin); err != nil {
		t.Fatal(err)
	}
	if err := r.admins.Add(ctx, roName, roPass, RoleReadOnly); err != nil {
		t.Fatal(err)
	}
	// The audit's reputation monitor as serve builds it; it checks only
	// when asked ([audit] reputation_interval = 0).
	r.rep = &audit.Monitor{Options: audit.Options{Config: cfg, Catalog: cfg.Audit.Catalog, Log: log}}
	r.console, err = New(Options{Config: cfg, Admins: r.admins, Guard: r.guard, Events: r.bus, Spool: r.spool, Users: r.users,
		Accounts: r.acct, Reputation: r.rep, Limiter: lim, Metrics: r.reg, Command: "serve", Log: log})
	if err != nil {
		t.Fatal(err)
	}
	r.bus.Subscribe(r.console)
	r.srv = httptest.NewServer(r.console.Handler())
	t.Cleanup(func() { r.console.Stop(); r.srv.Close() })
	return r
}

// client is a browser-like client: a cookie jar and the session's CSRF
// token once logged in.
type client struct {
	r    *rig
	hc   *http.Client
	csrf string
	// token, when set, is sent as a bearer token instead of the session.
	token string
}

func (r *rig) client() *client {
	jar, _ := cookiejar.New(nil)
	return &client{r: r, hc: &http.Client{Jar: jar, Timeout: 30 * time.Second}}
}

// do sends a request and returns the status and body; for POST the
// session's CSRF token is sent unless csrf is given in hdr.
func (c *client) do(method, path string, body any, hdr map[string]string) (int, string) {
	c.r.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.r.srv.URL+path, rd)
	if err != nil {
		c.r.t.Fatal(err)
	}
	if method == http.MethodPost && c.csrf != "" {
		req.Header.Set("X-CSRF-Token", c.csrf)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	for k, v := range hdr {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		c.r.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (c *client) login(name, pass string) {
	c.r.t.Helper()
	code, body := c.do("POST", "/api/login", map[string]string{"name": name, "password": pass}, nil)
	if code != http.StatusOK {
		c.r.t.Fatalf("login %s: %d %s", name, code, body)
	}
	var info sessionInfo
	json.Unmarshal([]byte(body), &info)
	if info.CSRF == "" {
		c.r.t.Fatalf("login: no CSRF token in %s", body)
	}
	c.csrf = info.CSRF
}

func decode[T any](t *testing.T, body string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("decoding %q: %v", body, err)
	}
	return v
}

// putMessage spools a message from user to rcpts.
func (r *rig) putMessage(user, from string, rcpts ...string) string {
	r.t.Helper()
	env := &queue.Envelope{Received: time.Now(), From: from, AuthUser: user, ClientIP: "192.0.2.50", Mode: "submission"}
	for _, a := range rcpts {
		env.Recipients = append(env.Recipients, queue.Recipient{Addr: a, Status: queue.StatusQueued})
	}
	msg := "From: <" + from + ">\r\nTo: <" + rcpts[0] + ">\r\nSubject: test " + strings.Join(rcpts, ",") + "\r\n\r\nbody\r\n"
	id, err := r.spool.Put(context.Background(), env, strings.NewReader(msg))
	if err != nil {
		r.t.Fatal(err)
	}
	return id
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

func slogTo(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }

func readAll(resp *http.Response) string {
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
