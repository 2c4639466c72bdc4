package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
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
	files := map[string][]byte{}
	for kind, data := range compressed(t, text.Bytes()) {
		files["mail.log."+map[string]string{"gzip": "gz", "xz": "xz"}[kind]] = data
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

// TestEgressReportLongLine: a line over 1 MiB in the log egress report
// reads (a syslog file or a journal export, where any local user may log
// through /dev/log) is one unparsable line, named with its number, and the
// lines around it are counted. It stopped the report before: "egress
// report: FILE: bufio.Scanner: token too long", exit 1, nothing counted.
func TestEgressReportLongLine(t *testing.T) {
	bin := testBinary(t)
	drop := func(tm string, port int) string {
		return fmt.Sprintf("Nov 23 %s mx kernel: [12345.678901] EGRESS-DROP: IN= OUT=eth0 SRC=192.0.2.7 DST=203.0.113.9 LEN=60 TOS=0x00 PREC=0x00 TTL=64 ID=54321 DF PROTO=TCP SPT=%d DPT=25 WINDOW=64240 RES=0x00 SYN URGP=0 UID=2000 GID=2001\n", tm, port)
	}
	log := drop("18:56:32", 58389) + "Nov 23 18:56:33 mx www-data: " + strings.Repeat("A", 3<<20) + "\n" +
		drop("18:57:40", 58390) + strings.Repeat("B", 2<<20) // (the last line has no end)
	path := filepath.Join(t.TempDir(), "kern.log")
	if err := os.WriteFile(path, []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runRG(t, bin, "egress", "report", path)
	if code != 0 {
		t.Fatalf("egress report: exit %d: %s", code, errOut)
	}
	// A year out of range is named (it printed -0005-11-23 and "-").
	for _, y := range []string{"-5", "10000"} {
		if _, errOut, code := runRG(t, bin, "egress", "report", "--year", y, path); code != 2 || !strings.Contains(errOut, "--year "+y+": want a year from 1 to 9999") {
			t.Errorf("egress report --year %s: exit %d, %q", y, code, errOut)
		}
	}
	for _, want := range []string{
		"2 connection attempts in 2 packet log lines (2 unparsable lines)",
		"unparsable: " + path + ":2: longer than 1048576 bytes, skipped",
		"unparsable: " + path + ":4: longer than 1048576 bytes, skipped",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("egress report lacks %q:\n%s", want, out)
		}
	}
}

// TestAuditLongLine: a line over 1 MiB in a log audit reads (--log) is
// skipped and named in a note, and the lines after it are read: the
// program a kernel line after it names is reported. The reading of the
// file stopped there before ("egress/logs: FILE: bufio.Scanner: token too
// long", a check not done) and the blocked attempt went unreported.
func TestAuditLongLine(t *testing.T) {
	bin := testBinary(t)
	dir := t.TempDir()
	stamp := time.Now().Add(-time.Hour).Format(time.Stamp)
	log := stamp + " mx www-data: " + strings.Repeat("A", 2<<20) + "\n" +
		stamp + " mx kernel: [12345.678901] EGRESS-DROP: IN= OUT=eth0 SRC=192.0.2.7 DST=203.0.113.9 LEN=60 TOS=0x00 PREC=0x00 TTL=64 ID=54321 DF PROTO=TCP SPT=58389 DPT=25 WINDOW=64240 RES=0x00 SYN URGP=0 UID=2000 GID=2001\n"
	path := filepath.Join(dir, "kern.log")
	if err := os.WriteFile(path, []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	add := exec.Command(bin, "--data-dir", data, "--create-data-dir", "user", "add", "bob@example.org", "--password-stdin")
	add.Stdin = strings.NewReader("correct horse battery staple\n")
	if out, err := add.CombinedOutput(); err != nil {
		t.Fatalf("user add: %v\n%s", err, out)
	}
	out, errOut, _ := runRG(t, bin, "--data-dir", data, "audit", "--areas", "egress,accounts", "--json", "--log", path)
	var rep struct {
		Findings []struct{ Check, Subject string }
		Problems []struct{ Area, Check, Error string }
		Notes    []string
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("audit --json: %v\n%s\n%s", err, out, errOut)
	}
	if len(rep.Problems) > 0 {
		t.Errorf("problems: %+v", rep.Problems)
	}
	if !slices.ContainsFunc(rep.Findings, func(f struct{ Check, Subject string }) bool {
		return f.Check == "egress.blocked-attempts" && strings.Contains(f.Subject, "uid 2000")
	}) {
		t.Errorf("the attempt after the long line is not reported: %+v", rep.Findings)
	}
	// Read by two areas (accounts for logins, egress), named once.
	var long []string
	for _, n := range rep.Notes {
		if strings.Contains(n, "longer than") {
			long = append(long, n)
		}
	}
	if want := path + ": 1 lines longer than 1048576 bytes skipped (the first: line 1)"; !slices.Equal(long, []string{want}) {
		t.Errorf("notes %q, want %q", rep.Notes, want)
	}
}

// TestCompressedStdin: "-" (standard input) is read as a named file is:
// gzip and xz by content, a truncated stream an error naming "standard
// input". `cat mail.log.1.gz |
// relayguard report -` read the compressed bytes as text lines, found
// nothing and exited 0; watch --replay and egress report did the same, and
// a truncated stream was as good as a whole one.
func TestCompressedStdin(t *testing.T) {
	bin := testBinary(t)
	var text bytes.Buffer
	const n = 20000
	for i := range n {
		fmt.Fprintf(&text, "Dec  4 10:%02d:%02d mx1 postfix/smtpd[%d]: warning: unknown[203.0.113.%d]: SASL LOGIN authentication failed: authentication failure\n",
			i/60%60, i%60, 1000+i%5000, i%250)
	}
	streams := compressed(t, text.Bytes())
	run := func(in []byte, args ...string) (string, string, int) {
		cmd := exec.Command(bin, args...)
		cmd.Stdin = bytes.NewReader(in)
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); ok {
			return stdout.String(), stderr.String(), ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return stdout.String(), stderr.String(), 0
	}
	for kind, data := range streams {
		out, errOut, code := run(data, "report", "--format", "json", "-")
		if want := fmt.Sprintf(`"lines_read": %d,`, n); code != 0 || !strings.Contains(out, want) {
			t.Errorf("%s on stdin: report: exit %d, %s; want %s", kind, code, errOut, want)
		}
		if _, errOut, code := run(data, "watch", "--replay", "-"); code != 0 || !strings.Contains(errOut, fmt.Sprintf("lines=%d ", n)) {
			t.Errorf("%s on stdin: watch --replay: exit %d, %s; want lines=%d", kind, code, errOut, n)
		}
		if _, errOut, code := run(data, "egress", "report", "-"); code != 0 {
			t.Errorf("%s on stdin: egress report: exit %d, %s", kind, code, errOut)
		}
		// Standard input is named so, not "-" ("relayguard: -: gzip:
		// unexpected EOF"), also when its gzip header is cut short.
		want := map[string]string{"gzip": "standard input: gzip: unexpected EOF", "xz": "standard input: xz -dc: exit status 1"}[kind]
		for _, args := range [][]string{{"report", "-"}, {"watch", "--replay", "-"}, {"egress", "report", "-"}} {
			if _, errOut, code := run(data[:len(data)/2], args...); code == 0 || strings.Count(errOut, "relayguard: ") != 1 || !strings.Contains(errOut, want) {
				t.Errorf("truncated %s on stdin: %s: exit %d, stderr %q; want a failure with %q", kind, strings.Join(args, " "), code, errOut, want)
			}
			if kind != "gzip" {
				continue
			}
			if _, errOut, code := run(data[:3], args...); code == 0 || !strings.Contains(errOut, "standard input: unexpected EOF") {
				t.Errorf("a gzip header cut short on stdin: %s: exit %d, stderr %q", strings.Join(args, " "), code, errOut)
			}
		}
	}
}

// compressed returns text as gzip and, when xz(1) is installed (always
// under CI), as xz, by kind ("gzip", "xz").
func compressed(t *testing.T, text []byte) map[string][]byte {
	t.Helper()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(text)
	zw.Close()
	out := map[string][]byte{"gzip": gz.Bytes()}
	if _, err := exec.LookPath("xz"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("xz not installed (xz-utils)")
		}
		t.Log("xz not installed: the xz cases are skipped")
		return out
	}
	cmd := exec.Command("xz", "-1", "-c")
	cmd.Stdin = bytes.NewReader(text)
	xz, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	out["xz"] = xz
	return out
}

// fifoOf makes a named pipe in a new directory and writes data into it
// from a goroutine (until a reader has taken it all, or the test ends).
func fifoOf(t *testing.T, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "log.fifo")
	if err := syscall.Mkfifo(p, 0o600); err != nil {
		t.Fatal(err)
	}
	go func() {
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			return
		}
		f.Write(data)
		f.Close()
	}()
	return p
}

