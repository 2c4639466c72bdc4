// Package audit answers "can this host be abused as a spam springboard, and
// is it being abused now?": it finds every SMTP listener on the host and
// relay-tests it from an outsider's address, lints Postfix's and
// relayguard's configuration, checks the egress lockdown, the accounts,
// the host's identity and reputation in DNS, its TLS certificates and the
// mail queues, and reports each finding with its severity, the evidence
// and the exact fix. docs/audit.md lists every check.
package audit

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Severity orders findings; the score and --fail-on use it.
type Severity int

// Severities, from a remark to "this host is a springboard now".
const (
	Info Severity = iota
	Low
	Medium
	High
	Critical
)

var severityNames = [...]string{"info", "low", "medium", "high", "critical"}

func (s Severity) String() string {
	if s < Info || s > Critical {
		return fmt.Sprintf("severity(%d)", int(s))
	}
	return severityNames[s]
}

// ParseSeverity reads a severity name (as --fail-on takes it).
func ParseSeverity(s string) (Severity, error) {
	for i, n := range severityNames {
		if strings.EqualFold(strings.TrimSpace(s), n) {
			return Severity(i), nil
		}
	}
	return 0, fmt.Errorf("severity %q: want one of %s", s, strings.Join(severityNames[:], ", "))
}

// MarshalText implements encoding.TextMarshaler (JSON shows the name).
func (s Severity) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *Severity) UnmarshalText(b []byte) error {
	v, err := ParseSeverity(string(b))
	*s = v
	return err
}

// Areas of the audit, in the order they run and are shown.
const (
	AreaListeners = "listeners"
	AreaPostfix   = "postfix"
	AreaConfig    = "relayguard"
	AreaEgress    = "egress"
	AreaAccounts  = "accounts"
	AreaIdentity  = "identity"
	AreaQueue     = "queue"
)

// Areas lists every area.
var Areas = []string{AreaListeners, AreaPostfix, AreaConfig, AreaEgress, AreaAccounts, AreaIdentity, AreaQueue}

// Finding is one thing wrong (or worth knowing) about the host.
type Finding struct {
	// Check is the stable name of the check that found it
	// ("listener.open-relay"); docs/audit.md lists them.
	Check    string   `json:"check"`
	Area     string   `json:"area"`
	Severity Severity `json:"severity"`
	// Subject is what the finding is about: a listener, a Postfix
	// instance, an account, an address, a domain.
	Subject  string   `json:"subject"`
	Title    string   `json:"title"`
	Evidence []string `json:"evidence,omitempty"`
	// Fix is the exact remedy: a configuration line or a command.
	Fix string `json:"fix"`
	// AutoFix tells what --fix does about it: "" (nothing: the fix is
	// for the operator), "safe" (applied by --fix) or "needs --yes" (it
	// edits another program's configuration).
	AutoFix string `json:"auto_fix,omitempty"`
	// Fixed is set once --fix applied the remedy.
	Fixed bool `json:"fixed,omitempty"`

	remedy *Remedy
}

// Remedy is a fix --fix can apply.
type Remedy struct {
	// Key identifies the change so that one change fixing several
	// findings runs once.
	Key string
	// Show is what will be done, shown before it is done.
	Show string
	// Foreign marks a change to another program's configuration (Postfix):
	// applied only with --yes.
	Foreign bool
	Apply   func() error
}

// Problem is a check that could not be done: the audit cannot call the
// host clean while one is open.
type Problem struct {
	Area  string `json:"area"`
	Check string `json:"check"`
	Error string `json:"error"`
}

// Report is the outcome of an audit.
type Report struct {
	Host      string        `json:"host"`
	Started   time.Time     `json:"started"`
	Duration  time.Duration `json:"duration_ns"`
	Areas     []string      `json:"areas"`
	Listeners []Listener    `json:"listeners"`
	Findings  []Finding     `json:"findings"`
	Problems  []Problem     `json:"problems"`
	// Notes say how the audit was done (e.g. from where the listeners
	// were tested).
	Notes []string `json:"notes,omitempty"`
	Score int      `json:"score"`
	Grade string   `json:"grade"`
	// Counts is the number of findings per severity name.
	Counts map[string]int `json:"counts"`
	// Fixes are the remedies --fix applied or refused.
	Fixes []FixResult `json:"fixes,omitempty"`
}

// FixResult is one remedy's outcome.
type FixResult struct {
	Show    string `json:"show"`
	Applied bool   `json:"applied"`
	Error   string `json:"error,omitempty"`
	Skipped string `json:"skipped,omitempty"` // why not applied
}

// Score weights: a critical finding alone fails the host.
var weights = map[Severity]int{Info: 0, Low: 2, Medium: 6, High: 15, Critical: 40}

// finish sorts the findings (most severe first, then by area) and computes
// the counts, score and grade.
func (r *Report) finish() {
	order := map[string]int{}
	for i, a := range Areas {
		order[a] = i
	}
	slices.SortStableFunc(r.Findings, func(a, b Finding) int {
		if a.Severity != b.Severity {
			return int(b.Severity - a.Severity)
		}
		if order[a.Area] != order[b.Area] {
			return order[a.Area] - order[b.Area]
		}
		if c := strings.Compare(a.Check, b.Check); c != 0 {
			return c
		}
		return strings.Compare(a.Subject, b.Subject)
	})
	r.Counts = map[string]int{}
	for _, s := range severityNames {
		r.Counts[s] = 0
	}
	penalty := 0
	for _, f := range r.Findings {
		r.Counts[f.Severity.String()]++
		penalty += weights[f.Severity]
	}
	r.Score = max(0, 100-penalty)
	switch {
	case r.Counts["critical"] > 0 || r.Score < 40:
		r.Grade = "F"
	case r.Counts["high"] > 0 || r.Score < 60:
		r.Grade = "D"
	case r.Score < 75:
		r.Grade = "C"
	case r.Score < 90:
		r.Grade = "B"
	default:
		r.Grade = "A"
	}
}

// Worst is the highest severity of the findings not fixed, or -1.
func (r *Report) Worst() Severity {
	w := Severity(-1)
	for _, f := range r.Findings {
		if !f.Fixed {
			w = max(w, f.Severity)
		}
	}
	return w
}

// Exit statuses of `relayguard audit`.
const (
	ExitClean      = 0
	ExitFindings   = 1
	ExitIncomplete = 2
)

// ExitCode is 1 when a finding is at least failOn, else 2 when a check
// could not be done (the host cannot be called clean), else 0.
func (r *Report) ExitCode(failOn Severity) int {
	if r.Worst() >= failOn {
		return ExitFindings
	}
	if len(r.Problems) > 0 {
		return ExitIncomplete
	}
	return ExitClean
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w interface{ Write([]byte) (int, error) }) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
