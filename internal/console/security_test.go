package console

import (
	"context"
	"io"
	"net/http"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/queue"
)

// actions are every acting route with a body that would succeed.
func actions(r *rig, held string) []struct {
	path string
	body any
} {
	return []struct {
		path string
		body any
	}{
		{"/api/bans", map[string]string{"prefix": "203.0.113.9", "reason": "test"}},
		{"/api/bans/remove", map[string]string{"prefix": "198.51.100.0/24", "reason": "test"}},
		{"/api/queue/" + held + "/release", map[string]string{}},
		{"/api/queue/" + held + "/delete", map[string]string{"reason": "test"}},
		{"/api/queue/flush", map[string]string{}},
		{"/api/accounts/alice@mx.test/suspend", map[string]string{"reason": "test"}},
		{"/api/reputation/check", map[string]string{}},
		{"/api/logout", map[string]string{}},
	}
}

// untouched checks that no action took effect: the ban is there, the
// message is still held, alice is not suspended, nothing was banned.
func (r *rig) untouched(t *testing.T, held string) {
	t.Helper()
	ctx := context.Background()
	if _, ok := r.guard.Banned(netip.MustParseAddr("198.51.100.7")); !ok {
		t.Error("the ban of 198.51.100.0/24 was removed")
	}
	if _, ok := r.guard.Banned(netip.MustParseAddr("203.0.113.9")); ok {
		t.Error("203.0.113.9 was banned")
	}
	env, err := r.spool.Load(held)
	if err != nil || !env.Held {
		t.Errorf("held message: %+v, %v", env, err)
	}
	if a, err := r.users.Get(ctx, "alice@mx.test"); err != nil || a.Suspended {
		t.Errorf("alice: %+v, %v", a, err)
	}
}

func (r *rig) seed(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	if _, err := r.guard.Ban(ctx, netip.MustParsePrefix("198.51.100.0/24"), time.Hour, "seed"); err != nil {
		t.Fatal(err)
	}
	if err := r.users.Add(ctx, "alice@mx.test", "alice's password"); err != nil {
		t.Fatal(err)
	}
	id := r.putMessage("alice@mx.test", "alice@mx.test", "bob@remote.test")
	if _, err := queue.Hold(r.spool, id, "seed"); err != nil {
		t.Fatal(err)
	}
	return id
}

// No action without a session: every acting route answers 401 to a
// client that did not log in (and to a made-up session cookie), and
// nothing changes. The reading routes answer 401 too.
func TestNoActionWithoutSession(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil)
	held := r.seed(t)
	anon := r.client()
	for _, a := range actions(r, held) {
		if code, body := anon.do("POST", a.path, a.body, nil); code != http.StatusUnauthorized {
			t.Errorf("POST %s without a session: %d %s, want 401", a.path, code, body)
		}
	}
	forged := r.client()
	for _, a := range actions(r, held) {
		code, body := forged.do("POST", a.path, a.body, map[string]string{"Cookie": "relayguard=" + randomToken(), "X-CSRF-Token": randomToken()})
		if code != http.StatusUnauthorized {
			t.Errorf("POST %s with a made-up session: %d %s, want 401", a.path, code, body)
		}
	}
	for _, p := range []string{"/api/overview", "/api/bans", "/api/queue", "/api/queue/" + held, "/api/accounts", "/api/accounts/alice@mx.test",
		"/api/reputation", "/api/report", "/api/stream", "/api/session"} {
		if code, body := anon.do("GET", p, nil, nil); code != http.StatusUnauthorized {
			t.Errorf("GET %s without a session: %d %s, want 401", p, code, body)
		}
	}
	r.untouched(t, held)
}

