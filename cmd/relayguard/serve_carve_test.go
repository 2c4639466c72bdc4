package main

import (
	"bufio"
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// authAs opens a session from src and tries AUTH PLAIN as user; it returns
// the banner and the AUTH reply ("" if the banner already refused).
func (n *guardNS) authAs(t *testing.T, src, addr, user, password string) (banner, auth string) {
	t.Helper()
	c := n.dial(t, src, addr)
	defer c.Close()
	s := &smtpClient{t: t, c: c, r: bufio.NewReader(c)}
	if banner = s.reply(); !strings.HasPrefix(banner, "220 ") {
		return banner, ""
	}
	s.cmd("EHLO client.test")
	auth = s.cmd("AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+password)))
	s.cmd("QUIT")
	return banner, auth
}

// TestServeCarvesSubnetBanAroundLogins (issue 12 item 10): `relayguard
// serve` in a network namespace; a user logs in from 198.51.100.7, then
// five other addresses of its /24 guess passwords and the whole /24 is
// banned. An address of the /24 that never tried is refused before the
// banner; the user is not, and logs in again.
func TestServeCarvesSubnetBanAroundLogins(t *testing.T) {
	t.Parallel()
	bin := testBinary(t)
	const user, attackers, innocent = "198.51.100.7", "198.51.100.20 198.51.100.21 198.51.100.22 198.51.100.23 198.51.100.24", "198.51.100.30"
	n := newGuardNS(t, append(strings.Fields(attackers), user, innocent)...)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	conf := filepath.Join(dir, "relayguard.toml")
	os.WriteFile(conf, []byte(`hostname = "guard.test"
local_domains = ["guard.test"]
own_addresses = ["192.0.2.1"]
[admin]
listen = ""
[limits]
auth_failure_delay = "0s"
[[listener]]
name = "submission"
address = "127.0.0.1:0"
mode = "submission"
trusted_local = true
[guard]
maxretry = 3
success_grace = "1h"
[[guard.subnet]]
family = "ipv4"
bits = 24
addresses = 5
window = "1h"
`), 0o644)
	const password = "carve test password"
	add := exec.Command(bin, "user", "add", "alice@guard.test", "--password-stdin", "--config", conf, "--data-dir", data, "--create-data-dir")
	add.Stdin = strings.NewReader(password + "\n")
	if out, err := add.CombinedOutput(); err != nil {
		t.Fatalf("user add: %v\n%s", err, out)
	}
	_, out := startServe(t, exec.Command("ip", "netns", "exec", n.name, bin, "serve", "--config", conf, "--data-dir", data), 1)
	m := regexp.MustCompile(`listening on (127\.0\.0\.1:\d+)`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no listener address in:\n%s", out)
	}
	addr := m[1]
	defer func() {
		if t.Failed() {
			t.Logf("serve's output:\n%s", out)
		}
	}()

	if _, r := n.authAs(t, user, addr, "alice@guard.test", password); !strings.HasPrefix(r, "235 ") {
		t.Fatalf("the user's login: %q", r)
	}
	for _, a := range strings.Fields(attackers) {
		if _, r := n.authFrom(t, a, addr); !strings.HasPrefix(r, "535 ") {
			t.Fatalf("guess from %s: %q, want 535", a, r)
		}
	}
	eventually(t, "the /24 banned", func() bool {
		b := n.bannerFrom(t, innocent, addr)
		return strings.HasPrefix(b, "421 4.7.0") && strings.Contains(b, "198.51.100.0/24 is banned")
	})
	b, r := n.authAs(t, user, addr, "alice@guard.test", password)
	if !strings.HasPrefix(b, "220 ") || !strings.HasPrefix(r, "235 ") {
		t.Fatalf("the user inside the banned /24: banner %q, AUTH %q; want 220 and 235", b, r)
	}
}
