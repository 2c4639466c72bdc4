package egress

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/relayguard/relayguard/internal/logline"
)

// LogLine is one kernel packet-log line (iptables -j LOG --log-uid, or
// nftables "log flags skuid"), as written to syslog, kern.log or the
// journal:
//
//	Nov 23 18:56:32 mx kernel: [1234.5] EGRESS: IN= OUT=eth0 SRC=192.0.2.7 DST=203.0.113.9 LEN=60 ... PROTO=TCP SPT=58389 DPT=25 WINDOW=64240 RES=0x00 SYN URGP=0 UID=2000 GID=2000
type LogLine struct {
	Time    time.Time // zero when the line has no recognised timestamp
	Prefix  string    // the rule's log prefix, if any
	Out     string
	Src     netip.Addr
	Dst     netip.Addr
	Proto   string
	SrcPort uint16
	DstPort uint16
	SYN     bool
	UID     uint32
	GID     uint32
	HasUID  bool
}

// ParseLogLine parses one line. ok is false for lines that are not packet
// log lines (no "IN=" ... "SRC=" "DST=" fields). year is used for syslog
// timestamps, which have none.
func ParseLogLine(line string, year int) (l LogLine, ok bool, err error) {
	i := strings.Index(line, "IN=")
	if i < 0 || (i > 0 && line[i-1] != ' ' && line[i-1] != ':') {
		return l, false, nil
	}
	head, body := line[:i], line[i:]
	l.Time = parseLogTime(head, year)
	l.Prefix = logPrefix(head)
	var haveSrc, haveDst bool
	for rest := body; rest != ""; {
		var f string
		f, rest, _ = strings.Cut(rest, " ")
		if f == "" {
			continue
		}
		k, v, hasEq := strings.Cut(f, "=")
		if !hasEq {
			if f == "SYN" {
				l.SYN = true
			}
			continue
		}
		switch k {
		case "OUT":
			l.Out = v
		case "SRC":
			a, err := netip.ParseAddr(v)
			if err != nil {
				return l, true, fmt.Errorf("SRC=%q: %w", v, err)
			}
			l.Src, haveSrc = a, true
		case "DST":
			a, err := netip.ParseAddr(v)
			if err != nil {
				return l, true, fmt.Errorf("DST=%q: %w", v, err)
			}
			l.Dst, haveDst = a, true
		case "PROTO":
			l.Proto = v
		case "SPT", "DPT":
			n, err := strconv.ParseUint(v, 10, 16)
			if err != nil {
				return l, true, fmt.Errorf("%s=%q: not a port", k, v)
			}
			if k == "SPT" {
				l.SrcPort = uint16(n)
			} else {
				l.DstPort = uint16(n)
			}
		case "UID", "GID":
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil {
				return l, true, fmt.Errorf("%s=%q: not a number", k, v)
			}
			if k == "UID" {
				l.UID, l.HasUID = uint32(n), true
			} else {
				l.GID = uint32(n)
			}
		}
	}
	if !haveSrc || !haveDst {
		return l, false, nil
	}
	return l, true, nil
}

// logPrefix returns the text between "kernel:" (and an optional
// "[uptime]") and "IN=": the LOG rule's --log-prefix.
func logPrefix(head string) string {
	if j := strings.Index(head, "kernel:"); j >= 0 {
		head = head[j+len("kernel:"):]
	} else {
		return ""
	}
	head = strings.TrimSpace(head)
	if strings.HasPrefix(head, "[") {
		if j := strings.Index(head, "]"); j >= 0 {
			head = head[j+1:]
		}
	}
	return strings.TrimSpace(head)
}

// parseLogTime reads the timestamp at the start of head with the one
// timestamp parser (logline: traditional syslog, RFC 3339 with or without
// a colon in the offset); zero if there is none.
func parseLogTime(head string, year int) time.Time {
	p := logline.Parser{Year: year}
	t, _, ok := p.Timestamp(strings.TrimLeft(head, " "))
	if !ok {
		return time.Time{}
	}
	return t
}

// Summary is the report over many log lines.
type Summary struct {
	Lines    int // packet log lines read
	Skipped  int // other lines
	Bad      []string
	Attempts int // distinct connection attempts (SYN retransmissions folded)
	Users    []UserSummary
}

// UserSummary is the attempts of one uid.
type UserSummary struct {
	UID          uint32
	HasUID       bool
	User         string
	Attempts     int
	Packets      int
	First, Last  time.Time
	Destinations []DestCount
}

// DestCount is attempts to one destination address and port.
type DestCount struct {
	Dst      netip.AddrPort
	Attempts int
}

// Summarise reads kernel log lines from r (name labels errors) into s.
// year is the year of traditional syslog timestamps; 0 infers it (this
// year, or last year for dates ahead of today, rolling over at New Year
// within the file), as logline.Parser does.
func (s *Summary) Summarise(r io.Reader, name string, year int) error {
	return s.SummariseWith(r, name, &logline.Parser{Year: year})
}

// retransmitGap is the longest gap between two SYNs of one connection
// attempt: the kernel's retransmission backoff is capped at TCP_RTO_MAX,
// 120 s, and syslog timestamps have whole seconds.
const retransmitGap = 3 * time.Minute

