package audit

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relayguard/relayguard/internal/prom"
)

// The reputation part of the audit is what `serve` and `watch` run
// periodically: the host's own addresses and domains on the DNS lists
// (the lists' health checked at the same time, unhealthy ones skipped) and
// its certificates' expiry, validity and names. It changes without anyone
// touching the host — a listing appears, a certificate runs out — so it is
// watched, and a change is alerted through the accounts' alert channel
// (admin mail, webhook) and the metrics.

// reputationChecks are the checks of the reputation part.
var reputationChecks = []string{"identity.blocklisted", "identity.cert-expired", "identity.cert-expiring",
	"identity.cert-not-yet-valid", "identity.cert-name"}

// Reputation runs the reputation part of the audit. The listeners are not
// probed: the certificates are read from relayguard's and Postfix's files.
func Reputation(ctx context.Context, o Options) *Report {
	o.Areas = []string{AreaIdentity}
	o.reputation = true
	return Run(ctx, o)
}

// Change is what a reputation check found different from the one before.
type Change struct {
	Host    string    `json:"host"`
	Time    time.Time `json:"time"`
	New     []Finding `json:"new"`
	Cleared []Finding `json:"cleared"`
	// Current is every reputation finding now.
	Current []Finding `json:"current"`
}

// Subject is the alert's one-line summary.
func (c Change) Subject() string {
	var parts []string
	for _, f := range c.New {
		parts = append(parts, f.Check+" "+f.Subject)
	}
	if len(parts) == 0 {
		return fmt.Sprintf("relayguard: reputation of %s: %d problem(s) cleared", c.Host, len(c.Cleared))
	}
	return fmt.Sprintf("relayguard: reputation of %s: %s", c.Host, list(parts, 3))
}

// Text is the alert's body: what is new, with the fix, and what cleared.
func (c Change) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "relayguard's reputation check on %s at %s found a change.\n", c.Host, c.Time.UTC().Format(time.RFC3339))
	for _, f := range c.New {
		fmt.Fprintf(&b, "\nNEW %s %s: %s\n  %s\n", strings.ToUpper(f.Severity.String()), f.Check, f.Subject, f.Title)
		for _, e := range f.Evidence {
			fmt.Fprintf(&b, "  evidence: %s\n", e)
		}
		fmt.Fprintf(&b, "  fix: %s\n", f.Fix)
	}
	for _, f := range c.Cleared {
		fmt.Fprintf(&b, "\nCLEARED %s: %s (%s)\n", f.Check, f.Subject, f.Title)
	}
	fmt.Fprintf(&b, "\n%d reputation finding(s) now. Run relayguard audit for the whole picture.\n", len(c.Current))
	return b.String()
}

// Monitor runs Reputation every Interval and reports changes.
type Monitor struct {
	Options  Options
	Interval time.Duration
	// Alert is called with each change (nil: the change is only logged
	// and counted). When it fails, the next check reports the change
	// again (with whatever else changed meanwhile).
	Alert      func(ctx context.Context, c Change) error
	Registerer prometheus.Registerer

	last     map[string]Finding // by check and subject; nil before the first check
	prev     map[string]Finding // last before the latest Check
	findings *prometheus.GaugeVec
	alerts   prometheus.Counter
	checks   *prometheus.CounterVec

	run   sync.Mutex // one check at a time: Run's and CheckNow's
	mu    sync.Mutex // guards state
	state State
}

// State is the latest reputation check as a reader sees it (the web
// console's overview): its findings and what it could not ask.
type State struct {
	// Interval is how often the monitor checks; 0: only when asked.
	Interval time.Duration `json:"interval_ns"`
	Checked  time.Time     `json:"checked,omitzero"`
	Running  bool          `json:"running"`
	Findings []Finding     `json:"findings"` // the reputation findings now, by check and subject
	Problems []Problem     `json:"problems"` // what the last check could not ask
	Notes    []string      `json:"notes,omitempty"`
}

// State returns the latest check (zero Checked before the first).
func (m *Monitor) State() State {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.state
	st.Interval = m.Interval
	st.Findings = append([]Finding{}, st.Findings...)
	st.Problems = append([]Problem{}, st.Problems...)
	return st
}

