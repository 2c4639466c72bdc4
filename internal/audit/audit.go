package audit

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/dnsutil"
	"github.com/relayguard/relayguard/internal/logline"
	"github.com/relayguard/relayguard/internal/store"
)

// Options configure an audit.
type Options struct {
	// Config is relayguard's configuration (finished); required.
	Config *config.Config
	// Areas to audit; nil: all of Areas.
	Areas []string
	// Remote are other hosts the operator owns (HOST or HOST:PORT): their
	// SMTP ports are probed and relay-tested from this host, with the
	// listener and certificate checks.
	Remote []string
	// Resolver answers the DNS checks; nil: the [dnsbl] resolvers, or
	// /etc/resolv.conf.
	Resolver *dnsutil.Resolver
	// Stores is relayguard's state (accounts, counters); nil: the accounts
	// area reports that it could not look.
	Stores *store.Stores
	// PostfixDirs are Postfix configuration directories to lint besides
	// those of the running Postfix masters and /etc/postfix.
	PostfixDirs []string
	// Logs are mail and kernel logs read for blocked egress attempts and
	// account use; nil: [report] logs.
	Logs []string
	// Catalog adds the built-in catalog of public DNS lists to the
	// configured [dnsbl] zones for the blocklist check.
	Catalog bool
	// NoOutside tests listeners from the host itself instead of from a
	// probe network namespace (see outside.go).
	NoOutside bool
	// EgressPersistDir and EgressUnitDir are where the persisted lockdown
	// is looked for (default: [egress] persist_dir, /etc/systemd/system).
	EgressPersistDir, EgressUnitDir string
	// Timeout bounds each network exchange (default 10 s).
	Timeout time.Duration
	// Now is the clock (certificate expiry, "recent" attempts).
	Now func() time.Time
	Log *slog.Logger
	// Proc is the procfs root ("" = /proc).
	Proc string

	// reputation runs only the reputation checks (Reputation).
	reputation bool
}

func discardLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// run is one audit in progress: what the areas share.
type run struct {
	o   Options
	cfg *config.Config
	log *slog.Logger
	now time.Time
	res *dnsutil.Resolver

	mu  sync.Mutex
	rep *Report

	own       []netip.Addr // the host's addresses outsiders can reach
	listeners []*Listener  // those that speak SMTP (or listen on an SMTP port)
	masters   []string     // configuration directories of running Postfix masters
	postfix   []*postfixInstance
	backedUp  sync.Map // configuration files saved as .bak by --fix
}

// Run audits the host. It never fails as a whole: what could not be
// checked is a Problem in the report.
func Run(ctx context.Context, o Options) *Report {
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = discardLog()
	}
	if o.EgressUnitDir == "" {
		o.EgressUnitDir = "/etc/systemd/system"
	}
	if o.EgressPersistDir == "" {
		o.EgressPersistDir = o.Config.Egress.PersistDir
	}
	if o.Logs == nil {
		o.Logs = o.Config.Report.Logs
	}
	areas := o.Areas
	if len(areas) == 0 {
		areas = Areas
	}
	host, _ := os.Hostname()
	r := &run{o: o, cfg: o.Config, log: o.Log, now: o.Now(), res: o.Resolver,
		rep: &Report{Host: host, Started: o.Now(), Areas: areas, Listeners: []Listener{}, Findings: []Finding{}, Problems: []Problem{}}}
	start := time.Now()
	r.own = ownAddresses(o.Config)
	want := func(a string) bool { return slices.Contains(areas, a) }
	needDNS := want(AreaIdentity) || want(AreaPostfix) || want(AreaConfig)
	if o.reputation {
		// Only the DNS lists need DNS; without any, no resolver is read.
		needDNS = o.Catalog || len(o.Config.DNSBL.Zones)+len(o.Config.DNSBL.DomainZones) > 0
	}
	if r.res == nil && needDNS {
		res, err := newResolver(o.Config, o.Timeout)
		if err != nil {
			r.problem(AreaIdentity, "dns", err)
		}
		r.res = res
	}
	if o.reputation {
		// Which Postfix instances run (their certificate files), no probe.
		r.inventory(ctx, false, false)
		r.findPostfix(ctx)
		r.auditCerts()
		if r.res != nil {
			r.checkBlocklists(ctx, r.publicOwn(), r.localDomains())
		}
		r.rep.Duration = time.Since(start)
		r.rep.finish()
		return r.rep
	}
	// The inventory of listeners feeds the listener checks, the Postfix
	// instances and the certificates of the identity checks.
	if want(AreaListeners) || want(AreaPostfix) || want(AreaIdentity) || want(AreaQueue) {
		r.inventory(ctx, want(AreaListeners) || want(AreaIdentity), want(AreaListeners))
	}
	if len(o.Remote) > 0 && (want(AreaListeners) || want(AreaIdentity)) {
		r.remoteListeners(ctx, want(AreaListeners))
	}
	// Postfix instances: their settings, queues, HELO names, local
	// domains and certificate files.
	if want(AreaPostfix) || want(AreaQueue) || want(AreaIdentity) {
		r.findPostfix(ctx)
	}
	steps := []struct {
		area string
		fn   func(context.Context)
	}{
		{AreaPostfix, r.auditPostfix},
		{AreaConfig, r.auditConfig},
		{AreaEgress, r.auditEgress},
		{AreaAccounts, r.auditAccounts},
		{AreaIdentity, r.auditIdentity},
		{AreaQueue, r.auditQueue},
	}
	var wg sync.WaitGroup
	for _, s := range steps {
		if want(s.area) {
			wg.Go(func() { s.fn(ctx) })
		}
	}
	wg.Wait()
	for _, l := range r.listeners {
		r.rep.Listeners = append(r.rep.Listeners, *l)
	}
	r.rep.Duration = time.Since(start)
	r.rep.finish()
	return r.rep
}

