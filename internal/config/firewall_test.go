package config

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestFirewallConfig(t *testing.T) {
	for _, tc := range []struct {
		toml, err string
	}{
		{"[firewall]\nbackend = 'nftables'\nports = [25, 465, 587]\n", ""},
		{"[firewall]\nbackend = 'pf'\n", `firewall.backend "pf"`},
		{"[firewall]\nports = [25, 70000]\n", "firewall.ports[1] 70000"},
		{"[firewall]\ntable = 'bad name'\n", `firewall.table "bad name"`},
		{"[firewall]\nset6 = 'ban4'\n", `firewall.set6 "ban4"`},
		{"[firewall]\nipset4 = 'a-name-that-is-far-too-long-for-ipset'\n", "firewall.ipset4"},
		{"[firewall]\nipset6 = 'relayguard4'\n", `firewall.ipset6 "relayguard4"`},
		{"[firewall]\niptables_chain = 'A-CHAIN-NAME-LONGER-THAN-28-CHARS'\n", "firewall.iptables_chain"},
		{"[firewall]\nufw_comment = 'two words'\n", `firewall.ufw_comment "two words"`},
		{"[firewall]\npriority = 5000\n", "firewall.priority 5000"},
		{"[firewall]\nipset_maxelem = 0\n", "firewall.ipset_maxelem 0"},
	} {
		path := filepath.Join(t.TempDir(), "c.toml")
		if err := os.WriteFile(path, []byte(tc.toml), 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := Load(path)
		if err == nil {
			err = c.Finish(t.TempDir())
		}
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%q: %v", tc.toml, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%q: error %v, want one containing %q", tc.toml, err, tc.err)
		}
	}
	if d := Default().Firewall; d.Backend != FirewallNone || len(d.Ports) != 0 {
		t.Errorf("default firewall: %+v", d)
	}
}

// The expressions the name checks replaced (the reference: a loop that
// accepts or refuses a name they did not fails here).
var (
	refNftName      = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]{0,63}$`)
	refIpsetName    = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,31}$`)
	refIptChainName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,28}$`)
	refUfwTag       = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)
)

func checkNamesSame(t *testing.T, s string) {
	t.Helper()
	for _, c := range []struct {
		name string
		got  bool
		ref  *regexp.Regexp
	}{
		{"nftName", nftName(s), refNftName}, {"ipsetName", ipsetName(s), refIpsetName},
		{"iptChainName", iptChainName(s), refIptChainName}, {"ufwTag", ufwTag(s), refUfwTag},
	} {
		if want := c.ref.MatchString(s); c.got != want {
			t.Errorf("%s(%q) = %v, the expression %v says %v", c.name, s, c.got, c.ref, want)
		}
	}
}

func TestFirewallNamesSameAsExpressions(t *testing.T) {
	long := func(n int) string { return strings.Repeat("a", n) }
	for _, s := range []string{
		"", "a", "_", ".", "-", "0", "A", "Z", "z", "ban4", "RELAYGUARD", "relay_guard.v6-x", "_x", "9x", ".x", "-x",
		"a b", "a\n", "a\x00", "a/b", "a@b", "`a", "{a", "[a", "@a", "é", "aé", "a\u00a0", "a$", "a*", "\na",
		long(27), long(28), long(29), long(30), long(31), long(32), long(63), long(64), long(65), "_" + long(63), "_" + long(64),
	} {
		checkNamesSame(t, s)
	}
	for c := 0; c < 256; c++ {
		checkNamesSame(t, string([]byte{byte(c)}))
		checkNamesSame(t, "a"+string([]byte{byte(c)}))
	}
}

func FuzzFirewallNamesSameAsExpressions(f *testing.F) {
	for _, s := range []string{"ban4", "RELAYGUARD", "a b", "_" + strings.Repeat("x", 63), strings.Repeat("1", 29), "é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) { checkNamesSame(t, s) })
}
