package firewall

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/relayguard/relayguard/internal/ban"
)

// The enforcer tests run against the real kernel inside two network
// namespaces the test creates: "srv" holds the listener and the firewall
// under test, "atk" is the attacker with two IPv4 and two IPv6 addresses, one
// of each banned and one not, joined by a veth pair. Addresses are from the
// documentation ranges (RFC 5737, RFC 3849) and exist only in those
// namespaces. The host's own firewall is never touched.

// need skips (outside CI) or fails (under CI=true) when a requirement is
// missing.
func need(t testing.TB, ok bool, what string) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI: %s", what)
	}
	t.Skip(what)
}

func needBinaries(t testing.TB, names ...string) {
	t.Helper()
	need(t, os.Geteuid() == 0, "needs root to create network namespaces")
	for _, n := range names {
		_, err := exec.LookPath(n)
		need(t, err == nil, n+" not installed")
	}
}

var nsSeq atomic.Int32

type testNet struct {
	srv, atk                 string // namespace names
	srvFD                    int
	srv4, srv6               netip.Addr
	good4, bad4, good6, bad6 netip.Addr
	port                     uint16
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// newTestNet creates the two namespaces, the veth pair, and a listener in
// srv that greets every connection with "hello".
func newTestNet(t testing.TB) *testNet {
	t.Helper()
	needBinaries(t, "ip")
	id := fmt.Sprintf("rgfw%d-%d", os.Getpid(), nsSeq.Add(1))
	n := &testNet{
		srv: id + "s", atk: id + "a",
		srv4: netip.MustParseAddr("192.0.2.1"), srv6: netip.MustParseAddr("2001:db8::1"),
		good4: netip.MustParseAddr("192.0.2.2"), bad4: netip.MustParseAddr("192.0.2.3"),
		good6: netip.MustParseAddr("2001:db8::2"), bad6: netip.MustParseAddr("2001:db8::3"),
	}
	run(t, "ip", "netns", "add", n.srv)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", n.srv).Run() })
	run(t, "ip", "netns", "add", n.atk)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", n.atk).Run() })
	run(t, "ip", "link", "add", "vs", "netns", n.srv, "type", "veth", "peer", "name", "va", "netns", n.atk)
	for _, c := range [][]string{
		{"-n", n.srv, "link", "set", "lo", "up"},
		{"-n", n.atk, "link", "set", "lo", "up"},
		{"-n", n.srv, "addr", "add", "192.0.2.1/24", "dev", "vs"},
		{"-n", n.srv, "addr", "add", "2001:db8::1/64", "dev", "vs", "nodad"},
		{"-n", n.atk, "addr", "add", "192.0.2.2/24", "dev", "va"},
		{"-n", n.atk, "addr", "add", "192.0.2.3/24", "dev", "va"},
		{"-n", n.atk, "addr", "add", "2001:db8::2/64", "dev", "va", "nodad"},
		{"-n", n.atk, "addr", "add", "2001:db8::3/64", "dev", "va", "nodad"},
		{"-n", n.srv, "link", "set", "vs", "up"},
		{"-n", n.atk, "link", "set", "va", "up"},
	} {
		run(t, "ip", c...)
	}
	fd, err := unix.Open("/run/netns/"+n.srv, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open netns %s: %v", n.srv, err)
	}
	n.srvFD = fd
	t.Cleanup(func() { unix.Close(fd) })

	var ln net.Listener
	if err := inNS(n.srv, func() error {
		var err error
		ln, err = net.Listen("tcp", ":0")
		return err
	}); err != nil {
		t.Fatalf("listen in %s: %v", n.srv, err)
	}
	t.Cleanup(func() { ln.Close() })
	n.port = uint16(ln.Addr().(*net.TCPAddr).Port)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "hello\n")
			c.Close()
		}
	}()
	return n
}

