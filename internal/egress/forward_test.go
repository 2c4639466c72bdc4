package egress

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestEgressForwardedNFTables, TestEgressForwardedIPTables: a program in a container (a network
// namespace routed through the host, as Docker's bridge does) reached the
// remote SMTP port past the lockdown, unlogged: the output hook sees only
// this host's own sockets, and a forwarded packet has no socket here.
// Now the forward chain drops and logs it (egress watch names the source
// address), and a container listed in forward_allowed (one running the MTA)
// still connects. Three namespaces: the host (relayguard, forwarding), two
// containers behind it, and the remote world with a listener on port 25.
func TestEgressForwardedNFTables(t *testing.T) {
	t.Parallel()
	requireNetns(t)
	forwardScenario(t, "nftables")
}

func TestEgressForwardedIPTables(t *testing.T) {
	t.Parallel()
	requireNetns(t, "iptables", "ip6tables", "iptables-restore", "ip6tables-restore", "iptables-save", "ip6tables-save")
	forwardScenario(t, "iptables")
}

func forwardScenario(t *testing.T, backend string) {
	var rb [3]byte
	rand.Read(rb[:])
	id := hex.EncodeToString(rb[:])
	octet := strconv.Itoa(int(rb[0]))
	host, blocked, allowed, remote := "rgfw"+id+"h", "rgfw"+id+"b", "rgfw"+id+"a", "rgfw"+id+"r"
	for _, ns := range []string{host, blocked, allowed, remote} {
		mustRun(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
		mustRun(t, "ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
	}
	// Subnets 10.232-234.OCTET.0/24: the host is .1, the other end .2.
	for i, ns := range []string{blocked, allowed, remote} {
		a, b := fmt.Sprintf("rgf%s%dh", id, i), fmt.Sprintf("rgf%s%do", id, i)
		net := fmt.Sprintf("10.%d.%s.", 232+i, octet)
		mustRun(t, "ip", "link", "add", a, "netns", host, "type", "veth", "peer", "name", b, "netns", ns)
		mustRun(t, "ip", "netns", "exec", host, "ip", "addr", "add", net+"1/24", "dev", a)
		mustRun(t, "ip", "netns", "exec", ns, "ip", "addr", "add", net+"2/24", "dev", b)
		mustRun(t, "ip", "netns", "exec", host, "ip", "link", "set", a, "up")
		mustRun(t, "ip", "netns", "exec", ns, "ip", "link", "set", b, "up")
		mustRun(t, "ip", "netns", "exec", ns, "ip", "route", "add", "default", "via", net+"1")
	}
	mustRun(t, "ip", "netns", "exec", host, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	blockedAddr, allowedNet := "10.232."+octet+".2", "10.233."+octet+".0/24"
	dst := "10.234." + octet + ".2:25"
	_, sc, _ := startChild(t, remote, "listen", ":25")
	if !sc.Scan() || sc.Text() != "READY" {
		t.Fatalf("listener did not start: %q", sc.Text())
	}

	dir := t.TempDir()
	conf := filepath.Join(dir, "rg.toml")
	rg := rgCmd{t: t, ns: host, config: conf, data: filepath.Join(dir, "data")}
	// Off by default (an MTA behind this host would lose its incoming
	// mail): forwarded connections pass, and egress apply says so.
	os.WriteFile(conf, []byte(fmt.Sprintf("[egress]\nmta_users = false\nallowed_users = [\"0\"]\nnflog_group = 78\nbackend = %q\n", backend)), 0o644)
	if out, err := rg.run("--create-data-dir", "egress", "apply"); err != nil || !strings.Contains(out, "warning: this host forwards packets (net.ipv4.ip_forward = 1)") {
		t.Fatalf("egress apply with forward off on a forwarding host: %v, want the warning\n%s", err, out)
	}
	if r := connectAs(t, blocked, 65534, 65534, dst, 3*time.Second); !strings.HasPrefix(r.result, "OK") {
		t.Fatalf("forward off (the default): a container routed through the host: %s, want OK", r.result)
	}
	os.WriteFile(conf, []byte(fmt.Sprintf("[egress]\nmta_users = false\nallowed_users = [\"0\"]\nnflog_group = 78\nforward = true\nforward_allowed = [%q]\nbackend = %q\n", allowedNet, backend)), 0o644)
	if out, err := rg.run("--create-data-dir", "egress", "apply"); err != nil || strings.Contains(out, "warning") {
		t.Fatalf("egress apply: %v\n%s", err, out)
	}
	watchOut := filepath.Join(dir, "watch.jsonl")
	ctx, cancel := context.WithCancel(context.Background())
	watch := exec.CommandContext(ctx, "ip", rg.args("egress", "watch", "--json", "--output", watchOut)...)
	watch.Cancel = func() error { return watch.Process.Signal(os.Interrupt) }
	stderr, _ := watch.StderrPipe()
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		once := false
		for sc.Scan() {
			if !once && strings.Contains(sc.Text(), "egress watch: listening") {
				once = true
				close(ready)
			}
		}
		if !once {
			close(ready)
		}
	}()
	defer func() { cancel(); _ = watch.Wait() }()
	<-ready

	if r := connectAs(t, host, 0, 0, dst, 3*time.Second); !strings.HasPrefix(r.result, "OK") {
		t.Fatalf("the host's allowed uid: %s", r.result)
	}
	if r := connectAs(t, host, 65534, 65534, dst, 2*time.Second); r.result != "TIMEOUT" {
		t.Errorf("the host's other uid: %s, want TIMEOUT", r.result)
	}
	if r := connectAs(t, blocked, 65534, 65534, dst, 2*time.Second); r.result != "TIMEOUT" {
		t.Errorf("a container routed through the host reached %s: %s, want TIMEOUT (dropped by the forward chain)", dst, r.result)
	}
	if r := connectAs(t, allowed, 65534, 65534, dst, 3*time.Second); !strings.HasPrefix(r.result, "OK") {
		t.Errorf("a container of forward_allowed: %s, want OK", r.result)
	}
	// Mail coming in to the forward_allowed container's MTA (a published
	// port 25, a routed MX) from the Internet: every such connection was
	// dropped, its source being no forward_allowed network (breaker10).
	_, asc, _ := startChild(t, allowed, "listen", ":25")
	if !asc.Scan() || asc.Text() != "READY" {
		t.Fatalf("the allowed container's listener did not start: %q", asc.Text())
	}
	if r := connectAs(t, remote, 65534, 65534, "10.233."+octet+".2:25", 3*time.Second); !strings.HasPrefix(r.result, "OK") {
		t.Errorf("inbound mail from the Internet to the forward_allowed container's MTA: %s, want OK", r.result)
	}
	var got []Attempt
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		got = got[:0]
		data, _ := os.ReadFile(watchOut)
		for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			var a Attempt
			if json.Unmarshal([]byte(l), &a) == nil {
				got = append(got, a)
			}
		}
		if len(got) >= 2 {
			break
		}
	}
	forwarded := false
	for _, a := range got {
		if a.Src.String() == blockedAddr {
			forwarded = true
			if a.HasUID || !strings.Contains(a.Unknown, "forwarded from "+blockedAddr) {
				t.Errorf("the forwarded attempt as watch reports it: %+v", a)
			}
		}
	}
	if !forwarded {
		t.Errorf("watch did not report the container's attempt from %s: %+v", blockedAddr, got)
	}
	// remove takes the forward chain away too: the container connects.
	cancel()
	_ = watch.Wait()
	if out, err := rg.run("egress", "remove"); err != nil {
		t.Fatalf("egress remove: %v\n%s", err, out)
	}
	if rules := nsRuleset(t, host, backend); strings.Contains(rules, "RELAYGUARD") || strings.Contains(rules, NFTTable) {
		t.Errorf("left after remove:\n%s", rules)
	}
	if r := connectAs(t, blocked, 65534, 65534, dst, 3*time.Second); !strings.HasPrefix(r.result, "OK") {
		t.Errorf("after remove, the container: %s, want OK", r.result)
	}
}
