package config

import (
	"os"
	"path/filepath"
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
