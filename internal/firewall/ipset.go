package firewall

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/relayguard/relayguard/internal/ban"
	"github.com/relayguard/relayguard/internal/config"
)

// ipsetEnf is the iptables + ipset enforcer:
//
//	ipset create relayguard4 hash:net family inet  timeout 0 maxelem N
//	ipset create relayguard6 hash:net family inet6 timeout 0 maxelem N
//	iptables  -N RELAYGUARD; iptables  -A RELAYGUARD -m set --match-set relayguard4 src [-p tcp -m multiport --dports P] -j DROP
//	ip6tables -N RELAYGUARD; ip6tables -A RELAYGUARD -m set --match-set relayguard6 src [...] -j DROP
//	iptables -I INPUT 1 -j RELAYGUARD (and ip6tables)
//
// A hash:net set stores every prefix on its own (nested prefixes coexist),
// so permanent bans (element timeout 0) and temporary bans share one set per
// family without merging. The kernel expires temporary elements.
type ipsetEnf struct {
	cfg config.FirewallConfig
	log *slog.Logger
	r   runner
	now func() time.Time

	mu     sync.Mutex
	model  model
	loaded bool
}

// ipsetMaxTimeout is ipset's largest element timeout in seconds
// (IPSET_MAX_TIMEOUT, about 24.8 days). Longer temporary bans are written
// with it and renewed by every Reconcile.
const ipsetMaxTimeout = 2147483

func newIPSet(cfg config.FirewallConfig, log *slog.Logger, prefix []string) *ipsetEnf {
	return &ipsetEnf{cfg: cfg, log: log, r: runner{prefix}, now: time.Now, model: model{}}
}

func (e *ipsetEnf) setName(p netip.Prefix) string {
	if p.Addr().Is4() {
		return e.cfg.IPSet4
	}
	return e.cfg.IPSet6
}

type ipFamily struct{ tool, set, family string }

func (e *ipsetEnf) families() []ipFamily {
	return []ipFamily{{"iptables", e.cfg.IPSet4, "inet"}, {"ip6tables", e.cfg.IPSet6, "inet6"}}
}

// ruleSpecs are the DROP rules of our chain for one family; multiport takes
// at most 15 ports per rule.
func (e *ipsetEnf) ruleSpecs(set string) [][]string {
	base := []string{"-m", "set", "--match-set", set, "src"}
	if len(e.cfg.Ports) == 0 {
		return [][]string{append(base, "-j", "DROP")}
	}
	var out [][]string
	for ports := e.cfg.Ports; len(ports) > 0; {
		n := min(len(ports), 15)
		var ps []string
		for _, p := range ports[:n] {
			ps = append(ps, strconv.Itoa(p))
		}
		ports = ports[n:]
		out = append(out, append(slices.Clone(base), "-p", "tcp", "-m", "multiport", "--dports", strings.Join(ps, ","), "-j", "DROP"))
	}
	return out
}

func (e *ipsetEnf) setExists(ctx context.Context, name string) (bool, error) {
	out, err := e.r.run(ctx, "", "ipset", "list", "-n")
	if err != nil {
		return false, err
	}
	return slices.Contains(strings.Fields(out), name), nil
}

func (e *ipsetEnf) chainExists(ctx context.Context, tool string) bool {
	_, err := e.r.run(ctx, "", tool, "-w", "-S", e.cfg.IPTChain)
	return err == nil
}

