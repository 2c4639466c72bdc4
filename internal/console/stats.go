package console

import (
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/relayguard/relayguard/internal/event"
)

// The series of the overview's charts.
const (
	seriesConnections  = "connections"
	seriesAccepted     = "accepted"
	seriesRejected     = "rejected"
	seriesDeferred     = "deferred"
	seriesAuthFailures = "auth_failures"
	seriesBans         = "bans"
)

var seriesNames = []string{seriesConnections, seriesAccepted, seriesRejected, seriesDeferred, seriesAuthFailures, seriesBans}

// metricSources are the counters a series is read from where the process
// has them (serve): the family, and the label value that selects (nil:
// every series of the family).
var metricSources = map[string]struct {
	family string
	label  [2]string // name, value; empty: all
}{
	seriesConnections: {family: "relayguard_smtp_connections_total"},
	seriesAccepted:    {family: "relayguard_spool_messages_total"},
	seriesRejected:    {family: "relayguard_smtp_rejections_total"},
	seriesDeferred:    {family: "relayguard_delivery_results_total", label: [2]string{"result", "deferred"}},
}

// sampleEvery is how often the counters are read (a Gather of the
// process's registry costs well under a millisecond).
const sampleEvery = 2 * time.Second

// ringMinutes is the length of the series: one bucket a minute for a day.
const ringMinutes = 24 * 60

// ring is one series: counts per minute over the last day.
type ring struct {
	head int64 // the newest minute (Unix minutes)
	b    [ringMinutes]int64
}

func (r *ring) add(min, n int64) {
	if r.head == 0 {
		r.head = min
	}
	if min > r.head {
		for m := r.head + 1; m <= min && m <= r.head+ringMinutes; m++ {
			r.b[m%ringMinutes] = 0
		}
		r.head = min
	}
	if min <= r.head-ringMinutes {
		return // older than the day kept
	}
	r.b[min%ringMinutes] += n
}

// window returns n buckets of width minutes each, oldest first, ending
// with the one holding now.
func (r *ring) window(now int64, n, width int) []int64 {
	out := make([]int64, n)
	for i := range n {
		end := now - int64((n-1-i)*width) // the last minute of bucket i
		for m := end - int64(width) + 1; m <= end; m++ {
			if m > r.head || m <= r.head-ringMinutes || m <= now-ringMinutes {
				continue
			}
			out[i] += r.b[m%ringMinutes]
		}
	}
	return out
}

// attack is what the last hour's failed logins of one prefix were.
type attack struct {
	prefix netip.Prefix
	fails  ring // only the last hour is read
	addrs  map[netip.Addr]int
	users  map[string]int
	last   time.Time
}

// egressKey is a local user and the program it ran.
type egressKey struct{ user, program string }

type egressStat struct {
	count int
	last  time.Time
	dst   string
}

// netLogins are an account's logins from one network.
type netLogins struct {
	count int
	last  time.Time
}

// Bounds of the memory the console keeps from the event stream.
const (
	maxAttackPrefixes = 20000
	maxAddrsPerPrefix = 256
	maxUsersPerPrefix = 64
	maxEgressKeys     = 1000
	maxLoginUsers     = 50000
	maxNetsPerUser    = 32
)

// stats keeps the charts' series, the attacks, the logins and the egress
// blocks from the event stream and the metrics.
type stats struct {
	now         func() time.Time
	metricsFeed bool // connections, accepted, rejected, deferred come from the counters

	mu      sync.Mutex
	series  map[string]*ring
	last    map[string]float64 // the counters at the last sample
	sampled bool
	attacks map[netip.Prefix]*attack
	egress  map[egressKey]*egressStat
	logins  map[string]map[netip.Prefix]*netLogins
}

func newStats(now func() time.Time, metricsFeed bool) *stats {
	s := &stats{now: now, metricsFeed: metricsFeed, series: map[string]*ring{}, last: map[string]float64{},
		attacks: map[netip.Prefix]*attack{}, egress: map[egressKey]*egressStat{}, logins: map[string]map[netip.Prefix]*netLogins{}}
	for _, n := range seriesNames {
		s.series[n] = &ring{}
	}
	return s
}

func unixMinute(t time.Time) int64 { return t.Unix() / 60 }

// attackPrefix is the network an attacking address is counted in.
func attackPrefix(ip netip.Addr) netip.Prefix {
	bits := 24
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p
}

