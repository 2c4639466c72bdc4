package hosttest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// DovecotConfig describes a private Dovecot used as Postfix's SASL
// server (smtpd_sasl_type = dovecot).
type DovecotConfig struct {
	// Netns runs it inside this network namespace ("": the host's).
	Netns string
	// Users maps user names to plaintext passwords (passwd-file).
	Users map[string]string
	// Extra is appended to dovecot.conf.
	Extra string
}

// Dovecot is a running private Dovecot.
type Dovecot struct {
	Dir string
	// AuthSocket is the SASL socket for Postfix's smtpd_sasl_path.
	AuthSocket string
	// Log has every line, with auth_verbose failures
	// ("auth: passwd-file(bob,192.0.2.7): Password mismatch").
	Log  string
	conf string
}

// StartDovecot starts an auth-only Dovecot (no IMAP/POP3 listeners).
func StartDovecot(t testing.TB, c DovecotConfig) *Dovecot {
	t.Helper()
	NeedRoot(t, "dovecot")
	dir := TempDir(t, "rg-dovecot-")
	d := &Dovecot{Dir: dir, AuthSocket: filepath.Join(dir, "auth"), Log: filepath.Join(dir, "dovecot.log"), conf: filepath.Join(dir, "dovecot.conf")}
	for _, sub := range []string{"run", "state"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var names []string
	for u := range c.Users {
		names = append(names, u)
	}
	sort.Strings(names)
	var pw strings.Builder
	for _, u := range names {
		fmt.Fprintf(&pw, "%s:{PLAIN}%s\n", u, c.Users[u])
	}
	passwd := filepath.Join(dir, "passwd")
	if err := os.WriteFile(passwd, []byte(pw.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`base_dir = %[1]s/run
state_dir = %[1]s/state
log_path = %[2]s
protocols =
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_verbose = yes
auth_failure_delay = 0
default_login_user = dovenull
default_internal_user = dovecot
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%%u %[3]s
}
userdb {
  driver = static
  args = uid=dovecot gid=dovecot home=%[1]s/home/%%u
}
service auth {
  unix_listener %[4]s {
    mode = 0666
  }
}
`, dir, d.Log, passwd, d.AuthSocket) + c.Extra
	if err := os.WriteFile(d.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	// Registered before the start: whatever started is stopped.
	t.Cleanup(func() {
		if err := d.stop(); err != nil {
			t.Logf("dovecot stop: %v", err)
		}
	})
	if err := RunDaemon(Command(c.Netns, "dovecot", "-c", d.conf)); err != nil {
		l, _ := os.ReadFile(d.Log)
		t.Fatalf("dovecot: %v\n%s", err, l)
	}
	Eventually(t, "dovecot's auth socket", func() bool {
		_, err := os.Stat(d.AuthSocket)
		return err == nil
	})
	return d
}

// PostfixSASL is the main.cf snippet that makes Postfix authenticate
// through d.
func (d *Dovecot) PostfixSASL() string {
	return fmt.Sprintf(`smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = %s
`, d.AuthSocket)
}

// stop runs `doveadm stop`, bounded by StopTimeout, then kills (SIGKILL)
// whatever is left of the master's process group.
func (d *Dovecot) stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), StopTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "doveadm", "-c", d.conf, "stop")
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		err = fmt.Errorf("doveadm stop: %w\n%s", err, out)
	}
	if kerr := killGroupFromPIDFile(filepath.Join(d.Dir, "run", "master.pid"), d.conf); kerr != nil && err == nil {
		err = kerr
	}
	return err
}
