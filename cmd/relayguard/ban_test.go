package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/relayguard/relayguard/internal/redistest"
)

func runRG(t *testing.T, bin string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

func TestBanCLI(t *testing.T) {
	bin := testBinary(t)
	data := filepath.Join(t.TempDir(), "data")
	rg := func(args ...string) (string, string, int) {
		return runRG(t, bin, append([]string{"--data-dir", data, "--create-data-dir"}, args...)...)
	}
	if out, errOut, code := rg("ban", "add", "212.70.149.0/24", "--for", "2d", "--reason", "SASL brute force"); code != 0 || !strings.Contains(out, "banned 212.70.149.0/24 until") {
		t.Fatalf("ban add: %d %q %q", code, out, errOut)
	}
	if out, _, code := rg("ban", "add", "2001:db8:bad::/48"); code != 0 || !strings.Contains(out, "permanently") {
		t.Fatalf("ban add v6: %d %q", code, out)
	}
	// A bare address is a /32; a host part is masked.
	if _, _, code := rg("ban", "add", "198.51.100.7"); code != 0 {
		t.Fatal("ban add address failed")
	}
	out, _, code := rg("ban", "list", "--json")
	if code != 0 {
		t.Fatalf("ban list: %d", code)
	}
	var list []banJSON
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("ban list --json: %v\n%s", err, out)
	}
	got := map[string]banJSON{}
	for _, b := range list {
		got[b.Prefix] = b
	}
	if len(got) != 3 || got["212.70.149.0/24"].Until == nil || got["212.70.149.0/24"].Reason != "SASL brute force" ||
		got["2001:db8:bad::/48"].Until != nil || got["198.51.100.7/32"].Source != "manual" {
		t.Fatalf("ban list = %s", out)
	}
	out, _, _ = rg("ban", "list")
	if !strings.Contains(out, "212.70.149.0/24") || !strings.Contains(out, "permanent") {
		t.Fatalf("ban list text: %s", out)
	}
	if out, _, code := rg("ban", "del", "2001:db8:bad::/48"); code != 0 || !strings.Contains(out, "unbanned") {
		t.Fatalf("ban del: %d %s", code, out)
	}
	if _, errOut, code := rg("ban", "del", "2001:db8:bad::/48"); code != 1 || !strings.Contains(errOut, "not banned") {
		t.Fatalf("ban del twice: %d %s", code, errOut)
	}
	out, _, _ = rg("ban", "list", "--json")
	if strings.Contains(out, "2001:db8:bad::/48") || !strings.Contains(out, "212.70.149.0/24") {
		t.Fatalf("after del: %s", out)
	}
	// Bad input is named.
	for _, args := range [][]string{
		{"ban", "add", "212.70.149.300"},
		{"ban", "add", "10.0.0.0/8", "--for", "soon"},
		// 213504 days overflowed time.Duration: a 25-minute ban.
		{"ban", "add", "10.0.0.0/8", "--for", "213504d"},
		{"ban", "add", "127.0.0.1"},
	} {
		_, errOut, code := rg(args...)
		if code == 0 || !strings.Contains(errOut, strings.Split(args[len(args)-1], "/")[0]) {
			t.Errorf("%v: code %d, stderr %q", args, code, errOut)
		}
	}
}

// An IPv4-mapped prefix is the IPv4 prefix, as an IPv4-mapped address is
// the IPv4 address. Before, "ban add ::ffff:127.0.0.1" was refused (never
// banned) while "::ffff:127.0.0.1/128" was accepted, and
// "::ffff:198.51.100.0/120" was listed as a ban that matched no client
// (the guard unmaps every client address before the lookup): a ban that
// fails open and a never-ban check that could be walked around.
func TestBanMappedPrefix(t *testing.T) {
	bin := testBinary(t)
	data := filepath.Join(t.TempDir(), "data")
	rg := func(args ...string) (string, string, int) {
		return runRG(t, bin, append([]string{"--data-dir", data, "--create-data-dir"}, args...)...)
	}
	for _, p := range []string{"::ffff:127.0.0.1/128", "::ffff:127.0.0.0/104", "::ffff:0.0.0.0/96"} {
		if out, errOut, code := rg("ban", "add", p); code != 1 || !strings.Contains(errOut, "never banned") {
			t.Errorf("ban add %s: code %d, %q %q; want refused as never banned", p, code, out, errOut)
		}
	}
	if out, errOut, code := rg("ban", "add", "::ffff:198.51.100.0/120"); code != 0 || !strings.Contains(out, "banned 198.51.100.0/24 ") {
		t.Fatalf("ban add ::ffff:198.51.100.0/120: code %d, %q %q; want 198.51.100.0/24 banned", code, out, errOut)
	}
	if out, errOut, code := rg("ban", "del", "::ffff:198.51.100.0/120"); code != 0 || !strings.Contains(out, "unbanned") {
		t.Fatalf("ban del ::ffff:198.51.100.0/120: code %d, %q %q", code, out, errOut)
	}
	// An IPv6 prefix that only covers the mapped range stays IPv6.
	if out, errOut, code := rg("ban", "add", "2001:db8::ffff:0:0/96"); code != 0 || !strings.Contains(out, "banned 2001:db8::ffff:0:0/96 ") {
		t.Fatalf("ban add 2001:db8::ffff:0:0/96: code %d, %q %q", code, out, errOut)
	}
}

