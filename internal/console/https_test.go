package console

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/relayguard/relayguard/internal/config"
)

// Over HTTPS (admin.tls, a non-loopback listen address) the session
// cookie is __Host-relayguard (Secure, HttpOnly, SameSite=Strict, Path=/,
// no Domain) and every answer carries HSTS; over loopback HTTP it is
// "relayguard", still Secure, HttpOnly and SameSite=Strict, without HSTS.
func TestCookieAndHSTSFollowHTTPS(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil)
	login := func(hc *http.Client, base string) *http.Response {
		t.Helper()
		resp, err := hc.Post(base+"/api/login", "application/json", strings.NewReader(`{"name":"`+adminName+`","password":"`+adminPass+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("login: %d", resp.StatusCode)
		}
		return resp
	}
	check := func(resp *http.Response, name string, hsts bool) {
		t.Helper()
		sc := resp.Header.Get("Set-Cookie")
		for _, want := range []string{name + "=", "Path=/", "HttpOnly", "Secure", "SameSite=Strict"} {
			if !strings.Contains(sc, want) {
				t.Errorf("Set-Cookie %q lacks %s", sc, want)
			}
		}
		if strings.Contains(sc, "Domain=") {
			t.Errorf("Set-Cookie %q names a domain", sc)
		}
		if got := resp.Header.Get("Strict-Transport-Security") != ""; got != hsts {
			t.Errorf("HSTS sent %v, want %v", got, hsts)
		}
	}
	check(login(http.DefaultClient, r.srv.URL), "relayguard", false)

	c, err := New(Options{Config: r.cfg, Admins: r.admins, Guard: r.guard, Events: r.bus, Spool: r.spool, Users: r.users,
		Accounts: r.acct, Reputation: r.rep, Command: "serve", HTTPS: true})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(c.Handler())
	t.Cleanup(func() { c.Stop(); srv.Close() })
	check(login(srv.Client(), srv.URL), "__Host-relayguard", true)
}

// admin.tls: auto serves HTTPS on any address but loopback; "off" is
// refused while the console would take passwords in clear text on a
// non-loopback address.
func TestAdminTLSConfig(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		listen, tls string
		console     bool
		https       bool
		err         string
	}{
		{"127.0.0.1:9025", "auto", true, false, ""},
		{"[::1]:9025", "auto", true, false, ""},
		{"localhost:9025", "auto", true, false, ""},
		{"192.0.2.1:9025", "auto", true, true, ""},
		{"0.0.0.0:9025", "auto", true, true, ""},
		{"127.0.0.1:9025", "on", true, true, ""},
		{"192.0.2.1:9025", "off", true, false, "clear text"},
		{"192.0.2.1:9025", "off", false, false, ""},
		{"127.0.0.1:9025", "maybe", true, false, "want auto, on or off"},
	} {
		cfg := config.Default()
		cfg.Admin.Listen, cfg.Admin.TLS, cfg.Admin.Console = c.listen, c.tls, c.console
		err := cfg.Finish(t.TempDir())
		switch {
		case c.err == "" && err != nil:
			t.Errorf("%s tls=%s console=%v: %v", c.listen, c.tls, c.console, err)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%s tls=%s console=%v: error %v, want %q", c.listen, c.tls, c.console, err, c.err)
		case c.err == "" && cfg.Admin.HTTPS() != c.https:
			t.Errorf("%s tls=%s: HTTPS() = %v, want %v", c.listen, c.tls, cfg.Admin.HTTPS(), c.https)
		}
	}
}
