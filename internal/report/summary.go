package report

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"maps"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relayguard/relayguard/internal/logline"
)

// Summary is the finished report: what the text, JSON and HTML renderers
// show. Tables are already sorted and cut to the limits in Options.
type Summary struct {
	DateLabel string    `json:"date,omitempty"`
	First     time.Time `json:"first,omitzero"`
	Last      time.Time `json:"last,omitzero"`
	Lines     int64     `json:"lines_read"`
	Totals    Totals    `json:"grand_totals"`
	DayCount  int       `json:"day_count"`
	Days      []DayRow  `json:"per_day"`
	// Hours are raw counts per hour of day; the text report shows daily
	// averages when the log spans several days.
	Hours             [24]DayRow   `json:"per_hour"`
	RecipientDomains  []DomainRow  `json:"recipient_domains"`
	SenderDomains     []DomainRow  `json:"sender_domains"`
	SendersByCount    []UserRow    `json:"senders_by_count"`
	RecipientsByCount []UserRow    `json:"recipients_by_count"`
	SendersBySize     []UserRow    `json:"senders_by_size"`
	RecipientsBySize  []UserRow    `json:"recipients_by_size"`
	NoMsgSize         []KeyValue   `json:"messages_without_size"`
	Deferrals         []Node       `json:"deferral_detail"`
	Bounces           []Node       `json:"bounce_detail"`
	Rejects           []Node       `json:"reject_detail"`
	RejectWarnings    []Node       `json:"reject_warning_detail"`
	Holds             []Node       `json:"hold_detail"`
	Discards          []Node       `json:"discard_detail"`
	SMTPFailures      []Node       `json:"smtp_delivery_failures"`
	Warnings          []Node       `json:"warnings"`
	Fatals            []Node       `json:"fatal_errors"`
	Panics            []Node       `json:"panics"`
	Master            []CountRow   `json:"master_daemon_messages"`
	SMTPD             *SMTPDReport `json:"smtpd,omitempty"`
	Abuse             Abuse        `json:"abuse"`
	opt               Options
}

// Totals is pflogsumm's "Grand Totals".
type Totals struct {
	Received         int64 `json:"received"`
	Delivered        int64 `json:"delivered"`
	Forwarded        int64 `json:"forwarded"`
	Deferred         int64 `json:"deferred"`
	Deferrals        int64 `json:"deferrals"`
	Bounced          int64 `json:"bounced"`
	Rejected         int64 `json:"rejected"`
	RejectedPct      int   `json:"rejected_pct"`
	RejectWarnings   int64 `json:"reject_warnings"`
	Held             int64 `json:"held"`
	Discarded        int64 `json:"discarded"`
	DiscardedPct     int   `json:"discarded_pct"`
	BytesReceived    int64 `json:"bytes_received"`
	BytesDelivered   int64 `json:"bytes_delivered"`
	Senders          int64 `json:"senders"`
	SendingDomains   int64 `json:"sending_domains"`
	Recipients       int64 `json:"recipients"`
	RecipientDomains int64 `json:"recipient_domains"`
}

// DayRow is one day's (or hour's) traffic.
type DayRow struct {
	Date      string `json:"date,omitempty"` // YYYY-MM-DD
	Received  int64  `json:"received"`
	Delivered int64  `json:"delivered"`
	Deferred  int64  `json:"deferred"`
	Bounced   int64  `json:"bounced"`
	Rejected  int64  `json:"rejected"`
}

// DomainRow is one row of a host/domain summary.
type DomainRow struct {
	Domain   string  `json:"domain"`
	Count    int64   `json:"count"`
	Bytes    int64   `json:"bytes"`
	Defers   int64   `json:"defers,omitempty"`
	AvgDelay float64 `json:"avg_delay,omitempty"`
	MaxDelay float64 `json:"max_delay,omitempty"`
}

// UserRow is one sender or recipient.
type UserRow struct {
	Address string `json:"address"`
	Count   int64  `json:"count"`
	Bytes   int64  `json:"bytes"`
}

// KeyValue is a pair (queue ID and address).
type KeyValue struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// CountRow is a key with a count.
type CountRow struct {
	Key   string `json:"key"`
	Count int64  `json:"count"`
}

