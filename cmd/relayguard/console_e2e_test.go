package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"golang.org/x/sys/unix"
)

// listen binds addr inside the namespace (a listener keeps the namespace
// it was made in; Accept works from any thread).
func (n *guardNS) listen(t *testing.T, addr string) net.Listener {
	t.Helper()
	type res struct {
		ln  net.Listener
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread() // this thread is left in the namespace and dies with the goroutine
		if err := unix.Setns(n.fd, unix.CLONE_NEWNET); err != nil {
			ch <- res{nil, err}
			return
		}
		ln, err := net.Listen("tcp", addr)
		ch <- res{ln, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("listen %s in netns %s: %v", addr, n.name, r.err)
	}
	t.Cleanup(func() { r.ln.Close() })
	return r.ln
}

// forward makes dst inside the namespace reachable at a loopback address
// of the test's own namespace (for the browser, which runs outside).
func (n *guardNS) forward(t *testing.T, dst string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				d, err := n.tryDial("127.0.0.1", dst)
				if err != nil {
					return
				}
				defer d.Close()
				go func() { io.Copy(d, c); d.(*net.TCPConn).CloseWrite() }()
				io.Copy(c, d)
			}()
		}
	}()
	return ln.Addr().String()
}

// httpFrom is an HTTP client whose connections come from src inside the
// namespace.
func (n *guardNS) httpFrom(src string) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(_ context.Context, _, addr string) (net.Conn, error) { return n.tryDial(src, addr) }}}
}

// submit sends one message as user from src and returns its queue id.
func (n *guardNS) submit(t *testing.T, src, addr, user, password, from, to string) string {
	t.Helper()
	c := n.dial(t, src, addr)
	defer c.Close()
	s := &smtpClient{t: t, c: c, r: bufio.NewReader(c)}
	s.reply()
	s.cmd("EHLO client.test")
	if r := s.cmd("AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+password))); !strings.HasPrefix(r, "235 ") {
		t.Fatalf("AUTH as %s: %q", user, r)
	}
	for _, cmd := range []string{"MAIL FROM:<" + from + ">", "RCPT TO:<" + to + ">"} {
		if r := s.cmd(cmd); !strings.HasPrefix(r, "250 ") {
			t.Fatalf("%s: %q", cmd, r)
		}
	}
	if r := s.cmd("DATA"); !strings.HasPrefix(r, "354 ") {
		t.Fatalf("DATA: %q", r)
	}
	r := s.cmd("From: <" + from + ">\r\nTo: <" + to + ">\r\nSubject: console test\r\n\r\nhello\r\n.")
	id, ok := strings.CutPrefix(r, "250 2.0.0 Ok: queued as ")
	if !ok {
		t.Fatalf("end of DATA: %q", r)
	}
	s.cmd("QUIT")
	return id
}

// smtpSink is the smallest SMTP receiver: it takes every message and
// remembers its data.
type smtpSink struct {
	mu   sync.Mutex
	msgs []string
}

func (k *smtpSink) serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			r := bufio.NewReader(c)
			fmt.Fprint(c, "220 sink.test ESMTP\r\n")
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				switch cmd := strings.ToUpper(strings.TrimSpace(l)); {
				case strings.HasPrefix(cmd, "EHLO"), strings.HasPrefix(cmd, "HELO"):
					fmt.Fprint(c, "250 sink.test\r\n")
				case cmd == "DATA":
					fmt.Fprint(c, "354 go on\r\n")
					var b strings.Builder
					for {
						l, err := r.ReadString('\n')
						if err != nil {
							return
						}
						if l == ".\r\n" {
							break
						}
						b.WriteString(l)
					}
					k.mu.Lock()
					k.msgs = append(k.msgs, b.String())
					k.mu.Unlock()
					fmt.Fprint(c, "250 2.0.0 taken\r\n")
				case cmd == "QUIT":
					fmt.Fprint(c, "221 bye\r\n")
					return
				default:
					fmt.Fprint(c, "250 ok\r\n")
				}
			}
		}()
	}
}

func (k *smtpSink) got() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.msgs...)
}