func (s *stats) publish(e event.Event) {
	t := e.Time
	if t.IsZero() {
		t = s.now()
	}
	m := unixMinute(t)
	s.mu.Lock()
	defer s.mu.Unlock()
	switch e.Kind {
	case event.AuthFailure:
		n := int64(e.Count())
		s.series[seriesAuthFailures].add(m, n)
		if e.IP.IsValid() {
			s.attack(e, m, n, t)
		}
	case event.Reject, event.RelayDenied, event.DNSBLReject:
		if !s.metricsFeed {
			s.series[seriesRejected].add(m, 1)
		}
	case event.Banned:
		s.series[seriesBans].add(m, 1)
	case event.EgressBlocked:
		s.egressBlocked(e, t)
	case event.AuthSuccess, event.LoginSuccess:
		if e.User != "" && e.IP.IsValid() {
			s.login(e, t)
		}
	}
}

func (s *stats) attack(e event.Event, m, n int64, t time.Time) {
	ip := e.IP.Unmap()
	p := attackPrefix(ip)
	a := s.attacks[p]
	if a == nil {
		if len(s.attacks) >= maxAttackPrefixes {
			s.dropOldestAttack()
		}
		a = &attack{prefix: p, addrs: map[netip.Addr]int{}, users: map[string]int{}}
		s.attacks[p] = a
	}
	a.fails.add(m, n)
	if _, ok := a.addrs[ip]; ok || len(a.addrs) < maxAddrsPerPrefix {
		a.addrs[ip] += int(n)
	}
	if u := e.User; u != "" {
		if _, ok := a.users[u]; ok || len(a.users) < maxUsersPerPrefix {
			a.users[u] += int(n)
		}
	}
	if t.After(a.last) {
		a.last = t
	}
}

func (s *stats) dropOldestAttack() {
	var oldest *attack
	for _, a := range s.attacks {
		if oldest == nil || a.last.Before(oldest.last) {
			oldest = a
		}
	}
	delete(s.attacks, oldest.prefix)
}

// program reads the program of an egress event's detail ("... exe=PATH ...").
func program(detail string) string {
	_, rest, ok := strings.Cut(detail, "exe=")
	if !ok {
		return "(unknown process)"
	}
	if i := strings.IndexByte(rest, ' '); i >= 0 {
		rest = rest[:i]
	}
	return rest
}

func (s *stats) egressBlocked(e event.Event, t time.Time) {
	user := e.User
	if user == "" {
		user = "(unknown user)"
	}
	k := egressKey{user, program(e.Detail)}
	st := s.egress[k]
	if st == nil {
		if len(s.egress) >= maxEgressKeys {
			return
		}
		st = &egressStat{}
		s.egress[k] = st
	}
	st.count++
	if t.After(st.last) {
		st.last = t
		st.dst = e.IP.String()
	}
}

func (s *stats) login(e event.Event, t time.Time) {
	u := strings.ToLower(e.User)
	nets := s.logins[u]
	if nets == nil {
		if len(s.logins) >= maxLoginUsers {
			clear(s.logins) // a flood of names: start again rather than grow
		}
		nets = map[netip.Prefix]*netLogins{}
		s.logins[u] = nets
	}
	p := attackPrefix(e.IP.Unmap())
	nl := nets[p]
	if nl == nil {
		if len(nets) >= maxNetsPerUser {
			return
		}
		nl = &netLogins{}
		nets[p] = nl
	}
	nl.count++
	if t.After(nl.last) {
		nl.last = t
	}
}