// Node is one level of a nested detail table: inner nodes are sorted by
// key, leaves (Children == nil) by count.
type Node struct {
	Key      string `json:"key"`
	Count    int64  `json:"count"` // leaf count, or total of the leaves below
	Children []Node `json:"children,omitempty"`
}

// Abuse is the abuse view.
type Abuse struct {
	AuthFailures    int64        `json:"auth_failures"`
	AuthByAddress   []AuthRow    `json:"auth_failures_by_address"`
	AuthBySubnet    []AuthRow    `json:"auth_failures_by_subnet"`
	RelayAttempts   int64        `json:"relay_attempts"`
	RelayByClient   []CountRow   `json:"relay_attempts_by_client"`
	RelayByDomain   []CountRow   `json:"relay_attempts_by_target_domain"`
	DNSBL           []CountRow   `json:"dnsbl_rejections_by_list"`
	RejectReasons   []CountRow   `json:"rejections_by_reason"`
	TopSubnets      []SubnetRow  `json:"top_attacking_subnets"`
	Postscreen      []CountRow   `json:"postscreen,omitempty"`
	NDNs            int64        `json:"non_delivery_notices"`
	NDNPerHour      [24]int64    `json:"non_delivery_notices_per_hour"`
	Backscatter     int64        `json:"ndn_to_foreign_senders"`
	BackscatterDoms []CountRow   `json:"ndn_to_foreign_senders_by_domain"`
	DovecotLogins   int64        `json:"dovecot_logins"`
	Accepted        int64        `json:"relayguard_accepted"`
	RuleRejects     []CountRow   `json:"relayguard_rejects_by_rule"`
	BanCount        int64        `json:"bans_added"`
	Bans            []Ban        `json:"bans"`
	EgressBlocks    int64        `json:"egress_blocks"`
	Egress          []EgressRow  `json:"egress_blocks_by_process"`
	Accounts        []AccountRow `json:"account_containment,omitempty"`
	Actors          []ActorRow   `json:"senders_by_local_user_or_login,omitempty"`
}

// AuthRow is authentication failures from one address or subnet.
type AuthRow struct {
	Key       string     `json:"key"`
	Failures  int64      `json:"failures"`
	Addresses int        `json:"addresses,omitempty"`
	Users     []CountRow `json:"users,omitempty"`
	idx       int32      // the address's number (abuseState.auth)
}

// SubnetRow is the abuse from one /24 or /64.
type SubnetRow struct {
	Subnet       string `json:"subnet"`
	AuthFailures int64  `json:"auth_failures"`
	Relay        int64  `json:"relay_attempts"`
	Rejects      int64  `json:"rejections"` // other than relay attempts
	Total        int64  `json:"total"`
}

// Ban is a "ban added" record from relayguard's log.
type Ban struct {
	Time   time.Time `json:"time,omitzero"`
	Prefix string    `json:"prefix"`
	Reason string    `json:"reason,omitempty"`
	Until  string    `json:"until,omitempty"`
}

// AccountRow is a record of the compromised-account containment from
// relayguard's log (internal/accounts through maillog's AccountSignal,
// AccountSuspended and AccountUnsuspended): a signal seen for an account,
// its suspension everywhere, or the suspension lifted.
type AccountRow struct {
	Time   time.Time `json:"time,omitzero"`
	User   string    `json:"user"`
	Event  string    `json:"event"`          // "signal", "suspended" or "unsuspended"
	Rule   string    `json:"rule,omitempty"` // the signal (a limit's config key, login_spread, ...)
	Reason string    `json:"reason,omitempty"`
	By     string    `json:"by,omitempty"` // who suspended or lifted it: host and command
}

// EgressRow is blocked outbound connections by one process or user.
type EgressRow struct {
	Who          string     `json:"who"`
	Count        int64      `json:"count"`
	Destinations []CountRow `json:"destinations,omitempty"`
}

// limit cuts a sorted slice to n entries (n < 0: all).
func limit[T any](s []T, n int) []T {
	if n >= 0 && len(s) > n {
		return s[:n]
	}
	return s
}

// byHost sorts rows by count, descending, then by pflogsumm's normalised
// host key (normalizeHost), then by the key itself, and keeps the first n
// (n < 0: all). Each row's normalised key is computed once, not at every
// comparison (on a botnet's log the tables have hundreds of thousands of
// rows, most with equal counts), into one buffer; with a limit only the
// rows that make the cut are sorted, and only their keys are asked for
// (key may compute a row's key on first use and store it).
func byHost[T any](rows []T, n int, count func(*T) int64, key func(*T) string) []T {
	return byHostNorm(rows, n, count, key, nil)
}

