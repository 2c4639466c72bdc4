package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/relayguard/relayguard/internal/dnsutil/dnstest"
)

var zoneLineRE = regexp.MustCompile(`(?m)^\S+\._domainkey\.\S+\. IN TXT \(.*\)$`)

// keygen writes a key under the data directory and prints a record that,
// once published, `dkim check` accepts; check names what is wrong when
// the record is missing, holds another key, or DNS fails, and exits 1.
func TestDKIMKeygenAndCheck(t *testing.T) {
	t.Parallel()
	bin := testBinary(t)
	dns := dnstest.Start(t)
	data := t.TempDir()
	for _, alg := range []string{"ed25519", "rsa"} {
		out, errOut, code := runRG(t, bin, "--data-dir", data, "dkim", "keygen", "Example.TEST", "--algorithm", alg, "--selector", "s-"+alg)
		if code != 0 {
			t.Fatalf("keygen %s: %d %s", alg, code, errOut)
		}
		key := filepath.Join(data, "dkim", "example.test", "s-"+alg+".key")
		if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("key file %s: %v", key, err)
		}
		line := zoneLineRE.FindString(out)
		if line == "" || !strings.Contains(out, "selector = \"s-"+alg+"\"") || !strings.Contains(out, `domain = "example.test"`) {
			t.Fatalf("keygen output:\n%s", out)
		}
		if alg == "rsa" && strings.Count(line, `"`) < 4 {
			t.Fatalf("an RSA record longer than 255 octets must be split into strings: %s", line)
		}
		dns.Add(t, line)
	}
	check := func() (string, int) {
		out, errOut, code := runRG(t, bin, "--data-dir", data, "dkim", "check", "example.test", "--dns-server", dns.Addr)
		return out + errOut, code
	}
	if out, code := check(); code != 0 || strings.Count(out, ": ok (") != 2 {
		t.Fatalf("check with both records published: exit %d\n%s", code, out)
	}

	// A second keygen with the same selector does not destroy the key.
	if _, errOut, code := runRG(t, bin, "--data-dir", data, "dkim", "keygen", "example.test", "--algorithm", "rsa", "--selector", "s-rsa"); code == 0 || !strings.Contains(errOut, "exists") {
		t.Fatalf("second keygen: %d %s", code, errOut)
	}
	// The ed25519 record replaced by another key's: a mismatch.
	dns.Remove("s-ed25519._domainkey.example.test.")
	dns.Add(t, `s-ed25519._domainkey.example.test. IN TXT "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="`)
	if out, code := check(); code != 1 || !strings.Contains(out, "s-ed25519._domainkey.example.test: published ed25519 key differs") || !strings.Contains(out, "s-rsa._domainkey.example.test: ok") {
		t.Fatalf("mismatch: exit %d\n%s", code, out)
	}
	dns.Remove("s-ed25519._domainkey.example.test.")
	if out, code := check(); code != 1 || !strings.Contains(out, "not published") {
		t.Fatalf("missing record: exit %d\n%s", code, out)
	}
	dns.ServFail("example.test", true)
	if out, code := check(); code != 1 || !strings.Contains(out, "cannot look up") {
		t.Fatalf("SERVFAIL: exit %d\n%s", code, out)
	}
	if _, errOut, code := runRG(t, bin, "--data-dir", data, "dkim", "check", "other.test", "--dns-server", dns.Addr); code == 0 || !strings.Contains(errOut, "no [[dkim.key]] for other.test") {
		t.Fatalf("domain without keys: exit %d %s", code, errOut)
	}
	if _, errOut, code := runRG(t, bin, "--data-dir", data, "dkim", "keygen", "example.test", "--selector", "bad_sel"); code == 0 || !strings.Contains(errOut, "bad_sel") {
		t.Fatalf("bad selector: %d %s", code, errOut)
	}
}
