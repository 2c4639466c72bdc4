package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// sandbox is a throwaway copy of this machine in which a test may install
// packages: an overlay whose lower layer is the host's root file system and
// whose upper layer is a tmpfs, seen only inside new mount, network and PID
// namespaces. Nothing it does reaches the host: dpkg's database, /etc/passwd
// and /var live in the tmpfs; processes started in it die with it (they are
// in its PID namespace); its network is a loopback of its own, so it may
// listen on port 25 while the host's is taken, and apt cannot download.
type sandbox struct {
	t    *testing.T
	root string // the overlay, as seen inside the mount namespace
	pid  int    // host PID of the namespaces' init (a shell sleeping)
	cmd  *exec.Cmd
}

// The namespaces' init: mount the overlay and the API file systems, bring
// up loopback, tell the test it is ready, then sleep. $1 is an empty
// directory of the host (hidden by a tmpfs inside the namespace).
const sandboxInit = `set -e
d=$1
mount -t tmpfs -o mode=0755 relayguard-sandbox "$d"
mkdir "$d/up" "$d/work" "$d/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$d/up,workdir=$d/work" "$d/root"
mount -t proc proc "$d/root/proc"
mount --rbind /dev "$d/root/dev"
mount -t sysfs -o ro sysfs "$d/root/sys"
mount -t tmpfs -o mode=1777 tmpfs "$d/root/tmp"
mount -t tmpfs -o mode=0755 tmpfs "$d/root/run"
ip link set lo up
# Services must not start in here (Debian's convention for chroots).
printf '#!/bin/sh\nexit 101\n' > "$d/root/usr/sbin/policy-rc.d"
chmod 0755 "$d/root/usr/sbin/policy-rc.d"
echo ready
exec sleep infinity
`

// newSandbox starts a sandbox; t.Cleanup ends it and every process in it.
func newSandbox(t *testing.T) *sandbox {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("unshare", "--mount", "--net", "--pid", "--fork", "--propagation", "private",
		"--", "sh", "-c", sandboxInit, "sh", dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("unshare: %v", err)
	}
	s := &sandbox{t: t, root: dir + "/root", cmd: cmd}
	t.Cleanup(s.close)
	line, err := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "ready" {
		cmd.Wait()
		t.Fatalf("sandbox did not start (%v): %s", err, stderr.String())
	}
	// unshare --fork runs the init as its only child.
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if s.pid, err = strconv.Atoi(strings.TrimSpace(string(b))); err != nil {
		t.Fatalf("init of the sandbox: %q: %v", b, err)
	}
	return s
}

// close kills the namespaces' init; the kernel then kills every process of
// the PID namespace, and the mounts go with the last of them.
func (s *sandbox) close() {
	if s.pid != 0 {
		syscall.Kill(s.pid, syscall.SIGKILL)
	}
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-done
	}
}

// command returns a command running args inside the sandbox, as root, with
// the environment of a root login.
func (s *sandbox) command(args ...string) *exec.Cmd {
	nsenter := []string{"--target", strconv.Itoa(s.pid), "--mount", "--net", "--pid", "--", "chroot", s.root}
	cmd := exec.Command("nsenter", append(nsenter, args...)...)
	cmd.Env = []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/root", "LC_ALL=C.UTF-8", "DEBIAN_FRONTEND=noninteractive", "TERM=dumb",
	}
	return cmd
}

// outside returns a command running args in the sandbox's mount namespace
// but outside its root, where the overlay's layers are visible.
func (s *sandbox) outside(args ...string) *exec.Cmd {
	nsenter := []string{"--target", strconv.Itoa(s.pid), "--mount", "--"}
	return exec.Command("nsenter", append(nsenter, args...)...)
}

// upper is the overlay's upper layer, which holds everything written in the
// sandbox (but its /tmp, /run and /dev/shm), as outside sees it.
func (s *sandbox) upper() string { return strings.TrimSuffix(s.root, "/root") + "/up" }

// run runs args in the sandbox with stdin (nil for none) and returns
// standard output and standard error; a failure fails the test.
func (s *sandbox) run(stdin io.Reader, args ...string) (stdout, stderr string) {
	s.t.Helper()
	stdout, stderr, err := s.try(stdin, args...)
	if err != nil {
		s.t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, stdout, stderr)
	}
	return stdout, stderr
}

// try is run without failing the test.
func (s *sandbox) try(stdin io.Reader, args ...string) (stdout, stderr string, err error) {
	cmd := s.command(args...)
	cmd.Stdin = stdin
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	cmd.WaitDelay = 5 * time.Second
	err = cmd.Run()
	return o.String(), e.String(), err
}

// sh runs a shell script in the sandbox.
func (s *sandbox) sh(script string) string {
	s.t.Helper()
	out, _ := s.run(nil, "/bin/sh", "-ec", script)
	return out
}

// inNetns runs fn on a thread that has entered the sandbox's network
// namespace: sockets fn creates (net.Dial, net.Listen) belong to it and
// keep working from any goroutine afterwards.
func (s *sandbox) inNetns(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- err
			return
		}
		defer self.Close()
		target, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", s.pid))
		if err != nil {
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns: %w", err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			// The thread stays in the sandbox's namespace: leave it locked
			// so that the runtime discards it with this goroutine.
			errc <- fmt.Errorf("setns back: %w", err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
