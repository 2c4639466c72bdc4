package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/hosttest"
	"github.com/relayguard/relayguard/internal/logwatch"
	"github.com/relayguard/relayguard/internal/store"
)

// saslHost is Postfix with Dovecot SASL (and Dovecot's IMAP) running inside
// a network namespace the test creates, logging to files in its directory:
// Postfix to maillog (maillog_file), Dovecot to dovecot.log (log_path),
// with auth_verbose = yes, so that each failed login is logged by Dovecot's
// auth process and by Postfix or the IMAP login process.
type saslHost struct {
	ns                 *guardNS
	dir                string
	maillog, dovecotLg string
	smtp, imap         string
}

func needSASLHost(t *testing.T) {
	t.Helper()
	for _, p := range []string{"/usr/lib/postfix/sbin/master", "/usr/sbin/dovecot", "/usr/lib/dovecot/imap-login"} {
		if _, err := os.Stat(p); err != nil || os.Geteuid() != 0 {
			if os.Getenv("CI") == "true" {
				t.Fatalf("CI: needs root and %s (packages postfix, dovecot-core, dovecot-imapd)", p)
			}
			t.Skipf("needs root and %s", p)
		}
	}
}

func startSASLHost(t *testing.T, clients ...string) *saslHost {
	t.Helper()
	needSASLHost(t)
	const server = "198.51.100.1"
	h := &saslHost{ns: newGuardNS(t, append([]string{server}, clients...)...),
		smtp: server + ":25", imap: server + ":143"}
	// Not t.TempDir(): Postfix's daemons run as user postfix and Dovecot's
	// login processes as dovenull; both must reach their files. Short:
	// Dovecot's unix sockets live under it.
	dir, err := os.MkdirTemp("", "rgsasl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	h.dir, h.maillog, h.dovecotLg = dir, filepath.Join(dir, "maillog"), filepath.Join(dir, "dovecot.log")

	// Dovecot: the auth service for Postfix and IMAP, inside the namespace.
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "users"), []byte(fmt.Sprintf("alice@example.test:{PLAIN}correct horse:%s:%s::%s\n", nobody.Uid, nobody.Gid, dir)), 0o644)
	dconf := filepath.Join(dir, "dovecot.conf")
	os.WriteFile(dconf, []byte(fmt.Sprintf(`base_dir = %[1]s/run
state_dir = %[1]s/state
instance_name = rgsasl-%[2]d
log_path = %[1]s/dovecot.log
protocols = imap
listen = %[3]s
ssl = no
disable_plaintext_auth = no
auth_verbose = yes
auth_mechanisms = plain login
mail_location = maildir:%[1]s/mail
passdb {
  driver = passwd-file
  args = %[1]s/users
}
userdb {
  driver = passwd-file
  args = %[1]s/users
}
service auth {
  unix_listener auth-postfix {
    mode = 0666
  }
}
`, dir, os.Getpid(), server)), 0o644)
	dc := exec.Command("ip", "netns", "exec", h.ns.name, "/usr/sbin/dovecot", "-F", "-c", dconf)
	var dout syncBuffer
	dc.Stdout, dc.Stderr = &dout, &dout
	dc.WaitDelay = 5 * time.Second // a child left holding the output does not hold Wait
	if err := dc.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		dc.Process.Signal(os.Interrupt)
		dc.Wait()
	})

	// Postfix with smtpd_sasl_type = dovecot, inside the namespace.
	etc, queue, data := filepath.Join(dir, "etc"), filepath.Join(dir, "queue"), filepath.Join(dir, "data")
	for _, d := range []string{etc, queue, data} {
		os.MkdirAll(d, 0o755)
	}
	pf, err := user.Lookup("postfix")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(pf.Uid)
	os.Chown(data, uid, -1)
	os.WriteFile(filepath.Join(etc, "main.cf"), []byte(fmt.Sprintf(`compatibility_level = 3.6
queue_directory = %[1]s
data_directory = %[2]s
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.example.test
mydestination =
mynetworks =
inet_interfaces = %[3]s
inet_protocols = ipv4
smtpd_peername_lookup = no
alias_maps =
alias_database =
maillog_file = %[4]s
maillog_file_prefixes = %[5]s
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = %[5]s/run/auth-postfix
`, queue, data, server, h.maillog, dir)), 0o644)
	os.WriteFile(filepath.Join(etc, "master.cf"), []byte(`smtp inet n - n - - smtpd
rewrite unix - - n - - trivial-rewrite
cleanup unix n - n - 0 cleanup
anvil unix - - n - 1 anvil
proxymap unix - - n - - proxymap
postlog unix-dgram n - n - 1 postlogd
`), 0o644)
	if out, err := exec.Command("ip", "netns", "exec", h.ns.name, "/usr/sbin/postfix", "-c", etc, "check").CombinedOutput(); err != nil {
		t.Fatalf("postfix check: %v\n%s", err, out)
	}
	pm := exec.Command("ip", "netns", "exec", h.ns.name, "/usr/lib/postfix/sbin/master", "-c", etc, "-d")
	var pout syncBuffer
	pm.Stdout, pm.Stderr = &pout, &pout
	pm.WaitDelay = 5 * time.Second
	if err := pm.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		pm.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { pm.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(hosttest.StopTimeout):
			pm.Process.Kill()
			<-done
		}
		// Whatever the master started and left behind.
		hosttest.StopPostfix(etc, queue)
	})
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(h.maillog)
			d, _ := os.ReadFile(h.dovecotLg)
			t.Logf("postfix:\n%s%s\ndovecot:\n%s%s", pout.String(), b, dout.String(), d)
		}
	})
	for _, a := range []string{h.smtp, h.imap} {
		waitUntil(t, "a listener on "+a, func() bool {
			c, err := h.ns.tryDial(server, a)
			if err == nil {
				c.Close()
			}
			return err == nil
		})
	}
	return h
}

