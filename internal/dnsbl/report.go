package dnsbl

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relayguard/relayguard/internal/dnsbl/zonespec"
)

// Row is one target's answer from one list, as `relayguard dnsbl check`
// shows it.
type Row struct {
	Target  string   `json:"target"`
	List    string   `json:"list"`
	Kind    string   `json:"kind"` // block or allow
	Result  string   `json:"result"`
	Listed  bool     `json:"listed"`
	Answers []string `json:"answers,omitempty"`
	Meaning string   `json:"meaning,omitempty"`
}

// Report is what Lookup found.
type Report struct {
	Rows   []Row
	Health []Health // empty unless the lists' health was checked
}

// Listed reports whether a block list lists some target; Unanswered
// whether some block list could not say (an error, an error code or a
// switched-off list: Status.Unanswered and Skipped).
func (r Report) Listed() bool {
	for _, x := range r.Rows {
		if x.Listed && x.Kind == "block" {
			return true
		}
	}
	return false
}

// Unanswered: see Listed.
func (r Report) Unanswered() bool {
	for _, x := range r.Rows {
		switch x.Result {
		case TempError.String(), ListError.String(), Skipped.String():
			if x.Kind == "block" {
				return true
			}
		}
	}
	return false
}

// Lists returns the lists to ask: the built-in catalog (if catalog) and
// the configured client-IP and domain zones, each name once (the
// configured spec wins: its filter and weight are the operator's). A
// configured zone with a negative weight is an allowlist.
func Lists(catalog bool, zones, domainZones []string) ([]CatalogEntry, error) {
	var out []CatalogEntry
	index := map[string]int{}
	add := func(e CatalogEntry) error {
		z, err := zonespec.Parse(e.Spec)
		if err != nil {
			return fmt.Errorf("dnsbl zone %q: %w", e.Spec, err)
		}
		if i, ok := index[z.Name]; ok {
			e.Meanings = out[i].Meanings
			out[i] = e
			return nil
		}
		index[z.Name] = len(out)
		out = append(out, e)
		return nil
	}
	if catalog {
		for _, e := range Catalog {
			if err := add(e); err != nil {
				return nil, err
			}
		}
	}
	for _, s := range zones {
		z, err := zonespec.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("dnsbl zone %q: %w", s, err)
		}
		if err := add(CatalogEntry{Spec: s, Allow: z.Weight < 0}); err != nil {
			return nil, err
		}
	}
	for _, s := range domainZones {
		if err := add(CatalogEntry{Spec: s, Domain: true}); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// ParseTarget reads what `dnsbl check` is asked about: an IP address or a
// domain name (returned in lower case without a trailing dot).
func ParseTarget(s string) (netip.Addr, string, error) {
	if ip, err := netip.ParseAddr(s); err == nil {
		return ip, "", nil
	}
	d := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(s), "."))
	if !DomainQueryable(d) {
		return netip.Addr{}, "", fmt.Errorf("%q is neither an IP address nor a domain name", s)
	}
	return netip.Addr{}, d, nil
}

// Lookup asks every list about every target (IP addresses in the
// client-IP lists, domains in the domain lists) and, if health is set,
// checks the lists' health at the same time, all concurrently under one
// deadline, o.Timeout: a dead list costs one timeout however many targets
// there are. A list that the check finds dead, listing everything or
// refusing is reported as skipped with the reason, never as a listing.
// Answers are read by Classify, as in the policy checks.
func Lookup(ctx context.Context, q Querier, lists []CatalogEntry, targets []string, health bool, o Options) (Report, error) {
	type target struct {
		name   string
		ip     netip.Addr
		domain string
	}
	var ts []target
	for _, s := range targets {
		ip, d, err := ParseTarget(s)
		if err != nil {
			return Report{}, err
		}
		ts = append(ts, target{s, ip, d})
	}
	o.Zones, o.DomainZones = nil, nil
	meanings := map[string]map[string]string{}
	allow := map[string]bool{}
	for _, l := range lists {
		if l.Domain {
			o.DomainZones = append(o.DomainZones, l.Spec)
		} else {
			o.Zones = append(o.Zones, l.Spec)
		}
		z, err := zonespec.Parse(l.Spec)
		if err != nil {
			return Report{}, fmt.Errorf("dnsbl zone %q: %w", l.Spec, err)
		}
		meanings[z.Name], allow[z.Name] = l.Meanings, l.Allow
	}
	if o.Registerer == nil {
		o.Registerer = prometheus.NewRegistry()
	}
	o.HealthInterval = 0
	c, err := New(q, o)
	if err != nil {
		return Report{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()

	var wg sync.WaitGroup
	var rep Report
	if health {
		wg.Go(func() { rep.Health = c.CheckHealth(ctx) })
	}
	type job struct {
		t target
		z *Zone
		r Result
	}
	var jobs []*job
	for _, t := range ts {
		zones := c.Zones()
		if t.domain != "" {
			zones = c.DomainZones()
		}
		for _, z := range zones {
			jobs = append(jobs, &job{t: t, z: z})
		}
	}
	for _, j := range jobs {
		wg.Go(func() {
			qname := DomainQuery(j.t.domain, j.z.Name)
			if j.t.ip.IsValid() {
				qname = IPQuery(j.t.ip, j.z.Name)
			}
			j.r, _, _ = c.resolve(ctx, j.z, qname)
		})
	}
	wg.Wait()
	off := map[string]Health{}
	for _, h := range rep.Health {
		if h.State.Disabled() {
			off[h.Zone] = h
		}
	}
	for _, j := range jobs {
		r, name := j.r, j.z.Name
		if h, ok := off[name]; ok {
			r.Status, r.Detail, r.Answers = Skipped, "zone disabled ("+h.State.String()+"): "+h.Detail, nil
		}
		row := Row{Target: j.t.name, List: name, Kind: "block", Result: r.Status.String(), Listed: r.Status == Listed}
		if allow[name] {
			row.Kind = "allow"
		}
		for _, a := range r.Answers {
			row.Answers = append(row.Answers, a.String())
			if m := meanings[name][a.String()]; m != "" && row.Meaning == "" {
				row.Meaning = m
			}
		}
		if r.Detail != "" {
			row.Meaning = r.Detail
		}
		rep.Rows = append(rep.Rows, row)
	}
	return rep, nil
}
