package logline

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Files are recognised by content: a gzip file named like a plain one and
// an xz file named ".1" both read, as logrotate leaves them.
func TestOpenByContent(t *testing.T) {
	dir := t.TempDir()
	const text = "Nov 23 10:00:00 mx1 postfix/smtpd[1]: connect from unknown[192.0.2.1]\n"
	plain := filepath.Join(dir, "mail.log")
	os.WriteFile(plain, []byte(text), 0o600)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(text))
	zw.Close()
	gzName := filepath.Join(dir, "mail.log.1") // compressed, no .gz suffix
	os.WriteFile(gzName, gz.Bytes(), 0o600)
	names := []string{plain, gzName}
	if _, err := exec.LookPath("xz"); err == nil {
		xzName := filepath.Join(dir, "mail.log.2")
		cmd := exec.Command("xz", "-c")
		cmd.Stdin = bytes.NewReader([]byte(text))
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(xzName, out, 0o600)
		names = append(names, xzName)
	} else if os.Getenv("CI") == "true" {
		t.Fatal("xz not installed (xz-utils)")
	} else {
		t.Log("xz not installed: xz case skipped")
	}
	for _, n := range names {
		rc, err := Open(context.Background(), n)
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		b, err := io.ReadAll(rc)
		if err != nil || string(b) != text {
			t.Errorf("%s: read %q, %v", n, b, err)
		}
		if err := rc.Close(); err != nil {
			t.Errorf("%s: close: %v", n, err)
		}
	}
	// A damaged file is an error of the reading (the caller names the
	// file), after the lines before the damage; Close has nothing more.
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte{0xfd, '7', 'z', 'X', 'Z', 0, 1, 2, 3}, 0o600)
	var gzData bytes.Buffer
	zw = gzip.NewWriter(&gzData)
	zw.Write([]byte(strings.Repeat(text, 2000)))
	zw.Close()
	badGz := filepath.Join(dir, "bad.gz")
	os.WriteFile(badGz, gzData.Bytes()[:gzData.Len()-20], 0o600) // (the end of the data and the trailer cut)
	for n, want := range map[string]string{bad: "xz -dc: exit status 1: xz: (stdin): Unexpected end of input", badGz: "gzip: unexpected EOF"} {
		if _, err := exec.LookPath("xz"); err != nil && n == bad {
			continue
		}
		rc, err := Open(context.Background(), n)
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		b, err := io.ReadAll(rc)
		if err == nil || err.Error() != want {
			t.Errorf("damaged %s: read error %v, want %q", n, err, want)
		}
		if n == badGz && !strings.HasPrefix(strings.Repeat(text, 2000), string(b)) || n == badGz && len(b) < len(text) {
			t.Errorf("damaged %s: %d bytes read before the error, want the lines before the damage", n, len(b))
		}
		if _, err := rc.Read(make([]byte, 10)); err == nil || err.Error() != want {
			t.Errorf("damaged %s: a read after the error: %v, want the error again", n, err)
		}
		if err := rc.Close(); err != nil {
			t.Errorf("damaged %s: close: %v", n, err)
		}
	}
	if _, err := Open(context.Background(), filepath.Join(dir, "missing")); err == nil {
		t.Error("missing file opened")
	}
}

func TestParseJournal(t *testing.T) {
	// MESSAGE as an array of bytes (not valid UTF-8 in the journal).
	line := []byte(`{"__CURSOR":"s=1","MESSAGE":[104,105],"SYSLOG_IDENTIFIER":"postfix/smtpd","_PID":"42","_HOSTNAME":"mx1","__REALTIME_TIMESTAMP":"1795428002000000"}`)
	l, cur, ok := ParseJournal(line, time.UTC)
	if !ok || cur != "s=1" || l.Message != "hi" || l.Program != "postfix/smtpd" || l.PID != 42 || l.Host != "mx1" ||
		!l.Time.Equal(time.UnixMicro(1795428002000000)) {
		t.Fatalf("got %+v %q %v", l, cur, ok)
	}
	if l, _, ok := ParseJournal([]byte(`{"MESSAGE":"x"}`), nil); !ok || !l.Time.IsZero() {
		t.Errorf("entry without time: %+v %v, want a zero time", l, ok)
	}
	if _, _, ok := ParseJournal([]byte(`not json`), nil); ok {
		t.Error("bad JSON accepted")
	}
}