// byHostNorm is byHost with norm, when not nil, appending a row's
// normalised key (appendNormalizedHost of its key) without making the key:
// on a botnet's log the abuse view's tables have 100,000s of addresses,
// and the rows tied at the cut are told apart by their normalised keys
// alone, nearly always.
func byHostNorm[T any](rows []T, n int, count func(*T) int64, key func(*T) string, norm func([]byte, *T) []byte) []T {
	if n == 0 {
		return rows[:0]
	}
	if norm == nil {
		norm = func(dst []byte, r *T) []byte { return appendNormalizedHost(dst, key(r)) }
	}
	if n > 0 && n < len(rows) {
		rows = topRows(rows, n, count, key, norm)
	}
	keys := make([]string, len(rows))
	for i := range rows {
		keys[i] = key(&rows[i])
	}
	ks, buf := keyedRows(keys, func(i int) int64 { return count(&rows[i]) }, func(dst []byte, i int) []byte { return norm(dst, &rows[i]) })
	sortKeyed(ks, buf, keys)
	out := make([]T, len(ks))
	for j, k := range ks {
		out[j] = rows[k.i]
	}
	return limit(out, n)
}

// keyedRows returns the rows with keys keys (row i's count is count(i),
// and norm appends its normalised key) as sortKeyed takes them, with the
// buffer of their normalised keys.
func keyedRows(keys []string, count func(int) int64, norm func([]byte, int) []byte) ([]keyed, []byte) {
	ks := make([]keyed, len(keys))
	size := 0
	for _, k := range keys {
		size += len(k)
	}
	buf := make([]byte, 0, size+16)
	for i := range keys {
		if i%touchAhead == 0 { // (the keys' first reads wait together: see touchKeys)
			touchKeys(keys[i:min(i+touchAhead, len(keys))], func(k *string) string { return *k })
		}
		start := len(buf)
		buf = norm(buf, i)
		var h [16]byte
		copy(h[:], buf[start:])
		ks[i] = keyed{count(i), binary.BigEndian.Uint64(h[:8]), binary.BigEndian.Uint64(h[8:]), int32(start), int32(len(buf) - start), int32(i)}
	}
	return ks, buf
}

// topRows keeps (in rows' memory, in no order) the rows that byHost's
// first n are drawn from: every row counted more than the n-th largest
// count, and of the rows tied at that count only the first ones by
// (normalised key, key), as many as are needed to make n. (On a botnet's
// log most addresses fail once: ranking all the tied rows to show 100 of
// them was the most of the abuse view's cost.)
func topRows[T any](rows []T, n int, count func(*T) int64, key func(*T) string, norm func([]byte, *T) []byte) []T {
	cs := make([]int64, len(rows))
	for i := range rows {
		cs[i] = count(&rows[i])
	}
	cut := nthLargest(slices.Clone(cs), n)
	kept := rows[:0]
	var ties []T
	for i, c := range cs {
		switch {
		case c > cut:
			kept = append(kept, rows[i])
		case c == cut:
			ties = append(ties, rows[i])
		}
	}
	need := n - len(kept) // ≥ 1: the n-th largest count is cut
	if len(ties) <= need {
		return append(kept, ties...)
	}
	// A heap of the need first tied rows seen so far, the last of them on
	// top: each other row is compared with that one only.
	type sel struct {
		i      int32 // in ties
		off, l int32 // its normalised key in nb
	}
	var nb, scratch []byte
	heap := make([]sel, 0, need)
	less := func(a []byte, ai int, b []byte, bi int) bool { // (a, key a) < (b, key b)
		if c := bytes.Compare(a, b); c != 0 {
			return c < 0
		}
		return key(&ties[ai]) < key(&ties[bi])
	}
	nk := func(x sel) []byte { return nb[x.off : x.off+x.l] }
	down := func() {
		for j := 0; ; {
			c := 2*j + 1
			if c >= len(heap) {
				return
			}
			if c+1 < len(heap) && less(nk(heap[c]), int(heap[c].i), nk(heap[c+1]), int(heap[c+1].i)) {
				c++
			}
			if !less(nk(heap[j]), int(heap[j].i), nk(heap[c]), int(heap[c].i)) {
				return
			}
			heap[j], heap[c] = heap[c], heap[j]
			j = c
		}
	}
	for i := range ties {
		if len(heap) < need {
			off := len(nb)
			nb = norm(nb, &ties[i])
			heap = append(heap, sel{int32(i), int32(off), int32(len(nb) - off)})
			for j := len(heap) - 1; j > 0; { // up
				p := (j - 1) / 2
				if !less(nk(heap[p]), int(heap[p].i), nk(heap[j]), int(heap[j].i)) {
					break
				}
				heap[j], heap[p] = heap[p], heap[j]
				j = p
			}
			continue
		}
		scratch = norm(scratch[:0], &ties[i])
		if !less(scratch, i, nk(heap[0]), int(heap[0].i)) {
			continue
		}
		off := len(nb)
		nb = append(nb, scratch...)
		heap[0] = sel{int32(i), int32(off), int32(len(scratch))}
		down()
	}
	for _, x := range heap {
		kept = append(kept, ties[x.i])
	}
	return kept
}