// SummariseWith is Summarise with the timestamp parser given (one per
// file: it carries the year of traditional timestamps from line to line).
// Only TCP lines count; a line repeating an earlier line's addresses and
// ports less than retransmitGap after it is a SYN retransmission of the
// same attempt.
func (s *Summary) SummariseWith(r io.Reader, name string, p *logline.Parser) error {
	year := p.Year // for lines logline does not parse (no host field)
	if year == 0 {
		year = time.Now().Year()
	}
	type acc struct {
		u     UserSummary
		dests map[netip.AddrPort]int
	}
	byUID := map[string]*acc{}
	for _, u := range s.Users {
		a := &acc{u: u, dests: map[netip.AddrPort]int{}}
		for _, d := range u.Destinations {
			a.dests[d.Dst] = d.Attempts
		}
		byUID[uidKey(u.UID, u.HasUID)] = a
	}
	type tuple struct {
		src, dst         netip.Addr
		srcPort, dstPort uint16
	}
	last := map[tuple]time.Time{}
	sc := bufio.NewScanner(r)
	var long bool
	sc.Buffer(make([]byte, 0, 64<<10), maxLine)
	sc.Split(logline.SkipLongLines(maxLine, &long))
	n := 0
	for sc.Scan() {
		n++
		if long {
			long = false
			s.Bad = append(s.Bad, fmt.Sprintf("%s:%d: longer than %d bytes, skipped", name, n, maxLine))
			continue
		}
		line := sc.Text()
		var pl logline.Line
		var parsed bool
		if strings.HasPrefix(line, "{") { // journalctl -k -o json
			if pl, _, parsed = logline.ParseJournal([]byte(line), nil); parsed {
				line = pl.Message
			}
		} else { // the syslog timestamp, with the year inferred across the file
			pl, parsed = p.Parse(line)
		}
		l, ok, err := ParseLogLine(line, year)
		if parsed && ok {
			l.Time = pl.Time
		}
		if err != nil {
			s.Bad = append(s.Bad, fmt.Sprintf("%s:%d: %v", name, n, err))
			continue
		}
		if !ok || !strings.EqualFold(l.Proto, "TCP") {
			s.Skipped++
			continue
		}
		s.Lines++
		k := uidKey(l.UID, l.HasUID)
		a := byUID[k]
		if a == nil {
			a = &acc{u: UserSummary{UID: l.UID, HasUID: l.HasUID}, dests: map[netip.AddrPort]int{}}
			if l.HasUID {
				a.u.User = UserName(l.UID)
			} else {
				a.u.User = "(no uid logged)"
			}
			byUID[k] = a
		}
		a.u.Packets++
		key := tuple{l.Src, l.Dst, l.SrcPort, l.DstPort}
		if t, seen := last[key]; seen && (l.Time.IsZero() || t.IsZero() || l.Time.Sub(t).Abs() < retransmitGap) {
			last[key] = l.Time
			continue
		}
		last[key] = l.Time
		s.Attempts++
		a.u.Attempts++
		a.dests[netip.AddrPortFrom(l.Dst, l.DstPort)]++
		if !l.Time.IsZero() {
			if a.u.First.IsZero() || l.Time.Before(a.u.First) {
				a.u.First = l.Time
			}
			if l.Time.After(a.u.Last) {
				a.u.Last = l.Time
			}
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("egress report: %s: %w", name, err)
	}
	s.Users = s.Users[:0]
	for _, a := range byUID {
		a.u.Destinations = a.u.Destinations[:0]
		for d, c := range a.dests {
			a.u.Destinations = append(a.u.Destinations, DestCount{Dst: d, Attempts: c})
		}
		sort.Slice(a.u.Destinations, func(i, j int) bool {
			x, y := a.u.Destinations[i], a.u.Destinations[j]
			if x.Attempts != y.Attempts {
				return x.Attempts > y.Attempts
			}
			return x.Dst.Compare(y.Dst) < 0
		})
		s.Users = append(s.Users, a.u)
	}
	sort.Slice(s.Users, func(i, j int) bool {
		x, y := s.Users[i], s.Users[j]
		if x.Attempts != y.Attempts {
			return x.Attempts > y.Attempts
		}
		if x.HasUID != y.HasUID {
			return x.HasUID
		}
		return x.UID < y.UID
	})
	return nil
}

// maxLine is the longest line SummariseWith reads; a kernel LOG line is
// a few hundred bytes.
const maxLine = 1 << 20

func uidKey(uid uint32, has bool) string {
	if !has {
		return "-"
	}
	return strconv.FormatUint(uint64(uid), 10)
}

// WriteText renders the summary as a table.
func (s *Summary) WriteText(w io.Writer) error {
	fmt.Fprintf(w, "%d connection attempts in %d packet log lines", s.Attempts, s.Lines)
	if len(s.Bad) > 0 {
		fmt.Fprintf(w, " (%d unparsable lines)", len(s.Bad))
	}
	fmt.Fprintln(w)
	if len(s.Users) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nUID\tUSER\tATTEMPTS\tPACKETS\tFIRST\tLAST\tTOP DESTINATIONS")
	for _, u := range s.Users {
		var ds []string
		for i, d := range u.Destinations {
			if i == 5 {
				ds = append(ds, fmt.Sprintf("(+%d more)", len(u.Destinations)-5))
				break
			}
			ds = append(ds, fmt.Sprintf("%s×%d", d.Dst, d.Attempts))
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\n", uidKey(u.UID, u.HasUID), u.User, u.Attempts, u.Packets,
			fmtTime(u.First), fmtTime(u.Last), strings.Join(ds, " "))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, b := range s.Bad {
		fmt.Fprintln(w, "unparsable:", b)
	}
	return nil
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Format("2006-01-02 15:04:05")
}
