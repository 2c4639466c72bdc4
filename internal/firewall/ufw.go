package firewall

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/relayguard/relayguard/internal/ban"
	"github.com/relayguard/relayguard/internal/config"
)

// ufwEnf is the ufw enforcer: every ban is one rule
//
//	ufw prepend deny [proto tcp] from CIDR [to any port P,Q] comment relayguard
//
// and only rules carrying that comment are ever read or deleted, so the
// operator's own rules are left alone. ufw has no timeouts: this enforcer
// keeps a timer per temporary ban and deletes the rule when it runs out
// (and Reconcile deletes rules whose ban has expired while relayguard was
// not running). ufw itself must be enabled by the operator; Setup refuses
// to enable it, since its default incoming policy may lock people out.
type ufwEnf struct {
	cfg config.FirewallConfig
	log *slog.Logger
	r   runner
	now func() time.Time

	mu     sync.Mutex
	model  model
	loaded bool
	timers map[netip.Prefix]*time.Timer
}

func newUFW(cfg config.FirewallConfig, log *slog.Logger, prefix []string) *ufwEnf {
	return &ufwEnf{cfg: cfg, log: log, r: runner{prefix}, now: time.Now, model: model{}, timers: map[netip.Prefix]*time.Timer{}}
}

// ufwRule is one tagged line of `ufw status numbered`.
type ufwRule struct {
	num    int
	to     string // "Anywhere", "25,465/tcp", ...
	prefix netip.Prefix
}

// `[ 3] 25,465/tcp (v6)             DENY IN     2001:db8::/64              # relayguard`
// (Compiled on first use, as every package-level expression of a package
// `relayguard report` does not use: their compiling was part of every
// command's start.)
var ufwLine = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^\[\s*(\d+)\]\s+(.+?)\s{2,}DENY(?: IN)?\s+(\S+)\s+# (.*)$`)
})

func (e *ufwEnf) portSpec() string {
	var ps []string
	for _, p := range e.cfg.Ports {
		ps = append(ps, strconv.Itoa(p))
	}
	return strings.Join(ps, ",")
}

// wantTo is the To column ufw prints for our rules, without the " (v6)"
// ufw adds to some IPv6 rules ("Anywhere (v6)" but "25,465/tcp").
func (e *ufwEnf) wantTo(netip.Prefix) string {
	if len(e.cfg.Ports) > 0 {
		return e.portSpec() + "/tcp"
	}
	return "Anywhere"
}

func (e *ufwEnf) read(ctx context.Context) ([]ufwRule, error) {
	out, err := e.r.run(ctx, "", "ufw", "status", "numbered")
	if err != nil {
		return nil, err
	}
	if !strings.Contains(out, "Status: active") {
		return nil, fmt.Errorf("firewall: ufw is not active (enable it with `ufw enable` after allowing your own access; relayguard does not enable it)")
	}
	var rules []ufwRule
	for _, line := range strings.Split(out, "\n") {
		m := ufwLine().FindStringSubmatch(strings.TrimSpace(line))
		if m == nil || strings.TrimSpace(m[4]) != e.cfg.UFWTag {
			continue
		}
		num, _ := strconv.Atoi(m[1])
		p, err := config.ParsePrefix(m[3])
		if err != nil {
			return nil, fmt.Errorf("firewall: ufw rule %d: source %q: %w", num, m[3], err)
		}
		to := strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(m[2]), "(v6)"))
		rules = append(rules, ufwRule{num: num, to: to, prefix: p})
	}
	return rules, nil
}

// deleteNums deletes rules by number, highest first so the others keep
// their numbers.
func (e *ufwEnf) deleteNums(ctx context.Context, nums []int) error {
	slices.Sort(nums)
	for i := len(nums) - 1; i >= 0; i-- {
		if _, err := e.r.run(ctx, "", "ufw", "--force", "delete", strconv.Itoa(nums[i])); err != nil {
			return err
		}
	}
	return nil
}

