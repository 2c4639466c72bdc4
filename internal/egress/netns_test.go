package egress

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// requireNetns skips outside CI when the test cannot run; under CI=true it
// never skips (the CI runs as root with every tool installed).
func requireNetns(t *testing.T, tools ...string) {
	t.Helper()
	ci := os.Getenv("CI") == "true"
	if os.Geteuid() != 0 {
		if ci {
			t.Fatal("CI=true but not root: network namespace tests need root")
		}
		t.Skip("needs root for network namespaces")
	}
	for _, tool := range append([]string{"ip", "nft"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			if ci {
				t.Fatalf("CI=true but %s is missing: %v", tool, err)
			}
			t.Skipf("%s not installed", tool)
		}
	}
	if relayguardBin == "" {
		t.Fatalf("relayguard binary: %v", buildErr)
	}
}

func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// testNet is a pair of network namespaces joined by a veth link: "local"
// where relayguard runs and "remote", the outside world with an SMTP
// listener on port 25.
type testNet struct {
	local, remote string
	v4, v6        string // remote addresses
}

func newTestNet(t *testing.T) *testNet {
	t.Helper()
	var rb [3]byte
	if _, err := rand.Read(rb[:]); err != nil {
		t.Fatal(err)
	}
	id := hex.EncodeToString(rb[:])
	n := &testNet{local: "rgeg" + id, remote: "rgeg" + id + "r"}
	mustRun(t, "ip", "netns", "add", n.local)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", n.local).Run() })
	mustRun(t, "ip", "netns", "add", n.remote)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", n.remote).Run() })
	va, vb := "rge"+id+"a", "rge"+id+"b"
	mustRun(t, "ip", "link", "add", va, "netns", n.local, "type", "veth", "peer", "name", vb, "netns", n.remote)
	octet := strconv.Itoa(int(rb[0]))
	n.v4 = "10.231." + octet + ".2"
	// Canonical form (no leading zeros in a group), as reports print it.
	n.v6 = netip.MustParseAddr("fd72:6775:" + id[:4] + "::2").String()
	for _, c := range [][]string{
		{n.local, "ip", "link", "set", "lo", "up"},
		{n.remote, "ip", "link", "set", "lo", "up"},
		{n.local, "ip", "addr", "add", "10.231." + octet + ".1/24", "dev", va},
		{n.remote, "ip", "addr", "add", n.v4 + "/24", "dev", vb},
		{n.local, "ip", "-6", "addr", "add", "fd72:6775:" + id[:4] + "::1/64", "dev", va, "nodad"},
		{n.remote, "ip", "-6", "addr", "add", n.v6 + "/64", "dev", vb, "nodad"},
		{n.local, "ip", "link", "set", va, "up"},
		{n.remote, "ip", "link", "set", vb, "up"},
	} {
		mustRun(t, "ip", append([]string{"netns", "exec"}, c...)...)
	}
	return n
}

// startChild starts the test binary in ns in a helper role and returns
// its stdout lines.
func startChild(t *testing.T, ns string, args ...string) (*exec.Cmd, *bufio.Scanner, io.WriteCloser) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, self, childArg}, args...)...)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd, bufio.NewScanner(stdout), stdin
}

type clientResult struct {
	pid    int
	result string // "OK 220 rgtest", "TIMEOUT", "ERR ..."
	args   string // the child's command line tail, as watch should report it
}

// connectAs dials addr from ns as uid/gid and returns what happened.
func connectAs(t *testing.T, ns string, uid, gid int, addr string, timeout time.Duration) clientResult {
	t.Helper()
	args := []string{"connect", strconv.Itoa(uid), strconv.Itoa(gid), addr, timeout.String()}
	_, sc, _ := startChild(t, ns, args...)
	r := clientResult{args: childArg + " " + strings.Join(args, " ")}
	for sc.Scan() {
		line := sc.Text()
		if p, ok := strings.CutPrefix(line, "PID "); ok {
			r.pid, _ = strconv.Atoi(p)
			continue
		}
		r.result = line
		break
	}
	return r
}

type rgCmd struct {
	t      *testing.T
	ns     string
	config string
	data   string
}