// inNS runs fn on an OS thread switched into the named network namespace.
// Sockets created by fn stay in that namespace.
func inNS(name string, fn func() error) error {
	runtime.LockOSThread()
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer unix.Close(orig)
	target, err := unix.Open("/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer unix.Close(target)
	if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("setns %s: %w", name, err)
	}
	ferr := fn()
	if err := unix.Setns(orig, unix.CLONE_NEWNET); err == nil {
		runtime.UnlockOSThread()
	} // else: the thread stays locked and dies with the goroutine
	return ferr
}

// connect dials the listener from src inside the attacker namespace and
// reads the greeting.
func (n *testNet) connect(src netip.Addr, timeout time.Duration) error {
	dst := n.srv4
	if src.Is6() {
		dst = n.srv6
	}
	return inNS(n.atk, func() error {
		d := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
		c, err := d.Dial("tcp", netip.AddrPortFrom(dst, n.port).String())
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(timeout))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return err
		}
		if line != "hello\n" {
			return fmt.Errorf("greeting %q", line)
		}
		return nil
	})
}

// mustConnect: src reaches the listener (retried while neighbour discovery
// settles, with a generous deadline).
func (n *testNet) mustConnect(t testing.TB, src netip.Addr) {
	t.Helper()
	var err error
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
		if err = n.connect(src, 3*time.Second); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s cannot connect to the listener: %v", src, err)
}

// mustBeBlocked: the SYN from src is dropped, so the dial times out (a
// refused or reset connection would mean the packet got through).
// Several sources are tried at once.
func (n *testNet) mustBeBlocked(t testing.TB, srcs ...netip.Addr) {
	t.Helper()
	if err := n.blocked(srcs...); err != nil {
		t.Fatal(err)
	}
}

// blocked is mustBeBlocked returning the failure.
func (n *testNet) blocked(srcs ...netip.Addr) error {
	errs := make([]error, len(srcs))
	var wg sync.WaitGroup
	for i, src := range srcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := n.connect(src, 1500*time.Millisecond)
			switch {
			case err == nil:
				errs[i] = fmt.Errorf("%s connected although banned", src)
			case !errors.Is(err, os.ErrDeadlineExceeded) && !isTimeout(err):
				errs[i] = fmt.Errorf("%s: want a dropped connection (timeout), got %v", src, err)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// shortBan adds temporary bans with add(until) and checks that srcs are
// blocked while they last; it returns the expiry. On a machine so loaded
// that the Adds and the check cannot finish before a d-long ban runs out,
// it tries again with twice the length (up to about a minute) instead of
// failing: the test asserts behaviour, not speed. A source that connects
// while its ban is still in force fails the test at once.
func (n *testNet) shortBan(t testing.TB, d time.Duration, add func(until time.Time), srcs ...netip.Addr) time.Time {
	t.Helper()
	for ; ; d *= 2 {
		until := time.Now().Add(d)
		add(until)
		err := n.blocked(srcs...)
		if err == nil {
			return until
		}
		if time.Now().Before(until) || d >= time.Minute {
			t.Fatal(err)
		}
		t.Logf("the %s ban ran out before the check finished (a loaded machine); again with %s: %v", d, 2*d, err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// waitConnect polls until src can connect (an expiring ban), failing after a
// generous deadline.
func (n *testNet) waitConnect(t testing.TB, src netip.Addr, deadline time.Duration) {
	t.Helper()
	var err error
	for end := time.Now().Add(deadline); time.Now().Before(end); {
		if err = n.connect(src, time.Second); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s still cannot connect after %s: %v", src, deadline, err)
}

// inside runs a command in the server namespace and returns its output.
func (n *testNet) inside(t testing.TB, name string, args ...string) string {
	t.Helper()
	return run(t, "ip", append([]string{"netns", "exec", n.srv, name}, args...)...)
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func bg() context.Context { return context.Background() }

// banOf is a permanent ban of one address.
func banOf(a netip.Addr) ban.Ban { return ban.Ban{Prefix: netip.PrefixFrom(a, a.BitLen())} }

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