// nthLargest returns the n-th largest of cs (1 ≤ n ≤ len(cs)), reordering
// cs: a quickselect, linear on average, where sorting every count of a
// botnet's table only to read one was not.
func nthLargest(cs []int64, n int) int64 {
	k := n - 1 // index in descending order
	lo, hi := 0, len(cs)-1
	for lo < hi {
		p := cs[lo+(hi-lo)/2]
		i, j := lo, hi
		for i <= j {
			for cs[i] > p {
				i++
			}
			for cs[j] < p {
				j--
			}
			if i <= j {
				cs[i], cs[j] = cs[j], cs[i]
				i++
				j--
			}
		}
		switch {
		case k <= j:
			hi = j
		case k >= i:
			lo = i
		default:
			return cs[k]
		}
	}
	return cs[k]
}

func sortCounts(m map[string]int64, n int) []CountRow {
	rows := make([]CountRow, 0, len(m))
	for k, v := range m {
		rows = append(rows, CountRow{k, v})
	}
	return byHost(rows, n, func(r *CountRow) int64 { return r.Count }, func(r *CountRow) string { return r.Key })
}

// tree2Nodes and tree3Nodes turn the nested tables into nodes: inner
// levels sorted by key, leaves by count (at most n; n < 0: all).
func tree2Nodes(t *tree2, n int) []Node {
	keys := slices.Sorted(maps.Keys(t.m))
	out := make([]Node, 0, len(keys))
	for _, k := range keys {
		out = append(out, leafNode(k, t.m[k], n))
	}
	return out
}

func tree3Nodes(t *tree3, n int) []Node {
	keys := slices.Sorted(maps.Keys(t.m))
	out := make([]Node, 0, len(keys))
	for _, k := range keys {
		inner := t.m[k]
		node := Node{Key: k}
		for _, r := range slices.Sorted(maps.Keys(inner)) {
			c := leafNode(r, inner[r], n)
			node.Count += c.Count
			node.Children = append(node.Children, c)
		}
		out = append(out, node)
	}
	return out
}

func leafNode(k string, c *counter, n int) Node {
	node := Node{Key: k, Count: c.total()}
	if n >= 0 && n < c.len() { // (topRows ranks only the rows that can make the cut)
		rows := c.sorted(n)
		node.Children = make([]Node, len(rows))
		for i, r := range rows {
			node.Children[i] = Node{Key: r.Key, Count: r.Count}
		}
		return node
	}
	// Every row: ranked straight from the counter into the nodes (a
	// botnet's warnings are 155,000 rows, and a table of rows sorted, then
	// copied into nodes, was made and filled twice).
	keys := make([]string, c.len())
	for i := range keys {
		keys[i] = c.keys.key(int32(i))
	}
	ks, buf := keyedRows(keys, func(i int) int64 { return c.n[i] }, func(dst []byte, i int) []byte { return appendNormalizedHost(dst, keys[i]) })
	sortKeyed(ks, buf, keys)
	node.Children = make([]Node, len(ks))
	for j, k := range ks {
		node.Children[j] = Node{Key: keys[k.i], Count: k.count}
	}
	return node
}

