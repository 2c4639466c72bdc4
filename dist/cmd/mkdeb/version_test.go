package main

import (
	"os"
	"os/exec"
	"testing"
)

// TestDebVersionOrder: Debian orders the versions DebVersion makes as Go
// orders the module versions they come from, by dpkg's own comparison.
func TestDebVersionOrder(t *testing.T) {
	if _, err := exec.LookPath("dpkg"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("dpkg is not installed")
		}
		t.Skip("dpkg is not installed")
	}
	cases := map[string]string{
		"v1.2.3":                               "1.2.3-1",
		"v0.0.0-20260102150405-abcdef123456":   "0.0.0~20260102150405.abcdef123456-1",
		"v1.2.4-0.20260102150405-abcdef123456": "1.2.4~0.20260102150405.abcdef123456-1",
		"v1.2.3-rc.1":                          "1.2.3~rc.1-1",
		"(devel)":                              "0.0.0~~devel-1",
	}
	for in, want := range cases {
		if got := DebVersion(in); got != want {
			t.Errorf("DebVersion(%q) = %q, want %q", in, got, want)
		}
	}
	// Each version is older than the next, for Go and for dpkg.
	ascending := []string{
		"(devel)",
		"v0.0.0-20260102150405-abcdef123456",
		"v0.0.0-20260102150406-0123456789ab",
		"v0.1.0",
		"v1.2.3-rc.1",
		"v1.2.3",
		"v1.2.4-0.20260102150405-abcdef123456",
		"v1.2.4",
		"v1.10.0",
	}
	for i := 1; i < len(ascending); i++ {
		a, b := DebVersion(ascending[i-1]), DebVersion(ascending[i])
		if err := exec.Command("dpkg", "--compare-versions", a, "lt", b).Run(); err != nil {
			t.Errorf("dpkg does not order %s (%s) before %s (%s)", a, ascending[i-1], b, ascending[i])
		}
	}
}
