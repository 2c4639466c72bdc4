package egress

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// iptablesInNetns returns an IPT backend whose iptables/ip6tables commands
// run inside a fresh network namespace (through wrapper scripts), and the
// path of a file that, while it exists, makes ip6tables-restore fail.
func iptablesInNetns(t *testing.T) (*IPT, string, func() string) {
	t.Helper()
	requireNetns(t, "iptables", "ip6tables", "iptables-restore", "ip6tables-restore", "iptables-save", "ip6tables-save")
	var rb [3]byte
	if _, err := rand.Read(rb[:]); err != nil {
		t.Fatal(err)
	}
	ns := "rgegipt" + hex.EncodeToString(rb[:])
	mustRun(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	dir := t.TempDir()
	fail6 := filepath.Join(dir, "fail6")
	for _, tool := range []string{"iptables", "iptables-restore", "iptables-save", "ip6tables", "ip6tables-restore", "ip6tables-save", "nft"} {
		script := "#!/bin/sh\n"
		if tool == "ip6tables-restore" {
			script += "if [ -e " + fail6 + " ]; then echo 'injected failure' >&2; exit 1; fi\n"
		}
		script += "exec ip netns exec " + ns + " " + tool + " \"$@\"\n"
		if err := os.WriteFile(filepath.Join(dir, tool), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The whole ruleset of the namespace, as nft sees it (iptables-nft
	// tables included, also empty ones).
	rules := func() string {
		return mustRun(t, "ip", "netns", "exec", ns, "nft", "list", "ruleset")
	}
	return &IPT{Bin4: filepath.Join(dir, "iptables"), Bin6: filepath.Join(dir, "ip6tables"), NFT: filepath.Join(dir, "nft")}, fail6, rules
}

// iptables has no transaction across IPv4 and IPv6: when ip6tables-restore
// fails, Apply puts the IPv4 side back as it was, so that the host never
// ends up locked down for one family only (or with a half-changed lockdown).
func TestIPTApplyRollsBackIPv4WhenIPv6Fails(t *testing.T) {
	t.Parallel()
	b, fail6, rules := iptablesInNetns(t)
	hostBefore := mustRun(t, "nft", "list", "ruleset")
	t.Cleanup(func() {
		if after := mustRun(t, "nft", "list", "ruleset"); after != hostBefore {
			t.Errorf("host ruleset changed:\nbefore:\n%s\nafter:\n%s", hostBefore, after)
		}
	})
	ctx := context.Background()
	empty := rules()

	if err := os.WriteFile(fail6, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	spec := Spec{Ports: []uint16{25}, UIDs: []uint32{4242}, Group: 77, AllowLoopback: true}
	err := b.Apply(ctx, spec)
	if err == nil || !strings.Contains(err.Error(), "ipv6") || !strings.Contains(err.Error(), "injected failure") {
		t.Fatalf("Apply with failing ip6tables-restore: err = %v, want the ipv6 failure", err)
	}
	if got := rules(); got != empty {
		t.Fatalf("failed first Apply left rules behind:\n%s", got)
	}

	// A working lockdown, then a failed change: the old lockdown stays, in
	// both families, exactly.
	os.Remove(fail6)
	if err := b.Apply(ctx, spec); err != nil {
		t.Fatal(err)
	}
	installed := rules()
	if strings.Count(installed, "jump "+IPTChain) != 2 || !strings.Contains(installed, "skuid 4242") {
		t.Fatalf("Apply did not install both families:\n%s", installed)
	}
	if err := os.WriteFile(fail6, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	changed := Spec{Ports: []uint16{25, 587}, UIDs: []uint32{4343}, Group: 78}
	if err := b.Apply(ctx, changed); err == nil {
		t.Fatal("Apply with failing ip6tables-restore succeeded")
	}
	if got := rules(); got != installed {
		t.Fatalf("failed Apply changed the lockdown:\nbefore:\n%s\nafter:\n%s", installed, got)
	}

	os.Remove(fail6)
	if err := b.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if got := rules(); got != empty {
		t.Fatalf("Remove left:\n%s\nwant:\n%s", got, empty)
	}
}