func (r rgCmd) args(a ...string) []string {
	return append([]string{"netns", "exec", r.ns, relayguardBin, "--config", r.config, "--data-dir", r.data}, a...)
}

// run runs relayguard in the namespace and returns its output and error.
// A command that hangs (e.g. a watch that should have failed) is killed.
func (r rgCmd) run(a ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", r.args(a...)...).CombinedOutput()
	return string(out), err
}

func (r rgCmd) must(a ...string) string {
	r.t.Helper()
	out, err := r.run(a...)
	if err != nil {
		r.t.Fatalf("relayguard %s: %v\n%s", strings.Join(a, " "), err, out)
	}
	return out
}

func writeConfig(t *testing.T, dir, name, backend, users string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	cfg := fmt.Sprintf(`[egress]
mta_users = false
allowed_users = [%s]
allowed_groups = ["4444"]
nflog_group = 77
backend = %q
forward = true
alert_threshold = 2
alert_window = "10m"
`, users, backend)
	if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestEgressNetnsNFTables(t *testing.T) {
	t.Parallel()
	requireNetns(t)
	egressScenario(t, "nftables")
}

func TestEgressNetnsIPTables(t *testing.T) {
	t.Parallel()
	requireNetns(t, "iptables", "ip6tables", "iptables-restore", "ip6tables-restore", "iptables-save", "ip6tables-save")
	egressScenario(t, "iptables")
}

// nsRuleset is what a backend's rules look like from the tools.
func nsRuleset(t *testing.T, ns, backend string) string {
	t.Helper()
	if backend == "nftables" {
		return mustRun(t, "ip", "netns", "exec", ns, "nft", "list", "ruleset")
	}
	return mustRun(t, "ip", "netns", "exec", ns, "iptables-save") +
		mustRun(t, "ip", "netns", "exec", ns, "ip6tables-save")
}

func egressScenario(t *testing.T, backend string) {
	hostBefore := mustRun(t, "nft", "list", "ruleset")
	t.Cleanup(func() {
		if after := mustRun(t, "nft", "list", "ruleset"); after != hostBefore {
			t.Errorf("host ruleset changed:\nbefore:\n%s\nafter:\n%s", hostBefore, after)
		}
	})
	n := newTestNet(t)
	dir := t.TempDir()
	rg := rgCmd{t: t, ns: n.local, config: writeConfig(t, dir, "egress.toml", backend, `"4242"`), data: filepath.Join(dir, "data")}

	// An unknown configured user is an error before anything changes.
	before := nsRuleset(t, n.local, backend)
	bad := rgCmd{t: t, ns: n.local, config: writeConfig(t, dir, "bad.toml", backend, `"4242", "no-such-user-rgtest"`), data: rg.data}
	out, err := bad.run("egress", "apply")
	if err == nil || !strings.Contains(out, "no-such-user-rgtest") {
		t.Fatalf("apply with an unknown user: err=%v, want an error naming the user; output:\n%s", err, out)
	}
	if after := nsRuleset(t, n.local, backend); after != before {
		t.Fatalf("failed apply changed the ruleset:\n%s", after)
	}

	// The remote SMTP listener, and one on the local loopback.
	for _, l := range []struct {
		ns    string
		addrs []string
	}{
		{n.remote, []string{":25"}}, // dual-stack
		{n.local, []string{"127.0.0.1:25", "[::1]:25"}},
	} {
		_, sc, _ := startChild(t, l.ns, append([]string{"listen"}, l.addrs...)...)
		if !sc.Scan() || sc.Text() != "READY" {
			t.Fatalf("listener in %s did not start: %q", l.ns, sc.Text())
		}
	}

	out = rg.must("egress", "apply")
	if !strings.Contains(out, "not persistent") {
		t.Errorf("apply without --persist should say the rules are not persistent:\n%s", out)
	}
	out = rg.must("egress", "apply") // re-applying replaces, never duplicates
	rules := nsRuleset(t, n.local, backend)
	if backend == "iptables" {
		c, fwd := strings.Count(rules, "-j "+IPTChain+"\n"), strings.Count(rules, "-j "+IPTForwardChain+"\n")
		if c != 2 || fwd != 2 {
			t.Fatalf("want one jump per family and chain after applying twice, got %d and %d:\n%s", c, fwd, rules)
		}
	} else if c := strings.Count(rules, "table inet "+NFTTable); c != 1 {
		t.Fatalf("want one table after applying twice, got %d:\n%s", c, rules)
	}

	// The namespace's default packet loggers (which conntrack and others
	// write to) are not watch's to change.
	loggers := func() string {
		return mustRun(t, "ip", "netns", "exec", n.local, "cat", "/proc/sys/net/netfilter/nf_log/2", "/proc/sys/net/netfilter/nf_log/10")
	}
	loggersBefore := loggers()

	// egress watch, reading the NFLOG group, writing JSON lines.
	watchOut := filepath.Join(dir, "watch.jsonl")
	ctx, cancel := context.WithCancel(context.Background())
	watch := exec.CommandContext(ctx, "ip", rg.args("egress", "watch", "--json", "--output", watchOut)...)
	watch.Cancel = func() error { return watch.Process.Signal(os.Interrupt) }
	stderr, _ := watch.StderrPipe()
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	var logMu sync.Mutex
	var watchLog bytes.Buffer
	ready := make(chan struct{})
	logDone := make(chan struct{})
	go func() {
		defer close(logDone)
		sc := bufio.NewScanner(stderr)
		once := false
		for sc.Scan() {
			logMu.Lock()
			watchLog.WriteString(sc.Text() + "\n")
			logMu.Unlock()
			if !once && strings.Contains(sc.Text(), "egress watch: listening") {
				once = true
				close(ready)
			}
		}
		if !once {
			close(ready)
		}
	}()
	stopWatch := func() {
		cancel()
		_ = watch.Wait()
		<-logDone
	}
	t.Cleanup(stopWatch)
	<-ready
	logMu.Lock()
	if !strings.Contains(watchLog.String(), "listening") {
		logMu.Unlock()
		_ = watch.Wait()
		t.Fatalf("egress watch did not start:\n%s", watchLog.String())
	}
	logMu.Unlock()

	// The NFLOG group has one reader: a second watch fails clearly.
	if out, err := rg.run("egress", "watch"); err == nil || !strings.Contains(out, "already bound") {
		t.Errorf("second watch on the same group: err=%v, want an error saying the group is bound:\n%s", err, out)
	}

	// Connections: allowed by uid, allowed by gid, blocked (IPv4 and
	// IPv6), and a blocked uid to loopback (allowed).
	v4, v6 := n.v4+":25", "["+n.v6+"]:25"
	cases := []struct {
		name     string
		uid, gid int
		addr     string
		timeout  time.Duration
		want     string
	}{
		{"allowed uid v4", 4242, 4242, v4, 20 * time.Second, "OK 220 rgtest"},
		{"allowed uid v6", 4242, 4242, v6, 20 * time.Second, "OK 220 rgtest"},
		{"allowed gid v4", 4545, 4444, v4, 20 * time.Second, "OK 220 rgtest"},
		{"blocked v4", 4343, 4343, v4, 4 * time.Second, "TIMEOUT"},
		{"blocked v6", 4343, 4343, v6, 4 * time.Second, "TIMEOUT"},
		{"loopback v4", 4343, 4343, "127.0.0.1:25", 20 * time.Second, "OK 220 rgtest"},
		{"loopback v6", 4343, 4343, "[::1]:25", 20 * time.Second, "OK 220 rgtest"},
	}
	results := make([]clientResult, len(cases))
	var wg sync.WaitGroup
	for i, c := range cases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = connectAs(t, n.local, c.uid, c.gid, c.addr, c.timeout)
		}()
	}
	wg.Wait()
	for i, c := range cases {
		if results[i].result != c.want {
			t.Errorf("%s: uid %d gid %d -> %s: got %q, want %q", c.name, c.uid, c.gid, c.addr, results[i].result, c.want)
		}
	}

	// The watcher reports each blocked attempt once, with uid, pid and
	// command line of the client; retransmitted SYNs are folded.
	deadline := time.Now().Add(30 * time.Second)
	var attempts []Attempt
	for {
		attempts = readAttempts(t, watchOut)
		if len(attempts) >= 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	stopWatch()
	if after := loggers(); after != loggersBefore {
		t.Errorf("egress watch changed the default netfilter loggers (nf_log/2, nf_log/10):\nbefore: %q\nafter:  %q", loggersBefore, after)
	}
	attempts = readAttempts(t, watchOut)
	for _, a := range attempts {
		t.Logf("watch: %s", a)
	}
	if len(attempts) != 2 {
		t.Fatalf("want 2 attempts (blocked v4 and v6), got %d: %+v\nwatch log:\n%s", len(attempts), attempts, watchLog.String())
	}
	for i, want := range []struct {
		res  clientResult
		addr string
	}{{results[3], n.v4}, {results[4], n.v6}} {
		var got *Attempt
		for j := range attempts {
			if attempts[j].Dst.String() == want.addr {
				got = &attempts[j]
			}
		}
		if got == nil {
			t.Errorf("blocked attempt %d to %s not reported: %+v", i, want.addr, attempts)
			continue
		}
		if got.UID != 4343 || got.GID != 4343 || !got.HasUID || got.DstPort != 25 {
			t.Errorf("attempt to %s: uid %d gid %d port %d, want 4343/4343/25", want.addr, got.UID, got.GID, got.DstPort)
		}
		if got.Process == nil {
			t.Errorf("attempt to %s: no process (%s)", want.addr, got.Unknown)
			continue
		}
		if got.Process.PID != want.res.pid {
			t.Errorf("attempt to %s: pid %d, want the client's pid %d", want.addr, got.Process.PID, want.res.pid)
		}
		if !strings.Contains(got.Process.Cmdline, want.res.args) {
			t.Errorf("attempt to %s: cmdline %q does not contain %q", want.addr, got.Process.Cmdline, want.res.args)
		}
		self, _ := os.Executable()
		if got.Process.Exe != self {
			t.Errorf("attempt to %s: exe %q, want %q", want.addr, got.Process.Exe, self)
		}
		if got.SockState != "SYN_SENT" {
			t.Errorf("attempt to %s: socket state %q, want SYN_SENT", want.addr, got.SockState)
		}
		if got.Process.PPID == 0 {
			t.Errorf("attempt to %s: no parent pid", want.addr)
		}
	}
	logMu.Lock()
	wl := watchLog.String()
	logMu.Unlock()
	if want := fmt.Sprintf(`msg="egress blocked" uid=4343 user=4343 dst=%s`, v4); !strings.Contains(wl, want) ||
		!strings.Contains(wl, fmt.Sprintf("pid=%d ", results[3].pid)) {
		t.Errorf("watch log lacks the %q record with the client's pid %d:\n%s", want, results[3].pid, wl)
	}
	if !strings.Contains(wl, "egress ALERT") || !strings.Contains(wl, "uid=4343") {
		t.Errorf("two blocked attempts with alert_threshold=2 should raise an alert for uid 4343; watch log:\n%s", wl)
	}

	// status: rules, counters (the drop rule saw the SYN and its
	// retransmissions), allowed users, not persistent.
	out = rg.must("egress", "status")
	if !strings.Contains(out, "allowed users:  4242") || !strings.Contains(out, "allowed groups: 4444") {
		t.Errorf("status does not list the allowed uid/gid:\n%s", out)
	}
	if !strings.Contains(out, "warning: not persistent") {
		t.Errorf("status should warn that the rules are not persistent:\n%s", out)
	}
	t.Logf("status:\n%s", out)
	drops := dropPackets(t, out, backend)
	if drops < 3 {
		t.Errorf("drop rule counted %d packets; want at least 3 (two attempts, one retransmission)\n%s", drops, out)
	}

	// --persist writes the rules and the unit into the given directories.
	pdir := filepath.Join(dir, "persist")
	out = rg.must("egress", "apply", "--persist", "--persist-dir", pdir, "--unit-dir", pdir)
	unit := filepath.Join(pdir, UnitName)
	if !strings.Contains(out, "wrote "+unit) {
		t.Errorf("apply --persist does not say where it wrote the unit:\n%s", out)
	}
	ub, err := os.ReadFile(unit)
	if err != nil {
		t.Fatal(err)
	}
	out = rg.must("egress", "status", "--persist-dir", pdir, "--unit-dir", pdir)
	if !strings.Contains(out, "persistent: "+pdir) {
		t.Errorf("status after --persist should say persistent:\n%s", out)
	}

	// remove leaves nothing behind, and the blocked uid can connect again.
	rg.must("egress", "remove")
	assertClean(t, n.local, backend, before, true)
	if r := connectAs(t, n.local, 4343, 4343, v4, 20*time.Second); r.result != "OK 220 rgtest" {
		t.Errorf("after remove, uid 4343 -> %s: %q, want OK", v4, r.result)
	}
	if _, err := rg.run("egress", "status"); err == nil {
		t.Errorf("status after remove should fail (not installed)")
	}

	// The persisted files bring back the same lockdown: run the unit's
	// ExecStart lines in the namespace.
	for _, line := range strings.Split(string(ub), "\n") {
		if cmdline, ok := strings.CutPrefix(line, "ExecStart="); ok {
			f := strings.Fields(cmdline)
			mustRun(t, "ip", append([]string{"netns", "exec", n.local}, f...)...)
		}
	}
	out = rg.must("egress", "status", "--persist-dir", pdir, "--unit-dir", pdir)
	if !strings.Contains(out, "allowed users:  4242") || !strings.Contains(out, "NFLOG group 77") {
		t.Errorf("rules restored from the persisted files differ:\n%s", out)
	}
	if r := connectAs(t, n.local, 4343, 4343, v4, 2*time.Second); r.result != "TIMEOUT" {
		t.Errorf("restored rules: uid 4343 -> %s: %q, want TIMEOUT", v4, r.result)
	}
	// (Rules loaded at boot cannot know whether the filter table existed
	// before them: an empty iptables-nft table may stay.)
	out = rg.must("egress", "remove", "--persist", "--persist-dir", pdir, "--unit-dir", pdir)
	assertClean(t, n.local, backend, before, false)
	if !strings.Contains(out, "deleted "+unit) {
		t.Errorf("remove --persist does not say it deleted the unit:\n%s", out)
	}
	if left, _ := filepath.Glob(filepath.Join(pdir, "*")); len(left) != 0 {
		t.Errorf("remove --persist left %v", left)
	}
}

