package egress

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/logline"
)

func TestParseLogLine(t *testing.T) {
	utc := func(s string) time.Time {
		tm, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	tests := []struct {
		name    string
		line    string
		ok      bool
		wantErr string
		want    LogLine
	}{
		{
			name: "syslog IPv4 with uptime and prefix",
			line: "Nov 23 18:56:32 mx kernel: [12345.678901] EGRESS-DROP: IN= OUT=eth0 SRC=192.0.2.7 DST=203.0.113.9 LEN=60 TOS=0x00 PREC=0x00 TTL=64 ID=54321 DF PROTO=TCP SPT=58389 DPT=25 WINDOW=64240 RES=0x00 SYN URGP=0 UID=2000 GID=2001",
			ok:   true,
			want: LogLine{
				Time: time.Date(2026, 11, 23, 18, 56, 32, 0, time.Local), Prefix: "EGRESS-DROP:", Out: "eth0",
				Src: netip.MustParseAddr("192.0.2.7"), Dst: netip.MustParseAddr("203.0.113.9"), Proto: "TCP",
				SrcPort: 58389, DstPort: 25, SYN: true, UID: 2000, GID: 2001, HasUID: true,
			},
		},
		{
			name: "journal short-iso IPv6",
			line: "2026-11-23T18:56:33+0000 mx kernel: IN= OUT=eth0 SRC=2001:db8::7 DST=2001:db8:1::25 LEN=80 TC=0 HOPLIMIT=64 FLOWLBL=733155 PROTO=TCP SPT=40000 DPT=587 WINDOW=64800 RES=0x00 SYN URGP=0 UID=33 GID=33",
			ok:   true,
			want: LogLine{
				Time: utc("2026-11-23T18:56:33Z"), Out: "eth0",
				Src: netip.MustParseAddr("2001:db8::7"), Dst: netip.MustParseAddr("2001:db8:1::25"), Proto: "TCP",
				SrcPort: 40000, DstPort: 587, SYN: true, UID: 33, GID: 33, HasUID: true,
			},
		},
		{
			name: "rsyslog RFC 3339, no uid logged",
			line: "2026-11-23T18:56:34.123456+00:00 mx kernel: [ 99.1] IN= OUT=ens3 SRC=10.0.0.5 DST=198.51.100.1 LEN=60 PROTO=TCP SPT=1234 DPT=465 WINDOW=1 RES=0x00 SYN URGP=0",
			ok:   true,
			want: LogLine{
				Time: utc("2026-11-23T18:56:34.123456Z"), Out: "ens3",
				Src: netip.MustParseAddr("10.0.0.5"), Dst: netip.MustParseAddr("198.51.100.1"), Proto: "TCP",
				SrcPort: 1234, DstPort: 465, SYN: true,
			},
		},
		{
			name: "bare kernel line (dmesg)",
			line: "IN= OUT=eth0 SRC=192.0.2.1 DST=192.0.2.2 LEN=60 PROTO=TCP SPT=1 DPT=25 UID=0 GID=0",
			ok:   true,
			want: LogLine{
				Out: "eth0", Src: netip.MustParseAddr("192.0.2.1"), Dst: netip.MustParseAddr("192.0.2.2"),
				Proto: "TCP", SrcPort: 1, DstPort: 25, HasUID: true,
			},
		},
		{name: "not a packet log line", line: "Nov 23 18:56:32 mx postfix/smtpd[1]: connect from unknown[192.0.2.1]"},
		{name: "IN= inside a word", line: "Nov 23 mx app: LOGIN=ok SRC=1.2.3.4 DST=1.2.3.5"},
		{name: "bad port", line: "IN= OUT=eth0 SRC=192.0.2.1 DST=192.0.2.2 PROTO=TCP SPT=1 DPT=99999", ok: true, wantErr: `DPT="99999"`},
		{name: "bad address", line: "IN= OUT=eth0 SRC=192.0.2.300 DST=192.0.2.2 PROTO=TCP", ok: true, wantErr: `SRC="192.0.2.300"`},
		{name: "bad uid", line: "IN= OUT=eth0 SRC=192.0.2.1 DST=192.0.2.2 PROTO=TCP UID=x", ok: true, wantErr: `UID="x"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok, err := ParseLogLine(tc.line, 2026)
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v (err %v)", ok, tc.ok, err)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.ok {
				return
			}
			if !got.Time.Equal(tc.want.Time) {
				t.Errorf("time %v, want %v", got.Time, tc.want.Time)
			}
			got.Time, tc.want.Time = time.Time{}, time.Time{}
			if got != tc.want {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

const sampleLog = `Nov 23 18:56:32 mx kernel: [1.0] IN= OUT=eth0 SRC=192.0.2.7 DST=203.0.113.9 LEN=60 PROTO=TCP SPT=58389 DPT=25 WINDOW=64240 RES=0x00 SYN URGP=0 UID=0 GID=0
Nov 23 18:56:33 mx kernel: [2.0] IN= OUT=eth0 SRC=192.0.2.7 DST=203.0.113.9 LEN=60 PROTO=TCP SPT=58389 DPT=25 WINDOW=64240 RES=0x00 SYN URGP=0 UID=0 GID=0
Nov 23 18:56:35 mx kernel: [4.0] IN= OUT=eth0 SRC=192.0.2.7 DST=203.0.113.9 LEN=60 PROTO=TCP SPT=58390 DPT=25 WINDOW=64240 RES=0x00 SYN URGP=0 UID=0 GID=0
Nov 23 18:57:00 mx kernel: [29.0] IN= OUT=eth0 SRC=2001:db8::7 DST=2001:db8::25 LEN=80 PROTO=TCP SPT=40000 DPT=587 WINDOW=1 RES=0x00 SYN URGP=0 UID=4343 GID=4343
Nov 23 18:57:01 mx kernel: [30.0] IN= OUT=eth0 SRC=192.0.2.7 DST=198.51.100.3 LEN=60 PROTO=TCP SPT=50000 DPT=25 WINDOW=1 RES=0x00 SYN URGP=0
Nov 23 18:57:02 mx kernel: [31.0] IN= OUT=eth0 SRC=192.0.2.7 DST=198.51.100.3 LEN=60 PROTO=UDP SPT=50000 DPT=25 LEN=40
Nov 23 18:57:03 mx postfix/smtp[99]: connect to example.org: Connection timed out
Nov 23 18:57:04 mx kernel: [33.0] IN= OUT=eth0 SRC=192.0.2.7 DST=203.0.113.9 PROTO=TCP SPT=70000 DPT=25 UID=0
`

func TestSummarise(t *testing.T) {
	var s Summary
	if err := s.Summarise(strings.NewReader(sampleLog), "kern.log", 2026); err != nil {
		t.Fatal(err)
	}
	// Lines 1-2 are one attempt (a retransmitted SYN), line 3 another.
	if s.Attempts != 4 || s.Lines != 5 {
		t.Errorf("attempts %d lines %d, want 4 and 5", s.Attempts, s.Lines)
	}
	if len(s.Bad) != 1 || !strings.Contains(s.Bad[0], "kern.log:8") || !strings.Contains(s.Bad[0], `SPT="70000"`) {
		t.Errorf("bad lines %q, want kern.log:8 naming SPT", s.Bad)
	}
	if len(s.Users) != 3 {
		t.Fatalf("users %+v, want 3 (root, 4343, no uid)", s.Users)
	}
	root := s.Users[0]
	if root.UID != 0 || root.User != "root" || root.Attempts != 2 || root.Packets != 3 {
		t.Errorf("root: %+v", root)
	}
	if len(root.Destinations) != 1 || root.Destinations[0].Dst != netip.MustParseAddrPort("203.0.113.9:25") || root.Destinations[0].Attempts != 2 {
		t.Errorf("root destinations %+v", root.Destinations)
	}
	if want := time.Date(2026, 11, 23, 18, 56, 32, 0, time.Local); !root.First.Equal(want) {
		t.Errorf("root first %v, want %v", root.First, want)
	}
	v6 := s.Users[1]
	if v6.UID != 4343 || v6.Destinations[0].Dst != netip.MustParseAddrPort("[2001:db8::25]:587") {
		t.Errorf("uid 4343: %+v", v6)
	}
	if s.Users[2].HasUID {
		t.Errorf("third group should be the lines without UID: %+v", s.Users[2])
	}
}

// TestReportCommand runs `relayguard egress report` on a file.
func TestReportCommand(t *testing.T) {
	if relayguardBin == "" {
		t.Fatalf("relayguard binary: %v", buildErr)
	}
	p := filepath.Join(t.TempDir(), "kern.log")
	if err := os.WriteFile(p, []byte(sampleLog), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(relayguardBin, "--data-dir", t.TempDir(), "egress", "report", "--year", "2026", p).CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{"4 connection attempts in 5 packet log lines", "root", "203.0.113.9:25×2", "[2001:db8::25]:587×1", "4343"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("report output lacks %q:\n%s", want, out)
		}
	}
	out, err = exec.Command(relayguardBin, "--data-dir", t.TempDir(), "egress", "report", "--json", "--year", "2026", p).Output()
	if err != nil {
		t.Fatal(err)
	}
	var s Summary
	if err := json.Unmarshal(out, &s); err != nil {
		t.Fatalf("report --json: %v\n%s", err, out)
	}
	if s.Attempts != 4 || len(s.Users) != 3 || s.Users[0].User != "root" {
		t.Errorf("report --json: %+v", s)
	}
	if _, err := exec.Command(relayguardBin, "egress", "report", filepath.Join(t.TempDir(), "missing.log")).CombinedOutput(); err == nil {
		t.Error("report of a missing file should fail")
	}
}

// BenchmarkSummarise measures the report over syslog kernel lines.
func BenchmarkSummarise(b *testing.B) {
	var buf strings.Builder
	for i := 0; i < 10000; i++ {
		fmt.Fprintf(&buf, "Nov 23 18:%02d:%02d mx kernel: [%d.000001] IN= OUT=eth0 SRC=192.0.2.7 DST=203.0.113.%d LEN=60 TOS=0x00 PREC=0x00 TTL=64 ID=%d DF PROTO=TCP SPT=%d DPT=25 WINDOW=64240 RES=0x00 SYN URGP=0 UID=%d GID=%d\n",
			(i/60)%60, i%60, i, i%50, i, 30000+i/3, 2000+i%5, 2000+i%5)
	}
	in := buf.String()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		var s Summary
		if err := s.Summarise(strings.NewReader(in), "bench", 2026); err != nil {
			b.Fatal(err)
		}
	}
}

// A kern.log that spans New Year, read in January: the December lines are
// last year's, and a retransmission across midnight is still one attempt.
func TestSummariseNewYear(t *testing.T) {
	in := `Dec 31 23:59:30 mx kernel: [1.0] IN= OUT=eth0 SRC=192.0.2.7 DST=203.0.113.9 LEN=60 PROTO=TCP SPT=58389 DPT=25 SYN URGP=0 UID=33 GID=33
Jan  1 00:00:33 mx kernel: [64.0] IN= OUT=eth0 SRC=192.0.2.7 DST=203.0.113.9 LEN=60 PROTO=TCP SPT=58389 DPT=25 SYN URGP=0 UID=33 GID=33
Jan  1 00:10:00 mx kernel: [631.0] IN= OUT=eth0 SRC=192.0.2.7 DST=203.0.113.9 LEN=60 PROTO=TCP SPT=58390 DPT=25 SYN URGP=0 UID=33 GID=33
`
	var s Summary
	p := &logline.Parser{Loc: time.UTC, Now: func() time.Time { return time.Date(2027, 1, 2, 8, 0, 0, 0, time.UTC) }}
	if err := s.SummariseWith(strings.NewReader(in), "kern.log", p); err != nil {
		t.Fatal(err)
	}
	if s.Attempts != 2 || len(s.Users) != 1 {
		t.Fatalf("attempts %d users %+v, want 2 attempts of one uid", s.Attempts, s.Users)
	}
	u := s.Users[0]
	if want := time.Date(2026, 12, 31, 23, 59, 30, 0, time.UTC); !u.First.Equal(want) {
		t.Errorf("first %v, want %v", u.First, want)
	}
	if want := time.Date(2027, 1, 1, 0, 10, 0, 0, time.UTC); !u.Last.Equal(want) {
		t.Errorf("last %v, want %v", u.Last, want)
	}
}
