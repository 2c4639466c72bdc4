package main

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
	"github.com/redis/go-redis/v9"
)

// TestServeWithRedisDownAtStart starts `relayguard serve` with a shared
// store whose Redis is down (one password-protected redis-server and the
// server inside a network namespace the test creates). serve starts and
// enforces on local state: a ban made meanwhile by `relayguard ban add`
// refuses its client before the banner, and the hourly send limit answers
// 451. When Redis comes up it is used: the ban and the counts made during
// the outage are written to it, the limit goes on counting there, and a ban
// another server puts into Redis reaches serve. Nothing any process printed
// contains the password of the store URL.
func TestServeWithRedisDownAtStart(t *testing.T) {
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
	const secret = "Redis-Pa55word-in-url"
	url := "redis://:" + secret + "@127.0.0.1:6379/0"
	conf := filepath.Join(dir, "a.toml")
	os.WriteFile(conf, []byte(`hostname = "a.test"
local_domains = ["a.test"]
own_addresses = ["192.0.2.1"]
[admin]
listen = ""
[store]
url = "`+url+`"
[[listener]]
name = "submission"
address = "127.0.0.1:0"
mode = "submission"
trusted_local = true
[delivery.transports]
"remote.test" = "smtp:127.0.0.1:1"
[delivery.rate_limits]
user_messages_per_hour = 2
`), 0o644)
	data := filepath.Join(dir, "a")
	var printed strings.Builder // every CLI output, checked for the secret at the end
	rg := func(data string, stdin string, args ...string) {
		t.Helper()
		cmd := exec.Command("ip", append([]string{"netns", "exec", n.name, bin, "--config", conf, "--data-dir", data, "--create-data-dir"}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		printed.Write(out)
		if err != nil {
			t.Fatalf("relayguard %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	rg(data, "alice password\n", "user", "add", "alice", "--password-stdin")
	rg(data, "", "user", "addr", "add", "alice", "alice@a.test")

	serve, out := startServe(t, exec.Command("ip", "netns", "exec", n.name, bin, "serve", "--config", conf, "--data-dir", data), 1)
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
	refused := func(src, prefix string) func() bool {
		return func() bool {
			b := n.bannerFrom(t, src, addr)
			return strings.HasPrefix(b, "421 ") && strings.Contains(b, prefix+" is banned")
		}
	}
	// send submits one message as alice from inside the namespace; it
	// returns the SMTP reply code of the failure, 0 when accepted.
	send := func() int {
		t.Helper()
		c := gosmtp.NewClient(n.dial(t, "127.0.0.1", addr))
		defer c.Close()
		if err := c.Hello("client.test"); err != nil {
			t.Fatal(err)
		}
		if err := c.Auth(sasl.NewPlainClient("", "alice", "alice password")); err != nil {
			t.Fatalf("AUTH: %v", err)
		}
		err := c.SendMail("alice@a.test", []string{"bob@remote.test"}, strings.NewReader("Subject: hi\r\n\r\nhello\r\n"))
		var se *gosmtp.SMTPError
		if errors.As(err, &se) {
			return se.Code
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	}

	// Redis is down: bans and limits are enforced on local state.
	rg(data, "", "ban", "add", "203.0.113.0/24", "--for", "1h")
	eventually(t, "serve enforces a ban made while Redis is down", refused("203.0.113.6", "203.0.113.0/24"))
	for i, want := range []int{0, 0, 451} {
		if got := send(); got != want {
			t.Fatalf("message %d while Redis is down: reply %d, want %d", i+1, got, want)
		}
	}

	// Redis comes up.
	redisDir := t.TempDir()
	rs := exec.Command("ip", "netns", "exec", n.name, redisBin, "--port", "6379", "--bind", "127.0.0.1",
		"--dir", redisDir, "--save", "", "--appendonly", "no", "--requirepass", secret)
	if err := rs.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rs.Process.Kill(); rs.Wait() })
	rc := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379", Password: secret,
		Dialer: func(_ context.Context, _, a string) (net.Conn, error) { return n.tryDial("127.0.0.1", a) }})
	defer rc.Close()
	ctx := t.Context()
	eventually(t, "redis-server to answer", func() bool { return rc.Ping(ctx).Err() == nil })
	eventually(t, "the ban made during the outage written to Redis", func() bool {
		return rc.HExists(ctx, "relayguard:bans", "203.0.113.0/24").Val()
	})
	// The next message is refused and counted in Redis, after the three
	// attempts counted locally during the outage.
	eventually(t, "the outage's counts written to Redis", func() bool {
		if got := send(); got != 451 {
			t.Fatalf("message over the limit after Redis returned: reply %d, want 451", got)
		}
		keys := rc.Keys(ctx, "relayguard:rl:user_messages_per_hour*").Val()
		if len(keys) != 1 {
			return false
		}
		n, _ := strconv.Atoi(rc.Get(ctx, keys[0]).Val())
		return n >= 4
	})
	// Another server bans through Redis: serve learns it.
	rg(filepath.Join(dir, "b"), "", "ban", "add", "198.51.100.0/24", "--for", "1h")
	eventually(t, "serve enforces a ban another server made in Redis", refused("198.51.100.20", "198.51.100.0/24"))

	serve.Process.Signal(syscall.SIGTERM)
	serve.Wait()
	all := out.String() + printed.String()
	if !strings.Contains(out.String(), "shared store unreachable") {
		t.Errorf("serve did not say that the shared store was unreachable:\n%s", out)
	}
	if strings.Contains(all, secret) {
		t.Fatalf("the store URL's password was printed:\n%s", all)
	}
}
