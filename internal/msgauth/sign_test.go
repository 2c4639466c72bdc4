package msgauth_test

import (
	"bytes"
	"crypto"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/deliver/delivertest"
	"github.com/relayguard/relayguard/internal/msgauth"
	"github.com/relayguard/relayguard/internal/msgauth/authtest"
)

const testMsg = "From: Alice <alice@example.test>\r\n" +
	"To: bob@remote.test\r\n" +
	"Subject: DKIM test \r\n" +
	"Date: Sat, 05 Dec 2026 10:00:00 +0000\r\n" +
	"Message-ID: <1@example.test>\r\n" +
	"X-Unsigned: not in the list\r\n" +
	"\r\n" +
	"Hello Bob,  \r\n" +
	"\r\n" +
	"a line with trailing space \r\n" +
	".a line starting with a dot\r\n" +
	"\r\n\r\n"

// testKeys makes an RSA and an Ed25519 key for example.test.
func testKeys(t *testing.T) []msgauth.SigningKey {
	t.Helper()
	var keys []msgauth.SigningKey
	for _, alg := range []string{msgauth.AlgRSA, msgauth.AlgEd25519} {
		k, err := msgauth.GenerateKey(alg)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, msgauth.SigningKey{Domain: "example.test", Selector: "s" + alg, Key: k})
	}
	return keys
}

func keyZone(t *testing.T, keys []msgauth.SigningKey) authtest.Zone {
	t.Helper()
	z := authtest.Zone{Name: "example.test"}
	for _, k := range keys {
		rec, err := msgauth.Record(k.Key.Public())
		if err != nil {
			t.Fatal(err)
		}
		line := msgauth.ZoneLine(k.Selector, k.Domain, rec)
		z.Records = append(z.Records, line)
	}
	return z
}