func (e *ufwEnf) insert(ctx context.Context, p netip.Prefix) error {
	args := []string{"prepend", "deny"}
	if len(e.cfg.Ports) > 0 {
		args = append(args, "proto", "tcp", "from", cidr(p), "to", "any", "port", e.portSpec())
	} else {
		args = append(args, "from", cidr(p))
	}
	_, err := e.r.run(ctx, "", "ufw", append(args, "comment", e.cfg.UFWTag)...)
	return err
}

// Setup checks that ufw is active and rewrites tagged rules whose form no
// longer matches the configured ports.
func (e *ufwEnf) Setup(ctx context.Context) error {
	if len(e.cfg.Ports) > 15 {
		return fmt.Errorf("firewall: ufw takes at most 15 ports in a rule, firewall.ports has %d", len(e.cfg.Ports))
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	rules, err := e.read(ctx)
	if err != nil {
		return err
	}
	stale := false
	for _, r := range rules {
		if r.to != e.wantTo(r.prefix) {
			// ports changed: the new rule first, then the old one goes.
			if err := e.insert(ctx, r.prefix); err != nil {
				return err
			}
			stale = true
		}
	}
	if stale {
		if rules, err = e.read(ctx); err != nil {
			return err
		}
		var nums []int
		for _, r := range rules {
			if r.to != e.wantTo(r.prefix) {
				nums = append(nums, r.num)
			}
		}
		if err := e.deleteNums(ctx, nums); err != nil {
			return err
		}
	}
	e.log.Info("ufw ready", "rules", len(rules), "ports", e.cfg.Ports)
	return nil
}

// Teardown deletes every rule tagged as relayguard's. ufw itself stays as
// the operator configured it.
func (e *ufwEnf) Teardown(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.stopTimers()
	e.model, e.loaded = model{}, false
	rules, err := e.read(ctx)
	if err != nil {
		return err
	}
	var nums []int
	for _, r := range rules {
		nums = append(nums, r.num)
	}
	if err := e.deleteNums(ctx, nums); err != nil {
		return err
	}
	e.log.Info("ufw rules removed", "rules", len(nums))
	return nil
}

func (e *ufwEnf) stopTimers() {
	for p, t := range e.timers {
		t.Stop()
		delete(e.timers, p)
	}
}

// schedule arms the expiry timer of p (a no-op for permanent bans).
func (e *ufwEnf) schedule(p netip.Prefix, until time.Time) {
	if t := e.timers[p]; t != nil {
		t.Stop()
		delete(e.timers, p)
	}
	if until.IsZero() {
		return
	}
	e.timers[p] = time.AfterFunc(until.Sub(e.now()), func() { e.expire(p, until) })
}

func (e *ufwEnf) expire(p netip.Prefix, until time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if u, ok := e.model[p]; !ok || !u.Equal(until) {
		return // removed or extended meanwhile
	}
	delete(e.model, p)
	delete(e.timers, p)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := e.removeRules(ctx, p); err != nil {
		e.log.Error("ufw: removing an expired ban failed", "prefix", p, "err", err)
		return
	}
	e.log.Info("ufw: ban expired", "prefix", p)
}

func (e *ufwEnf) removeRules(ctx context.Context, p netip.Prefix) error {
	rules, err := e.read(ctx)
	if err != nil {
		return err
	}
	var nums []int
	for _, r := range rules {
		if r.prefix == p {
			nums = append(nums, r.num)
		}
	}
	return e.deleteNums(ctx, nums)
}

// Reconcile deletes tagged rules that are not in bans (or have the wrong
// form) and prepends the missing ones.
func (e *ufwEnf) Reconcile(ctx context.Context, bans []ban.Ban) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.model, e.loaded = model(normalize(bans, e.now())), true
	return e.sync(ctx)
}