// add records a finding.
func (r *run) add(f Finding) {
	if f.remedy != nil {
		if f.remedy.Foreign {
			f.AutoFix = "needs --yes"
		} else {
			f.AutoFix = "safe"
		}
	}
	r.mu.Lock()
	r.rep.Findings = append(r.rep.Findings, f)
	r.mu.Unlock()
}

// problem records a check that could not be done.
func (r *run) problem(area, check string, err error) {
	r.log.Warn("audit: check not done", "area", area, "check", check, "err", err)
	r.mu.Lock()
	r.rep.Problems = append(r.rep.Problems, Problem{Area: area, Check: check, Error: err.Error()})
	r.mu.Unlock()
}

// noteOnce records a note unless it is there already: the logs are read
// once per area that reads them.
func (r *run) noteOnce(note string) {
	r.mu.Lock()
	if !slices.Contains(r.rep.Notes, note) {
		r.rep.Notes = append(r.rep.Notes, note)
	}
	r.mu.Unlock()
}

// note records how the audit was done.
func (r *run) note(format string, args ...any) {
	r.mu.Lock()
	r.rep.Notes = append(r.rep.Notes, fmt.Sprintf(format, args...))
	r.mu.Unlock()
}

// newResolver is the resolver of the DNS checks: [dnsbl] resolvers, or
// the system's.
func newResolver(c *config.Config, timeout time.Duration) (*dnsutil.Resolver, error) {
	servers := c.DNSBL.Resolvers
	if len(servers) == 0 {
		s, err := dnsutil.SystemServers("/etc/resolv.conf")
		if err != nil {
			return nil, fmt.Errorf("no DNS resolver: %w", err)
		}
		servers = s
	}
	return dnsutil.New(servers, timeout)
}

// ownAddresses are the host's addresses an outsider could reach: the
// configured own_addresses, or else the interface addresses, without
// loopback, link-local and unspecified ones.
func ownAddresses(c *config.Config) []netip.Addr {
	var cand []netip.Addr
	if len(c.OwnAddresses) > 0 && c.Site != nil {
		cand = c.Site.OwnAddresses
	} else if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil {
				cand = append(cand, p.Addr().Unmap())
			}
		}
	}
	var out []netip.Addr
	for _, a := range cand {
		if a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsUnspecified() || a.IsMulticast() || probeNet4.Contains(a) || probeNet6.Contains(a) {
			continue
		}
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// firstOf returns the first address of the family (4 or 6).
func firstOf(addrs []netip.Addr, v6 bool) netip.Addr {
	for _, a := range addrs {
		if a.Is6() == v6 {
			return a
		}
	}
	return netip.Addr{}
}

// list joins items for evidence, cutting long lists.
func list(items []string, n int) string {
	if len(items) > n {
		return strings.Join(items[:n], ", ") + fmt.Sprintf(" (+%d more)", len(items)-n)
	}
	return strings.Join(items, ", ")
}

// maxLogLine is the longest log line readLogs reads. A longer one (any
// local user may log one through /dev/log) is skipped and named in a note:
// it stopped the reading of its file ("bufio.Scanner: token too long"), so
// that an egress attempt logged after it went unreported, and it is not a
// check left undone (a problem, exit 2) that anyone could cause at will.
const maxLogLine = 1 << 20

// readLogs calls fn with every line of the logs read (--log, [report]
// logs), each file opened by logline.Open (plain, gzip, xz, journal JSON)
// with fn's per-file state made by start. A file that cannot be opened or
// read is a problem of area.
func (r *run) readLogs(ctx context.Context, area string, start func(name string) func(line string)) {
	for _, name := range r.o.Logs {
		f, err := logline.Open(ctx, name)
		if err != nil {
			r.problem(area, "logs", err)
			continue
		}
		name := logline.Name(name)
		fn := start(name)
		sc := bufio.NewScanner(f)
		var long bool
		sc.Buffer(make([]byte, 0, 64<<10), maxLogLine)
		sc.Split(logline.SkipLongLines(maxLogLine, &long))
		skipped, first := 0, 0
		for n := 1; sc.Scan(); n++ {
			if long {
				long = false
				if skipped++; skipped == 1 {
					first = n
				}
				continue
			}
			fn(sc.Text())
		}
		if skipped > 0 {
			r.noteOnce(fmt.Sprintf("%s: %d lines longer than %d bytes skipped (the first: line %d)", name, skipped, maxLogLine, first))
		}
		if err := sc.Err(); err != nil {
			r.problem(area, "logs", fmt.Errorf("%s: %w", name, err))
		}
		f.Close()
	}
}
