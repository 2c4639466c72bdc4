package authtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/relayguard/relayguard/internal/deliver/delivertest"
)

// SignZone signs the zone file text of origin with a new ECDSA P-256 key
// (ldns-keygen, ldns-signzone from ldnsutils: a signer nobody here wrote)
// and returns the signed zone file and the DS record of the key, the
// trust anchor a validating resolver needs to find the zone secure.
func SignZone(t testing.TB, origin, text string) (signed, ds string) {
	t.Helper()
	keygen := delivertest.Need(t, "ldns-keygen")
	signzone := delivertest.Need(t, "ldns-signzone")
	dir := t.TempDir()
	origin = strings.TrimSuffix(strings.ToLower(origin), ".") + "."
	// ldns-keygen writes its files into the working directory.
	kg := exec.Command(keygen, "-a", "ECDSAP256SHA256", "-k", origin)
	kg.Dir = dir
	out, err := kg.Output()
	if err != nil {
		t.Fatalf("ldns-keygen: %v", err)
	}
	base := strings.TrimSpace(string(out))
	zf := filepath.Join(dir, "zone")
	if err := os.WriteFile(zf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(signzone, "-o", origin, zf, filepath.Join(dir, base))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ldns-signzone: %v\n%s", err, out)
	}
	s, err := os.ReadFile(zf + ".signed")
	if err != nil {
		t.Fatal(err)
	}
	d, err := os.ReadFile(filepath.Join(dir, base+".ds"))
	if err != nil {
		t.Fatal(err)
	}
	return string(s), strings.Join(strings.Fields(string(d)), " ")
}
