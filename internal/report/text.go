package report

import (
	"bufio"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// The text report has pflogsumm 1.1.5's sections, order and fixed-width
// layout, followed by the abuse view.

// intUnits is pflogsumm's "%6d%s" with k/m units above 512k and 512m.
func intUnits(v float64) string { return string(appendIntUnits(nil, v)) }

func appendIntUnits(b []byte, v float64) []byte {
	if v >= 0 && v <= 524288 {
		// Most rows (every row of a botnet's detail tables): no unit, at
		// most six digits, so always "%6d " — written right to left into
		// a fixed field, without strconv's call and the padding appends.
		f := [7]byte{' ', ' ', ' ', ' ', ' ', ' ', ' '}
		n := uint32(v) // (truncated, as int64(v))
		i := 6
		for {
			i--
			f[i] = byte('0' + n%10)
			n /= 10
			if n == 0 {
				break
			}
		}
		return append(b, f[:]...)
	}
	u := byte(' ')
	switch {
	case v > 536870912:
		v /= 1048576
		u = 'm'
	case v > 524288:
		v /= 1024
		u = 'k'
	}
	var num [24]byte
	d := strconv.AppendInt(num[:0], int64(v), 10)
	for i := len(d); i < 6; i++ {
		b = append(b, ' ')
	}
	return append(append(b, d...), u)
}

// touchAhead is how many rows' keys touchKeys reads at a time.
const touchAhead = 16

// touchKeys reads the first byte of the keys of rows before they are
// written: a large table's keys, copied into the arena in the order they
// were first seen and written in the order of the ranking, are a cache
// miss each, and reading a group of them at once makes those misses wait
// together instead of one after the other (on the 1M-line botnet log the
// copying of the keys was most of WriteText's time).
func touchKeys[T any](rows []T, key func(*T) string) {
	var x byte
	for i := range rows {
		if k := key(&rows[i]); k != "" {
			x ^= k[0]
		}
	}
	runtime.KeepAlive(x) // (the reads are not left out)
}

// countRow writes "INDENT%6d%c  KEY\n" (intUnits), the row of most tables,
// without fmt: the tables of a botnet's log have hundreds of thousands of
// rows.
func countRow(w *bufio.Writer, indent string, v int64, key string) {
	if len(indent)+len(key)+24 > w.Available() { // (the row may not fit: written in parts)
		b := appendIntUnits(append(w.AvailableBuffer(), indent...), float64(v))
		w.Write(append(b, ' ', ' '))
		w.WriteString(key)
		w.WriteByte('\n')
		return
	}
	// The whole row made in the buffer's free space and written at once.
	b := appendIntUnits(append(w.AvailableBuffer(), indent...), float64(v))
	w.Write(append(append(append(b, ' ', ' '), key...), '\n'))
}

// timeUnits is "%5.1f %s" with s, m or h.
func timeUnits(v float64) string {
	u := 's'
	switch {
	case v > 3600:
		v /= 3600
		u = 'h'
	case v > 60:
		v /= 60
		u = 'm'
	}
	return fmt.Sprintf("%5.1f %c", v, u)
}

func subsectTitle(w io.Writer, title string) {
	fmt.Fprintf(w, "\n%s\n%s\n", title, strings.Repeat("-", len(title)))
}

// listTitle prints a title with its underline, or "title: none".
func listTitle(w io.Writer, title string, empty, quiet bool) bool {
	if empty {
		if !quiet {
			fmt.Fprintf(w, "\n%s: none\n", title)
		}
		return false
	}
	fmt.Fprintf(w, "\n%s\n%s\n", title, strings.Repeat("-", len(title)))
	return true
}

// WriteText writes the report in pflogsumm's text layout. Its pieces are
// rendered on every core (textPlan).
func (s *Summary) WriteText(out io.Writer, mailq func(io.Writer) error) error {
	p := &textPlan{}
	o := s.opt
	p.add(func(w *bufio.Writer) {
		if s.DateLabel != "" {
			fmt.Fprintf(w, "Postfix log summaries for %s\n", s.DateLabel)
		}
		t := s.Totals
		subsectTitle(w, "Grand Totals")
		fmt.Fprint(w, "messages\n\n")
		line := func(v int64, label string) { fmt.Fprintf(w, " %s  %s\n", intUnits(float64(v)), label) }
		line(t.Received, "received")
		line(t.Delivered, "delivered")
		line(t.Forwarded, "forwarded")
		fmt.Fprintf(w, " %s  deferred", intUnits(float64(t.Deferred)))
		if t.Deferrals > 0 {
			fmt.Fprintf(w, "  (%s deferrals)", strings.TrimLeft(intUnits(float64(t.Deferrals)), " "))
		}
		fmt.Fprintln(w)
		line(t.Bounced, "bounced")
		fmt.Fprintf(w, " %s  rejected (%d%%)\n", intUnits(float64(t.Rejected)), t.RejectedPct)
		line(t.RejectWarnings, "reject warnings")
		line(t.Held, "held")
		fmt.Fprintf(w, " %s  discarded (%d%%)\n", intUnits(float64(t.Discarded)), t.DiscardedPct)
		fmt.Fprintln(w)
		line(t.BytesReceived, "bytes received")
		line(t.BytesDelivered, "bytes delivered")
		line(t.Senders, "senders")
		line(t.SendingDomains, "sending hosts/domains")
		line(t.Recipients, "recipients")
		line(t.RecipientDomains, "recipient hosts/domains")
		if d := s.SMTPD; d != nil {
			fmt.Fprint(w, "\nsmtpd\n\n")
			fmt.Fprintf(w, "  %s  connections\n", intUnits(float64(d.Connections)))
			fmt.Fprintf(w, "  %s  hosts/domains\n", intUnits(float64(d.Hosts)))
			avg := 0.0
			if d.Connections > 0 {
				avg = float64(d.TotalSecs)/float64(d.Connections) + .5
			}
			fmt.Fprintf(w, "  %6d   avg. connect time (seconds)\n", int64(avg))
			fmt.Fprintf(w, " %s  total connect time\n", hms(d.TotalSecs))
		}
		fmt.Fprintln(w)
	})
	if o.ProblemsFirst {
		s.writeProblems(p)
	}
	p.add(func(w *bufio.Writer) {
		if s.DayCount > 1 {
			subsectTitle(w, "Per-Day Traffic Summary")
			fmt.Fprint(w, "    date          received  delivered   deferred    bounced     rejected\n")
			fmt.Fprint(w, "    --------------------------------------------------------------------\n")
			for _, d := range s.Days {
				fmt.Fprintf(w, "    %s", s.dateText(d.Date))
				for _, v := range []int64{d.Received, d.Delivered, d.Deferred, d.Bounced, d.Rejected} {
					fmt.Fprintf(w, "    %s", intUnits(float64(v)))
				}
				fmt.Fprintln(w)
			}
		}
		kind := "Summary"
		if s.DayCount > 1 {
			kind = "Daily Average"
		}
		subsectTitle(w, "Per-Hour Traffic "+kind)
		fmt.Fprint(w, "    time          received  delivered   deferred    bounced     rejected\n")
		fmt.Fprint(w, "    --------------------------------------------------------------------\n")
		for h, r := range s.Hours {
			if o.ISODateTime {
				fmt.Fprintf(w, "    %02d:00-%02d:00", h, h+1)
			} else {
				fmt.Fprintf(w, "    %02d00-%02d00  ", h, h+1)
			}
			for _, v := range []int64{r.Received, r.Delivered, r.Deferred, r.Bounced, r.Rejected} {
				f := float64(v)
				if s.DayCount > 0 {
					f = f/float64(s.DayCount) + 0.5
				}
				fmt.Fprintf(w, "    %s", intUnits(f))
			}
			fmt.Fprintln(w)
		}
	})
	if o.HostLimit != 0 {
		p.add(func(w *bufio.Writer) {
			subsectTitle(w, "Host/Domain Summary: Message Delivery "+topCnt(o.HostLimit))
			fmt.Fprint(w, " sent cnt  bytes   defers   avg dly max dly host/domain\n")
			fmt.Fprint(w, " -------- -------  -------  ------- ------- -----------\n")
		})
		p.rows(len(s.RecipientDomains), func(w *bufio.Writer, i int) {
			r := &s.RecipientDomains[i]
			fmt.Fprintf(w, " %s  %s  %s  %s  %s  %s\n", intUnits(float64(r.Count)), intUnits(float64(r.Bytes)),
				intUnits(float64(r.Defers)), timeUnits(r.AvgDelay), timeUnits(r.MaxDelay), r.Domain)
		})
		p.add(func(w *bufio.Writer) {
			subsectTitle(w, "Host/Domain Summary: Messages Received "+topCnt(o.HostLimit))
			fmt.Fprint(w, " msg cnt   bytes   host/domain\n")
			fmt.Fprint(w, " -------- -------  -----------\n")
		})
		p.rows(len(s.SenderDomains), func(w *bufio.Writer, i int) {
			r := &s.SenderDomains[i]
			fmt.Fprintf(w, " %s  %s  %s\n", intUnits(float64(r.Count)), intUnits(float64(r.Bytes)), r.Domain)
		})
	}
	if d := s.SMTPD; d != nil {
		p.add(func(w *bufio.Writer) { s.writeSMTPD(w, d) })
	}
	if o.UserLimit != 0 {
		users := func(rows []UserRow, title string, size bool) {
			if o.UserLimit > 0 {
				title = fmt.Sprintf("top %d %s", o.UserLimit, title)
			}
			p.add(func(w *bufio.Writer) { listTitle(w, title, len(rows) == 0, o.Quiet) })
			p.rows(len(rows), func(w *bufio.Writer, i int) {
				if i%touchAhead == 0 {
					touchKeys(rows[i:min(i+touchAhead, len(rows))], func(r *UserRow) string { return r.Address })
				}
				v := rows[i].Count
				if size {
					v = rows[i].Bytes
				}
				countRow(w, " ", v, rows[i].Address)
			})
		}
		users(s.SendersByCount, "Senders by message count", false)
		users(s.RecipientsByCount, "Recipients by message count", false)
		users(s.SendersBySize, "Senders by message size", true)
		users(s.RecipientsBySize, "Recipients by message size", true)
	}
	if len(s.NoMsgSize) > 0 {
		p.add(func(w *bufio.Writer) {
			listTitle(w, "Messages with no size data", false, true)
			for _, kv := range s.NoMsgSize {
				fmt.Fprintf(w, " %s  %s\n", kv.Key, kv.Value)
			}
		})
	}
	if !o.ProblemsFirst {
		s.writeProblems(p)
	}
	if mailq != nil {
		p.add(func(w *bufio.Writer) { subsectTitle(w, "Current Mail Queue") })
		p.pieces = append(p.pieces, textPiece{out: mailq})
	}
	p.add(s.writeAbuse)
	return p.write(out)
}

func topCnt(n int) string {
	if n > 0 {
		return fmt.Sprintf("(top %d)", n)
	}
	return ""
}

func hms(secs int64) string {
	return fmt.Sprintf("%2d:%02d:%02d", secs/3600, secs%3600/60, secs%60)
}

func (s *Summary) dateText(iso string) string {
	d, _ := time.Parse("2006-01-02", iso)
	if s.opt.ISODateTime {
		return iso + " "
	}
	return fmt.Sprintf("%s %2d %d", d.Format("Jan"), d.Day(), d.Year())
}

func (s *Summary) writeProblems(p *textPlan) {
	o := s.opt
	if o.DeferralDetail != 0 {
		writeNested(p, s.Deferrals, "message deferral detail", o.DeferralDetail, o.Quiet)
	}
	if o.BounceDetail != 0 {
		writeNested(p, s.Bounces, "message bounce detail (by relay)", o.BounceDetail, o.Quiet)
	}
	if o.RejectDetail != 0 {
		writeNested(p, s.Rejects, "message reject detail", o.RejectDetail, o.Quiet)
		writeNested(p, s.RejectWarnings, "message reject warning detail", o.RejectDetail, o.Quiet)
		writeNested(p, s.Holds, "message hold detail", o.RejectDetail, o.Quiet)
		writeNested(p, s.Discards, "message discard detail", o.RejectDetail, o.Quiet)
	}
	if o.SMTPDetail != 0 {
		writeNested(p, s.SMTPFailures, "smtp delivery failures", o.SMTPDetail, o.Quiet)
	}
	if o.WarningDetail != 0 {
		writeNested(p, s.Warnings, "Warnings", o.WarningDetail, o.Quiet)
	}
	writeNested(p, s.Fatals, "Fatal Errors", 0, o.Quiet)
	writeNested(p, s.Panics, "Panics", 0, o.Quiet)
	p.add(func(w *bufio.Writer) {
		if listTitle(w, "Master daemon messages", len(s.Master) == 0, o.Quiet) {
			for _, r := range s.Master {
				countRow(w, " ", r.Count, r.Key)
			}
		}
	})
}

// writeNested prints a detail tree: inner keys indented by two more spaces
// per level, the level above the leaves with "(top N) (total: X)". A run
// of sibling nodes with fewer than textRowsPiece leaves below is one
// piece; a larger node's line is a piece, and its children are cut in
// turn (leaves: textRowsPiece a piece).
func writeNested(p *textPlan, nodes []Node, title string, n int, quiet bool) {
	p.add(func(w *bufio.Writer) { listTitle(w, title, len(nodes) == 0, quiet) })
	if len(nodes) == 0 {
		return
	}
	var walk func(w *bufio.Writer, nodes []Node, indent string)
	head := func(w *bufio.Writer, nd *Node, indent string) {
		fmt.Fprintf(w, "%s%s", indent, nd.Key)
		if nd.Children[0].Children == nil {
			if n > 0 {
				fmt.Fprintf(w, " (top %d)", n)
			}
			fmt.Fprintf(w, " (total: %d)", nd.Count)
		}
		fmt.Fprintln(w)
	}
	walk = func(w *bufio.Writer, nodes []Node, indent string) {
		for i := range nodes {
			if i%touchAhead == 0 {
				touchKeys(nodes[i:min(i+touchAhead, len(nodes))], func(n *Node) string { return n.Key })
			}
			nd := &nodes[i]
			if nd.Children == nil {
				countRow(w, indent, nd.Count, nd.Key)
				continue
			}
			head(w, nd, indent)
			walk(w, nd.Children, indent+"  ")
		}
	}
	var cut func(nodes []Node, indent string)
	cut = func(nodes []Node, indent string) {
		if nodes[0].Children == nil { // leaves
			p.rows(len(nodes), func(w *bufio.Writer, i int) {
				if i%touchAhead == 0 {
					touchKeys(nodes[i:min(i+touchAhead, len(nodes))], func(n *Node) string { return n.Key })
				}
				countRow(w, indent, nodes[i].Count, nodes[i].Key)
			})
			return
		}
		start, rows := 0, 0 // the run of nodes not cut yet, and its leaves
		flush := func(end int) {
			if run := nodes[start:end]; len(run) > 0 {
				p.add(func(w *bufio.Writer) { walk(w, run, indent) })
			}
		}
		for i := range nodes {
			nd := &nodes[i]
			size := nodeLeaves(nd)
			if size < textRowsPiece {
				if rows += size; rows >= textRowsPiece {
					flush(i + 1)
					start, rows = i+1, 0
				}
				continue
			}
			flush(i)
			p.add(func(w *bufio.Writer) { head(w, nd, indent) })
			cut(nd.Children, indent+"  ")
			start, rows = i+1, 0
		}
		flush(len(nodes))
	}
	cut(nodes, "  ")
}

// nodeLeaves is the number of leaves below nd (1 for a leaf).
func nodeLeaves(nd *Node) int {
	switch {
	case nd.Children == nil:
		return 1
	case nd.Children[0].Children == nil:
		return len(nd.Children)
	}
	n := 0
	for i := range nd.Children {
		n += nodeLeaves(&nd.Children[i])
	}
	return n
}

func (s *Summary) writeSMTPD(w io.Writer, d *SMTPDReport) {
	if s.DayCount > 1 {
		subsectTitle(w, "Per-Day SMTPD Connection Summary")
		fmt.Fprint(w, "    date        connections    time conn.    avg./conn.   max. time\n")
		fmt.Fprint(w, "    --------------------------------------------------------------------\n")
		for _, r := range d.PerDay {
			avg := float64(r.Total)/float64(r.Count) + .5
			fmt.Fprintf(w, "    %s   %s       %s      %6ds      %6ds\n", s.dateText(r.Key),
				intUnits(float64(r.Count)), hms(r.Total), int64(avg), r.Max)
		}
		subsectTitle(w, "Per-Hour SMTPD Connection Daily Average")
		fmt.Fprint(w, "    hour        connections    time conn.\n")
		fmt.Fprint(w, "    -------------------------------------\n")
	} else {
		subsectTitle(w, "Per-Hour SMTPD Connection Summary")
		fmt.Fprint(w, "    hour        connections    time conn.    avg./conn.   max. time\n")
		fmt.Fprint(w, "    --------------------------------------------------------------------\n")
	}
	for h, r := range d.PerHour {
		if r.Count == 0 {
			continue
		}
		avg := int64(float64(r.Total)/float64(r.Count) + .5)
		cnt, tot := float64(r.Count), float64(r.Total)
		if s.DayCount > 1 {
			cnt = cnt/float64(s.DayCount) + .5
			tot = tot/float64(s.DayCount) + .5
		}
		if s.opt.ISODateTime {
			fmt.Fprintf(w, "    %02d:00-%02d:00", h, h+1)
		} else {
			fmt.Fprintf(w, "    %02d00-%02d00  ", h, h+1)
		}
		fmt.Fprintf(w, "   %s       %s", intUnits(cnt), hms(int64(tot)))
		if s.DayCount < 2 {
			fmt.Fprintf(w, "      %6ds      %6ds", avg, r.Max)
		}
		fmt.Fprintln(w)
	}
	if s.opt.HostLimit != 0 {
		subsectTitle(w, "Host/Domain Summary: SMTPD Connections "+topCnt(s.opt.HostLimit))
		fmt.Fprint(w, " connections  time conn.  avg./conn.  max. time  host/domain\n")
		fmt.Fprint(w, " -----------  ----------  ----------  ---------  -----------\n")
		for _, r := range d.Domains {
			avg := float64(r.Total)/float64(r.Count) + .5
			fmt.Fprintf(w, "  %s      %s     %6ds    %6ds   %s\n", intUnits(float64(r.Count)), hms(r.Total), int64(avg), r.Max, r.Key)
		}
	}
}

// writeAbuse prints the abuse view, which pflogsumm does not have.
func (s *Summary) writeAbuse(w *bufio.Writer) {
	ab := s.Abuse
	q := s.opt.Quiet
	subsectTitle(w, "Abuse Summary (relayguard)")
	fmt.Fprintf(w, " %s  SMTP AUTH failures\n", intUnits(float64(ab.AuthFailures)))
	fmt.Fprintf(w, " %s  relay attempts\n", intUnits(float64(ab.RelayAttempts)))
	var dnsbl int64
	for _, r := range ab.DNSBL {
		dnsbl += r.Count
	}
	fmt.Fprintf(w, " %s  DNSBL rejections\n", intUnits(float64(dnsbl)))
	fmt.Fprintf(w, " %s  non-delivery notices\n", intUnits(float64(ab.NDNs)))
	fmt.Fprintf(w, " %s  non-delivery notices to foreign senders (backscatter)\n", intUnits(float64(ab.Backscatter)))
	fmt.Fprintf(w, " %s  bans added\n", intUnits(float64(ab.BanCount)))
	fmt.Fprintf(w, " %s  egress blocks\n", intUnits(float64(ab.EgressBlocks)))

	var line []byte
	auth := func(rows []AuthRow, title string) {
		if !listTitle(w, title, len(rows) == 0, q) {
			return
		}
		for _, r := range rows {
			b := appendIntUnits(append(line[:0], ' '), float64(r.Failures))
			b = append(append(b, "  "...), r.Key...)
			if r.Addresses > 0 {
				b = strconv.AppendInt(append(b, " ("...), int64(r.Addresses), 10)
				b = append(b, " addresses)"...)
			}
			for i, u := range r.Users {
				if i == 0 {
					b = append(b, "  users: "...)
				} else {
					b = append(b, ", "...)
				}
				b = strconv.AppendInt(append(append(b, u.Key...), "×"...), u.Count, 10)
			}
			w.Write(append(b, '\n'))
			line = b
		}
	}
	auth(ab.AuthByAddress, "SMTP AUTH failures by address")
	auth(ab.AuthBySubnet, "SMTP AUTH failures by subnet (/24, /64)")
	counts := func(rows []CountRow, title string) {
		if !listTitle(w, title, len(rows) == 0, q) {
			return
		}
		for _, r := range rows {
			countRow(w, " ", r.Count, r.Key)
		}
	}
	counts(ab.RelayByClient, "Relay attempts by client")
	counts(ab.RelayByDomain, "Relay attempts by target domain")
	counts(ab.DNSBL, "DNSBL rejections by list")
	if listTitle(w, "Top attacking subnets", len(ab.TopSubnets) == 0, q) {
		fmt.Fprint(w, "   total     auth    relay  rejects  subnet\n")
		for _, r := range ab.TopSubnets {
			fmt.Fprintf(w, " %7d  %7d  %7d  %7d  %s\n", r.Total, r.AuthFailures, r.Relay, r.Rejects, r.Subnet)
		}
	}
	counts(ab.BackscatterDoms, "Non-delivery notices to foreign senders by domain")
	if ab.NDNs > 0 {
		fmt.Fprint(w, "\nNon-delivery notices per hour\n-----------------------------\n")
		for h, v := range ab.NDNPerHour {
			if v > 0 {
				fmt.Fprintf(w, "    %02d00-%02d00  %s\n", h, h+1, intUnits(float64(v)))
			}
		}
	}
	counts(ab.Postscreen, "Postscreen verdicts")
	counts(ab.RuleRejects, "relayguard rejections by rule")
	if listTitle(w, "relayguard bans", len(ab.Bans) == 0, q) {
		for _, b := range ab.Bans {
			ts := ""
			if !b.Time.IsZero() {
				ts = b.Time.Format(time.DateTime) + "  "
			}
			fmt.Fprintf(w, " %s%s", ts, b.Prefix)
			if b.Reason != "" {
				fmt.Fprintf(w, "  %s", b.Reason)
			}
			if b.Until != "" {
				fmt.Fprintf(w, "  until %s", b.Until)
			}
			fmt.Fprintln(w)
		}
	}
	if len(ab.Accounts) > 0 && listTitle(w, "relayguard account containment (compromise signals, suspensions)", false, q) {
		for _, a := range ab.Accounts {
			ts := ""
			if !a.Time.IsZero() {
				ts = a.Time.Format(time.DateTime) + "  "
			}
			fmt.Fprintf(w, " %s%s  %s", ts, oneLine(a.User), a.Event)
			for _, f := range []string{a.Rule, a.Reason} {
				if f != "" {
					fmt.Fprintf(w, "  %s", oneLine(f))
				}
			}
			if a.By != "" {
				fmt.Fprintf(w, "  by %s", oneLine(a.By))
			}
			fmt.Fprintln(w)
		}
	}
	if listTitle(w, "relayguard egress blocks", len(ab.Egress) == 0, q) {
		for _, e := range ab.Egress {
			var d []string
			for _, r := range e.Destinations {
				d = append(d, fmt.Sprintf("%s×%d", r.Key, r.Count))
			}
			fmt.Fprintf(w, " %s  %s  %s\n", intUnits(float64(e.Count)), e.Who, strings.Join(d, ", "))
		}
	}
	if len(ab.Actors) > 0 && listTitle(w, "relayguard senders by local user or login (milter, egress)", false, q) {
		fmt.Fprintf(w, " %7s %7s %7s %7s  %s\n", "sent", "held", "refused", "egress", "who")
		for _, a := range ab.Actors {
			fmt.Fprintf(w, " %7s %7s %7s %7s  %s\n", intUnits(float64(a.Accepted)), intUnits(float64(a.Held)),
				intUnits(float64(a.Refused)), intUnits(float64(a.EgressBlocks)), a.Who)
		}
	}
	if ab.DovecotLogins > 0 || ab.Accepted > 0 {
		fmt.Fprintf(w, "\n %s  Dovecot logins\n %s  messages accepted by relayguard\n",
			intUnits(float64(ab.DovecotLogins)), intUnits(float64(ab.Accepted)))
	}
}

// oneLine is s for a row of the text report, quoted (Go syntax, as slog's
// text handler quotes it) when it holds a control character: a record's
// value is unquoted by the reader and may hold a newline or a carriage
// return (a login name is the client's to choose), which would otherwise
// end the row and forge the next.
func oneLine(s string) string {
	if strings.IndexFunc(s, unicode.IsControl) < 0 {
		return s
	}
	return strconv.Quote(s)
}
