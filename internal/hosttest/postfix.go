package hosttest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// PostfixConfig describes one private Postfix instance.
type PostfixConfig struct {
	// Netns runs the instance inside this network namespace ("": the
	// host's; then Listen must be a free loopback address).
	Netns string
	// Listen is the smtpd address, e.g. "192.0.2.1:25".
	Listen string
	// Hostname is myhostname (default mx.example.test).
	Hostname string
	// Main is appended to main.cf (a parameter given twice: the last one
	// wins).
	Main string
	// Master is appended to master.cf.
	Master string
}

// Postfix is a running private Postfix instance.
type Postfix struct {
	Dir, Etc, QueueDir, Log string
	cfg                     PostfixConfig
}

const masterCF = `%s inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`

// PostfixBin is the directory of Postfix's commands.
const PostfixBin = "/usr/sbin"

// NeedPostfix needs root and an installed Postfix.
func NeedPostfix(t testing.TB) {
	t.Helper()
	NeedRoot(t, "/usr/lib/postfix/sbin/master", PostfixBin+"/postfix", PostfixBin+"/postqueue", PostfixBin+"/postsuper")
}

// TempDir returns a directory the postfix and dovecot users can traverse
// (t.TempDir is private to root), removed when the test ends.
func TempDir(t testing.TB, pattern string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// StartPostfix writes the instance's configuration under a new directory
// and starts it. Mail goes to the discard transport unless Main says
// otherwise; mydestination is empty and example.test is a relay domain.
func StartPostfix(t testing.TB, c PostfixConfig) *Postfix {
	t.Helper()
	NeedPostfix(t)
	if c.Hostname == "" {
		c.Hostname = "mx.example.test"
	}
	dir := TempDir(t, "rg-postfix-")
	p := &Postfix{Dir: dir, Etc: filepath.Join(dir, "etc"), QueueDir: filepath.Join(dir, "queue"), Log: filepath.Join(dir, "maillog"), cfg: c}
	data := filepath.Join(dir, "data")
	for _, d := range []string{p.Etc, p.QueueDir, data} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if uid, _, err := LookupUser("postfix"); err == nil {
		os.Chown(data, uid, -1)
	}
	main := fmt.Sprintf(`compatibility_level = 3.6
queue_directory = %s
data_directory = %s
mail_owner = postfix
setgid_group = postdrop
myhostname = %s
mydomain = example.test
myorigin = example.test
mydestination =
relay_domains = example.test
mynetworks =
inet_interfaces = all
inet_protocols = all
smtpd_peername_lookup = no
default_transport = discard
relay_transport = discard
alias_maps =
alias_database =
local_recipient_maps =
biff = no
maillog_file = %s
maillog_file_prefixes = %s
smtpd_banner = $myhostname ESMTP
`, p.QueueDir, data, c.Hostname, p.Log, dir) + PostlogMain + c.Main
	if err := os.WriteFile(filepath.Join(p.Etc, "main.cf"), []byte(main), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(p.Etc, "master.cf"), []byte(fmt.Sprintf(masterCF, c.Listen)+c.Master), 0o644); err != nil {
		t.Fatal(err)
	}
	ServePostlog(t, p.QueueDir, p.Log)
	// Registered before the start: a start that hangs or fails half-way
	// still leaves nothing running.
	t.Cleanup(func() {
		if err := StopPostfix(p.Etc, p.QueueDir); err != nil {
			t.Logf("postfix stop: %v", err)
		}
		if t.Failed() {
			b, _ := os.ReadFile(p.Log)
			t.Logf("postfix log %s:\n%s", p.Log, b)
		}
	})
	if err := RunDaemon(Command(c.Netns, PostfixBin+"/postfix", "-c", p.Etc, "start")); err != nil {
		l, _ := os.ReadFile(p.Log)
		t.Fatalf("postfix start: %v\nmaillog:\n%s", err, l)
	}
	return p
}

// StopTimeout bounds how long a test waits for a daemon it started to stop
// before killing it.
const StopTimeout = 30 * time.Second

// StopPostfix stops the Postfix instance configured in etc, whose queue
// directory is queueDir: `postfix stop`, bounded by StopTimeout, then
// SIGKILL to whatever is left of the master's process group (the master
// runs its own session; every daemon it starts is in it). A test's Postfix
// must end with the test even when it is stuck: a master blocked on its
// log socket made `postfix stop` (which logs through the same socket) and
// the whole test binary hang for 15 minutes.
func StopPostfix(etc, queueDir string) error {
	ctx, cancel := context.WithTimeout(context.Background(), StopTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, PostfixBin+"/postfix", "-c", etc, "stop")
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		err = fmt.Errorf("%w\n%s", err, out)
	}
	if kerr := killGroupFromPIDFile(filepath.Join(queueDir, "pid", "master.pid"), "MAIL_CONFIG="+etc); kerr != nil && err == nil {
		err = kerr
	}
	return err
}