// Summary finishes the report.
func (a *Analyzer) Summary() *Summary {
	a.pend.flush()
	o := a.opt
	s := &Summary{DateLabel: o.DateLabel, First: a.first, Last: a.last, Lines: a.lines, opt: o}
	t := &s.Totals
	t.Received, t.Delivered, t.Forwarded = a.received, a.delivered, a.forwarded
	t.Deferred, t.Deferrals, t.Bounced = a.deferred, a.deferrals, a.bounced
	t.Rejected, t.RejectWarnings, t.Held, t.Discarded = a.rejected, a.rejectWarned, a.held, a.discarded
	if tot := a.delivered + a.rejected + a.discarded; tot > 0 {
		t.RejectedPct = int(float64(a.rejected) / float64(tot) * 100)
		t.DiscardedPct = int(float64(a.discarded) / float64(tot) * 100)
	}
	t.BytesReceived, t.BytesDelivered = a.bytesReceived, a.bytesDelivered
	t.Senders, t.SendingDomains = int64(a.sendUser.keys.len()), int64(a.sendDom.keys.len())
	for _, st := range a.recipUser.rows {
		if st.count > 0 {
			t.Recipients++
		}
	}
	for _, st := range a.recipDom.rows {
		if st.count > 0 {
			t.RecipientDomains++
		}
	}
	s.DayCount = len(a.seenDays)
	for _, d := range slices.Sorted(func(yield func(dayKey) bool) {
		for k := range a.days {
			if !yield(k) {
				return
			}
		}
	}) {
		r := a.days[d]
		s.Days = append(s.Days, DayRow{Date: time.Date(int(d)/10000, time.Month(int(d)/100%100), int(d)%100, 0, 0, 0, 0, time.UTC).Format("2006-01-02"),
			Received: r[0], Delivered: r[1], Deferred: r[2], Bounced: r[3], Rejected: r[4]})
	}
	for h := range 24 {
		s.Hours[h] = DayRow{Received: a.rcvHr[h], Delivered: a.dlvHr[h], Deferred: a.dfrHr[h], Bounced: a.bncHr[h], Rejected: a.rejHr[h]}
	}
	// The sections are independent: they are built on every core (the
	// tables of a botnet's log have hundreds of thousands of rows), the
	// largest first (runLargestFirst).
	n := o.AbuseLimit
	if o.HostLimit >= 0 && (n < 0 || o.HostLimit < n) {
		n = o.HostLimit
	}
	runLargestFirst([]summaryJob{
		{len(a.recipDom.rows), func() { s.RecipientDomains = domainRows(a.recipDom, o.HostLimit, true) }},
		{len(a.sendDom.rows), func() { s.SenderDomains = domainRows(a.sendDom, o.HostLimit, false) }},
		{2 * len(a.sendUser.rows), func() { s.SendersByCount, s.SendersBySize = userRows(a.sendUser, o.UserLimit) }},
		{2 * len(a.recipUser.rows), func() { s.RecipientsByCount, s.RecipientsBySize = userRows(a.recipUser, o.UserLimit) }},
		{len(a.noMsgSize), func() {
			for _, q := range slices.Sorted(maps.Keys(a.noMsgSize)) {
				s.NoMsgSize = append(s.NoMsgSize, KeyValue{q, a.noMsgSize[q]})
			}
			if o.SMTPDStats {
				s.SMTPD = a.smtpd.report(o.HostLimit)
			}
		}},
		{a.deferralD.rows(), func() { s.Deferrals = tree2Nodes(a.deferralD, o.DeferralDetail) }},
		{a.bounceD.rows(), func() { s.Bounces = tree2Nodes(a.bounceD, o.BounceDetail) }},
		{a.rejectD.rows(), func() { s.Rejects = tree3Nodes(a.rejectD, o.RejectDetail) }},
		{a.warnRejD.rows(), func() { s.RejectWarnings = tree3Nodes(a.warnRejD, o.RejectDetail) }},
		{a.holdD.rows(), func() { s.Holds = tree3Nodes(a.holdD, o.RejectDetail) }},
		{a.discardD.rows(), func() { s.Discards = tree3Nodes(a.discardD, o.RejectDetail) }},
		{a.smtpD.rows(), func() { s.SMTPFailures = tree2Nodes(a.smtpD, o.SMTPDetail) }},
		{a.warnD.rows(), func() { s.Warnings = tree2Nodes(a.warnD, o.WarningDetail) }},
		{a.fatalD.rows() + a.panicD.rows(), func() {
			s.Fatals = tree2Nodes(a.fatalD, -1)
			s.Panics = tree2Nodes(a.panicD, -1)
		}},
		{a.master.len(), func() { s.Master = a.master.sorted(-1) }},
		{int(a.abuse.clientCount()), func() { s.Abuse = a.abuse.summary(n) }},
	}, runtime.GOMAXPROCS(0))
	return s
}