// sample reads the counters of g and adds what they grew by since the
// last sample to their series; it also forgets attacks idle for an hour.
func (s *stats) sample(g prometheus.Gatherer) {
	now := s.now()
	m := unixMinute(now)
	vals := map[string]float64{}
	if g != nil {
		if mfs, err := g.Gather(); err == nil {
			for _, mf := range mfs {
				for series, src := range metricSources {
					if mf.GetName() != src.family {
						continue
					}
					v := 0.0
					for _, mt := range mf.GetMetric() {
						if src.label[0] != "" && !hasLabel(mt.GetLabel(), src.label[0], src.label[1]) {
							continue
						}
						v += mt.GetCounter().GetValue()
					}
					vals[series] = v
				}
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for series, v := range vals {
		prev, seen := s.last[series]
		s.last[series] = v
		if !s.sampled {
			continue // the first sample is the baseline
		}
		if !seen {
			prev = 0 // a counter that appeared since: it started from zero
		}
		d := v - prev
		if d < 0 { // a counter that started again
			d = v
		}
		if d > 0 {
			s.series[series].add(m, int64(d+0.5))
		}
	}
	s.sampled = true
	for p, a := range s.attacks {
		if now.Sub(a.last) > time.Hour {
			delete(s.attacks, p)
		}
	}
}

func hasLabel(ls []*dto.LabelPair, name, value string) bool {
	for _, l := range ls {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}

// seriesView is the charts' data.
type seriesView struct {
	// Hour has one point a minute for the last 60 minutes, Day one point
	// an hour for the last 24 hours, oldest first; End is the time the
	// last point ends.
	Hour     map[string][]int64 `json:"hour"`
	Day      map[string][]int64 `json:"day"`
	End      time.Time          `json:"end"`
	Measured []string           `json:"measured"` // the series this process measures
}

func (s *stats) view() seriesView {
	now := s.now()
	m := unixMinute(now)
	v := seriesView{Hour: map[string][]int64{}, Day: map[string][]int64{}, End: time.Unix((m+1)*60, 0)}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range seriesNames {
		if !s.metricsFeed && (n == seriesConnections || n == seriesAccepted || n == seriesDeferred) {
			continue // watch: Postfix's traffic is not in the event stream
		}
		v.Measured = append(v.Measured, n)
		v.Hour[n] = s.series[n].window(m, 60, 1)
		v.Day[n] = s.series[n].window(m, 24, 60)
	}
	return v
}

// attackView is an attack in progress.
type attackView struct {
	Prefix    string     `json:"prefix"`
	Failures  int64      `json:"failures"` // within the last hour
	Addresses int        `json:"addresses"`
	Users     []countRow `json:"users"`
	Last      time.Time  `json:"last"`
	Banned    string     `json:"banned,omitempty"` // the ban covering the prefix, if any
}

func (s *stats) attacksView(n int, banned func(netip.Prefix) string) []attackView {
	m := unixMinute(s.now())
	s.mu.Lock()
	out := make([]attackView, 0, len(s.attacks))
	for _, a := range s.attacks {
		var f int64
		for _, x := range a.fails.window(m, 60, 1) {
			f += x
		}
		if f == 0 {
			continue
		}
		users := map[string]int{}
		for u, k := range a.users {
			users[u] = k
		}
		out = append(out, attackView{Prefix: a.prefix.String(), Failures: f, Addresses: len(a.addrs), Users: topCounts(users, 10), Last: a.last})
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b attackView) int {
		if a.Failures != b.Failures {
			return int(b.Failures - a.Failures)
		}
		return strings.Compare(a.Prefix, b.Prefix)
	})
	out = out[:min(len(out), n)]
	for i := range out {
		out[i].Banned = banned(netip.MustParsePrefix(out[i].Prefix))
	}
	return out
}

type egressView struct {
	User    string    `json:"user"`
	Program string    `json:"program"`
	Count   int       `json:"count"`
	Last    time.Time `json:"last"`
	LastDst string    `json:"last_destination"`
}

func (s *stats) egressView() []egressView {
	s.mu.Lock()
	out := make([]egressView, 0, len(s.egress))
	for k, st := range s.egress {
		out = append(out, egressView{User: k.user, Program: k.program, Count: st.count, Last: st.last, LastDst: st.dst})
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b egressView) int {
		if a.Count != b.Count {
			return b.Count - a.Count
		}
		return strings.Compare(a.User+a.Program, b.User+b.Program)
	})
	return out[:min(len(out), 20)]
}

type loginView struct {
	Network string    `json:"network"`
	Count   int       `json:"count"`
	Last    time.Time `json:"last"`
}

// loginsOf returns an account's logins seen by this process, newest first.
func (s *stats) loginsOf(user string) []loginView {
	s.mu.Lock()
	nets := s.logins[strings.ToLower(user)]
	out := make([]loginView, 0, len(nets))
	for p, nl := range nets {
		out = append(out, loginView{Network: p.String(), Count: nl.count, Last: nl.last})
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b loginView) int { return b.Last.Compare(a.Last) })
	return out
}

// loginUsers lists the accounts seen logging in.
func (s *stats) loginUsers() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.logins))
	for u := range s.logins {
		out = append(out, u)
	}
	return out
}
