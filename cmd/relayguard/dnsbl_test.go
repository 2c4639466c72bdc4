package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/dnsbl"
	"github.com/relayguard/relayguard/internal/dnsutil/dnstest"
)

// runDNSBL runs the built binary's `dnsbl` subcommand against a config
// whose resolver is the test DNS server.
func runDNSBL(t *testing.T, conf string, args ...string) (string, string, int) {
	t.Helper()
	bin, err := relayguardBinary()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, append([]string{"--config", conf, "--data-dir", t.TempDir(), "dnsbl"}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	var ee *exec.ExitError
	code := 0
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func dnsblConfig(t *testing.T, dnsAddr string, zones, domainZones []string) string {
	t.Helper()
	q := func(l []string) string {
		var s []string
		for _, z := range l {
			s = append(s, fmt.Sprintf("%q", z))
		}
		return "[" + strings.Join(s, ", ") + "]"
	}
	p := filepath.Join(t.TempDir(), "rg.toml")
	body := fmt.Sprintf("[dnsbl]\nzones = %s\ndomain_zones = %s\nresolvers = [%q]\ntimeout = \"1s\"\n", q(zones), q(domainZones), dnsAddr)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDNSBLCheckCommand(t *testing.T) {
	dns := dnstest.Start(t)
	dns.Add(t, "5.0.0.127.bl.test. 300 IN A 127.0.0.4", "bad.example.dbl.test. 300 IN A 127.0.1.2",
		"2.0.0.127.bl.test. 300 IN A 127.0.0.2", "test.dbl.test. 300 IN A 127.0.1.2")
	dns.Wildcard("quota.test", "127.255.255.254")
	dns.Wildcard("wild.test", "127.0.0.2") // a dead list that lists everything
	conf := dnsblConfig(t, dns.Addr, []string{"bl.test=127.0.0.[2..11]", "quota.test", "wild.test"}, []string{"dbl.test=127.0.1.[2..99]"})

	out, _, code := runDNSBL(t, conf, "check", "--no-catalog", "--json", "127.0.0.5", "127.0.0.9", "bad.example")
	if code != 1 {
		t.Errorf("listed address: exit %d, want 1\n%s", code, out)
	}
	var rows []dnsbl.Row
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("--json output: %v\n%s", err, out)
	}
	got := map[string]string{}
	for _, r := range rows {
		got[r.Target+" "+r.List] = r.Result
	}
	want := map[string]string{
		"127.0.0.5 bl.test": "listed", "127.0.0.9 bl.test": "clean",
		"127.0.0.5 quota.test": "skipped", "bad.example dbl.test": "listed", "127.0.0.9 wild.test": "skipped",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %q, want %q (all: %v)", k, got[k], v, got)
		}
	}
	// The list that answers an error code and the one that lists
	// everything are disabled by the health check: never "listed", never
	// "not listed"; the row says why, and the exit status says the check
	// is incomplete.
	for _, r := range rows {
		if r.Target == "127.0.0.9" && r.List == "quota.test" && (r.Listed || !strings.Contains(r.Meaning, "127.255.255.254")) {
			t.Errorf("127.0.0.9 quota.test: %+v, want the error code named", r)
		}
		if r.List == "wild.test" && (r.Listed || !strings.Contains(r.Meaning, "lists-everything")) {
			t.Errorf("%s wild.test: %+v, want skipped as lists-everything", r.Target, r)
		}
	}
	// Without the health check the wildcard list "lists" a clean address:
	// what the check above prevents.
	if _, _, code := runDNSBL(t, conf, "check", "--no-catalog", "--no-health", "127.0.0.9"); code != 1 {
		t.Errorf("--no-health with a lists-everything zone: exit %d, want 1", code)
	}
	out, _, code = runDNSBL(t, conf, "check", "--no-catalog", "127.0.0.9")
	if code != 2 || strings.Count(out, "LISTED") != 1 { // the header only
		t.Errorf("clean in bl.test, error code from quota.test: exit %d, want 2\n%s", code, out)
	}
	clean := dnsblConfig(t, dns.Addr, []string{"bl.test=127.0.0.[2..11]"}, nil)
	out, _, code = runDNSBL(t, clean, "check", "--no-catalog", "127.0.0.9")
	if code != 0 || strings.Count(out, "LISTED") != 1 { // the header only
		t.Errorf("clean address: exit %d, want 0\n%s", code, out)
	}
	if !strings.Contains(out, "TARGET") || !strings.Contains(out, "bl.test") {
		t.Errorf("table output:\n%s", out)
	}
	if _, errs, code := runDNSBL(t, conf, "check", "not an address!"); code != 2 || !strings.Contains(errs, `"not an address!"`) {
		t.Errorf("bad argument: exit %d, stderr %q", code, errs)
	}
}

func TestDNSBLHealthCommand(t *testing.T) {
	dns := dnstest.Start(t)
	dns.Add(t, "2.0.0.127.bl.test. 300 IN A 127.0.0.2")
	dns.Wildcard("wild.test", "127.0.0.2")
	dns.Dead("dead.test", true)
	conf := dnsblConfig(t, dns.Addr, []string{"bl.test", "wild.test", "dead.test"}, nil)
	out, errs, code := runDNSBL(t, conf, "health", "--json")
	if code != 1 {
		t.Errorf("with disabled zones: exit %d, want 1", code)
	}
	var rows []struct{ Zone, State string }
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("--json output: %v\n%s", err, out)
	}
	want := map[string]string{"bl.test": "healthy", "wild.test": "lists-everything", "dead.test": "dead"}
	for _, r := range rows {
		if want[r.Zone] != r.State {
			t.Errorf("%s: %s, want %s", r.Zone, r.State, want[r.Zone])
		}
	}
	if len(rows) != 3 {
		t.Errorf("%d zones reported, want 3", len(rows))
	}
	if !strings.Contains(errs, "LISTS EVERYTHING") {
		t.Errorf("no loud warning on stderr:\n%s", errs)
	}
	conf = dnsblConfig(t, dns.Addr, []string{"bl.test"}, nil)
	if out, _, code := runDNSBL(t, conf, "health"); code != 0 || !strings.Contains(out, "healthy") {
		t.Errorf("healthy zone: exit %d\n%s", code, out)
	}
}

