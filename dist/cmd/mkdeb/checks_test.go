package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/smtp"
	"net/textproto"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// checkUnits runs systemd-analyze verify on every unit and measures each
// service's exposure with systemd-analyze security, which must be the
// figure docs/packaging.md records.
func checkUnits(t *testing.T, sb *sandbox, root string) {
	for _, u := range units {
		out, errOut, err := sb.try(nil, "systemd-analyze", "verify", "/lib/systemd/system/"+u)
		msg := strings.TrimSpace(out + errOut)
		if err != nil || msg != "" {
			t.Errorf("systemd-analyze verify %s: %v\n%s", u, err, msg)
		}
		// verify checks that the binary exists; this, that it has the
		// subcommand and the flags the unit gives it.
		if exec := strings.Fields(unitKeys(sb.sh("cat /lib/systemd/system/" + u))["ExecStart"]); len(exec) > 0 {
			if out, errOut, err := sb.try(nil, append(exec, "--help")...); err != nil {
				t.Errorf("%s: %s --help: %v\n%s%s", u, strings.Join(exec, " "), err, out, errOut)
			}
		}
	}

	doc, err := os.ReadFile(filepath.Join(root, "docs", "packaging.md"))
	if err != nil {
		t.Fatal(err)
	}
	exposure := regexp.MustCompile(`Overall exposure level for (\S+): ([0-9.]+) (\S+)`)
	for _, u := range units {
		if !strings.HasSuffix(u, ".service") {
			continue
		}
		out, _, err := sb.try(nil, "systemd-analyze", "security", "--offline=yes", "/lib/systemd/system/"+u)
		m := exposure.FindStringSubmatch(out)
		if err != nil || m == nil {
			t.Errorf("systemd-analyze security %s: %v\n%s", u, err, out)
			continue
		}
		t.Logf("%s: exposure %s %s", u, m[2], m[3])
		score, _ := strconv.ParseFloat(m[2], 64)
		if score > 3 {
			t.Errorf("%s: exposure %s, want at most 3.0", u, m[2])
		}
		row := fmt.Sprintf("| `%s` | %s %s |", u, m[2], m[3])
		if !bytes.Contains(doc, []byte(row)) {
			t.Errorf("docs/packaging.md does not record %q", row)
		}
	}
}

// checkManuals renders every installed manual page with man -l as lintian
// does, finds the pages by name, completes through bash-completion's loader
// and rotates a log with the installed logrotate file.
func checkManuals(t *testing.T, sb *sandbox) {
	out := sb.sh(`n=0
for p in $(dpkg -L relayguard | grep '^/usr/share/man/.*\.gz$'); do
	n=$((n+1))
	w=$(MANWIDTH=80 man --warnings -E UTF-8 -l -Tutf8 -Z "$p" 2>&1 >/dev/null)
	[ -z "$w" ] || printf 'WARN %s: %s\n' "$p" "$w"
done
echo "pages $n"`)
	if strings.Contains(out, "WARN") {
		t.Errorf("man warns:\n%s", out)
	}
	if n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(out[strings.LastIndex(out, "pages "):], "pages "))); n < 20 {
		t.Errorf("only %d manual pages installed", n)
	}
	if p := strings.TrimSpace(sb.sh(`man -w relayguard`)); p != "/usr/share/man/man8/relayguard.8.gz" {
		t.Errorf("man -w relayguard = %q", p)
	}
	if p := strings.TrimSpace(sb.sh(`man -w 5 relayguard.toml`)); p != "/usr/share/man/man5/relayguard.toml.5.gz" {
		t.Errorf("man -w 5 relayguard.toml = %q", p)
	}
	if text := sb.sh(`MANWIDTH=100 man -P cat relayguard-serve 2>/dev/null`); !strings.Contains(text, "relayguard serve") || !strings.Contains(text, "/etc/relayguard/relayguard.toml") {
		t.Errorf("man relayguard-serve does not show the packaged --config default:\n%s", text)
	}

	out = sb.sh(`bash -c '. /usr/share/bash-completion/bash_completion
_completion_loader relayguard
complete -p relayguard
COMP_WORDS=(relayguard us); COMP_CWORD=1; COMP_LINE="relayguard us"; COMP_POINT=13
__start_relayguard 2>/dev/null; echo "reply: ${COMPREPLY[*]}"'`)
	if !strings.Contains(out, "__start_relayguard relayguard") || !strings.Contains(out, "reply: user") {
		t.Errorf("bash completion from /usr/share/bash-completion/completions/relayguard:\n%s", out)
	}

	// A log written where the logrotate file says is rotated as relayguard.
	out = sb.sh(`setpriv --reuid=relayguard --regid=relayguard --init-groups sh -c 'echo line-one > /var/log/relayguard/serve.log'
logrotate -f -s /tmp/logrotate.state /etc/logrotate.d/relayguard
stat -c '%n %U %s' /var/log/relayguard/serve.log /var/log/relayguard/serve.log.1
cat /var/log/relayguard/serve.log.1`)
	if !strings.Contains(out, "/var/log/relayguard/serve.log relayguard 0") || !strings.Contains(out, "serve.log.1 relayguard") || !strings.Contains(out, "line-one") {
		t.Errorf("logrotate did not rotate /var/log/relayguard/serve.log:\n%s", out)
	}
	sb.sh(`rm -f /var/log/relayguard/*`)
}