func TestWatchReplay(t *testing.T) {
	bin := testBinary(t)
	dir := t.TempDir()
	var log strings.Builder
	// The example: five addresses of 212.70.149.0/24 failing SASL
	// logins a couple of times each; one address failing often; noise.
	for i, a := range []string{"212.70.149.4", "212.70.149.20", "212.70.149.36", "212.70.149.52", "212.70.149.83"} {
		for k := range 2 {
			fmt.Fprintf(&log, "Nov 23 10:%02d:%02d mx1 postfix/smtpd[%d]: warning: unknown[%s]: SASL LOGIN authentication failed: UGFzc3dvcmQ6\n", i, k, 100+i, a)
		}
	}
	for k := range 6 {
		fmt.Fprintf(&log, "Nov 23 10:10:%02d mx1 postfix/submission/smtpd[200]: warning: unknown[2001:db8:77::9]: SASL PLAIN authentication failed: \n", k)
		fmt.Fprintf(&log, "Nov 23 10:10:%02d mx1 postfix/smtp[300]: 4XyZ: to=<u@example.org>, relay=mx.example.org[192.0.2.10]:25, status=sent (250 ok)\n", k)
	}
	path := filepath.Join(dir, "mail.log")
	if err := os.WriteFile(path, []byte(log.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runRG(t, bin, "--data-dir", filepath.Join(dir, "data"), "watch", "--replay", "--json", path)
	if code != 0 {
		t.Fatalf("watch --replay: %d %s", code, errOut)
	}
	var bans []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var b banJSON
		if err := json.Unmarshal([]byte(l), &b); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		bans = append(bans, b.Prefix)
	}
	if strings.Join(bans, " ") != "212.70.149.0/24 2001:db8:77::9/128" {
		t.Fatalf("bans = %v\n%s", bans, out)
	}
	// Replay touches nothing: no ban is stored.
	out, _, _ = runRG(t, bin, "--data-dir", filepath.Join(dir, "data"), "--create-data-dir", "ban", "list", "--json")
	if strings.TrimSpace(out) != "[]" {
		t.Fatalf("replay stored bans: %s", out)
	}
	// Text output names the prefix and why.
	out, _, _ = runRG(t, bin, "--data-dir", filepath.Join(dir, "data"), "watch", "--replay", path)
	if !strings.Contains(out, "would ban 212.70.149.0/24 for 1h0m0s") || !strings.Contains(out, "5 addresses of 212.70.149.0/24") {
		t.Fatalf("text output: %s", out)
	}
	if _, errOut, code := runRG(t, bin, "watch", "--replay", filepath.Join(dir, "nope.log")); code == 0 || !strings.Contains(errOut, "nope.log") {
		t.Fatalf("missing file: %d %s", code, errOut)
	}
}

// watch follows a log file and stores the bans it decides (lasting from
// the moment of the decision, whatever the lines' timestamps); `ban list`,
// another process on the same database, sees them.
func TestWatchFollowsAndBans(t *testing.T) {
	bin := testBinary(t)
	dir := t.TempDir()
	logPath := filepath.Join(dir, "mail.log")
	os.WriteFile(logPath, []byte("Nov 23 09:00:00 mx1 postfix/smtpd[1]: warning: unknown[192.0.2.200]: SASL LOGIN authentication failed: old line\n"), 0o644)
	conf := filepath.Join(dir, "rg.toml")
	os.WriteFile(conf, []byte(fmt.Sprintf("[guard]\nmaxretry = 2\nfiles = [%q]\n[firewall]\nbackend = \"none\"\n", logPath)), 0o644)
	data := filepath.Join(dir, "data")
	cmd := exec.Command(bin, "--config", conf, "--data-dir", data, "--create-data-dir", "watch")
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		if t.Failed() {
			t.Log(stderr.String())
		}
	}()
	list := func() string {
		out, _, _ := runRG(t, bin, "--config", conf, "--data-dir", data, "ban", "list", "--json")
		return out
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s; bans: %s", what, list())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// The follower logs once it has positioned itself at the end of the
	// file; lines appended before that would be (rightly) skipped.
	waitFor("the follower to start", func() bool { return strings.Contains(stderr.String(), "logwatch: following") })
	f, err := os.OpenFile(logPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for k := range 2 {
		fmt.Fprintf(f, "Nov 23 10:00:0%d mx1 postfix/smtpd[1]: warning: unknown[2001:db8:66::7]: SASL PLAIN authentication failed: \n", k)
	}
	f.Close()
	waitFor("the ban", func() bool { return strings.Contains(list(), "2001:db8:66::7/128") })
	if strings.Contains(list(), "192.0.2.200") {
		t.Fatal("a line written before watch started was read")
	}
}

// TestWatchBadLogFiles: a [guard] files entry that cannot work is said,
// naming the file, instead of a source that silently watches nothing or
// counts everything twice. Before: one file named twice (directly or
// through a link) had two followers and 3 failures banned at maxretry 5;
// a directory was "following" and read nothing; a missing file was waited
// for without a word.
func TestWatchBadLogFiles(t *testing.T) {
	bin := testBinary(t)
	dir := t.TempDir()
	logPath := filepath.Join(dir, "mail.log")
	if err := os.WriteFile(logPath, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "maillog")
	if err := os.Symlink(logPath, link); err != nil {
		t.Fatal(err)
	}
	start := func(files ...string) (*exec.Cmd, *syncBuffer, string) {
		conf := filepath.Join(t.TempDir(), "rg.toml")
		q := make([]string, len(files))
		for i, f := range files {
			q[i] = fmt.Sprintf("%q", f)
		}
		os.WriteFile(conf, []byte(fmt.Sprintf("[guard]\nfiles = [%s]\n[firewall]\nbackend = \"none\"\n", strings.Join(q, ", "))), 0o644)
		// (A watch that does not refuse would run on: killed after a
		// minute, so that the test fails instead of hanging.)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		t.Cleanup(cancel)
		cmd := exec.CommandContext(ctx, bin, "--config", conf, "--data-dir", filepath.Join(t.TempDir(), "data"), "--create-data-dir", "watch")
		stderr := &syncBuffer{}
		cmd.Stderr = stderr
		return cmd, stderr, conf
	}
	// The same path twice: config check and watch refuse it.
	cmd, stderr, conf := start(logPath, dir+"/./mail.log")
	if err := cmd.Run(); err == nil || !strings.Contains(stderr.String(), `guard.files[1] "`+dir+`/./mail.log": listed twice`) {
		t.Errorf("watch with one path twice: %v\n%s", err, stderr.String())
	}
	if _, errOut, code := runRG(t, bin, "--config", conf, "config", "check"); code == 0 || !strings.Contains(errOut, "listed twice") {
		t.Errorf("config check with one path twice: %d %s", code, errOut)
	}
	// One file through a link: watch refuses it, naming both.
	cmd, stderr, _ = start(logPath, link)
	if err := cmd.Run(); err == nil || !strings.Contains(stderr.String(), fmt.Sprintf("guard.files[1] %q is the same file as guard.files[0] %q", link, logPath)) {
		t.Errorf("watch with one file through a link: %v\n%s", err, stderr.String())
	}
	// config check (everything serve and watch check before they start)
	// refuses it the same way; it said "configuration OK".
	_, _, conf = start(logPath, link)
	if _, errOut, code := runRG(t, bin, "--config", conf, "--data-dir", t.TempDir(), "config", "check"); code == 0 || !strings.Contains(errOut, fmt.Sprintf("guard.files[1] %q is the same file as guard.files[0] %q", link, logPath)) {
		t.Errorf("config check with one file through a link: %d %s", code, errOut)
	}
	// A directory and a missing file: each named in the log, the other
	// source followed.
	missing := filepath.Join(dir, "no", "such.log")
	fifo := filepath.Join(dir, "mail.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd, _, _ = start(dir, missing, fifo, logPath)
	stderr, stop := startLogged(t, cmd)
	defer stop()
	for _, want := range []string{
		fmt.Sprintf(`level=ERROR msg="watch: file source stopped" file=%s err="logwatch: %s: is a directory, not a log file"`, dir, dir),
		fmt.Sprintf(`level=WARN msg="logwatch: waiting for the file to appear" file=%s`, missing),
		// A named pipe said "following" and read nothing (every ReadAt
		// fails on a pipe), found after the commit above.
		fmt.Sprintf(`level=ERROR msg="watch: file source stopped" file=%s err="logwatch: %s: a named pipe, not a regular file: it cannot be followed`, fifo, fifo),
		fmt.Sprintf(`msg="logwatch: following" file=%s`, logPath),
	} {
		awaitLine(t, stderr, want)
	}
	if strings.Contains(stderr.String(), fmt.Sprintf(`msg="logwatch: following" file=%s `, dir)) {
		t.Error("the directory is followed")
	}
}

// TestWatchJournalAndFilesWarned: with both the journal and files to
// follow, watch warns that a line in both counts twice (nothing in a line
// tells the copies apart; found by edge8 from outside).
func TestWatchJournalAndFilesWarned(t *testing.T) {
	bin := testBinary(t)
	logPath := filepath.Join(t.TempDir(), "mail.log")
	if err := os.WriteFile(logPath, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(t.TempDir(), "rg.toml")
	os.WriteFile(conf, []byte(fmt.Sprintf("[guard]\nfiles = [%q]\njournal = true\n[firewall]\nbackend = \"none\"\n", logPath)), 0o644)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--config", conf, "--data-dir", filepath.Join(t.TempDir(), "data"), "--create-data-dir", "watch")
	stderr, stop := startLogged(t, cmd)
	defer stop()
	awaitLine(t, stderr, `level=WARN msg="watch: guard.journal and guard.files are both read: a line in both`)
}

// startLogged starts cmd with its standard error in the returned buffer;
// stop interrupts it, waits for it, and logs what it wrote if the test
// failed.
func startLogged(t *testing.T, cmd *exec.Cmd) (*syncBuffer, func()) {
	t.Helper()
	log := &syncBuffer{}
	cmd.Stderr = log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return log, func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		if t.Failed() {
			t.Logf("%s's log:\n%s", filepath.Base(cmd.Path), log)
		}
	}
}

// awaitLine waits up to 30 s (a safety net, not a timing assertion) for
// want in a process's log, and fails the test with the log if it never
// comes.
func awaitLine(t *testing.T, log *syncBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(log.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the log:\n%s", want, log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestWatchStdinEnded: when the writer into watch --stdin goes away, watch
// says so (it goes on with its other sources and the bans). It was silent.
func TestWatchStdinEnded(t *testing.T) {
	bin := testBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--data-dir", filepath.Join(t.TempDir(), "data"), "--create-data-dir", "watch", "--stdin")
	cmd.Stdin = strings.NewReader("Nov 23 10:00:00 mx1 postfix/smtpd[1]: connect from unknown[192.0.2.9]\n")
	stderr, stop := startLogged(t, cmd)
	defer stop()
	want := `level=WARN msg="watch: standard input ended; it is no longer read (the other sources and the bans go on)"`
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(stderr.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in watch's log:\n%s", want, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSharedBanListSkipsBadEntry: one entry of the shared ban list that
// does not decode (an operator's hand-made HSET with a bare address, a
// value another program wrote) is skipped and named; the rest of the list
// is still shared. It made every full synchronisation fail: each server
// took Redis for unreachable ("shared store unreachable; using local
// state") and a server that had not seen a ban announced never got it.
func TestSharedBanListSkipsBadEntry(t *testing.T) {
	t.Parallel()
	bin := testBinary(t)
	srv := redistest.Start(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "rg.toml")
	os.WriteFile(conf, []byte(fmt.Sprintf("[store]\nurl = %q\n[firewall]\nbackend = \"none\"\n", srv.URL())), 0o644)
	rg := func(node string, args ...string) (string, string, int) {
		return runRG(t, bin, append([]string{"--config", conf, "--data-dir", filepath.Join(dir, node), "--create-data-dir"}, args...)...)
	}
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer c.Close()
	if err := c.HSet(context.Background(), "relayguard:bans", "198.51.100.7", `{"prefix":"198.51.100.7"}`).Err(); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := rg("a", "ban", "add", "203.0.113.0/24", "--for", "1d"); code != 0 {
		t.Fatalf("ban add on a: exit %d: %s", code, errOut)
	}
	out, errOut, code := rg("b", "ban", "list")
	if code != 0 || !strings.Contains(out, "203.0.113.0/24") {
		t.Errorf("ban list on b: exit %d, the ban made on a not shared:\n%s\n%s", code, out, errOut)
	}
	if !strings.Contains(errOut, `198.51.100.7`) || strings.Contains(errOut, "unreachable") {
		t.Errorf("the bad entry is not named, or Redis was taken for unreachable:\n%s", errOut)
	}
}