// Setup creates the sets (keeping their elements if they exist), our chain
// with its rules (rewritten), and the jump from INPUT.
func (e *ipsetEnf) Setup(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, f := range e.families() {
		if _, err := e.r.run(ctx, "", "ipset", "create", f.set, "hash:net", "family", f.family, "timeout", "0",
			"maxelem", strconv.Itoa(e.cfg.IPSetSize), "-exist"); err != nil {
			return err
		}
		if !e.chainExists(ctx, f.tool) {
			if _, err := e.r.run(ctx, "", f.tool, "-w", "-N", e.cfg.IPTChain); err != nil {
				return err
			}
		}
		// Build the new rules, then drop the old ones, so the chain never
		// stands empty.
		old, err := e.r.run(ctx, "", f.tool, "-w", "-S", e.cfg.IPTChain)
		if err != nil {
			return err
		}
		for _, spec := range e.ruleSpecs(f.set) {
			if _, err := e.r.run(ctx, "", f.tool, append([]string{"-w", "-A", e.cfg.IPTChain}, spec...)...); err != nil {
				return err
			}
		}
		for range strings.Count(old, "\n-A ") + boolInt(strings.HasPrefix(old, "-A ")) {
			if _, err := e.r.run(ctx, "", f.tool, "-w", "-D", e.cfg.IPTChain, "1"); err != nil {
				return err
			}
		}
		if _, err := e.r.run(ctx, "", f.tool, "-w", "-C", "INPUT", "-j", e.cfg.IPTChain); err != nil {
			if _, err := e.r.run(ctx, "", f.tool, "-w", "-I", "INPUT", "1", "-j", e.cfg.IPTChain); err != nil {
				return err
			}
		}
	}
	e.log.Info("iptables and ipset ready", "sets", []string{e.cfg.IPSet4, e.cfg.IPSet6}, "chain", e.cfg.IPTChain, "ports", e.cfg.Ports)
	return nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Teardown removes the jumps, the chain and the sets.
func (e *ipsetEnf) Teardown(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.model, e.loaded = model{}, false
	for _, f := range e.families() {
		if e.chainExists(ctx, f.tool) {
			for i := 0; i < 100; i++ {
				if _, err := e.r.run(ctx, "", f.tool, "-w", "-D", "INPUT", "-j", e.cfg.IPTChain); err != nil {
					break
				}
			}
			if _, err := e.r.run(ctx, "", f.tool, "-w", "-F", e.cfg.IPTChain); err != nil {
				return err
			}
			if _, err := e.r.run(ctx, "", f.tool, "-w", "-X", e.cfg.IPTChain); err != nil {
				return err
			}
		}
		ok, err := e.setExists(ctx, f.set)
		if err != nil {
			return err
		}
		if ok {
			if _, err := e.r.run(ctx, "", "ipset", "destroy", f.set); err != nil {
				return err
			}
		}
	}
	e.log.Info("iptables and ipset removed", "sets", []string{e.cfg.IPSet4, e.cfg.IPSet6}, "chain", e.cfg.IPTChain)
	return nil
}

// read returns the elements of both sets with their expiries.
func (e *ipsetEnf) read(ctx context.Context) (model, error) {
	m := model{}
	now := e.now()
	for _, f := range e.families() {
		out, err := e.r.run(ctx, "", "ipset", "save", f.set)
		if err != nil {
			return nil, err
		}
		// Lines: "add relayguard4 192.0.2.3 timeout 3599" (timeout 0: permanent).
		for _, line := range strings.Split(out, "\n") {
			fs := strings.Fields(line)
			if len(fs) < 3 || fs[0] != "add" || fs[1] != f.set {
				continue
			}
			p, err := config.ParsePrefix(fs[2])
			if err != nil {
				return nil, fmt.Errorf("firewall: ipset %s: element %q: %w", f.set, fs[2], err)
			}
			var u time.Time
			if i := slices.Index(fs, "timeout"); i > 0 && i+1 < len(fs) {
				s, err := strconv.Atoi(fs[i+1])
				if err != nil {
					return nil, fmt.Errorf("firewall: ipset %s: element %q: timeout %q", f.set, fs[2], fs[i+1])
				}
				if s > 0 {
					u = now.Add(time.Duration(s) * time.Second)
				}
			}
			m[p] = u
		}
	}
	return m, nil
}

// line is one ipset restore command adding p until u.
func (e *ipsetEnf) addLine(p netip.Prefix, u time.Time, now time.Time) (string, bool) {
	t := 0
	if !u.IsZero() {
		d := u.Sub(now)
		if d < time.Second/2 {
			return "", false
		}
		t = min(int((d+time.Second/2)/time.Second), ipsetMaxTimeout)
		t = max(t, 1)
	}
	return fmt.Sprintf("add %s %s timeout %d\n", e.setName(p), cidr(p), t), true
}

func checkIPSetPrefix(p netip.Prefix) (netip.Prefix, error) {
	p, err := checkPrefix(p)
	if err == nil && p.Bits() == 0 {
		err = fmt.Errorf("firewall: prefix %s: ipset hash:net cannot hold a /0", p)
	}
	return p, err
}

// Reconcile diffs the sets against bans and applies the difference with one
// `ipset restore`.
func (e *ipsetEnf) Reconcile(ctx context.Context, bans []ban.Ban) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	want := model(normalize(bans, e.now()))
	for p := range want {
		if p.Bits() == 0 {
			e.log.Warn("ipset cannot hold a /0 ban; skipped", "prefix", p)
			delete(want, p)
		}
	}
	e.model, e.loaded = want, true
	return e.sync(ctx)
}