// browser starts a headless Chromium (Debian's) for a test.
func browser(t *testing.T) (context.Context, func(name string)) {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI: chromium not installed (.ci/packages.d/console.txt)")
		}
		t.Skip("chromium not installed")
	}
	// DefaultExecAllocatorOptions: headless, no first run, no background
	// networking, no extensions, ...
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1400, 1000))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelB := chromedp.NewContext(actx, chromedp.WithErrorf(t.Logf))
	ctx, cancelT := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(func() { cancelT(); cancelB(); cancelA() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("starting chromium: %v", err)
	}
	dir := os.Getenv("TEST_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	dir = filepath.Join(dir, "console")
	os.MkdirAll(dir, 0o755)
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Errorf("screenshot %s: %v", name, err)
			return
		}
		p := filepath.Join(dir, name+".png")
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Error(err)
		}
		t.Logf("screenshot %s", p)
	}
	return ctx, shot
}

// runUI runs browser actions, failing the test with what was being done.
func runUI(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(tctx, actions...); err != nil {
		status, _ := chromedp.Run(ctx, chromedp.Text(chromedp.ID("status")))
		t.Fatalf("%s: %v (status line: %q)", what, err, status)
	}
}

// textOf reads the text of the element sel selects.
func textOf(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	s, err := chromedp.Run(tctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

// TestConsoleInChromium drives the console of a real `relayguard serve`
// (in a network namespace, so that its clients are real non-loopback
// addresses the guard may ban) from a real headless Chromium: log in; see
// the ban a real SMTP AUTH brute force produced, with its reason, and the
// attack on the overview; unban it, after which the address gets the
// banner again; hold a deferred message and release it, after which it is
// delivered; suspend an account, after which it can no longer log in. A
// brute force of the console's own login from another address is counted
// by the guard and banned: that address then gets neither the console nor
// SMTP. Screenshots of each step are kept.
func TestConsoleInChromium(t *testing.T) {
	t.Parallel()
	bin := testBinary(t)
	const (
		user, attacker, loginGuesser = "198.51.100.7", "198.51.100.20", "203.0.113.66"
		alicePass, adminPass         = "alice's long password", "the console admin's password"
	)
	n := newGuardNS(t, user, attacker, loginGuesser)
	sinkLn := n.listen(t, "127.0.0.1:0") // a port for the remote MX; closed until the release
	sinkAddr := sinkLn.Addr().String()
	sinkLn.Close()

	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	conf := filepath.Join(dir, "relayguard.toml")
	os.WriteFile(conf, []byte(`hostname = "guard.test"
local_domains = ["guard.test"]
own_addresses = ["192.0.2.1"]
[admin]
listen = "127.0.0.1:0"
[limits]
auth_failure_delay = "0s"
[auth]
broken_auth_clients = true
[[listener]]
name = "submission"
address = "127.0.0.1:0"
mode = "submission"
trusted_local = true
[guard]
maxretry = 3
[delivery.transports]
"remote.test" = "smtp:`+sinkAddr+`"
`), 0o644)
	for _, c := range []struct {
		args []string
		in   string
	}{
		{[]string{"user", "add", "alice@guard.test", "--password-stdin"}, alicePass},
		{[]string{"admin", "add", "ops", "--password-stdin"}, adminPass},
	} {
		cmd := exec.Command(bin, append(c.args, "--config", conf, "--data-dir", data, "--create-data-dir")...)
		cmd.Stdin = strings.NewReader(c.in + "\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", c.args, err, out)
		}
	}
	_, out := startServe(t, exec.Command("ip", "netns", "exec", n.name, bin, "serve", "--config", conf, "--data-dir", data), 2)
	defer func() {
		if t.Failed() {
			t.Logf("serve's output:\n%s", out)
		}
	}()
	smtpAddr := regexp.MustCompile(`listening on (127\.0\.0\.1:\d+)`).FindStringSubmatch(out.String())[1]
	m := regexp.MustCompile(`console on http://(127\.0\.0\.1:\d+)/`).FindStringSubmatch(out.String())
	if m == nil {
		eventually(t, "the console's address", func() bool {
			m = regexp.MustCompile(`console on http://(127\.0\.0\.1:\d+)/`).FindStringSubmatch(out.String())
			return m != nil
		})
	}
	consoleAddr := m[1]
	url := "http://" + n.forward(t, consoleAddr)

	// The traffic: alice's message to a remote server that refuses
	// connections (deferred), and a password guesser banned by the guard.
	id := n.submit(t, user, smtpAddr, "alice@guard.test", alicePass, "alice@guard.test", "bob@remote.test")
	for i := range 3 {
		if _, r := n.authFrom(t, attacker, smtpAddr); !strings.HasPrefix(r, "535 ") {
			t.Fatalf("guess %d: %q", i, r)
		}
	}
	eventually(t, "the guesser banned", func() bool { return strings.HasPrefix(n.bannerFrom(t, attacker, smtpAddr), "421 ") })

	// An audit of relayguard's own configuration: its finding is shown on
	// the overview.
	if out, err := exec.Command(bin, "audit", "--areas", "relayguard", "--config", conf, "--data-dir", data).CombinedOutput(); err != nil {
		t.Fatalf("audit: %v\n%s", err, out)
	}

	ctx, shot := browser(t)
	runUI(t, ctx, "log in",
		chromedp.Navigate(url+"/"),
		chromedp.WaitVisible(chromedp.CSS("#login-name")),
		chromedp.SendKeys(chromedp.CSS("#login-name"), "ops"),
		chromedp.SendKeys(chromedp.CSS("#login-password"), adminPass),
		chromedp.Click(chromedp.CSS("#login-submit")),
		chromedp.WaitVisible(chromedp.CSS("#view-overview")),
		chromedp.WaitVisible(chromedp.CSS(`#attacks tr[data-prefix="198.51.100.0/24"]`)),
	)
	runUI(t, ctx, "see the charts and the audit",
		chromedp.WaitVisible(chromedp.CSS(`#charts svg.chart.auth_failures`)),
		chromedp.WaitVisible(chromedp.CSS(`#audit tr.sev-low`)))
	attack := textOf(t, ctx, `#attacks tr[data-prefix="198.51.100.0/24"]`)
	who := textOf(t, ctx, "#who")
	if who != "ops" || !strings.Contains(attack, "mallory@example.test (3)") || !strings.Contains(attack, "banned 198.51.100.20/32") {
		t.Errorf("overview: who %q, attack row %q", who, attack)
	}
	if a := textOf(t, ctx, "#audit"); !strings.Contains(a, "broken_auth_clients") || !strings.Contains(a, "Grade") {
		t.Errorf("audit panel: %q", a)
	}
	if c := textOf(t, ctx, `#charts [data-series="auth_failures"]`); !strings.Contains(c, "AUTH failures 3") {
		t.Errorf("AUTH failures chart: %q", c)
	}
	shot("1-overview")

	// The ban the brute force produced, with its reason; unban it.
	row := `#bans tr[data-prefix="198.51.100.20/32"]`
	runUI(t, ctx, "see the ban",
		chromedp.Navigate(url+"/#bans"),
		chromedp.WaitVisible(chromedp.CSS(row)),
	)
	banText := textOf(t, ctx, row)
	if !strings.Contains(banText, "3 failures in 10m0s (last: auth_failure PLAIN from 198.51.100.20 via smtpd)") || !strings.Contains(banText, "guard") {
		t.Errorf("ban row: %q", banText)
	}
	shot("2-bans")
	runUI(t, ctx, "unban",
		chromedp.Click(chromedp.CSS(row+" button.unban")),
		chromedp.SendKeys(chromedp.CSS(row+" input.reason"), "the office NAT, not an attacker"),
		chromedp.Click(chromedp.CSS(row+" button.confirm")),
		chromedp.WaitNotPresent(chromedp.CSS(row)),
	)
	shot("3-unbanned")
	if b := n.bannerFrom(t, attacker, smtpAddr); !strings.HasPrefix(b, "220 ") {
		t.Errorf("after the unban the address gets %q, want the banner", b)
	}

	// Hold alice's deferred message, then release it: it is delivered.
	// While the operator types the reason, another message arrives: the
	// live page must not redraw the list (and lose the form) under the
	// operator's hands; the hold's own reload shows the new message.
	msg := `#queue tr[data-id="` + id + `"]`
	runUI(t, ctx, "open the hold form",
		chromedp.Navigate(url+"/#queue"),
		chromedp.WaitVisible(chromedp.CSS(msg+`[data-state="deferred"]`)),
		chromedp.Click(chromedp.CSS(msg+" button.hold")),
		chromedp.SendKeys(chromedp.CSS(msg+" input.reason"), "check with alice first"),
	)
	second := n.submit(t, user, smtpAddr, "alice@guard.test", alicePass, "alice@guard.test", "carol@remote.test")
	// The ticks count the queue from a listing at most 15 s old
	// (queueSummaryAge): after nine ticks (18 s) one has counted both.
	live := textOf(t, ctx, "#live")
	for ticks := 0; ticks < 9; {
		time.Sleep(200 * time.Millisecond)
		if l := textOf(t, ctx, "#live"); l != live {
			live, ticks = l, ticks+1
		}
	}
	runUI(t, ctx, "hold the message",
		chromedp.Click(chromedp.CSS(msg+" button.confirm")),
		chromedp.WaitVisible(chromedp.CSS(msg+`[data-state="held"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#queue tr[data-id="`+second+`"]`)),
	)
	state := textOf(t, ctx, msg+" td.state")
	if !strings.Contains(state, "held by ops (console): check with alice first") {
		t.Errorf("held message's state: %q", state)
	}
	shot("4-held")
	var sink smtpSink
	go sink.serve(n.listen(t, sinkAddr))
	runUI(t, ctx, "release the message",
		chromedp.Click(chromedp.CSS(msg+" button.release")),
		chromedp.WaitNotPresent(chromedp.CSS(msg+`[data-state="held"]`)),
	)
	eventually(t, "the released message delivered", func() bool {
		for _, m := range sink.got() {
			if strings.Contains(m, "Subject: console test") {
				return true
			}
		}
		return false
	})
	runUI(t, ctx, "the delivered message leaves the queue", chromedp.Reload(), chromedp.WaitNotPresent(chromedp.CSS(msg)))
	shot("5-released")

	// Suspend alice: she can no longer log in.
	runUI(t, ctx, "suspend alice",
		chromedp.Navigate(url+"/#accounts"),
		chromedp.WaitVisible(chromedp.CSS(`#accounts tr[data-name="alice@guard.test"] a.account-link`)),
		chromedp.Click(chromedp.CSS(`#accounts tr[data-name="alice@guard.test"] a.account-link`)),
		chromedp.WaitVisible(chromedp.CSS(`#account button.suspend`)),
		chromedp.Click(chromedp.CSS(`#account button.suspend`)),
		chromedp.SendKeys(chromedp.CSS(`#account input.reason`), "phishing report"),
		chromedp.Click(chromedp.CSS(`#account button.confirm`)),
		chromedp.WaitVisible(chromedp.CSS(`#account button.unsuspend`)),
	)
	acct := textOf(t, ctx, "#account-state")
	if !strings.HasPrefix(acct, "Suspended") {
		t.Errorf("account state %q", acct)
	}
	shot("6-suspended")
	if _, r := n.authAs(t, user, smtpAddr, "alice@guard.test", alicePass); strings.HasPrefix(r, "235 ") {
		t.Errorf("suspended alice logged in: %q", r)
	}

	// A brute force of the console's login from another address: counted
	// by the guard, banned, refused by the console and by SMTP alike.
	hc := n.httpFrom(loginGuesser)
	api := "http://" + consoleAddr
	for i := range 3 {
		resp, err := hc.Post(api+"/api/login", "application/json", strings.NewReader(fmt.Sprintf(`{"name":"ops","password":"guess %d"}`, i)))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("console guess %d: %d", i, resp.StatusCode)
		}
	}
	eventually(t, "the console guesser banned", func() bool {
		resp, err := hc.Post(api+"/api/login", "application/json", strings.NewReader(`{"name":"ops","password":"`+adminPass+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		var e struct{ Error string }
		json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		return resp.StatusCode == http.StatusForbidden && strings.Contains(e.Error, "203.0.113.66/32 is banned")
	})
	if b := n.bannerFrom(t, loginGuesser, smtpAddr); !strings.HasPrefix(b, "421 ") {
		t.Errorf("the console guesser still gets the SMTP banner: %q", b)
	}
	row = `#bans tr[data-prefix="203.0.113.66/32"]`
	runUI(t, ctx, "the console guesser's ban on the page",
		chromedp.Navigate(url+"/#bans"),
		chromedp.WaitVisible(chromedp.CSS(row)))
	banText = textOf(t, ctx, row)
	if !strings.Contains(banText, "via console") {
		t.Errorf("console ban row: %q", banText)
	}
	shot("7-console-guesser-banned")

	// Every action is in serve's log with who did it; no password is.
	log := out.String()
	for _, want := range []string{
		`msg="console action" user=ops client=127.0.0.1 action=unban text=198.51.100.20/32 reason="the office NAT, not an attacker"`,
		`action=queue.hold text=` + id,
		`action=queue.release text=` + id,
		`action=account.suspend text=alice@guard.test reason="phishing report"`,
		`msg="auth failed" client=203.0.113.66 listener=console mechanism=password user=ops reason="invalid credentials"`,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("serve's log lacks %s", want)
		}
	}
	for _, secret := range []string{adminPass, alicePass} {
		if strings.Contains(log, secret) {
			t.Errorf("a password in serve's log")
		}
	}
}
