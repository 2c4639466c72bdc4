package main

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// guardNS is a network namespace the test creates, with extra client
// addresses on its loopback device, so that `relayguard serve` running
// inside sees clients that are neither loopback nor its own addresses (both
// are never banned).
type guardNS struct {
	name string
	fd   int // open fd of /run/netns/NAME
}

// guardNSSeq keeps the namespace names of parallel tests apart.
var guardNSSeq atomic.Int32

func newGuardNS(t *testing.T, addrs ...string) *guardNS {
	t.Helper()
	for _, b := range []string{"ip"} {
		if _, err := exec.LookPath(b); err != nil || os.Geteuid() != 0 {
			if os.Getenv("CI") == "true" {
				t.Fatalf("CI: needs root and %s", b)
			}
			t.Skipf("needs root and %s", b)
		}
	}
	name := fmt.Sprintf("rgguard%d-%d", os.Getpid(), guardNSSeq.Add(1))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v\n%s", name, err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", append([]string{"-n", name}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip -n %s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
	}
	ip("link", "set", "lo", "up")
	for _, a := range addrs {
		ip("addr", "add", a+"/32", "dev", "lo")
	}
	fd, err := unix.Open("/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return &guardNS{name: name, fd: fd}
}

// dial connects from src to dst inside the namespace (see tryDial).
func (n *guardNS) dial(t *testing.T, src, dst string) net.Conn {
	t.Helper()
	c, err := n.tryDial(src, dst)
	if err != nil {
		t.Fatalf("dial %s from %s in netns %s: %v", dst, src, n.name, err)
	}
	return c
}

// smtpClient is a line-oriented SMTP client for these tests.
type smtpClient struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

// reply reads one (possibly multi-line) reply and returns its last line.
func (s *smtpClient) reply() string {
	s.t.Helper()
	s.c.SetDeadline(time.Now().Add(30 * time.Second))
	for {
		l, err := s.r.ReadString('\n')
		if err != nil {
			s.t.Fatalf("reading reply: %v (got %q)", err, l)
		}
		if len(l) < 4 || l[3] != '-' {
			return strings.TrimRight(l, "\r\n")
		}
	}
}

func (s *smtpClient) cmd(line string) string {
	s.t.Helper()
	s.c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := fmt.Fprintf(s.c, "%s\r\n", line); err != nil {
		s.t.Fatalf("sending %q: %v", line, err)
	}
	return s.reply()
}

// authFrom opens a session from src, says EHLO and tries AUTH PLAIN with a
// wrong password; it returns the banner and the AUTH reply ("" if the banner
// already refused).
func (n *guardNS) authFrom(t *testing.T, src, addr string) (banner, auth string) {
	t.Helper()
	c := n.dial(t, src, addr)
	defer c.Close()
	s := &smtpClient{t: t, c: c, r: bufio.NewReader(c)}
	banner = s.reply()
	if !strings.HasPrefix(banner, "220 ") {
		return banner, ""
	}
	if r := s.cmd("EHLO client.test"); !strings.HasPrefix(r, "250 ") {
		t.Fatalf("EHLO from %s: %q", src, r)
	}
	resp := base64.StdEncoding.EncodeToString([]byte("\x00mallory@example.test\x00guess"))
	auth = s.cmd("AUTH PLAIN " + resp)
	s.cmd("QUIT")
	return banner, auth
}

// bannerFrom connects from src and returns the first reply line only (no
// AUTH, so that polling does not itself count as failures).
func (n *guardNS) bannerFrom(t *testing.T, src, addr string) string {
	t.Helper()
	c := n.dial(t, src, addr)
	defer c.Close()
	s := &smtpClient{t: t, c: c, r: bufio.NewReader(c)}
	b := s.reply()
	if strings.HasPrefix(b, "220 ") {
		s.cmd("QUIT")
	}
	return b
}

// TestServeEnforcesGuard runs `relayguard serve` inside a network namespace
// and talks SMTP to it from several client addresses: the per-address and
// per-/24 AUTH failure limits answer 454 naming the prefix (refused attempts
// are not failures, and the /24's cap spares an address that never failed),
// maxretry failures get the address banned (421 before the banner), and a ban added
// with `relayguard ban add` by another process reaches the running server
// (and `ban del` lifts it) without a restart.
func TestServeEnforcesGuard(t *testing.T) {
	bin := testBinary(t)
	n := newGuardNS(t, "198.51.100.20", "198.51.100.21", "198.51.100.22", "203.0.113.5", "203.0.113.6")
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	conf := filepath.Join(dir, "relayguard.toml")
	// Per-day caps only (a per-minute window could roll over mid-test);
	// no subnet aggregation, so each step below has one cause.
	os.WriteFile(conf, []byte(`hostname = "guard.test"
own_addresses = ["192.0.2.1"]
[admin]
listen = ""
[limits]
auth_failure_delay = "0s"
max_auth_failures = 10
[[listener]]
name = "submission"
address = "127.0.0.1:0"
mode = "submission"
trusted_local = true
[guard]
maxretry = 3
subnet = []
[[guard.auth_limit]]
family = "ipv4"
bits = 32
per_minute = 0
per_day = 2
[[guard.auth_limit]]
family = "ipv4"
bits = 24
per_minute = 0
per_day = 4
`), 0o644)
	cmd := exec.Command("ip", "netns", "exec", n.name, bin, "serve", "--config", conf, "--data-dir", data)
	_, out := startServe(t, cmd, 1)
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

	// Two wrong passwords from .20: 535 each. The third attempt is refused
	// by the per-address limit before any password is checked.
	for i := range 2 {
		if _, r := n.authFrom(t, "198.51.100.20", addr); !strings.HasPrefix(r, "535 ") {
			t.Fatalf("attempt %d from .20: %q, want 535", i+1, r)
		}
	}
	for range 3 {
		if _, r := n.authFrom(t, "198.51.100.20", addr); !strings.HasPrefix(r, "454 4.7.0") || !strings.Contains(r, "198.51.100.20/32") {
			t.Fatalf("attempt past the cap from .20: %q, want 454 naming 198.51.100.20/32", r)
		}
	}
	// Refused attempts are not failures (issue 12 item 1): two failures
	// are below maxretry 3, .20 is not banned.
	if b := n.bannerFrom(t, "198.51.100.20", addr); !strings.HasPrefix(b, "220 ") {
		t.Fatalf(".20 after 2 failures and 3 refused attempts: %q, want the banner", b)
	}
	// The /24 has counted 2 failures; two more from .21 fill its cap of 4.
	for i := range 2 {
		if _, r := n.authFrom(t, "198.51.100.21", addr); !strings.HasPrefix(r, "535 ") {
			t.Fatalf("attempt %d from .21: %q, want 535", i+1, r)
		}
	}
	// .22 never failed: the full /24 does not lock it out. Once it failed
	// itself, the /24's cap bites on it.
	if _, r := n.authFrom(t, "198.51.100.22", addr); !strings.HasPrefix(r, "535 ") {
		t.Fatalf("first attempt from .22: %q, want 535 (never refused for its neighbours' failures)", r)
	}
	if _, r := n.authFrom(t, "198.51.100.22", addr); !strings.HasPrefix(r, "454 4.7.0") || !strings.Contains(r, "198.51.100.0/24") {
		t.Fatalf("second attempt from .22: %q, want 454 naming 198.51.100.0/24", r)
	}
	// A third failure of another kind (an HTTP request, protocol abuse)
	// reaches maxretry: .20 is banned and refused before the banner.
	func() {
		c := n.dial(t, "198.51.100.20", addr)
		defer c.Close()
		s := &smtpClient{t: t, c: c, r: bufio.NewReader(c)}
		s.reply()
		if r := s.cmd("GET / HTTP/1.1"); !strings.HasPrefix(r, "502 5.5.1") {
			t.Fatalf("HTTP request: %q", r)
		}
	}()
	eventually(t, "198.51.100.20 refused before the banner", func() bool {
		b := n.bannerFrom(t, "198.51.100.20", addr)
		return strings.HasPrefix(b, "421 4.7.0") && strings.Contains(b, "198.51.100.20/32 is banned")
	})
	// Another /24 is unaffected.
	if b, r := n.authFrom(t, "203.0.113.5", addr); !strings.HasPrefix(b, "220 ") || !strings.HasPrefix(r, "535 ") {
		t.Fatalf("203.0.113.5: banner %q, AUTH %q", b, r)
	}

	// A manual ban by another process reaches the running server.
	run := func(args ...string) string {
		t.Helper()
		o, err := exec.Command(bin, append([]string{"--config", conf, "--data-dir", data}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("relayguard %s: %v\n%s", strings.Join(args, " "), err, o)
		}
		return string(o)
	}
	run("ban", "add", "203.0.113.0/24", "--for", "1h", "--reason", "test")
	eventually(t, "the manual ban enforced by serve", func() bool {
		b := n.bannerFrom(t, "203.0.113.6", addr)
		return strings.HasPrefix(b, "421 4.7.0") && strings.Contains(b, "203.0.113.0/24 is banned")
	})
	run("ban", "del", "203.0.113.0/24")
	eventually(t, "the unban seen by serve", func() bool {
		return strings.HasPrefix(n.bannerFrom(t, "203.0.113.6", addr), "220 ")
	})
	// The guard's own ban is in the store, for `ban list`.
	if l := run("ban", "list"); !strings.Contains(l, "198.51.100.20/32") || strings.Contains(l, "203.0.113") {
		t.Fatalf("ban list: want the guard's ban of 198.51.100.20/32 only:\n%s", l)
	}
}

// eventually waits (generously: not a speed assertion) for cond.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestServeSharesBansThroughRedis runs two `relayguard serve` processes
// with their own databases and one redis-server, all inside a network
// namespace the test creates. A ban added on one reaches the other; Redis
// is killed and restarted empty, and no ban is lost: one made during the
// outage reaches the other server too.
func TestServeSharesBansThroughRedis(t *testing.T) {
	bin := testBinary(t)
	redisBin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI: redis-server not installed")
		}
		t.Skip("redis-server not installed")
	}
	n := newGuardNS(t, "198.51.100.20", "203.0.113.6")
	dir := t.TempDir()
	var redis *exec.Cmd
	startRedis := func() {
		t.Helper()
		redis = exec.Command("ip", "netns", "exec", n.name, redisBin, "--port", "6379", "--bind", "127.0.0.1",
			"--dir", dir, "--save", "", "--appendonly", "no")
		if err := redis.Start(); err != nil {
			t.Fatal(err)
		}
		eventually(t, "redis-server to listen", func() bool {
			c, err := n.tryDial("127.0.0.1", "127.0.0.1:6379")
			if err == nil {
				c.Close()
			}
			return err == nil
		})
	}
	stopRedis := func() {
		if redis != nil {
			redis.Process.Kill()
			redis.Wait()
			redis = nil
		}
	}
	startRedis()
	t.Cleanup(stopRedis)

	type srv struct{ conf, data, addr string }
	var srvs []srv
	for _, name := range []string{"a", "b"} {
		s := srv{conf: filepath.Join(dir, name+".toml"), data: filepath.Join(dir, name)}
		os.WriteFile(s.conf, []byte(`hostname = "`+name+`.test"
own_addresses = ["192.0.2.1"]
[admin]
listen = ""
[store]
url = "redis://127.0.0.1:6379/0"
[[listener]]
name = "mx"
address = "127.0.0.1:0"
mode = "mx"
`), 0o644)
		_, out := startServe(t, exec.Command("ip", "netns", "exec", n.name, bin, "serve", "--config", s.conf, "--data-dir", s.data), 1)
		m := regexp.MustCompile(`listening on (127\.0\.0\.1:\d+)`).FindStringSubmatch(out.String())
		if m == nil {
			t.Fatalf("no listener address in:\n%s", out)
		}
		s.addr = m[1]
		srvs = append(srvs, s)
	}
	a, b := srvs[0], srvs[1]
	ban := func(s srv, prefix string) {
		t.Helper()
		if out, err := exec.Command("ip", "netns", "exec", n.name, bin, "--config", s.conf, "--data-dir", s.data,
			"ban", "add", prefix, "--for", "1h").CombinedOutput(); err != nil {
			t.Fatalf("ban add %s: %v\n%s", prefix, err, out)
		}
	}
	refused := func(s srv, src, prefix string) func() bool {
		return func() bool {
			b := n.bannerFrom(t, src, s.addr)
			return strings.HasPrefix(b, "421 ") && strings.Contains(b, prefix+" is banned")
		}
	}
	if b := n.bannerFrom(t, "203.0.113.6", b.addr); !strings.HasPrefix(b, "220 ") {
		t.Fatalf("before any ban: %q", b)
	}
	ban(a, "203.0.113.0/24")
	eventually(t, "B enforces A's ban", refused(b, "203.0.113.6", "203.0.113.0/24"))

	// Redis dies; B bans meanwhile; Redis comes back empty.
	stopRedis()
	ban(b, "198.51.100.0/24")
	eventually(t, "B enforces its own ban while Redis is down", refused(b, "198.51.100.20", "198.51.100.0/24"))
	startRedis()
	eventually(t, "A learns the ban B made while Redis was down", refused(a, "198.51.100.20", "198.51.100.0/24"))
	for _, s := range []srv{a, b} {
		if !refused(s, "203.0.113.6", "203.0.113.0/24")() {
			t.Fatalf("server %s lost the ban made before the outage", s.data)
		}
	}
}

// tryDial connects from src to dst inside the namespace. The socket is
// made on an OS thread that entered the namespace; that thread is never
// returned to the Go scheduler (the goroutine exits with it locked, so the
// runtime discards it), and the test's own threads stay in the host's.
func (n *guardNS) tryDial(src, dst string) (net.Conn, error) {
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(n.fd, unix.CLONE_NEWNET); err != nil {
			ch <- res{nil, fmt.Errorf("setns: %w", err)}
			return
		}
		d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", dst)
		ch <- res{c, err}
	}()
	r := <-ch
	return r.c, r.err
}