// TestDNSBLCheckOneDeadline: the health check and every target are asked
// at once under one deadline: a dead list costs one timeout, not one per
// target plus one for its health probe (issue 13 item 8).
func TestDNSBLCheckOneDeadline(t *testing.T) {
	dns := dnstest.Start(t)
	dns.Add(t, "2.0.0.127.bl.test. 300 IN A 127.0.0.2", "5.0.0.127.bl.test. 300 IN A 127.0.0.2")
	dns.Dead("dead.test", true)
	conf := dnsblConfig(t, dns.Addr, []string{"bl.test", "dead.test"}, nil) // timeout = "1s"
	if _, err := relayguardBinary(); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	out, _, code := runDNSBL(t, conf, "check", "--no-catalog", "--json", "127.0.0.5", "127.0.0.9", "192.0.2.1")
	el := time.Since(t0)
	if code != 1 {
		t.Errorf("exit %d, want 1 (127.0.0.5 listed)\n%s", code, out)
	}
	var rows []dnsbl.Row
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("--json output: %v\n%s", err, out)
	}
	for _, r := range rows {
		if r.List == "dead.test" && r.Result != "skipped" && r.Result != "temp_error" {
			t.Errorf("%s dead.test: %s, want skipped or temp_error", r.Target, r.Result)
		}
	}
	// One after another this took 4 s (1 s health + 3 × 1 s).
	if el > 3500*time.Millisecond {
		t.Errorf("3 targets with a dead list took %v: not one deadline", el)
	}
}

// TestDNSBLHealthDNSUnreachable: with the resolver gone, `dnsbl health`
// says DNS is unreachable and judges no list (exit 2), instead of calling
// every list dead.
func TestDNSBLHealthDNSUnreachable(t *testing.T) {
	dns := dnstest.Start(t)
	dns.Outage(true)
	conf := dnsblConfig(t, dns.Addr, []string{"bl.test", "other.test"}, nil)
	out, errs, code := runDNSBL(t, conf, "health", "--json")
	if code != 2 || !strings.Contains(errs, "DNS unreachable") {
		t.Errorf("resolver down: exit %d, stderr %q, want 2 naming DNS", code, errs)
	}
	var rows []struct{ Zone, State, Detail string }
	if err := json.Unmarshal([]byte(out), &rows); err != nil || len(rows) != 2 {
		t.Fatalf("--json output: %v\n%s", err, out)
	}
	for _, r := range rows {
		if r.State != "unknown" || !strings.Contains(r.Detail, "DNS unreachable") {
			t.Errorf("resolver down: %s judged %s (%s), want unknown", r.Zone, r.State, r.Detail)
		}
	}
}

// TestDNSBLCheckRealDeadList: `dnsbl check` against a real unbound (NSD
// behind it) where one list's servers are silent: three targets and the
// health check share one deadline (issue 13 item 8: one after another,
// 3 targets with a dead list took 15 s).
func TestDNSBLCheckRealDeadList(t *testing.T) {
	dnstest.NeedReal(t)
	t.Parallel()
	nsd := dnstest.StartNSD(t, map[string][]string{"rgtest": {
		"2.0.0.127.bl IN A 127.0.0.2", "5.0.0.127.bl IN A 127.0.0.2", "2.0.0.127.dead IN A 127.0.0.2"}})
	silent := dnstest.StartProxy(t, nsd.Addr)
	silent.DropAll(true)
	ub := dnstest.StartUnbound(t, dnstest.Stub{Zone: "rgtest", Addrs: []string{nsd.Addr}},
		dnstest.Stub{Zone: "dead.rgtest", Addrs: []string{silent.Addr}})
	p := filepath.Join(t.TempDir(), "rg.toml")
	if err := os.WriteFile(p, []byte(fmt.Sprintf("[dnsbl]\nzones = [\"bl.rgtest\", \"dead.rgtest\"]\nresolvers = [%q]\ntimeout = \"2s\"\n", ub.Addr)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := relayguardBinary(); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	out, _, code := runDNSBL(t, p, "check", "--no-catalog", "--json", "127.0.0.5", "127.0.0.9", "192.0.2.1")
	el := time.Since(t0)
	if code != 1 {
		t.Errorf("exit %d, want 1 (127.0.0.5 listed)\n%s", code, out)
	}
	var rows []dnsbl.Row
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("--json output: %v\n%s", err, out)
	}
	for _, r := range rows {
		switch {
		case r.List == "dead.rgtest" && r.Result != "skipped" && r.Result != "temp_error":
			t.Errorf("%s dead.rgtest: %s, want skipped or temp_error", r.Target, r.Result)
		case r.List == "bl.rgtest" && (r.Target == "127.0.0.5") != r.Listed:
			t.Errorf("%s bl.rgtest: %+v", r.Target, r)
		}
	}
	// One after another: 2 s health + 3 × 2 s = 8 s. Under one deadline: 2 s
	// and the process's start.
	if el > 6*time.Second {
		t.Errorf("3 targets with a silent list took %v: not one deadline", el)
	}
}