// summaryJob is one part of the summary, which sets fields of the Summary
// no other part sets; rows is how many rows it ranks (about: the abuse
// view's clients), its expected share of the work.
type summaryJob struct {
	rows int
	run  func()
}

// runLargestFirst runs the jobs on workers goroutines (the caller's one of
// them), which take them largest first. The summary's wall time is that of
// the core that ends last: its parts were four fixed groups (three
// goroutines and the caller), started in no set order, and a large group
// started last ran alone at the end (a botnet's 155,000 warnings are ~45
// ms on one core, half the summary's work) while the other core idled.
// Taking the largest parts first, each core then takes the next part as
// it is free: the parts end together, nearly. The order changes nothing
// in the Summary.
func runLargestFirst(jobs []summaryJob, workers int) {
	slices.SortStableFunc(jobs, func(a, b summaryJob) int { return cmp.Compare(b.rows, a.rows) })
	var next atomic.Int32
	work := func() {
		for {
			i := int(next.Add(1)) - 1
			if i >= len(jobs) {
				return
			}
			jobs[i].run()
		}
	}
	var wg sync.WaitGroup
	for range min(workers, len(jobs)) - 1 {
		wg.Go(work)
	}
	work()
	wg.Wait()
}

func domainRows(t *statTable, n int, delays bool) []DomainRow {
	rows := make([]DomainRow, 0, len(t.rows))
	for i := range t.keys.refs {
		k, st := t.keys.key(int32(i)), &t.rows[i]
		r := DomainRow{Domain: k, Count: st.count, Bytes: st.size, Defers: st.defers}
		if delays {
			if st.count > 0 {
				r.AvgDelay = st.delaySum / float64(st.count)
			}
			r.MaxDelay = st.delayMax
		}
		rows = append(rows, r)
	}
	// pflogsumm: by count, then size, descending (ties: by name here),
	// ranked by sortKeyed: the size is the head word, the name's first 8
	// bytes the second (a comparison sort of mixed's 18,000 sending
	// domains moved 56-byte rows through a closure ~300,000 times).
	ks := make([]keyed, len(rows))
	keys := make([]string, len(rows))
	for i := range rows {
		var h [8]byte
		copy(h[:], rows[i].Domain)
		ks[i] = keyed{count: rows[i].Count, head: countWord(rows[i].Bytes), head2: binary.BigEndian.Uint64(h[:]), i: int32(i)}
		keys[i] = rows[i].Domain
	}
	sortKeyed(ks, nil, keys) // (no normalised keys: the names decide ties)
	if n < 0 || n > len(ks) {
		n = len(ks)
	}
	out := make([]DomainRow, n)
	for j := range out {
		out[j] = rows[ks[j].i]
	}
	return out
}

// userRows returns t's rows ranked by message count and by size (at most
// n each; n < 0: all).
func userRows(t *statTable, n int) (byCount, bySize []UserRow) {
	rows := func() []UserRow {
		rows := make([]UserRow, 0, len(t.rows))
		for i := range t.keys.refs {
			rows = append(rows, UserRow{t.keys.key(int32(i)), t.rows[i].count, t.rows[i].size})
		}
		return rows
	}
	address := func(r *UserRow) string { return r.Address }
	if n >= 0 && n < len(t.rows) { // each ranking's own top n (topRows reorders the rows it is given)
		return byHost(rows(), n, func(r *UserRow) int64 { return r.Count }, address),
			byHost(rows(), n, func(r *UserRow) int64 { return r.Bytes }, address)
	}
	// Every row, in both rankings: the keys are read and normalised once.
	all := rows()
	keys := make([]string, len(all))
	for i := range all {
		keys[i] = all[i].Address
	}
	ks, buf := keyedRows(keys, func(i int) int64 { return all[i].Count }, func(dst []byte, i int) []byte { return appendNormalizedHost(dst, keys[i]) })
	ks2 := slices.Clone(ks)
	for j := range ks2 {
		ks2[j].count = all[j].Bytes // (ks is in row order still)
	}
	sortKeyed(ks, buf, keys)
	sortKeyed(ks2, buf, keys)
	byCount, bySize = make([]UserRow, len(ks)), make([]UserRow, len(ks2))
	for j := range ks {
		byCount[j], bySize[j] = all[ks[j].i], all[ks2[j].i]
	}
	return byCount, bySize
}

