// Package hosttest builds a mail host for end-to-end tests: network
// namespaces with many client networks, private Postfix and Dovecot
// instances (own configuration, queue and log under a temporary directory),
// and the relayguard binary running its commands. Everything is created by
// the test and removed when it ends; nothing global is touched (fixed
// addresses and ports exist only inside the namespaces the test creates).
//
// Under CI=true a missing component fails the test; elsewhere it skips
// with a message naming what is missing.
package hosttest

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Need skips the test (outside CI) or fails it (under CI=true) when ok is
// false.
func Need(t testing.TB, ok bool, what string) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI: %s", what)
	}
	t.Skip(what)
}

// NeedRoot needs root and the named programs.
func NeedRoot(t testing.TB, programs ...string) {
	t.Helper()
	Need(t, os.Geteuid() == 0, "needs root (network namespaces, Postfix's master)")
	for _, p := range programs {
		_, err := exec.LookPath(p)
		if err != nil {
			_, err = os.Stat(p)
		}
		Need(t, err == nil, p+" is not installed")
	}
}

// Run runs a command and fails the test with its output when it fails.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

var seq atomic.Int32

// Net is two network namespaces joined by a veth pair: Server holds the
// mail host (ServerIP, 192.0.2.1, and 2001:db8::1), Client holds the users
// and attackers, with as many source addresses as AddClient gives it.
// Addresses exist only inside these namespaces.
type Net struct {
	Server, Client string
	ServerIP       netip.Addr
	ServerIP6      netip.Addr
}

// NewNet creates the namespaces; they are deleted when the test ends.
func NewNet(t testing.TB) *Net {
	t.Helper()
	NeedRoot(t, "ip")
	id := fmt.Sprintf("rgh%d-%d", os.Getpid(), seq.Add(1))
	n := &Net{Server: id + "s", Client: id + "c", ServerIP: netip.MustParseAddr("192.0.2.1"), ServerIP6: netip.MustParseAddr("2001:db8::1")}
	Run(t, "ip", "netns", "add", n.Server)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", n.Server).Run() })
	Run(t, "ip", "netns", "add", n.Client)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", n.Client).Run() })
	Run(t, "ip", "link", "add", "vs", "netns", n.Server, "type", "veth", "peer", "name", "vc", "netns", n.Client)
	for _, c := range [][]string{
		{"-n", n.Server, "link", "set", "lo", "up"},
		{"-n", n.Client, "link", "set", "lo", "up"},
		{"-n", n.Server, "addr", "add", "192.0.2.1/32", "dev", "vs"},
		{"-n", n.Server, "addr", "add", "2001:db8::1/128", "dev", "vs", "nodad"},
		{"-n", n.Server, "link", "set", "vs", "up"},
		{"-n", n.Client, "link", "set", "vc", "up"},
		{"-n", n.Server, "route", "add", "0.0.0.0/0", "dev", "vs"},
		{"-n", n.Server, "-6", "route", "add", "::/0", "dev", "vs"},
		{"-n", n.Client, "route", "add", "192.0.2.1/32", "dev", "vc"},
		{"-n", n.Client, "-6", "route", "add", "2001:db8::1/128", "dev", "vc"},
	} {
		Run(t, "ip", c...)
	}
	// A new namespace queues 10 datagrams per Unix socket
	// (net.unix.max_dgram_qlen): a Postfix logging through postlogd on a
	// loaded machine fills that, and postlogd, logging to its own socket,
	// then blocks for good (seen: no banner, and postfix stop hanging).
	for _, ns := range []string{n.Server, n.Client} {
		Run(t, "ip", "netns", "exec", ns, "sh", "-c", "echo 512 >/proc/sys/net/unix/max_dgram_qlen")
	}
	return n
}

// AddClient gives the client namespace the source address ip.
func (n *Net) AddClient(t testing.TB, ip netip.Addr) {
	t.Helper()
	args := []string{"-n", n.Client, "addr", "add", netip.PrefixFrom(ip, ip.BitLen()).String(), "dev", "vc"}
	if ip.Is6() {
		args = append(args, "nodad")
	}
	Run(t, "ip", args...)
}

// Dial connects from source address src in the client namespace to addr
// (host:port in the server namespace), retrying while the listener comes
// up or neighbour discovery settles, for up to a minute.
func (n *Net) Dial(ctx context.Context, src netip.Addr, addr string) (net.Conn, error) {
	var c net.Conn
	var err error
	for deadline := time.Now().Add(time.Minute); ; {
		err = InNS(n.Client, func() error {
			d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
			var derr error
			c, derr = d.DialContext(ctx, "tcp", addr)
			return derr
		})
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return nil, fmt.Errorf("dial %s from %s: %w", addr, src, err)
	}
	return c, nil
}

// Listen opens a TCP listener inside namespace ns.
func Listen(ns, addr string) (net.Listener, error) {
	var ln net.Listener
	err := InNS(ns, func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	})
	return ln, err
}

// Command returns cmd to run inside namespace ns ("" for the host's).
func Command(ns, name string, args ...string) *exec.Cmd {
	if ns == "" {
		return exec.Command(name, args...)
	}
	return exec.Command("ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// InNS runs fn on an OS thread switched into the named network namespace.
// Sockets created by fn stay in that namespace.
func InNS(name string, fn func() error) error {
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

// StartTimeout bounds a command that starts a daemon (RunDaemon).
const StartTimeout = 2 * time.Minute

// RunDaemon runs a command that starts a daemon (which may keep the
// command's output open) with its output in a file, and returns that
// output when the command fails. A command still running after
// StartTimeout is killed and is a failure.
func RunDaemon(cmd *exec.Cmd) error {
	f, err := os.CreateTemp("", "rg-daemon-out-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: %w", strings.Join(cmd.Args, " "), err)
	}
	timer := time.AfterFunc(StartTimeout, func() { cmd.Process.Kill() })
	err = cmd.Wait()
	if !timer.Stop() {
		err = fmt.Errorf("still running after %v, killed (%v)", StartTimeout, err)
	}
	if err != nil {
		b, _ := os.ReadFile(f.Name())
		return fmt.Errorf("%s: %w\n%s", strings.Join(cmd.Args, " "), err, b)
	}
	return nil
}