// No action without the CSRF token: a logged-in browser's request without
// the session's token, with another session's token, or from another
// origin is refused (403) and logged; the same request with the token
// goes through.
func TestNoActionWithoutCSRF(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil)
	held := r.seed(t)
	c := r.client()
	c.login(adminName, adminPass)
	other := r.client()
	other.login(adminName, adminPass)
	for _, a := range actions(r, held) {
		for what, hdr := range map[string]map[string]string{
			"no token":            {"X-CSRF-Token": ""},
			"another session's":   {"X-CSRF-Token": other.csrf},
			"a cross-site origin": {"Origin": "http://evil.example"},
			"a cross-site fetch":  {"Sec-Fetch-Site": "cross-site"},
		} {
			if code, body := c.do("POST", a.path, a.body, hdr); code != http.StatusForbidden {
				t.Errorf("POST %s with %s: %d %s, want 403", a.path, what, code, body)
			}
		}
	}
	r.untouched(t, held)
	if !strings.Contains(r.log.String(), `err="refused: missing or wrong CSRF token"`) {
		t.Error("refusals not logged")
	}
	// With the token: done.
	if code, body := c.do("POST", "/api/queue/"+held+"/release", map[string]string{}, nil); code != http.StatusOK {
		t.Fatalf("release with the token: %d %s", code, body)
	}
	if env, _ := r.spool.Load(held); env.Held {
		t.Error("release with the token did not release")
	}
}

// A read-only account sees everything and acts on nothing.
func TestReadOnlyAccountCannotAct(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil)
	held := r.seed(t)
	c := r.client()
	c.login(roName, roPass)
	for _, a := range actions(r, held) {
		if a.path == "/api/logout" {
			continue
		}
		if code, body := c.do("POST", a.path, a.body, nil); code != http.StatusForbidden || !strings.Contains(body, "read-only") {
			t.Errorf("read-only POST %s: %d %s, want 403", a.path, code, body)
		}
	}
	for _, p := range []string{"/api/overview", "/api/bans", "/api/queue", "/api/accounts"} {
		if code, body := c.do("GET", p, nil, nil); code != http.StatusOK {
			t.Errorf("read-only GET %s: %d %s", p, code, body)
		}
	}
	r.untouched(t, held)
}

// A console login is an AUTH like any other: each failure is logged as an
// "auth failed" record of the console listener and published to the
// guard, without the admin name (not a mail account); the guard's AUTH
// limits refuse the address once its cap is reached, even with the right
// password, and a success is published too. (The ban that follows a brute
// force from a real address is shown end to end in cmd/relayguard's
// TestConsoleLoginBruteForceBanned: the guard never bans loopback.)
func TestLoginCountedByGuard(t *testing.T) {
	t.Parallel()
	r := newRig(t, func(c *config.Config) {
		c.Guard.AuthLimits = []config.AuthLimit{{Family: "ipv4", Bits: 32, PerMinute: 3, PerDay: 100}}
	})
	c := r.client()
	for i := range 3 {
		code, body := c.do("POST", "/api/login", map[string]string{"name": adminName, "password": "guess " + string(rune('a'+i))}, nil)
		if code != http.StatusUnauthorized || !strings.Contains(body, "invalid name or password") {
			t.Fatalf("guess %d: %d %s", i, code, body)
		}
	}
	// An unknown name looks the same as a wrong password.
	code, body := c.do("POST", "/api/login", map[string]string{"name": "nobody", "password": "x"}, nil)
	if code != http.StatusTooManyRequests {
		t.Fatalf("4th attempt (cap 3/min): %d %s, want 429", code, body)
	}
	if code, body := c.do("POST", "/api/login", map[string]string{"name": adminName, "password": adminPass}, nil); code != http.StatusTooManyRequests {
		t.Fatalf("right password over the cap: %d %s, want 429", code, body)
	}
	var fails int
	for _, e := range r.events.Snapshot() {
		if e.Kind == event.AuthFailure {
			fails++
			if e.Source != "console" || e.Service != "console" || e.User != "" || e.IP != netip.MustParseAddr("127.0.0.1") {
				t.Errorf("failure event %+v", e)
			}
		}
	}
	if fails != 3 {
		t.Errorf("%d auth_failure events, want 3", fails)
	}
	if n := strings.Count(r.log.String(), `msg="auth failed" client=127.0.0.1 listener=console mechanism=password`); n != 3 {
		t.Errorf("%d auth failed records, want 3:\n%s", n, r.log.String())
	}

	r2 := newRig(t, nil)
	c2 := r2.client()
	c2.login(adminName, adminPass)
	var ok bool
	for _, e := range r2.events.Snapshot() {
		ok = ok || e.Kind == event.AuthSuccess && e.Source == "console" && e.User == ""
	}
	if !ok || !strings.Contains(r2.log.String(), `msg="auth ok" client=127.0.0.1 listener=console mechanism=password user=ops`) {
		t.Errorf("login success not published or logged:\n%s", r2.log.String())
	}
}

