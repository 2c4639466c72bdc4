package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestGuardDefaultsValid(t *testing.T) {
	g := defaultGuard()
	if err := g.validate(); err != nil {
		t.Fatal(err)
	}
	if g.PopBeforeSMTP != 0 {
		t.Fatal("POP-before-SMTP must be off by default")
	}
}

func TestGuardValidationNamesKeyAndValue(t *testing.T) {
	tests := []struct {
		toml string
		want string
	}{
		{"maxretry = 0", "guard.maxretry 0"},
		{`findtime = "0s"`, "guard.findtime"},
		{"bantime_factor = 0.5", "guard.bantime_factor 0.5"},
		{`bantime = "2h"` + "\n" + `bantime_max = "1h"`, "guard.bantime_max 1h0m0s"},
		{`count = ["auth_failure", "sneeze"]`, `"sneeze"`},
		{`allow = ["10.0.0.0/33"]`, `guard.allow[0] "10.0.0.0/33"`},
		{"[[guard.subnet]]\nfamily = \"ipv5\"\nbits = 24\naddresses = 5\nwindow = \"1h\"", `guard.subnet[0].family "ipv5"`},
		{"[[guard.subnet]]\nfamily = \"ipv4\"\nbits = 32\naddresses = 5\nwindow = \"1h\"", "guard.subnet[0].bits 32"},
		{"[[guard.subnet]]\nfamily = \"ipv6\"\nbits = 64\naddresses = 1\nwindow = \"1h\"", "guard.subnet[0].addresses 1"},
		{"[[guard.auth_limit]]\nfamily = \"ipv6\"\nbits = 129\nper_minute = 1", "guard.auth_limit[0].bits 129"},
		{"[[guard.auth_limit]]\nfamily = \"ipv4\"\nbits = 24\nper_minute = -1", "per_minute -1"},
		{`pop_before_smtp = "-1m"`, "guard.pop_before_smtp"},
	}
	for _, tc := range tests {
		path := filepath.Join(t.TempDir(), "c.toml")
		body := "[guard]\n" + tc.toml + "\n"
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := Load(path)
		if err == nil {
			err = c.Finish(t.TempDir())
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err = %v, want it to mention %q", tc.toml, err, tc.want)
		}
	}
}

func TestGuardSubnetTablesReplaceDefaults(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.toml")
	os.WriteFile(path, []byte("[guard]\n[[guard.subnet]]\nfamily = \"ipv4\"\nbits = 16\naddresses = 20\nwindow = \"2h\"\n"), 0o644)
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Guard.Subnets) != 1 || c.Guard.Subnets[0].Bits != 16 {
		t.Fatalf("subnets = %+v", c.Guard.Subnets)
	}
}