// A saved `journalctl -o json` export is recognised by content, also inside
// xz, and each entry comes out as one syslog line that Parse reads back as
// ParseJournal's Line; relayguard's own JSON log (`{"time":…`) stays text.
func TestOpenJournalExport(t *testing.T) {
	dir := t.TempDir()
	const entry = `{"__CURSOR":"s=1;i=2","__REALTIME_TIMESTAMP":"1764930000123456","_HOSTNAME":"mx1","SYSLOG_IDENTIFIER":"postfix/smtpd","SYSLOG_PID":"77","_PID":"77","MESSAGE":[119,97,114,110,10,233]}` + "\n" +
		`{"__CURSOR":"s=1;i=3","__REALTIME_TIMESTAMP":"1764930001000000","SYSLOG_IDENTIFIER":"x"}` + "\n" // no MESSAGE: skipped
	own := `{"time":"2026-12-06T08:00:00Z","level":"WARN","msg":"auth failed","client":"192.0.2.7"}` + "\n"
	jf := filepath.Join(dir, "j.1")
	cmd := exec.Command("xz", "-c")
	cmd.Stdin = bytes.NewReader([]byte(entry))
	xzOut, err := cmd.Output()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("xz (xz-utils): %v", err)
		}
		t.Logf("xz: %v: journal read plain only", err)
		xzOut = []byte(entry)
	}
	os.WriteFile(jf, xzOut, 0o600)
	ownF := filepath.Join(dir, "relayguard.json")
	os.WriteFile(ownF, []byte(own), 0o600)
	read := func(n string) string {
		rc, err := Open(context.Background(), n)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		return string(b)
	}
	if got := read(ownF); got != own {
		t.Errorf("relayguard's JSON log changed: %q", got)
	}
	got := read(jf)
	want, _, _ := ParseJournal([]byte(entry[:bytes.IndexByte([]byte(entry), '\n')]), nil)
	want.Message = "warn \xe9" // the line break inside the message: a space
	var p Parser
	l, ok := p.Parse(got)
	if !ok || strings.Count(got, "\n") != 1 || !l.Time.Equal(want.Time) || l.Host != want.Host || l.Program != want.Program || l.PID != want.PID || l.Message != want.Message {
		t.Errorf("journal entry read as %q: %+v, want %+v", got, l, want)
	}
}

// PlainFile gives the file under Open's reader only when Open reads it as
// it is: plain text, not gzip, not a journal export.
func TestPlainFile(t *testing.T) {
	dir := t.TempDir()
	line := "Nov 23 10:00:00 mx1 postfix/smtpd[1]: connect from unknown[192.0.2.1]\n"
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(line))
	zw.Close()
	for name, c := range map[string]struct {
		content string
		plain   bool
	}{
		"mail.log":     {line, true},
		"mail.log.1":   {gz.String(), false},
		"journal.json": {`{"__CURSOR":"c1","__REALTIME_TIMESTAMP":"1","MESSAGE":"m"}` + "\n", false},
	} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(c.content), 0o644)
		r, err := Open(t.Context(), p)
		if err != nil {
			t.Fatal(err)
		}
		f, ok := PlainFile(r)
		if ok != c.plain || ok && f.Name() != p {
			t.Errorf("%s: PlainFile = %v, %v; want plain %v", name, f, ok, c.plain)
		}
		r.Close()
	}
}

// An xz file closed before its end (report's firstTime reads a file's first
// line to order the files, then closes it) does not hang: xz, blocked on a
// full pipe nobody reads, used to be waited for before the pipe was closed,
// so `relayguard report` never returned on an .xz log larger than ~70 kB.
func TestOpenXZClosedEarly(t *testing.T) {
	if _, err := exec.LookPath("xz"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("xz not installed (xz-utils)")
		}
		t.Skip("xz not installed (xz-utils)")
	}
	var text bytes.Buffer
	for i := 0; text.Len() < 2<<20; i++ { // (far more than a pipe and the reader's buffer hold)
		fmt.Fprintf(&text, "Nov 23 10:00:%02d mx1 postfix/smtpd[%d]: connect from unknown[192.0.2.%d]\n", i%60, i, i%250)
	}
	cmd := exec.Command("xz", "-0", "-c")
	cmd.Stdin = bytes.NewReader(text.Bytes())
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	name := filepath.Join(t.TempDir(), "mail.log.1")
	if err := os.WriteFile(name, out, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, read := range []int{0, 1, 1000} { // lines read before Close
		rc, err := Open(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(rc)
		for range read {
			if l, err := br.ReadString('\n'); err != nil || !strings.Contains(l, "connect from") {
				t.Fatalf("line read %q, %v", l, err)
			}
		}
		closed := make(chan error, 1)
		go func() { closed <- rc.Close() }()
		select {
		case err := <-closed:
			if err != nil {
				t.Errorf("close after %d lines: %v (the reader stopped early: no error of xz's to report)", read, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("Close after %d of %d lines has not returned in 30 s: xz waited for on a full pipe", read, strings.Count(text.String(), "\n"))
		}
	}
	// Read to its end, the file still closes without error.
	rc, err := Open(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(rc); err != nil || !bytes.Equal(b, text.Bytes()) {
		t.Fatalf("read %d bytes, %v; want %d", len(b), err, text.Len())
	}
	if err := rc.Close(); err != nil {
		t.Fatal(err)
	}
}