// TestReplayNamedPipe: watch --replay of a named pipe (a FIFO, or the
// /dev/fd/N of `watch --replay <(zcat mail.log.*.gz)`) reads every line.
// It read none and exited 0 ("replay done lines=0"): logline.PlainFile
// handed the pipe to the mapped reader, which found its size 0.
func TestReplayNamedPipe(t *testing.T) {
	bin := testBinary(t)
	var text bytes.Buffer
	const n = 50000
	for i := range n {
		fmt.Fprintf(&text, "Dec  4 10:%02d:%02d mx1 postfix/smtpd[%d]: warning: unknown[203.0.113.%d]: SASL LOGIN authentication failed: authentication failure\n",
			i/60%60, i%60, 1000+i%5000, i%250)
	}
	_, errOut, code := runRG(t, bin, "watch", "--replay", fifoOf(t, text.Bytes()))
	if want := fmt.Sprintf("lines=%d ", n); code != 0 || !strings.Contains(errOut, want) {
		t.Errorf("watch --replay FIFO: exit %d, %s; want %s", code, errOut, want)
	}
}

// TestReportNamedPipe: report of a named pipe reads every line. Ordering
// the inputs by their first lines read the pipe's start and lost it: 968
// of 1M lines, exit 0 (`relayguard report <(zcat mail.log.1.gz)`).
func TestReportNamedPipe(t *testing.T) {
	bin := testBinary(t)
	var text bytes.Buffer
	const n = 50000
	for i := range n {
		fmt.Fprintf(&text, "Dec  4 10:%02d:%02d mx1 postfix/smtpd[%d]: connect from unknown[203.0.113.%d]\n", i/60%60, i%60, 1000+i%5000, i%250)
	}
	// The pipe is the child's fd 3, named /dev/fd/3: what the shell's
	// <(...) passes.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		w.Write(text.Bytes())
		w.Close()
	}()
	cmd := exec.Command(bin, "report", "--format", "json", "/dev/fd/3")
	cmd.ExtraFiles = []*os.File{r}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	r.Close()
	if want := fmt.Sprintf(`"lines_read": %d,`, n); err != nil || !strings.Contains(string(out), want) {
		t.Errorf("report /dev/fd/3: %v, %s; want %s in\n%.300s", err, stderr.String(), want, out)
	}
}