// CheckNow checks at once (after the check under way, if any), alerts a
// change as Run does, and returns the new state.
func (m *Monitor) CheckNow(ctx context.Context) State {
	m.checkAndAlert(ctx)
	return m.State()
}

func (m *Monitor) init() {
	if m.findings != nil {
		return
	}
	m.findings = prom.Register(m.Registerer, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "relayguard_reputation_findings",
		Help: "Findings of the last reputation check (own addresses and domains on DNS lists, certificates), by check.",
	}, []string{"check"}))
	m.alerts = prom.Register(m.Registerer, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "relayguard_reputation_alerts_total",
		Help: "Changes of the reputation findings alerted.",
	}))
	m.checks = prom.Register(m.Registerer, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "relayguard_reputation_checks_total",
		Help: "Reputation checks run, by result: complete, or incomplete (a list or the resolver did not answer).",
	}, []string{"result"}))
}

func findingKey(f Finding) string { return f.Check + "\x00" + f.Subject + "\x00" + f.Severity.String() }

// Check runs one reputation check and returns the change since the one
// before (ok false when nothing changed). The first check reports the
// findings it sees as new. A listing that could not be checked this time
// (a problem) is kept rather than reported cleared.
func (m *Monitor) Check(ctx context.Context) (Change, bool) {
	m.init()
	m.prev = m.last
	m.mu.Lock()
	m.state.Running = true
	m.mu.Unlock()
	rep := Reputation(ctx, m.Options)
	result := "complete"
	if len(rep.Problems) > 0 {
		result = "incomplete"
		for _, p := range rep.Problems {
			m.Options.Log.Warn("reputation check: not done", "check", p.Check, "err", p.Error)
		}
	}
	m.checks.WithLabelValues(result).Inc()
	now := map[string]Finding{}
	for _, f := range rep.Findings {
		if slices.Contains(reputationChecks, f.Check) {
			now[findingKey(f)] = f
		}
	}
	ch := Change{Host: m.Options.Config.Hostname, Time: rep.Started}
	for _, k := range slices.Sorted(maps.Keys(now)) {
		if _, seen := m.last[k]; !seen {
			ch.New = append(ch.New, now[k])
		}
	}
	for _, k := range slices.Sorted(maps.Keys(m.last)) {
		if _, still := now[k]; still {
			continue
		}
		f := m.last[k]
		if f.Check == "identity.blocklisted" && result == "incomplete" {
			now[k] = f // not asked this time: not known to be cleared
			continue
		}
		ch.Cleared = append(ch.Cleared, f)
	}
	counts := map[string]float64{}
	for _, c := range reputationChecks {
		counts[c] = 0
	}
	for _, f := range now {
		counts[f.Check]++
		ch.Current = append(ch.Current, f)
	}
	for c, n := range counts {
		m.findings.WithLabelValues(c).Set(n)
	}
	m.last = now
	cur := slices.Clone(ch.Current)
	slices.SortFunc(cur, func(a, b Finding) int { return strings.Compare(findingKey(a), findingKey(b)) })
	m.mu.Lock()
	m.state = State{Checked: rep.Started, Findings: cur, Problems: rep.Problems, Notes: rep.Notes}
	m.mu.Unlock()
	return ch, len(ch.New) > 0 || len(ch.Cleared) > 0
}

// checkAndAlert runs one check and alerts its change; one at a time.
func (m *Monitor) checkAndAlert(ctx context.Context) {
	m.run.Lock()
	defer m.run.Unlock()
	if m.Options.Log == nil {
		m.Options.Log = discardLog()
	}
	ch, changed := m.Check(ctx)
	if ctx.Err() != nil || !changed {
		return
	}
	m.alerts.Inc()
	m.Options.Log.Warn("reputation changed", "new", len(ch.New), "cleared", len(ch.Cleared), "summary", ch.Subject())
	if m.Alert != nil {
		if err := m.Alert(ctx, ch); err != nil {
			// Not told: compare the next check with what was last told.
			m.last = m.prev
		}
	}
}

// Run checks at once and then every Interval until ctx is done, alerting
// every change. It returns when ctx is done and the check under way ended.
func (m *Monitor) Run(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m.checkAndAlert(ctx)
		if ctx.Err() != nil {
			return
		}
		t.Reset(m.Interval)
	}
}
