// Package tlsrpt keeps the results of outbound SMTP sessions under DANE
// and MTA-STS policies and sends the daily aggregate reports of SMTP TLS
// Reporting (RFC 8460) to the domains that ask for them.
//
// It is written here because no well-kept Go library produces these
// reports; the JSON format (RFC 8460 §4) is small.
package tlsrpt

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/relayguard/relayguard/internal/deliver"
	"github.com/relayguard/relayguard/internal/safeio"
)

// Recorder aggregates session results per UTC day and policy, in memory,
// and writes them to DIR/YYYY-MM-DD.json every FlushInterval and at
// Flush: a crash loses at most that much of a report, never mail.
type Recorder struct {
	dir string
	log *slog.Logger
	now func() time.Time

	mu   sync.Mutex
	days map[string]*day // by date
}

// day is one day's results, as stored.
type day struct {
	Date     string             `json:"date"`
	Policies map[string]*policy `json:"policies"` // by policy key
	dirty    bool
}

// policy is the result counts for one policy (RFC 8460 §4.4).
type policy struct {
	Type       string            `json:"type"`
	Strings    []string          `json:"strings,omitempty"`
	Domain     string            `json:"domain"`
	MXPatterns []string          `json:"mx,omitempty"`
	OK         int               `json:"ok"`
	Failed     int               `json:"failed"`
	Failures   map[string]*count `json:"failures,omitempty"` // by result-type|mx|ip|reason
}

type count struct {
	ResultType string `json:"result_type"`
	MX         string `json:"mx,omitempty"`
	IP         string `json:"ip,omitempty"`
	Reason     string `json:"reason,omitempty"`
	N          int    `json:"n"`
}

// NewRecorder keeps results under dir (DATA_DIR/tlsrpt), reading what an
// earlier run left there.
func NewRecorder(dir string, log *slog.Logger) (*Recorder, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("tlsrpt: %w", err)
	}
	r := &Recorder{dir: dir, log: log, now: time.Now, days: map[string]*day{}}
	return r, nil
}

func (r *Recorder) file(date string) string { return filepath.Join(r.dir, date+".json") }

// loadDay returns the day, from memory or disk; r.mu held.
func (r *Recorder) loadDay(date string) *day {
	if d := r.days[date]; d != nil {
		return d
	}
	d := &day{Date: date, Policies: map[string]*policy{}}
	if b, err := os.ReadFile(r.file(date)); err == nil {
		if err := json.Unmarshal(b, d); err != nil {
			r.log.Error("tlsrpt: unreadable results file, starting it afresh", "file", r.file(date), "err", err)
			d = &day{Date: date, Policies: map[string]*policy{}}
		}
	}
	r.days[date] = d
	return d
}

// Record implements deliver.TLSReporter.
func (r *Recorder) Record(res deliver.TLSResult) {
	date := r.now().UTC().Format(time.DateOnly)
	key := res.Type + "|" + res.Domain + "|" + strings.Join(res.Policy, "\n")
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.loadDay(date)
	p := d.Policies[key]
	if p == nil {
		p = &policy{Type: res.Type, Strings: res.Policy, Domain: res.Domain, MXPatterns: res.MXPatterns, Failures: map[string]*count{}}
		d.Policies[key] = p
	}
	if res.OK {
		p.OK++
	} else {
		p.Failed++
		fk := strings.Join([]string{res.Failure, res.MX, res.IP, res.Reason}, "|")
		c := p.Failures[fk]
		if c == nil {
			c = &count{ResultType: res.Failure, MX: res.MX, IP: res.IP, Reason: res.Reason}
			if p.Failures == nil {
				p.Failures = map[string]*count{}
			}
			p.Failures[fk] = c
		}
		c.N++
	}
	d.dirty = true
}

// Flush writes the days changed since the last flush.
func (r *Recorder) Flush() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var first error
	for date, d := range r.days {
		if !d.dirty {
			continue
		}
		b, err := json.Marshal(d)
		if err == nil {
			err = safeio.WriteFile(r.file(date), b, 0o640)
		}
		if err != nil {
			if first == nil {
				first = fmt.Errorf("tlsrpt: %w", err)
			}
			continue
		}
		d.dirty = false
		if date != r.now().UTC().Format(time.DateOnly) {
			delete(r.days, date) // a past day no longer changes
		}
	}
	return first
}

// pendingDays are the stored days before today, oldest first: those whose
// reports are due.
func (r *Recorder) pendingDays() []string {
	ents, _ := os.ReadDir(r.dir)
	today := r.now().UTC().Format(time.DateOnly)
	var out []string
	for _, e := range ents {
		date, ok := strings.CutSuffix(e.Name(), ".json")
		if ok && len(date) == len(time.DateOnly) && date < today {
			out = append(out, date)
		}
	}
	sort.Strings(out)
	return out
}