// killGroupFromPIDFile kills (SIGKILL) the process whose pid the file
// holds and its process group, if it still runs and its environment or
// its command line holds marker (NAME=value, an argument), and waits (up
// to 10 s) until it is gone. A missing file means nothing runs.
func killGroupFromPIDFile(file, marker string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return nil
	}
	// The pid file outlives the master: only a process that is this
	// instance's master (its environment names etc) is killed, never a
	// process that reused the pid.
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	args, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !bytes.Contains(append(env, args...), []byte(marker+"\x00")) {
		return nil // gone, or not this instance
	}
	syscall.Kill(-pid, syscall.SIGKILL)
	syscall.Kill(pid, syscall.SIGKILL)
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if syscall.Kill(pid, 0) != nil {
			return fmt.Errorf("pid %d (%s) had to be killed", pid, file)
		}
	}
	return fmt.Errorf("pid %d (%s) still there after SIGKILL", pid, file)
}

// LookupUser returns the uid and gid of a system user.
func LookupUser(name string) (uid, gid int, err error) {
	u, err := user.Lookup(name)
	if err != nil {
		return 0, 0, err
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return uid, gid, nil
}

// QueueEntry is one message of `postqueue -j`.
type QueueEntry struct {
	QueueName  string `json:"queue_name"`
	QueueID    string `json:"queue_id"`
	Sender     string `json:"sender"`
	Recipients []struct {
		Address string `json:"address"`
		Reason  string `json:"delay_reason"`
	} `json:"recipients"`
}

// Queue lists the instance's queue (postqueue -j).
func (p *Postfix) Queue(t testing.TB) []QueueEntry {
	t.Helper()
	out, err := exec.Command(PostfixBin+"/postqueue", "-c", p.Etc, "-j").Output()
	if err != nil {
		t.Fatalf("postqueue -j: %v", err)
	}
	var q []QueueEntry
	for _, line := range bytes.Split(out, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var e QueueEntry
		if err := json.Unmarshal(line, &e); err != nil {
			t.Fatalf("postqueue -j line %q: %v", line, err)
		}
		q = append(q, e)
	}
	return q
}

// Sendmail submits msg with Postfix's sendmail(1) as the given uid and
// gid, the way a web script running as that user would (see AsUser).
func (p *Postfix) Sendmail(uid, gid int, from string, to []string, msg []byte) ([]byte, error) {
	script := fmt.Sprintf("printf '%%s' %s | %s/sendmail -i -f %s -- %s", shellQuote(string(msg)), PostfixBin, shellQuote(from), strings.Join(quoteAll(to), " "))
	return p.AsUser(uid, gid, script)
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = shellQuote(s)
	}
	return out
}

// WaitLog waits until the instance's log matches every pattern and
// returns the log.
func (p *Postfix) WaitLog(t testing.TB, patterns ...string) string {
	t.Helper()
	return WaitFile(t, p.Log, patterns...)
}

// WaitFile waits (up to 90 seconds) until file matches every pattern.
func WaitFile(t testing.TB, file string, patterns ...string) string {
	t.Helper()
	res := make([]*regexp.Regexp, len(patterns))
	for i, p := range patterns {
		res[i] = regexp.MustCompile(p)
	}
	var b []byte
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		b, _ = os.ReadFile(file)
		ok := true
		for _, re := range res {
			if !re.Match(b) {
				ok = false
				break
			}
		}
		if ok {
			return string(b)
		}
	}
	t.Fatalf("%s lacks %q:\n%s", file, patterns, b)
	return ""
}

// Eventually polls cond every 100ms for up to 90 seconds (readiness of
// separate processes, not a timing assertion).
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// AsUser runs a shell script as uid and gid in a private mount namespace
// where /etc/postfix is this instance's configuration, so that its
// sendmail(1) and postdrop submit to this instance (an unprivileged
// sendmail accepts no other configuration directory). It returns the
// script's output.
func (p *Postfix) AsUser(uid, gid int, script string) ([]byte, error) {
	inner := fmt.Sprintf("mount --bind %s /etc/postfix && exec setpriv --reuid=%d --regid=%d --clear-groups sh -c %s",
		shellQuote(p.Etc), uid, gid, shellQuote(script))
	return exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", inner).CombinedOutput()
}
