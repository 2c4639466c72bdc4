package main

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDamagedCompressedLogNamed: every command that reads old logs through
// logline.Open (report, watch --replay, egress report) fails on a
// truncated .gz or .xz with one line naming the file once, and reads the
// whole file when it is not damaged. watch --replay and egress report used
// to read a truncated .xz as if it had ended there and exit 0, and report
// named a truncated .gz nowhere ("relayguard: unexpected EOF").
func TestDamagedCompressedLogNamed(t *testing.T) {
	bin := testBinary(t)
	dir := t.TempDir()
	var text bytes.Buffer
	for i := 0; text.Len() < 4<<20; i++ { // (decompressed far past any buffer of the readers)
		fmt.Fprintf(&text, "Dec  4 10:%02d:%02d mx1 postfix/smtpd[%d]: warning: unknown[203.0.113.%d]: SASL LOGIN authentication failed: authentication failure, sasl_username=u%d@example.com\n",
			i/60%60, i%60, 1000+i%5000, i%250, i%7)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(text.Bytes())
	zw.Close()
	files := map[string][]byte{"mail.log.gz": gz.Bytes()}
	if _, err := exec.LookPath("xz"); err == nil {
		cmd := exec.Command("xz", "-1", "-c")
		cmd.Stdin = bytes.NewReader(text.Bytes())
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		files["mail.log.xz"] = out
	} else if os.Getenv("CI") == "true" {
		t.Fatal("xz not installed (xz-utils)")
	} else {
		t.Log("xz not installed: the .xz cases are skipped")
	}
	for base, data := range files {
		good := filepath.Join(dir, base)
		bad := filepath.Join(dir, "damaged-"+base)
		if err := os.WriteFile(good, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(bad, data[:len(data)/2], 0o600); err != nil {
			t.Fatal(err)
		}
		for _, args := range [][]string{{"report"}, {"watch", "--replay"}, {"egress", "report"}} {
			name := strings.Join(args, " ")
			if _, errOut, code := runRG(t, bin, append(args, good)...); code != 0 {
				t.Errorf("%s %s: exit %d, %s", name, base, code, errOut)
			}
			_, errOut, code := runRG(t, bin, append(args, bad)...)
			var lines []string
			for _, l := range strings.Split(strings.TrimSpace(errOut), "\n") {
				if strings.HasPrefix(l, "relayguard: ") {
					lines = append(lines, l)
				}
			}
			kind := map[bool]string{true: "gzip: unexpected EOF", false: "xz -dc: exit status 1"}[strings.HasSuffix(base, ".gz")]
			if code == 0 || len(lines) != 1 || strings.Count(lines[0], bad) != 1 || !strings.Contains(lines[0], kind) {
				t.Errorf("%s on a truncated %s: exit %d, stderr %q; want a failure and one line naming %s once with %q", name, base, code, errOut, bad, kind)
			}
		}
	}
}