// sync makes the sets equal the model.
func (e *ipsetEnf) sync(ctx context.Context) error {
	now := e.now()
	have, err := e.read(ctx)
	if err != nil {
		return err
	}
	// Additions before deletions: a ban replaced by others (a subnet
	// carved around an address) leaves no address unbanned in between.
	var script, delScript strings.Builder
	adds, dels := 0, 0
	for p := range have {
		if _, ok := e.model[p]; !ok {
			fmt.Fprintf(&delScript, "del %s %s\n", e.setName(p), cidr(p))
			dels++
		}
	}
	for p, u := range e.model {
		if !u.IsZero() {
			if !u.After(now) {
				continue // expired: the kernel drops it itself
			}
			// what the kernel can hold: at most ipsetMaxTimeout from now
			u = minTime(u, now.Add(ipsetMaxTimeout*time.Second))
		}
		if h, ok := have[p]; ok && (h.IsZero() == u.IsZero()) && (u.IsZero() || absDur(h.Sub(u)) <= 2*time.Second) {
			continue // ipset reports whole seconds left
		}
		if l, ok := e.addLine(p, u, now); ok {
			script.WriteString(l)
			adds++
		}
	}
	script.WriteString(delScript.String())
	if script.Len() == 0 {
		return nil
	}
	e.log.Debug("ipset diff", "delete", dels, "add", adds)
	_, err = e.r.run(ctx, script.String(), "ipset", "restore", "-exist")
	return err
}

// recover re-syncs the sets with the model after a failed command.
func (e *ipsetEnf) recover(ctx context.Context, orig error) error {
	e.log.Warn("ipset command failed, reconciling", "err", orig)
	if err := e.sync(ctx); err != nil {
		return errors.Join(orig, err)
	}
	return nil
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

func (e *ipsetEnf) load(ctx context.Context) error {
	if e.loaded {
		return nil
	}
	m, err := e.read(ctx)
	if err != nil {
		return err
	}
	e.model, e.loaded = m, true
	return nil
}

// Add bans b.Prefix; an existing ban of the same prefix keeps the later
// expiry.
func (e *ipsetEnf) Add(ctx context.Context, b ban.Ban) error {
	p, err := checkIPSetPrefix(b.Prefix)
	if err != nil {
		return err
	}
	now := e.now()
	if b.Expired(now) {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.load(ctx); err != nil {
		return err
	}
	u := e.model.merge(p, b.Until)
	l, ok := e.addLine(p, u, now)
	if !ok {
		return nil
	}
	args := append(strings.Fields(l), "-exist")
	if _, err = e.r.run(ctx, "", "ipset", args...); err != nil {
		return e.recover(ctx, err)
	}
	return nil
}

// Remove lifts the ban of exactly p.
func (e *ipsetEnf) Remove(ctx context.Context, p netip.Prefix) error {
	p, err := checkIPSetPrefix(p)
	if err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.load(ctx); err != nil {
		return err
	}
	delete(e.model, p)
	if _, err = e.r.run(ctx, "", "ipset", "del", e.setName(p), cidr(p), "-exist"); err != nil {
		return e.recover(ctx, err)
	}
	return nil
}

// Status shows the sets' headers and the chain's rule counters.
func (e *ipsetEnf) Status(ctx context.Context) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "backend iptables+ipset: chain %s, sets %s and %s\n", e.cfg.IPTChain, e.cfg.IPSet4, e.cfg.IPSet6)
	for _, f := range e.families() {
		ok, err := e.setExists(ctx, f.set)
		if err != nil {
			return "", err
		}
		if !ok {
			fmt.Fprintf(&b, "  ipset %s is absent (run `relayguard firewall setup`)\n", f.set)
			continue
		}
		out, err := e.r.run(ctx, "", "ipset", "list", "-t", f.set)
		if err != nil {
			return "", err
		}
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "Number of entries:") {
				fmt.Fprintf(&b, "  ipset %s: %s\n", f.set, strings.ToLower(l))
			}
		}
		if !e.chainExists(ctx, f.tool) {
			fmt.Fprintf(&b, "  %s chain %s is absent\n", f.tool, e.cfg.IPTChain)
			continue
		}
		out, err = e.r.run(ctx, "", f.tool, "-w", "-L", e.cfg.IPTChain, "-n", "-v", "-x")
		if err != nil {
			return "", err
		}
		for _, l := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
			fmt.Fprintf(&b, "  %s: %s\n", f.tool, strings.Join(strings.Fields(l), " "))
		}
	}
	return b.String(), nil
}