// No secret reaches a page, an API answer or the log: not the admin's
// password, not the session cookie, not an API token.
func TestNoSecretsInPagesOrLogs(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil)
	held := r.seed(t)
	ctx := context.Background()
	tok, _, err := r.admins.NewToken(ctx, adminName, "script", 0)
	if err != nil {
		t.Fatal(err)
	}
	c := r.client()
	c.do("POST", "/api/login", map[string]string{"name": adminName, "password": "wrong " + adminPass}, nil)
	c.login(adminName, adminPass)
	var cookie string
	for _, ck := range c.hc.Jar.Cookies(mustURL(r.srv.URL)) {
		cookie = ck.Value
	}
	if cookie == "" {
		t.Fatal("no session cookie")
	}
	api := r.client()
	api.token = tok
	var bodies []string
	for _, p := range []string{"/", "/static/app.js", "/static/app.css", "/api/overview", "/api/bans", "/api/queue", "/api/queue/" + held,
		"/api/accounts", "/api/accounts/alice@mx.test", "/api/reputation"} {
		_, b := c.do("GET", p, nil, nil)
		bodies = append(bodies, p+": "+b)
		_, b = api.do("GET", p, nil, nil)
		bodies = append(bodies, p+" (token): "+b)
	}
	_, b := c.do("POST", "/api/bans", map[string]string{"prefix": "203.0.113.0/24", "reason": "r"}, nil)
	bodies = append(bodies, b)
	_, b = api.do("POST", "/api/bans/remove", map[string]string{"prefix": "203.0.113.0/24", "reason": "r"}, nil)
	bodies = append(bodies, b)
	api.token = tok + "x" // a wrong token is logged as a failure, without itself
	api.do("GET", "/api/bans", nil, nil)
	for _, s := range []struct{ what, v string }{{"password", adminPass}, {"session cookie", cookie}, {"API token", tok},
		{"token hash", tokenHash(tok)}, {"wrong token", tok + "x"}} {
		for _, b := range bodies {
			if strings.Contains(b, s.v) {
				t.Errorf("%s in a response: %.200s", s.what, b)
			}
		}
		if strings.Contains(r.log.String(), s.v) {
			t.Errorf("%s in the log", s.what)
		}
	}
	if !strings.Contains(r.log.String(), `user="ops, token 1"`) {
		t.Errorf("the token's actions are not logged with who did them:\n%s", r.log.String())
	}
}

var srcAttr = regexp.MustCompile(`(?i)\b(?:src|href|action)\s*=\s*"([^"]*)"`)