// smtpdStats is --smtpd-stats: connection times from "connect from" to
// "disconnect from" per smtpd process.
type smtpdStats struct {
	open     map[int]time.Time // pid → connect time (wall clock as written)
	perHour  [24][3]int64      // count, total seconds, max seconds
	perDay   map[string]*[3]int64
	perDom   map[string]*[3]int64
	conns    int64
	totalSec int64
}

func newSMTPDStats() smtpdStats {
	return smtpdStats{open: map[int]time.Time{}, perDay: map[string]*[3]int64{}, perDom: map[string]*[3]int64{}}
}

func wall(t time.Time) time.Time {
	y, m, d := t.Date()
	return time.Date(y, m, d, t.Hour(), t.Minute(), t.Second(), 0, time.UTC)
}

func (st *smtpdStats) add(l logline.Line, msg string, a *Analyzer) {
	if strings.HasPrefix(msg, "connect from ") {
		st.open[l.PID] = wall(l.Time)
		return
	}
	host, ok := strings.CutPrefix(msg, "disconnect from ")
	if !ok {
		return
	}
	start, ok := st.open[l.PID]
	if !ok {
		return
	}
	delete(st.open, l.PID)
	if i := strings.IndexByte(host, ' '); i >= 0 { // Postfix ≥ 3 appends command counts
		host = host[:i]
	}
	dom := a.domain(host)
	secs := int64(wall(l.Time).Sub(start) / time.Second)
	h := &st.perHour[l.Time.Hour()]
	h[0]++
	h[1] += secs
	h[2] = max(h[2], secs)
	bump := func(m map[string]*[3]int64, k string) {
		r := m[k]
		if r == nil {
			r = new([3]int64)
			m[strings.Clone(k)] = r
		}
		r[0]++
		r[1] += secs
		r[2] = max(r[2], secs)
	}
	bump(st.perDay, l.Time.Format("2006-01-02"))
	bump(st.perDom, dom)
	st.conns++
	st.totalSec += secs
}

// SMTPDReport is the --smtpd-stats part of the report.
type SMTPDReport struct {
	Connections int64       `json:"connections"`
	Hosts       int         `json:"hosts"`
	TotalSecs   int64       `json:"total_seconds"`
	PerHour     [24]ConnRow `json:"per_hour"`
	PerDay      []ConnRow   `json:"per_day"`
	Domains     []ConnRow   `json:"domains"`
}

// ConnRow is connections, total and longest time in seconds.
type ConnRow struct {
	Key   string `json:"key,omitempty"`
	Count int64  `json:"count"`
	Total int64  `json:"total_seconds"`
	Max   int64  `json:"max_seconds"`
}

func (st *smtpdStats) report(n int) *SMTPDReport {
	r := &SMTPDReport{Connections: st.conns, Hosts: len(st.perDom), TotalSecs: st.totalSec}
	for h, v := range st.perHour {
		r.PerHour[h] = ConnRow{Count: v[0], Total: v[1], Max: v[2]}
	}
	for _, d := range slices.Sorted(maps.Keys(st.perDay)) {
		v := st.perDay[d]
		r.PerDay = append(r.PerDay, ConnRow{d, v[0], v[1], v[2]})
	}
	for k, v := range st.perDom {
		r.Domains = append(r.Domains, ConnRow{k, v[0], v[1], v[2]})
	}
	slices.SortFunc(r.Domains, func(a, b ConnRow) int {
		if c := cmp.Compare(b.Count, a.Count); c != 0 {
			return c
		}
		if c := cmp.Compare(b.Total, a.Total); c != 0 {
			return c
		}
		return strings.Compare(a.Key, b.Key)
	})
	r.Domains = limit(r.Domains, n)
	return r
}