func sign(t *testing.T, s *msgauth.Signer, msg string) string {
	t.Helper()
	sig, err := s.Sign(strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	return string(sig) + msg
}

// Both signatures (rsa-sha256 and ed25519-sha256) of a message are
// verified by two implementations nobody here wrote, dkimpy's dkimverify
// and OpenDKIM's opendkim-testmsg, against the records ZoneLine prints,
// served by a real DNS server; a changed body and an added From: field
// make both fail.
func TestSignVerifiedByDkimpyAndOpenDKIM(t *testing.T) {
	dkimverify := delivertest.Need(t, "dkimverify")
	testmsg := delivertest.Need(t, "opendkim-testmsg")
	keys := testKeys(t)
	s, err := msgauth.NewSigner(keys, config.DefaultDKIMHeaders, []string{"From", "To", "Subject"})
	if err != nil {
		t.Fatal(err)
	}
	signed := sign(t, s, testMsg)
	if n := strings.Count(signed, "DKIM-Signature:"); n != 2 {
		t.Fatalf("%d signatures, want 2:\n%s", n, signed)
	}
	zones := []authtest.Zone{keyZone(t, keys)}

	// Relaxed canonicalization: whitespace changes inside lines and
	// trailing empty lines do not matter, a changed word does; a second
	// From: (or To:, Subject:) added on the way breaks the signature
	// (oversigning). OpenDKIM refuses those last ones before it looks at
	// the signature (a second From:, To: or Subject: is a syntax error
	// to it, RFC 5322 §3.6); dkimpy refuses them for the signature.
	i := strings.Index(signed, "From: Alice")
	cases := []struct {
		name, msg string
		valid     bool
	}{
		{"signed", signed, true},
		{"relaxed", strings.Replace(signed, "Hello Bob,  \r\n", "Hello   Bob,\r\n", 1) + "\r\n", true},
		{"tampered", strings.Replace(signed, "Hello Bob", "Hello Eve", 1), false},
		{"from-added", signed[:i] + "From: mallory@evil.test\r\n" + signed[i:], false},
		{"to-added", "To: carol@remote.test\r\n" + signed, false},
		{"subject-added", signed[:i] + "Subject: other\r\n" + signed[i:], false},
	}
	dir := t.TempDir()
	var files []string
	for _, c := range cases {
		f := filepath.Join(dir, c.name)
		if err := os.WriteFile(f, []byte(c.msg), 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	// One namespace and one NSD for all runs: each tool prints nothing
	// but its verdict, collected as "NAME TOOL ok|fail".
	script := `for f in "$@"; do n=$(basename "$f")
	for i in 0 1; do
		if "$RG_DKIMVERIFY" --index $i <"$f" 2>/dev/null | grep -qx "signature ok"; then echo "$n dkimpy$i ok"; else echo "$n dkimpy$i fail"; fi
	done
	out=$("$RG_TESTMSG" <"$f" 2>&1)
	if [ $? = 0 ] && [ -z "$out" ]; then echo "$n opendkim ok"; else echo "$n opendkim fail: $out"; fi
done`
	t.Setenv("RG_DKIMVERIFY", dkimverify)
	t.Setenv("RG_TESTMSG", testmsg)
	out, err := authtest.RunWithDNS(t, zones, nil, append([]string{"bash", "-c", script, "verify"}, files...)...)
	if err != nil {
		t.Fatalf("verification run: %v\n%s", err, out)
	}
	for _, c := range cases {
		for _, tool := range []string{"dkimpy0", "dkimpy1", "opendkim"} {
			ok := strings.Contains(out, c.name+" "+tool+" ok\n")
			if !ok && !strings.Contains(out, c.name+" "+tool+" fail") {
				t.Fatalf("%s: no verdict from %s:\n%s", c.name, tool, out)
			}
			if ok != c.valid {
				t.Errorf("%s: %s says valid=%v, want %v", c.name, tool, ok, c.valid)
			}
		}
	}
	if t.Failed() {
		t.Logf("verifier output:\n%s\nsigned message:\n%s", out, signed)
	}
}

// The h= list holds each configured field as often as it occurs, the
// oversigned ones once more; fields outside the list are not signed.
func TestSignedHeaderList(t *testing.T) {
	keys := testKeys(t)[1:]
	s, err := msgauth.NewSigner(keys, []string{"From", "To", "Subject", "Date", "Cc"}, []string{"From", "To", "Subject"})
	if err != nil {
		t.Fatal(err)
	}
	msg := strings.Replace(testMsg, "To: bob@remote.test\r\n", "To: bob@remote.test\r\nTo: carol@remote.test\r\n", 1)
	signed := sign(t, s, msg)
	var pub crypto.PublicKey = keys[0].Key.Public()
	rec, _ := msgauth.Record(pub)
	vs, err := dkim.VerifyWithOptions(strings.NewReader(signed), &dkim.VerifyOptions{
		LookupTXT: func(string) ([]string, error) { return []string{rec}, nil },
	})
	if err != nil || len(vs) != 1 || vs[0].Err != nil {
		t.Fatalf("verify: %v %+v", err, vs)
	}
	got := strings.ToLower(strings.Join(vs[0].HeaderKeys, ":"))
	if got != "from:from:to:to:to:subject:subject:date" {
		t.Fatalf("h=%s", got)
	}
}

// Keys are chosen by the author domain (From:), falling back to the
// closest parent; other domains, several authors or no From: are not
// signed.
func TestSignChoosesKeyByAuthorDomain(t *testing.T) {
	keys := testKeys(t)[1:]
	s, err := msgauth.NewSigner(keys, config.DefaultDKIMHeaders, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		from    string
		signed  bool
		noAuthr bool
	}{
		{"From: a@example.test", true, false},
		{"From: \"=?utf-8?q?Caf=C3=A9?=\" <a@Mail.EXAMPLE.test>", true, false},
		{"From: =?x-unknown?q?abc?= <a@example.test>", true, false},
		{"From: a@example.test, b@example.test", true, false},
		{"From: a@other.test", false, false},
		{"From: a@notexample.test", false, false},
		{"From: a@example.test, b@other.test", false, true},
		{"From: a@example.test\r\nFrom: b@example.test", false, true},
		{"Sender: a@example.test", false, true},
		{"From: undisclosed", false, true},
	} {
		msg := c.from + "\r\nSubject: x\r\n\r\nbody\r\n"
		sig, err := s.Sign(strings.NewReader(msg))
		if c.noAuthr {
			if !errors.Is(err, msgauth.ErrNoAuthor) {
				t.Errorf("%q: err %v, want ErrNoAuthor", c.from, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", c.from, err)
			continue
		}
		if got := bytes.Contains(sig, []byte("d=example.test")); got != c.signed {
			t.Errorf("%q: signed %v, want %v: %s", c.from, got, c.signed, sig)
		}
	}
}

// Keys written by WriteKey load back; an existing key is never replaced;
// short RSA keys and non-keys are refused with the file named.
func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	for _, alg := range []string{msgauth.AlgRSA, msgauth.AlgEd25519} {
		k, err := msgauth.GenerateKey(alg)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, "d", alg+".key")
		if err := msgauth.WriteKey(p, k); err != nil {
			t.Fatal(err)
		}
		if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v", p, fi.Mode())
		}
		back, err := msgauth.LoadKey(p)
		if err != nil {
			t.Fatal(err)
		}
		if !msgauth.SamePublic(back.Public(), k.Public()) {
			t.Fatalf("%s: loaded key differs", alg)
		}
		if err := msgauth.WriteKey(p, k); err == nil || !strings.Contains(err.Error(), "exists") {
			t.Fatalf("second WriteKey: %v", err)
		}
		rec, _ := msgauth.Record(k.Public())
		parsed, err := msgauth.ParseRecord(rec)
		if err != nil || !msgauth.SamePublic(parsed.Public, k.Public()) {
			t.Fatalf("ParseRecord(%q): %v", rec, err)
		}
	}
	bad := filepath.Join(dir, "bad.key")
	os.WriteFile(bad, []byte("not a key"), 0o600)
	if _, err := msgauth.LoadKey(bad); err == nil || !strings.Contains(err.Error(), bad) {
		t.Fatalf("LoadKey(garbage): %v", err)
	}
	for _, rec := range []string{"v=DKIM2; p=abc", "k=rsa", "k=dsa; p=AAAA", "v=DKIM1; k=ed25519; p=AAAA", "p=%%%"} {
		if _, err := msgauth.ParseRecord(rec); err == nil {
			t.Errorf("ParseRecord(%q) accepted", rec)
		}
	}
	if r, err := msgauth.ParseRecord("v=DKIM1; p="); err != nil || r.Public != nil {
		t.Errorf("revoked record: %v %+v", err, r)
	}
}
