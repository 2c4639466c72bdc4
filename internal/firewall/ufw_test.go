package firewall

import (
	"crypto/sha256"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/config"
)

// ufwInNS prepares ufw to run inside the test's server namespace without
// touching the host's ufw configuration: every ufw call goes through a
// wrapper that enters a private mount namespace (unshare -m), bind-mounts a
// temporary copy of /etc/ufw, /lib/ufw and /etc/default/ufw over the real
// ones, and then runs the command under `ip netns exec`. The copy turns off
// ufw's sysctl and kernel-module loading (IPT_SYSCTL, IPT_MODULES), which are
// not per-namespace, and sets the default incoming policy to ACCEPT so the
// listener is reachable. It returns the command prefix.
func ufwInNS(t *testing.T, n *testNet) []string {
	t.Helper()
	needBinaries(t, "ufw", "unshare", "mount", "iptables", "ip6tables")
	dir := t.TempDir()
	run(t, "cp", "-a", "/etc/ufw", filepath.Join(dir, "etc-ufw"))
	run(t, "cp", "-a", "/lib/ufw", filepath.Join(dir, "lib-ufw"))
	def, err := os.ReadFile("/etc/default/ufw")
	if err != nil {
		t.Fatal(err)
	}
	s := string(def)
	for k, v := range map[string]string{
		"DEFAULT_INPUT_POLICY": `"ACCEPT"`,
		"IPT_SYSCTL":           "/etc/ufw/relayguard-test-empty-sysctl.conf",
		"IPT_MODULES":          `""`,
		"IPV6":                 "yes",
	} {
		s = regexp.MustCompile(`(?m)^`+k+`=.*$`).ReplaceAllString(s, k+"="+v)
	}
	if err := os.WriteFile(filepath.Join(dir, "default-ufw"), []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "etc-ufw", "relayguard-test-empty-sysctl.conf"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	wrapper := filepath.Join(dir, "in-ns")
	script := `#!/bin/sh
exec unshare --mount --propagation private sh -c 'mount --bind "$1/etc-ufw" /etc/ufw && mount --bind "$1/lib-ufw" /lib/ufw && mount --bind "$1/default-ufw" /etc/default/ufw && shift && exec ip netns exec "$0" "$@"' ` + n.srv + ` ` + dir + ` "$@"
`
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, wrapper, "ufw", "--force", "enable")
	if out := run(t, wrapper, "ufw", "status"); !strings.Contains(out, "Status: active") {
		t.Fatalf("ufw in the namespace is not active:\n%s", out)
	}
	return []string{wrapper}
}

// hostUFW fingerprints the host's ufw configuration and state.
func hostUFW(t *testing.T) string {
	t.Helper()
	h := sha256.New()
	for _, root := range []string{"/etc/ufw", "/lib/ufw", "/etc/default/ufw"} {
		filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			b, _ := os.ReadFile(path)
			fmt.Fprintf(h, "%s %x\n", path, sha256.Sum256(b))
			return nil
		})
	}
	out, _ := exec.Command("ufw", "status").CombinedOutput()
	h.Write(out)
	return fmt.Sprintf("%x", h.Sum(nil))
}

func TestUFW(t *testing.T) {
	needBinaries(t, "ip", "ufw")
	host := hostUFW(t)
	t.Cleanup(func() {
		if hostUFW(t) != host {
			t.Errorf("the host's ufw configuration or state changed")
		}
	})
	n := newTestNet(t)
	prefix := ufwInNS(t, n)
	cfg := config.Default().Firewall
	cfg.Backend = config.FirewallUFW
	e := newUFW(cfg, testLogger(t), prefix)
	t.Cleanup(func() { e.Teardown(bg()) })
	inUFW := func(t *testing.T, args ...string) string {
		return run(t, prefix[0], args...)
	}
	// An operator's own deny rule must survive everything.
	inUFW(t, "ufw", "deny", "from", "203.0.113.7")
	testEnforcer(t, n, e, backendHooks{
		expiry: 12 * time.Second,
		stray: func(t *testing.T, a netip.Addr) {
			inUFW(t, "ufw", "prepend", "deny", "from", a.String(), "comment", cfg.UFWTag)
		},
		leftovers: func(t *testing.T) string {
			out := inUFW(t, "ufw", "status")
			if strings.Contains(out, "# "+cfg.UFWTag) {
				return out
			}
			if !strings.Contains(out, "203.0.113.7") {
				return "the operator's own rule is gone:\n" + out
			}
			return ""
		},
	})
}

func TestUFWMailPortsOnly(t *testing.T) {
	needBinaries(t, "ip", "ufw")
	n := newTestNet(t)
	prefix := ufwInNS(t, n)
	cfg := config.Default().Firewall
	cfg.Ports = []int{int(n.port) + 1}
	e := newUFW(cfg, testLogger(t), prefix)
	t.Cleanup(func() { e.Teardown(bg()) })
	if err := e.Setup(bg()); err != nil {
		t.Fatal(err)
	}
	for _, a := range []netip.Addr{n.bad4, n.bad6} {
		if err := e.Add(bg(), banOf(a)); err != nil {
			t.Fatal(err)
		}
	}
	n.mustConnect(t, n.bad4)
	n.mustConnect(t, n.bad6)
	e.cfg.Ports = []int{25, int(n.port)}
	if err := e.Setup(bg()); err != nil { // rewrites the rules for the new ports
		t.Fatal(err)
	}
	n.mustBeBlocked(t, n.bad4, n.bad6)
	n.mustConnect(t, n.good4)
	out := run(t, prefix[0], "ufw", "status")
	if strings.Count(out, "# "+cfg.UFWTag) != 2 || !strings.Contains(out, fmt.Sprintf("25,%d/tcp", n.port)) {
		t.Fatalf("want exactly the two rewritten rules:\n%s", out)
	}
}