func assertClean(t *testing.T, ns, backend, before string, exact bool) {
	t.Helper()
	after := nsRuleset(t, ns, backend)
	if backend == "nftables" {
		if strings.TrimSpace(after) != "" {
			t.Errorf("nft list ruleset after remove is not empty:\n%s", after)
		}
		return
	}
	if strings.Contains(after, "RELAYGUARD") {
		t.Errorf("iptables-save after remove still has our chain:\n%s", after)
	}
	// Exactly as before, down to the (iptables-nft) tables apply created;
	// nft lists them even when empty.
	if !exact {
		return
	}
	if nft := mustRun(t, "ip", "netns", "exec", ns, "nft", "list", "ruleset"); strings.TrimSpace(nft) != "" {
		t.Errorf("nft list ruleset after remove is not empty:\n%s", nft)
	}
}

var countRE = regexp.MustCompile(`(?m)^\S+\s+(\d+)\s+\d+\s+(.*)$`)

// dropPackets sums the packet counters of the drop rules in status output.
func dropPackets(t *testing.T, status, backend string) int {
	t.Helper()
	total := 0
	for _, m := range countRE.FindAllStringSubmatch(status, -1) {
		rule := m[2]
		if strings.Contains(rule, "drop") || strings.HasSuffix(rule, "-j DROP") {
			n, _ := strconv.Atoi(m[1])
			total += n
		}
	}
	return total
}

func readAttempts(t *testing.T, path string) []Attempt {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []Attempt
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if line == "" {
			continue
		}
		var a Attempt
		if err := json.Unmarshal([]byte(line), &a); err != nil {
			t.Fatalf("watch output line %q: %v", line, err)
		}
		out = append(out, a)
	}
	return out
}