// smtpAuth makes one SMTP session from src with one AUTH PLAIN per password.
func (h *saslHost) smtpAuth(t *testing.T, src, user string, passwords ...string) {
	c := h.ns.dial(t, src, h.smtp)
	defer c.Close()
	s := &smtpClient{t: t, c: c, r: bufio.NewReader(c)}
	s.reply()
	s.cmd("EHLO client.test")
	for _, pw := range passwords {
		r := s.cmd("AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+pw)))
		if !strings.HasPrefix(r, "535 ") && !strings.HasPrefix(r, "454 ") {
			t.Errorf("AUTH from %s as %s: %q, want a failure", src, user, r)
		}
	}
	s.cmd("QUIT")
}

// imapLogin makes one IMAP session from src with one LOGIN per password.
func (h *saslHost) imapLogin(t *testing.T, src, user string, passwords ...string) {
	c := h.ns.dial(t, src, h.imap)
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	r := bufio.NewReader(c)
	r.ReadString('\n')
	for i, pw := range passwords {
		fmt.Fprintf(c, "a%d LOGIN %s \"%s\"\r\n", i, user, pw)
		l, err := r.ReadString('\n')
		if err != nil || !strings.HasPrefix(l, fmt.Sprintf("a%d NO ", i)) {
			t.Errorf("IMAP LOGIN from %s: %q %v, want NO", src, l, err)
		}
	}
	fmt.Fprintf(c, "z LOGOUT\r\n")
	r.ReadString('\n')
}

// TestPostfixDovecotSASLCountedOnce (issue 12 item 9): real Postfix 3.7 with
// Dovecot SASL and Dovecot's IMAP, auth_verbose = yes, log every failed
// login twice (Dovecot's auth process, then Postfix's SASL warning or the
// IMAP login process's summary), into two files. With maxretry = 3, an
// attacker who guesses two passwords is not banned (counted line by line it
// had four failures), and one who guesses three — one over SMTP, two over
// IMAP — is, by the live watch following both files and by --replay.
func TestPostfixDovecotSASLCountedOnce(t *testing.T) {
	t.Parallel()
	const two, three = "198.51.100.2", "198.51.100.3"
	h := startSASLHost(t, two, three)
	bin := testBinary(t)
	data := filepath.Join(h.dir, "rg")
	conf := filepath.Join(h.dir, "rg.toml")
	os.WriteFile(conf, []byte(fmt.Sprintf(`own_addresses = ["198.51.100.1"]
[guard]
maxretry = 3
findtime = "1h"
subnet = []
files = [%q, %q]
[firewall]
backend = "none"
`, h.maillog, h.dovecotLg)), 0o644)
	w := startWatch(t, bin, conf, data)

	var wg sync.WaitGroup
	wg.Go(func() { h.smtpAuth(t, two, "alice@example.test", "guess1", "guess2") })
	wg.Go(func() {
		h.smtpAuth(t, three, "alice@example.test", "guess1")
		h.imapLogin(t, three, "alice@example.test", "guess2", "guess3")
	})
	wg.Wait()
	// Every attempt reached Dovecot's verdict (Postfix may have given up
	// waiting for a late one and logged "Connection lost" instead).
	waitUntil(t, "the logs of all five attempts", func() bool {
		d, _ := os.ReadFile(h.dovecotLg)
		m, _ := os.ReadFile(h.maillog)
		return strings.Count(string(d), "Password mismatch") == 5 && strings.Contains(string(d), "(auth failed, 2 attempts") &&
			strings.Contains(string(m), "disconnect from unknown["+two+"]") && strings.Contains(string(m), "disconnect from unknown["+three+"]")
	})
	bans := func() string {
		out, err := exec.Command(bin, "--config", conf, "--data-dir", data, "ban", "list").CombinedOutput()
		if err != nil {
			t.Fatalf("ban list: %v\n%s", err, out)
		}
		return string(out)
	}
	waitUntil(t, "the three-attempt attacker banned", func() bool { return strings.Contains(bans(), three+"/32") })
	// Wait until watch has read both files to their end (it saves its
	// positions every second), so every line of the two-attempt attacker
	// was counted too.
	db, err := store.OpenSQLite(context.Background(), data)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	st, err := logwatch.NewSQLiteState(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "watch to read both logs to their end", func() bool {
		for _, f := range []string{h.maillog, h.dovecotLg} {
			pos, _, err := st.LoadPosition(context.Background(), "file:"+f)
			fi, _ := os.Stat(f)
			if err != nil || pos.Offset != fi.Size() {
				return false
			}
		}
		return true
	})
	w.stop(t)
	if b := bans(); strings.Contains(b, two) {
		t.Fatalf("two failed logins banned with maxretry = 3 (counted twice):\n%s", b)
	}
	if !strings.Contains(w.stderr.String(), "3 failures in 1h0m0s") {
		t.Errorf("the ban does not name three failures:\n%s", w.stderr)
	}

	// The same verdict from --replay, Postfix's file before Dovecot's.
	out, err := exec.Command(bin, "--config", conf, "--data-dir", filepath.Join(h.dir, "replay"), "watch", "--replay", h.maillog, h.dovecotLg).CombinedOutput()
	if err != nil {
		t.Fatalf("watch --replay: %v\n%s", err, out)
	}
	if n := strings.Count(string(out), "would ban "); n != 1 || !strings.Contains(string(out), "would ban "+three+"/32") {
		t.Fatalf("replay: want only %s banned:\n%s", three, out)
	}
}