// sync makes the tagged rules equal the model and re-arms the timers.
func (e *ufwEnf) sync(ctx context.Context) error {
	now := e.now()
	for p, u := range e.model {
		if !u.IsZero() && !u.After(now) {
			delete(e.model, p)
		}
	}
	rules, err := e.read(ctx)
	if err != nil {
		return err
	}
	// The missing rules first, then the stray ones go: a ban replaced by
	// others (a subnet carved around an address, one command per prefix,
	// about a second each) never leaves its addresses unbanned meanwhile.
	have := e.kept(rules)
	e.stopTimers()
	added := 0
	for p, u := range e.model {
		if !have[p] {
			if err := e.insert(ctx, p); err != nil {
				return err
			}
			added++
		}
		e.schedule(p, u)
	}
	if added > 0 {
		if rules, err = e.read(ctx); err != nil { // renumbered
			return err
		}
		have = e.kept(rules)
	}
	var del []int
	for _, r := range rules {
		if !have[r.prefix] || r.num != e.keptNum(rules, r.prefix) {
			del = append(del, r.num)
		}
	}
	if err := e.deleteNums(ctx, del); err != nil {
		return err
	}
	e.log.Debug("ufw reconcile", "deleted", len(del), "added", added)
	return nil
}

// kept returns the prefixes of the model that have a rule of the right form.
func (e *ufwEnf) kept(rules []ufwRule) map[netip.Prefix]bool {
	have := map[netip.Prefix]bool{}
	for _, r := range rules {
		if _, ok := e.model[r.prefix]; ok && r.to == e.wantTo(r.prefix) {
			have[r.prefix] = true
		}
	}
	return have
}

// keptNum is the number of the rule kept for p: the first of the right form.
func (e *ufwEnf) keptNum(rules []ufwRule, p netip.Prefix) int {
	for _, r := range rules {
		if r.prefix == p && r.to == e.wantTo(p) {
			return r.num
		}
	}
	return -1
}

// recover re-syncs the rules with the model after a failed command.
func (e *ufwEnf) recover(ctx context.Context, orig error) error {
	e.log.Warn("ufw command failed, reconciling", "err", orig)
	if err := e.sync(ctx); err != nil {
		return errors.Join(orig, err)
	}
	return nil
}

func (e *ufwEnf) load(ctx context.Context) error {
	if e.loaded {
		return nil
	}
	rules, err := e.read(ctx)
	if err != nil {
		return err
	}
	// Rules found without a model are taken as permanent until the next
	// Reconcile says otherwise: ufw does not store expiries.
	for _, r := range rules {
		e.model[r.prefix] = time.Time{}
	}
	e.loaded = true
	return nil
}

// Add prepends a deny rule for b.Prefix (once) and arms its expiry.
func (e *ufwEnf) Add(ctx context.Context, b ban.Ban) error {
	p, err := checkPrefix(b.Prefix)
	if err != nil {
		return err
	}
	if b.Expired(e.now()) {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.load(ctx); err != nil {
		return err
	}
	_, had := e.model[p]
	u := e.model.merge(p, b.Until)
	if !had {
		if err := e.insert(ctx, p); err != nil {
			return e.recover(ctx, err)
		}
	}
	e.schedule(p, u)
	return nil
}

// Remove deletes the tagged rules for exactly p.
func (e *ufwEnf) Remove(ctx context.Context, p netip.Prefix) error {
	p, err := checkPrefix(p)
	if err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.load(ctx); err != nil {
		return err
	}
	delete(e.model, p)
	e.schedule(p, time.Time{})
	if err := e.removeRules(ctx, p); err != nil {
		return e.recover(ctx, err)
	}
	return nil
}

// Status lists relayguard's ufw rules.
func (e *ufwEnf) Status(ctx context.Context) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	rules, err := e.read(ctx)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "backend ufw: %d rules tagged %q\n", len(rules), e.cfg.UFWTag)
	for i, r := range rules {
		if i == 20 {
			fmt.Fprintf(&b, "  … %d more\n", len(rules)-20)
			break
		}
		exp := "permanent"
		if u, ok := e.model[r.prefix]; ok && !u.IsZero() {
			exp = "expires in " + u.Sub(e.now()).Round(time.Second).String()
		}
		fmt.Fprintf(&b, "  [%d] deny from %s to %s, %s\n", r.num, r.prefix, r.to, exp)
	}
	return b.String(), nil
}