// unitKeys reads Key=Value lines of a unit file (later ones win).
func unitKeys(text string) map[string]string {
	keys := map[string]string{}
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == '[' {
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok {
			keys[k] = v
		}
	}
	return keys
}

// checkServe starts relayguard serve as relayguard.service starts it: the
// unit's ExecStart, as its User and Group with its UMask and no
// capabilities, on the sockets its socket units describe, passed by
// systemd-socket-activate as systemd passes them (LISTEN_FDS,
// LISTEN_FDNAMES). It then sends mail over SMTP and checks where the state
// went.
func checkServe(t *testing.T, sb *sandbox) {
	begin := time.Now()
	logf := func(format string, args ...any) {
		t.Logf("%5.1fs "+format, append([]any{time.Since(begin).Seconds()}, args...)...)
	}
	svc := unitKeys(sb.sh(`cat /lib/systemd/system/relayguard.service`))
	if svc["User"] != "relayguard" || svc["Group"] != "relayguard" || svc["UMask"] == "" || svc["ExecStart"] == "" {
		t.Fatalf("relayguard.service: %v", svc)
	}
	activate := []string{"systemd-socket-activate"}
	var names []string
	for _, s := range strings.Fields(svc["Sockets"]) {
		sock := unitKeys(sb.sh(`cat /lib/systemd/system/` + s))
		activate = append(activate, "-l", sock["ListenStream"])
		names = append(names, sock["FileDescriptorName"])
	}
	if len(names) != 3 {
		t.Fatalf("relayguard.service Sockets=%q", svc["Sockets"])
	}
	activate = append(activate, "--fdname="+strings.Join(names, ":"), "--",
		"/bin/sh", "-c", "umask "+svc["UMask"]+`; exec "$@"`, "sh",
		"setpriv", "--reuid="+svc["User"], "--regid="+svc["Group"], "--init-groups", "--no-new-privs", "--bounding-set=-all")
	activate = append(activate, strings.Fields(svc["ExecStart"])...)

	logf("making an account")
	// An account to mail, made the way an operator makes it: as root, which
	// the commands that write state turn into the data directory's owner.
	sb.run(strings.NewReader("a long password 1\n"), "relayguard", "user", "add", "alice", "--password-stdin")
	sb.run(nil, "relayguard", "user", "addr", "add", "alice", "alice@localhost")
	if out := sb.sh(`find /var/lib/relayguard ! -user relayguard`); strings.TrimSpace(out) != "" {
		t.Errorf("root's user add left files relayguard does not own:\n%s", out)
	}
	sb.sh(`touch /var/tmp/relayguard-serve-start; sleep 1`)

	cmd := sb.command(activate...)
	cmd.Env = append(cmd.Env, "HOME=/var/lib/relayguard", "USER=relayguard", "LOGNAME=relayguard", "SHELL=/usr/sbin/nologin")
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		if t.Failed() {
			t.Logf("serve's output:\n%s", log.String())
		}
	}()

	logf("serve started")
	// The first connection makes systemd-socket-activate start serve, which
	// then answers it: the MX port, an outsider, a local recipient.
	c := dialSMTP(t, sb)
	logf("banner")
	if err := c.Hello("client.example.net"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("bob@example.net"); err != nil {
		t.Fatal(err)
	}
	err := c.Rcpt("victim@example.org")
	if te, ok := err.(*textproto.Error); !ok || te.Code != 554 {
		t.Errorf("relay attempt to victim@example.org: %v, want 554", err)
	}
	if err := c.Reset(); err != nil {
		t.Fatal(err)
	}
	logf("relay attempt refused")
	token := fmt.Sprintf("packaged-serve-%d", time.Now().UnixNano())
	if err := c.Mail("bob@example.net"); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("alice@localhost"); err != nil {
		t.Fatalf("RCPT alice@localhost: %v", err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(w, "From: bob@example.net\r\nTo: alice@localhost\r\nSubject: %s\r\n\r\n%s\r\n", token, token)
	if err := w.Close(); err != nil {
		t.Fatalf("end of DATA: %v", err)
	}
	c.Quit()
	logf("message sent")

	// The admin listener answers inside the sandbox.
	var health string
	err = sb.inNetns(func() error {
		hc, err := net.DialTimeout("tcp", "127.0.0.1:9025", 5*time.Second)
		if err != nil {
			return err
		}
		defer hc.Close()
		hc.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(hc, "GET /healthz HTTP/1.0\r\n\r\n")
		b, err := io.ReadAll(bufio.NewReader(hc))
		health = string(b)
		return err
	})
	if err != nil || !strings.HasSuffix(health, "\r\n\r\nok\n") {
		t.Errorf("GET /healthz: %v %q", err, health)
	}

	// The message and all serve wrote are under /var/lib/relayguard,
	// belong to relayguard and are not world-readable (UMask=0027).
	out := sb.sh(`grep -rl ` + token + ` /var/lib/relayguard | while read f; do stat -c '%n %U %a' "$f"; done`)
	if strings.TrimSpace(out) == "" {
		t.Errorf("the accepted message is nowhere under /var/lib/relayguard")
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 || f[1] != "relayguard" || f[2][len(f[2])-1] != '0' {
			t.Errorf("message file %q: want owner relayguard and no access for others", line)
		}
	}
	// Whatever anyone wrote in the sandbox is in the overlay's upper layer
	// (or in its /tmp, /run, /dev/shm).
	uid := strings.TrimSpace(sb.sh(`id -u relayguard`))
	upper := sb.upper()
	find := sb.outside("find", upper, sb.root+"/tmp", sb.root+"/run", sb.root+"/dev/shm",
		"-newer", upper+"/var/tmp/relayguard-serve-start", "-uid", uid, "!", "-path", upper+"/var/lib/relayguard*")
	if out, err := find.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "" {
		t.Errorf("serve wrote outside /var/lib/relayguard (%v):\n%s", err, out)
	}

	pid, err := serveHostPID(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}

	// systemctl reload runs the unit's ExecReload with $MAINPID: the
	// configuration is reread while a session stays open.
	logf("mail accepted; reloading")
	reload := strings.Fields(svc["ExecReload"])
	if len(reload) == 0 {
		t.Fatal("relayguard.service has no ExecReload")
	}
	open := dialSMTP(t, sb)
	for i, a := range reload {
		if a == "$MAINPID" {
			reload[i] = strconv.Itoa(pidInNamespace(t, pid))
		}
	}
	sb.run(nil, reload...)
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(log.String(), "configuration reloaded"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no reload within 30s of %v", reload)
		}
	}
	if err := open.Noop(); err != nil {
		t.Errorf("a session open across the reload: NOOP: %v", err)
	}
	open.Quit()
	again := dialSMTP(t, sb)
	if err := again.Hello("client.example.net"); err != nil {
		t.Errorf("a session after the reload: %v", err)
	}
	again.Quit()

	// systemd stops the unit with SIGTERM; serve exits cleanly.
	logf("stopping serve")
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		logf("serve stopped")
		if err != nil {
			t.Errorf("serve after SIGTERM: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Error("serve did not stop within 60s of SIGTERM")
	}
	if !strings.Contains(log.String(), "shutting down") {
		t.Errorf("serve's log does not say it shut down:\n%s", log.String())
	}
}

// dialSMTP connects to port 25 in the sandbox (retrying while nothing
// listens yet) and reads the banner.
func dialSMTP(t *testing.T, sb *sandbox) *smtp.Client {
	t.Helper()
	var conn net.Conn
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := sb.inNetns(func() (err error) { conn, err = net.DialTimeout("tcp", "127.0.0.1:25", 5*time.Second); return })
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("port 25: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	c, err := smtp.NewClient(conn, "localhost")
	if err != nil {
		t.Fatalf("banner: %v", err)
	}
	return c
}

// pidInNamespace is the PID a host process has in its own (the sandbox's)
// PID namespace: the last field of NSpid.
func pidInNamespace(t *testing.T, hostPID int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", hostPID))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "NSpid:" {
			n, err := strconv.Atoi(f[len(f)-1])
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no NSpid in /proc/%d/status", hostPID)
	return 0
}

// serveHostPID is the host PID of the program nsenter (pid) runs: nsenter
// forks it into the PID namespace; chroot, systemd-socket-activate, sh and
// setpriv each exec the next, so the child is relayguard serve.
func serveHostPID(nsenter int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", nsenter, nsenter))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) != 1 {
		return 0, fmt.Errorf("nsenter %d has children %q", nsenter, b)
	}
	return strconv.Atoi(f[0])
}

// purge purges the package and checks that nothing is left but what Debian
// keeps: the relayguard user and group (files elsewhere may still belong to
// them) and the records of dpkg, apt and debconf.
func purge(t *testing.T, sb *sandbox) {
	t.Helper()
	sb.run(nil, "apt-get", "purge", "-y", "-q", "relayguard")
	if status := strings.TrimSpace(sb.sh(`dpkg-query -W -f='${db:Status-Status}' relayguard 2>/dev/null || true`)); status != "not-installed" && status != "" {
		t.Errorf("after purge relayguard is %q", status)
	}
	if out := sb.sh(`ls -d /etc/relayguard /var/lib/relayguard /var/log/relayguard /usr/share/doc/relayguard /usr/share/relayguard \
	/lib/systemd/system/relayguard* /etc/systemd/system/*/relayguard* /var/lib/systemd/deb-systemd-helper-*/*relayguard* \
	/var/lib/systemd/deb-systemd-helper-*/*/relayguard* /etc/logrotate.d/relayguard /etc/fail2ban/*/relayguard.conf 2>/dev/null || true`); strings.TrimSpace(out) != "" {
		t.Errorf("left after purge:\n%s", out)
	}
	if out := sb.sh(`getent passwd relayguard || true`); !strings.HasPrefix(out, "relayguard:") {
		t.Errorf("purge removed the relayguard user; Debian keeps it: %q", out)
	}

	// Everything the sandbox's upper layer holds was written since it
	// started: it must be dpkg's and apt's records, the user, or files
	// another package's removal left.
	upper := sb.upper()
	b, err := sb.outside("find", upper, "-mindepth", "1",
		"(", "-type", "f", "-o", "-type", "l", "-o", "-type", "d", ")", "-printf", "%y %P\n").Output()
	if err != nil {
		t.Fatalf("find %s: %v", upper, err)
	}
	kept := regexp.MustCompile(`^(etc/(passwd|group|shadow|gshadow)-?|etc/\.pwd\.lock|etc/init\.d/postfix|usr/sbin/policy-rc\.d|var/lib/dpkg/.*|var/log/(dpkg\.log|apt/.*|alternatives\.log)|var/cache/(apt|debconf|man|ldconfig)/.*|var/lib/apt/.*|var/lib/systemd/deb-systemd-helper-(enabled|masked)|var/tmp/relayguard-serve-start|var/lib/postfix/.*|etc/postfix/.*|tmp/.*)$`)
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		kind, p, _ := strings.Cut(line, " ")
		if p == "" || kept.MatchString(p) {
			continue
		}
		if kind == "d" {
			// A directory copied up because something inside changed is
			// the host's own; only new directories are left-overs.
			if _, err := os.Stat("/" + p); err == nil {
				continue
			}
		}
		t.Errorf("left after purge: /%s (%s)", p, kind)
	}
}
