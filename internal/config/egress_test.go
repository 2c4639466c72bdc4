package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestEgressConfig(t *testing.T) {
	tests := []struct {
		name    string
		toml    string
		wantErr string // substring; "" = valid
	}{
		{"defaults", "", ""},
		{"numeric ids", "[egress]\nallowed_users = [\"4242\", \"root\"]\nallowed_groups = [\"4444\", \"root\"]\n", ""},
		{"unknown user", "[egress]\nallowed_users = [\"no-such-user-rg\"]\n", `egress.allowed_users[0] "no-such-user-rg"`},
		{"unknown group", "[egress]\nallowed_groups = [\"root\", \"no-such-group-rg\"]\n", `egress.allowed_groups[1] "no-such-group-rg"`},
		{"bad port", "[egress]\nports = [25, 70000]\n", "egress.ports[1] 70000"},
		{"duplicate port", "[egress]\nports = [25, 25]\n", "egress.ports[1] 25: duplicate"},
		{"no ports", "[egress]\nports = []\n", "egress.ports is empty"},
		{"bad backend", "[egress]\nbackend = \"pf\"\n", `egress.backend "pf"`},
		{"bad group", "[egress]\nnflog_group = 65536\n", "egress.nflog_group 65536"},
		{"bad mail", "[egress]\nalert_mail_to = \"not an address\"\n", `egress.alert_mail_to "not an address"`},
		{"zero window", "[egress]\nalert_window = \"0s\"\n", "egress.alert_window"},
		{"forward_allowed networks", "[egress]\nforward_allowed = [\"172.17.0.0/16\", \"172.18.0.5/32\", \"fd00:1::/64\"]\n", ""},
		{"forward_allowed address", "[egress]\nforward_allowed = [\"172.17.0.2\"]\n", `egress.forward_allowed[0] "172.17.0.2"`},
		// An address with a length (the container's own, with the bridge's
		// length) named the whole bridge: every container on it passed
		// (breaker10).
		{"forward_allowed host bits", "[egress]\nforward_allowed = [\"172.17.0.0/16\", \"172.17.0.2/16\"]\n", `egress.forward_allowed[1] "172.17.0.2/16": host bits set`},
		{"forward_allowed host bits v6", "[egress]\nforward_allowed = [\"fd00:1::7/64\"]\n", `egress.forward_allowed[0] "fd00:1::7/64": host bits set`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "c.toml")
			if err := os.WriteFile(p, []byte(tc.toml), 0o644); err != nil {
				t.Fatal(err)
			}
			c, err := Load(p)
			if err == nil {
				err = c.Finish(t.TempDir())
			}
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
	d := Default().Egress
	if !d.MTAUsers || !d.AllowLoopback || d.AllowRoot || d.Backend != "nftables" || len(d.Ports) != 3 {
		t.Errorf("defaults %+v", d)
	}
}