// Every response carries a Content Security Policy that names no origin
// but the console's own, and the page loads nothing from elsewhere.
func TestCSPHasNoExternalOrigin(t *testing.T) {
	t.Parallel()
	r := newRig(t, func(c *config.Config) { c.Report.Logs = []string{"/dev/null"} })
	c := r.client()
	c.login(adminName, adminPass)
	for _, p := range []string{"/", "/static/app.js", "/static/app.css", "/api/overview", "/api/bans", "/api/report?date=2026-01-02", "/api/nothing"} {
		req, _ := http.NewRequest("GET", r.srv.URL+p, nil)
		resp, err := c.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		policy := resp.Header.Get("Content-Security-Policy")
		if policy == "" {
			t.Errorf("%s: no Content-Security-Policy", p)
			continue
		}
		if !strings.Contains(policy, "default-src 'none'") {
			t.Errorf("%s: policy %q does not start from default-src 'none'", p, policy)
		}
		for _, d := range strings.Split(policy, ";") {
			for _, src := range strings.Fields(d)[1:] {
				if src != "'self'" && src != "'none'" && src != "data:" && src != "'unsafe-inline'" {
					t.Errorf("%s: source %q in %q", p, src, strings.TrimSpace(d))
				}
			}
		}
		if strings.Contains(policy, "script-src") && strings.Contains(strings.SplitN(strings.SplitN(policy, "script-src", 2)[1], ";", 2)[0], "unsafe") {
			t.Errorf("%s: inline scripts allowed: %q", p, policy)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: no nosniff", p)
		}
		for _, m := range srcAttr.FindAllStringSubmatch(string(body), -1) {
			if u := m[1]; strings.Contains(u, "//") && !strings.HasPrefix(u, "http://www.w3.org/") {
				t.Errorf("%s loads %q", p, u)
			}
		}
	}
	// The script builds its requests from the console's own paths.
	_, js := c.do("GET", "/static/app.js", nil, nil)
	if m := regexp.MustCompile(`(?:fetch|EventSource)\(\s*"(https?:)?//`).FindString(js); m != "" {
		t.Errorf("app.js reaches another origin: %s", m)
	}
}

// Sessions end: after the idle time, after the lifetime, at logout (whose
// cookie no longer works), and a token past its expiry or revoked is
// refused and counted as a failed login.
func TestSessionsAndTokensEnd(t *testing.T) {
	t.Parallel()
	now := time.Now()
	r := newRig(t, nil)
	clock := &now
	r.console.sess.now = func() time.Time { return *clock }
	c := r.client()
	c.login(adminName, adminPass)
	if code, _ := c.do("GET", "/api/session", nil, nil); code != http.StatusOK {
		t.Fatal("session not working")
	}
	*clock = clock.Add(r.cfg.Admin.SessionIdle.D() + time.Second)
	if code, _ := c.do("GET", "/api/session", nil, nil); code != http.StatusUnauthorized {
		t.Errorf("idle session still works: %d", code)
	}
	c.login(adminName, adminPass)
	for range 30 {
		*clock = clock.Add(r.cfg.Admin.SessionLifetime.D() / 25)
		c.do("GET", "/api/session", nil, nil)
	}
	if code, _ := c.do("GET", "/api/session", nil, nil); code != http.StatusUnauthorized {
		t.Errorf("session past its lifetime still works: %d", code)
	}
	c.login(adminName, adminPass)
	saved := c.hc.Jar.Cookies(mustURL(r.srv.URL))
	if code, body := c.do("POST", "/api/logout", map[string]string{}, nil); code != http.StatusOK {
		t.Fatalf("logout: %d %s", code, body)
	}
	replay := r.client()
	replay.hc.Jar.SetCookies(mustURL(r.srv.URL), saved)
	if code, _ := replay.do("GET", "/api/session", nil, nil); code != http.StatusUnauthorized {
		t.Errorf("the cookie of a logged-out session still works: %d", code)
	}

	ctx := context.Background()
	tok, tk, err := r.admins.NewToken(ctx, adminName, "short", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	api := r.client()
	api.token = tok
	if code, body := api.do("GET", "/api/bans", nil, nil); code != http.StatusOK {
		t.Fatalf("token: %d %s", code, body)
	}
	r.admins.now = func() time.Time { return time.Now().Add(2 * time.Minute) }
	if code, _ := api.do("GET", "/api/bans", nil, nil); code != http.StatusUnauthorized {
		t.Errorf("expired token: %d, want 401", code)
	}
	r.admins.now = time.Now
	if err := r.admins.Revoke(ctx, tk.ID); err != nil {
		t.Fatal(err)
	}
	if code, _ := api.do("GET", "/api/bans", nil, nil); code != http.StatusUnauthorized {
		t.Errorf("revoked token: %d, want 401", code)
	}
	var fails int
	for _, e := range r.events.Snapshot() {
		if e.Kind == event.AuthFailure && e.Mechanism == "token" {
			fails++
		}
	}
	if fails != 2 {
		t.Errorf("%d token failures published, want 2", fails)
	}
}
