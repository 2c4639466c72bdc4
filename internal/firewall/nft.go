package firewall

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/relayguard/relayguard/internal/ban"
	"github.com/relayguard/relayguard/internal/config"
)

// nft is the nftables enforcer. It owns one table (family inet) with:
//
//	set ban4/ban6   { type ipv4_addr/ipv6_addr; flags interval,timeout }  temporary bans
//	set perm4/perm6 { type ipv4_addr/ipv6_addr; flags interval }          permanent bans
//	set ports       { type inet_service }                                 only if ports are configured
//	chain input { type filter hook input priority -1; policy accept;
//	    [tcp dport @ports] ip saddr @perm4 counter drop   (and so on for each set) }
//
// It talks netlink through github.com/google/nftables, never through the nft
// binary. It keeps the ban list it was last given (the model) and writes the
// sets' difference to it; Reconcile reads the kernel's elements instead.
type nft struct {
	cfg   config.FirewallConfig
	log   *slog.Logger
	netns int // network namespace fd for netlink, -1: the current one

	mu     sync.Mutex
	conn   *nftables.Conn
	model  map[netip.Prefix]time.Time // zero time: permanent
	loaded bool                       // model read from the kernel or given by Reconcile
	ops    int                        // Adds since start; expired bans are pruned every 1024
	now    func() time.Time

	// What the kernel's sets hold (see nft_read.go): kern as of ruleset
	// generation kgen (read after the enforcer's last commit or read); nil
	// when unknown. slack is how long the read that filled it took: the
	// ends read are that much uncertain. commits counts the enforcer's
	// commits since the last read (tests), unread the reconciles since.
	gconn   *netlink.Conn
	kern    map[setKind]map[rng]time.Time
	kgen    uint32
	commits uint32
	unread  int
	slack   time.Duration
	reads   int // consistent reads of the four sets (tests)
	// afterCommit, when set (tests), runs after each commit of the
	// enforcer's, with e.mu held: it sees the kernel between two batches.
	afterCommit func()
}

const (
	// expiryTolerance: a kernel element whose expiry is this close to the
	// wanted one is left alone (the kernel keeps expiries in jiffies).
	expiryTolerance = time.Second
	// maxTimeout caps element timeouts far below the kernel's limit.
	maxTimeout = 10 * 365 * 24 * time.Hour
	// msgElems and batchMsgs bound netlink messages and batches (see write).
	msgElems  = 800
	batchMsgs = 3
)

func newNFT(cfg config.FirewallConfig, log *slog.Logger, netns int) *nft {
	return &nft{cfg: cfg, log: log, netns: netns, model: map[netip.Prefix]time.Time{}, now: time.Now}
}

// setKind names one of the four ban sets.
type setKind int

const (
	temp4 setKind = iota
	temp6
	perm4
	perm6
)

func kindOf(p netip.Prefix, until time.Time) setKind {
	k := temp4
	if until.IsZero() {
		k = perm4
	}
	if !p.Addr().Is4() {
		k++
	}
	return k
}

func (e *nft) table() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyINet, Name: e.cfg.Table}
}

func (e *nft) set(k setKind) *nftables.Set {
	s := &nftables.Set{Table: e.table(), Interval: true, KeyType: nftables.TypeIPAddr}
	switch k {
	case temp4:
		s.Name, s.HasTimeout = e.cfg.Set4, true
	case temp6:
		s.Name, s.HasTimeout, s.KeyType = e.cfg.Set6, true, nftables.TypeIP6Addr
	case perm4:
		s.Name = e.cfg.PermSet4
	case perm6:
		s.Name, s.KeyType = e.cfg.PermSet6, nftables.TypeIP6Addr
	}
	return s
}

func (e *nft) portsSetName() string { return e.cfg.Chain + "_ports" }

// c returns the netlink connection, dialling it on first use.
func (e *nft) c() (*nftables.Conn, error) {
	if e.conn != nil {
		return e.conn, nil
	}
	opts := []nftables.ConnOption{nftables.AsLasting(), nftables.WithSockOptions(bigDumps)}
	if e.netns >= 0 {
		opts = append(opts, nftables.WithNetNSFd(e.netns))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("firewall: nftables netlink: %w", err)
	}
	e.conn = c
	return c, nil
}

// reset drops the connection after an error so that no half-built batch
// survives into the next operation.
func (e *nft) reset() {
	if e.conn != nil {
		_ = e.conn.CloseLasting()
		e.conn = nil
	}
	if e.gconn != nil {
		_ = e.gconn.Close()
		e.gconn = nil
	}
}

func (e *nft) tableExists(c *nftables.Conn) (bool, error) {
	ts, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, fmt.Errorf("firewall: list nftables tables: %w", err)
	}
	for _, t := range ts {
		if t.Name == e.cfg.Table {
			return true, nil
		}
	}
	return false, nil
}

// Setup replaces the table atomically (add, delete, add in one batch), then
// puts back the bans the old table held, so a restart never opens a gap
// longer than one netlink round trip.
func (e *nft) Setup(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	c, err := e.c()
	if err != nil {
		return err
	}
	exists, err := e.tableExists(c)
	if err != nil {
		e.reset()
		return err
	}
	old := map[setKind]map[rng]time.Time{}
	if exists {
		if kern, err := e.kernel(c); err == nil {
			old = kern
		} else {
			for k := temp4; k <= perm6; k++ { // the sets that can be read
				if segs, err := e.readSet(c, k); err == nil {
					old[k] = map[rng]time.Time{}
					for _, s := range segs {
						old[k][s.rng] = s.Until
					}
				}
			}
		}
	} else if nl, err := e.gc(); err == nil {
		// no table: empty sets, as of this generation
		if g, err := generation(nl); err == nil {
			e.kern, e.kgen, e.commits, e.slack = map[setKind]map[rng]time.Time{}, g, 0, 0
		}
	}
	t := e.table()
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	sets := map[setKind]*nftables.Set{}
	for k := temp4; k <= perm6; k++ {
		s := e.set(k)
		if err := c.AddSet(s, nil); err != nil {
			e.reset()
			return fmt.Errorf("firewall: nftables set %s: %w", s.Name, err)
		}
		sets[k] = s
	}
	var ports *nftables.Set
	if len(e.cfg.Ports) > 0 {
		ports = &nftables.Set{Table: t, Name: e.portsSetName(), KeyType: nftables.TypeInetService}
		var elems []nftables.SetElement
		for _, p := range e.cfg.Ports {
			elems = append(elems, nftables.SetElement{Key: binaryutil.BigEndian.PutUint16(uint16(p))})
		}
		if err := c.AddSet(ports, elems); err != nil {
			e.reset()
			return fmt.Errorf("firewall: nftables set %s: %w", ports.Name, err)
		}
	}
	accept := nftables.ChainPolicyAccept
	ch := c.AddChain(&nftables.Chain{
		Name: e.cfg.Chain, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityRef(nftables.ChainPriority(e.cfg.Priority)),
		Policy: &accept,
	})
	// Permanent sets first: their counters show what the permanent bans catch.
	for _, k := range []setKind{perm4, perm6, temp4, temp6} {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: dropRule(sets[k], k == temp4 || k == perm4, ports)})
	}
	if err := e.commit(c); err != nil {
		e.reset()
		return fmt.Errorf("firewall: nftables setup of table inet %s: %w", e.cfg.Table, err)
	}
	if e.kern != nil { // the new table's sets are empty
		e.kern = map[setKind]map[rng]time.Time{temp4: {}, temp6: {}, perm4: {}, perm6: {}}
	}
	now := e.now()
	kept := 0
	for k, m := range old {
		var keep []segment
		for r, u := range m {
			if u.IsZero() || u.After(now) {
				keep = append(keep, segment{rng: r, Until: u})
			}
		}
		kept += len(keep)
		if err := e.apply(c, k, nil, keep); err != nil {
			// best effort: the reconcile that follows setup restores them
			e.log.Warn("nftables setup: could not put back the old bans", "set", e.set(k).Name, "err", err)
			e.reset()
			if c, err = e.c(); err != nil {
				return err
			}
		}
	}
	e.log.Info("nftables table ready", "table", "inet "+e.cfg.Table, "kept_ranges", kept, "ports", e.cfg.Ports)
	return nil
}

// dropRule is `meta nfproto ipv4 [meta l4proto tcp th dport @ports]
// ip saddr @set counter drop` (or the ip6 form).
func dropRule(s *nftables.Set, v4 bool, ports *nftables.Set) []expr.Any {
	proto, off, n := byte(unix.NFPROTO_IPV4), uint32(12), uint32(4) // IPv4 header: saddr at 12 (RFC 791)
	if !v4 {
		proto, off, n = unix.NFPROTO_IPV6, 8, 16 // IPv6 header: saddr at 8 (RFC 8200)
	}
	ex := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
	if ports != nil {
		ex = append(ex,
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}, // TCP dport (RFC 9293)
			&expr.Lookup{SourceRegister: 1, SetName: ports.Name, SetID: ports.ID},
		)
	}
	return append(ex,
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	)
}

// Teardown deletes the table with its sets, chain and rules.
func (e *nft) Teardown(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.model, e.loaded, e.kern = map[netip.Prefix]time.Time{}, false, nil
	c, err := e.c()
	if err != nil {
		return err
	}
	defer e.reset()
	exists, err := e.tableExists(c)
	if err != nil || !exists {
		return err
	}
	c.DelTable(e.table())
	if err := e.commit(c); err != nil {
		return fmt.Errorf("firewall: delete nftables table inet %s: %w", e.cfg.Table, err)
	}
	e.log.Info("nftables table removed", "table", "inet "+e.cfg.Table)
	return nil
}

// Reconcile reads every set from the kernel and writes the difference to
// bans. An element may expire between the read and the write; the whole
// reconcile is then tried again.
func (e *nft) Reconcile(ctx context.Context, bans []ban.Ban) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.model = normalize(bans, e.now())
	e.loaded = true
	var err error
	for try := 0; try < 3; try++ {
		if err = ctx.Err(); err != nil {
			return err
		}
		if err = e.syncAll(); err == nil {
			return nil
		}
		e.reset()
		e.log.Warn("nftables reconcile failed, retrying", "err", err, "try", try+1)
	}
	return err
}

func (e *nft) syncAll() error {
	if err := e.checkRules(); err != nil {
		return err
	}
	want := map[setKind][]segment{}
	want[perm4], want[perm6], want[temp4], want[temp6] = split(e.model)
	c, err := e.c()
	if err != nil {
		return err
	}
	if e.unread++; e.unread > fullReadEvery {
		e.kern = nil // read regardless now and then (see nft_read.go)
	}
	have, err := e.kernel(c)
	if err != nil {
		return err
	}
	for k := temp4; k <= perm6; k++ {
		if err := e.applyOrRebuild(k, have[k], want[k]); err != nil {
			return err
		}
	}
	return nil
}

// syncKind writes the difference for one set (after Add or Remove).
func (e *nft) syncKind(k setKind) error {
	c, err := e.c()
	if err != nil {
		return err
	}
	sub := map[netip.Prefix]time.Time{}
	for p, u := range e.model {
		if kindOf(p, u) == k {
			sub[p] = u
		}
	}
	p4, p6, t4, t6 := split(sub)
	want := map[setKind][]segment{perm4: p4, perm6: p6, temp4: t4, temp6: t6}[k]
	have, err := e.kernel(c)
	if err != nil {
		return err
	}
	return e.applyOrRebuild(k, have[k], want)
}

// load fills the model from the kernel on first use, so that Add and Remove
// before any Reconcile never drop what an earlier run put there.
func (e *nft) load() error {
	if e.loaded {
		return nil
	}
	c, err := e.c()
	if err != nil {
		return err
	}
	kern, err := e.kernel(c)
	if err != nil {
		return err
	}
	for _, m := range kern {
		for r, until := range m {
			for _, p := range rangePrefixes(r) {
				if u, ok := e.model[p]; ok {
					e.model[p] = later(u, until)
				} else {
					e.model[p] = until
				}
			}
		}
	}
	e.loaded = true
	return nil
}

// prune forgets bans that have expired (the kernel has dropped them itself).
func (e *nft) prune() {
	now := e.now()
	for p, u := range e.model {
		if !u.IsZero() && !now.Before(u) {
			delete(e.model, p)
		}
	}
}

// Add bans b.Prefix. When the prefix overlaps no other ban of its set, the
// element is written directly; otherwise the set is re-diffed.
func (e *nft) Add(ctx context.Context, b ban.Ban) error {
	p, err := checkPrefix(b.Prefix)
	if err != nil {
		return err
	}
	if b.Expired(e.now()) {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.load(); err != nil {
		e.reset()
		return err
	}
	k, until, overlap, left, moved := e.record(p, b.Until)
	if moved {
		if err := e.syncKind(left); err != nil {
			e.reset()
			return e.recover(err)
		}
	}
	c, err := e.c()
	if err != nil {
		return err
	}
	if !overlap {
		err = e.write(c, k, nil, []segment{{rng: prefixRange(p), Until: until}})
	} else {
		err = e.syncKind(k)
	}
	if err != nil {
		e.reset()
		return e.recover(fmt.Errorf("firewall: nftables add %s: %w", p, err))
	}
	return nil
}

// record puts the ban of p until u into the model (for the caller to
// write to the kernel), merged with a ban of p already there: the later
// end wins. It returns the set the ban belongs to, its end, whether that
// set must be re-diffed rather than given one element (p was banned
// already, or overlaps another ban of the set), and, when a temporary ban
// of p became permanent, the set it left (moved), which must be re-diffed
// too. Add and AddAll share it so one ban and a batch decide alike.
func (e *nft) record(p netip.Prefix, u time.Time) (k setKind, until time.Time, overlap bool, left setKind, moved bool) {
	if e.ops++; e.ops%1024 == 0 {
		e.prune()
	}
	k = kindOf(p, u)
	old, had := e.model[p]
	if had {
		if kindOf(p, old) != k && !old.IsZero() {
			// temporary becomes permanent: it moves to the other set.
			delete(e.model, p)
			left, moved = kindOf(p, old), true
		}
		u = later(old, u)
		k = kindOf(p, u)
	}
	e.model[p] = u
	return k, u, had || e.overlaps(p, k), left, moved
}

// overlaps reports whether another ban of set k contains p or lies inside
// it: then the set is re-diffed instead of writing one element. Containers
// are found by looking up p's shorter prefixes; only a p wider than one
// address needs a scan for bans inside it.
func (e *nft) overlaps(p netip.Prefix, k setKind) bool {
	if e.covered(p.Addr(), p.Bits()-1, k) {
		return true
	}
	if p.IsSingleIP() {
		return false
	}
	for q, u := range e.model {
		if q != p && kindOf(q, u) == k && p.Contains(q.Addr()) {
			return true
		}
	}
	return false
}

// covered reports whether a ban of set k of length at most maxBits contains a.
func (e *nft) covered(a netip.Addr, maxBits int, k setKind) bool {
	for bits := maxBits; bits >= 0; bits-- {
		q := netip.PrefixFrom(a, bits).Masked()
		if u, ok := e.model[q]; ok && kindOf(q, u) == k {
			return true
		}
	}
	return false
}

// Remove lifts the ban of exactly p.
func (e *nft) Remove(ctx context.Context, p netip.Prefix) error {
	p, err := checkPrefix(p)
	if err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.load(); err != nil {
		e.reset()
		return err
	}
	u, had := e.model[p]
	if !had {
		return nil
	}
	delete(e.model, p)
	if !u.IsZero() && !e.now().Before(u) {
		return nil // expired: the kernel dropped it itself
	}
	if err := e.syncKind(kindOf(p, u)); err != nil {
		e.reset()
		return e.recover(fmt.Errorf("firewall: nftables remove %s: %w", p, err))
	}
	return nil
}

// recover runs a full reconcile after a failed write and returns the
// original error if that fails too.
func (e *nft) recover(orig error) error {
	e.log.Warn("nftables write failed, reconciling", "err", orig)
	if err := e.syncAll(); err != nil {
		e.reset()
		return errors.Join(orig, err)
	}
	return nil
}

// applyOrRebuild writes the difference; if the kernel refuses it (a state
// the reader could not pair exactly), the set is flushed and refilled, the
// flush and the first elements in one atomic batch.
func (e *nft) applyOrRebuild(k setKind, have map[rng]time.Time, want []segment) error {
	c, err := e.c()
	if err != nil {
		return err
	}
	err = e.apply(c, k, have, want)
	if err == nil {
		return nil
	}
	e.log.Warn("nftables set diff refused, rebuilding the set", "set", e.set(k).Name, "err", err)
	e.reset()
	if c, err = e.c(); err != nil {
		return err
	}
	c.FlushSet(e.set(k))
	if len(want) == 0 {
		err = e.commit(c)
	} else {
		err = e.write(c, k, nil, want)
	}
	if err != nil {
		return fmt.Errorf("firewall: rebuild nftables set %s: %w", e.set(k).Name, err)
	}
	e.known(k, want)
	return nil
}

// apply writes the difference between have (the kernel's ranges and their
// ends) and want to set k. A range whose end changed is deleted and added
// again in the same batch (replace), so it is never out of the kernel; ends
// within expiryTolerance plus the uncertainty of the read (slack) are the
// same: before that, a reconcile of 60,000 unchanged ranges read in 5.5 s
// deleted and re-added 57,304 of them, the deletions batches before the
// additions (TestNFTablesReconcileUnchangedLarge).
func (e *nft) apply(c *nftables.Conn, k setKind, have map[rng]time.Time, want []segment) error {
	tol := expiryTolerance + e.slack
	var del, add, old, repl []segment
	seen := make(map[rng]bool, len(want))
	for _, s := range want {
		seen[s.rng] = true
		u, ok := have[s.rng]
		switch {
		case !ok:
			add = append(add, s)
		case !sameExpiryWithin(u, s.Until, tol):
			old = append(old, segment{rng: s.rng, Until: u})
			repl = append(repl, s)
		}
	}
	for r, u := range have {
		if !seen[r] {
			del = append(del, segment{rng: r, Until: u})
		}
	}
	if len(del)+len(add)+len(repl) == 0 {
		return nil
	}
	e.log.Debug("nftables set diff", "set", e.set(k).Name, "delete", len(del), "add", len(add), "replace", len(repl))
	if err := e.replace(c, k, old, repl); err != nil {
		return err
	}
	return e.write(c, k, del, add)
}

func sameExpiry(a, b time.Time) bool { return sameExpiryWithin(a, b, expiryTolerance) }

func sameExpiryWithin(a, b time.Time, tol time.Duration) bool {
	if a.IsZero() || b.IsZero() {
		return a.IsZero() == b.IsZero()
	}
	d := a.Sub(b)
	return d < tol && d > -tol
}

// replace writes new ends for ranges of set k: each range's deletion and
// addition in the same batch (one kernel transaction).
func (e *nft) replace(c *nftables.Conn, k setKind, old, repl []segment) error {
	s := e.set(k)
	now := e.now()
	for len(repl) > 0 {
		n := min(len(repl), msgElems/2) // at most two elements a range
		if err := c.SetDeleteElements(s, elements(old[:n], now, false)); err != nil {
			return err
		}
		if add := elements(repl[:n], now, s.HasTimeout); len(add) > 0 {
			if err := c.SetAddElements(s, add); err != nil {
				return err
			}
		}
		if err := e.commit(c); err != nil {
			return fmt.Errorf("set %s: %w", s.Name, err)
		}
		e.wrote(k, old[:n], repl[:n])
		old, repl = old[n:], repl[n:]
	}
	return nil
}

// write deletes then adds elements. One netlink message holds at most
// msgElems elements: the element list is one netlink attribute, whose length
// is 16 bits (64 KiB), so 2,000 IPv6 elements would overflow it. One batch
// (Flush) holds at most batchMsgs messages to stay below the socket's send
// buffer. Deletions and additions of one batch are applied atomically.
func (e *nft) write(c *nftables.Conn, k setKind, del, add []segment) error {
	s := e.set(k)
	now := e.now()
	dels := elements(del, now, false)
	adds := elements(add, now, s.HasTimeout)
	msgs := 0
	for len(dels)+len(adds) > 0 {
		var err error
		if len(dels) > 0 {
			n := min(len(dels), msgElems)
			err = c.SetDeleteElements(s, dels[:n])
			dels = dels[n:]
		} else {
			n := min(len(adds), msgElems)
			err = c.SetAddElements(s, adds[:n])
			adds = adds[n:]
		}
		if err != nil {
			return err
		}
		if msgs++; msgs == batchMsgs || len(dels)+len(adds) == 0 {
			if err := e.commit(c); err != nil {
				return fmt.Errorf("set %s: %w", s.Name, err)
			}
			msgs = 0
		}
	}
	e.wrote(k, del, add)
	return nil
}

// elements encodes segments as interval-set elements: a start element with
// the timeout and an end element (last address + 1, flag INTERVAL_END)
// without one; the kernel rejects a timeout on an end element (EINVAL) and
// drops the end of an expired range together with its start at garbage
// collection.
func elements(segs []segment, now time.Time, timeout bool) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, 2*len(segs))
	for _, s := range segs {
		var d time.Duration
		if timeout && !s.Until.IsZero() {
			d = min(s.Until.Sub(now), maxTimeout)
			if d < time.Millisecond {
				continue // already over
			}
			d = d.Round(time.Millisecond)
		}
		out = append(out, nftables.SetElement{Key: s.Start.AsSlice(), Timeout: d})
		if !isMax(s.End) {
			out = append(out, nftables.SetElement{Key: s.End.Next().AsSlice(), IntervalEnd: true})
		}
	}
	return out
}

// Status lists the table's sets with their sizes and the rules' counters.
func (e *nft) Status(ctx context.Context) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	c, err := e.c()
	if err != nil {
		return "", err
	}
	exists, err := e.tableExists(c)
	if err != nil {
		e.reset()
		return "", err
	}
	var b strings.Builder
	if !exists {
		fmt.Fprintf(&b, "backend nftables: table inet %s is absent (run `relayguard firewall setup`)\n", e.cfg.Table)
		return b.String(), nil
	}
	fmt.Fprintf(&b, "backend nftables: table inet %s, chain %s (hook input, priority %d)\n", e.cfg.Table, e.cfg.Chain, e.cfg.Priority)
	if len(e.cfg.Ports) > 0 {
		fmt.Fprintf(&b, "  dropping TCP ports %v from banned prefixes\n", e.cfg.Ports)
	} else {
		fmt.Fprintf(&b, "  dropping all traffic from banned prefixes\n")
	}
	for _, k := range []setKind{perm4, perm6, temp4, temp6} {
		segs, err := e.readSet(c, k)
		if err != nil {
			e.reset()
			return "", err
		}
		fmt.Fprintf(&b, "  set %-8s %6d ranges\n", e.set(k).Name, len(segs))
		for i, s := range segs {
			if i == 10 {
				fmt.Fprintf(&b, "    … %d more\n", len(segs)-10)
				break
			}
			fmt.Fprintf(&b, "    %s\n", describe(s, e.now()))
		}
	}
	rules, err := c.GetRules(e.table(), &nftables.Chain{Name: e.cfg.Chain, Table: e.table()})
	if err != nil {
		e.reset()
		return "", fmt.Errorf("firewall: list rules of chain %s: %w", e.cfg.Chain, err)
	}
	for _, r := range rules {
		var set string
		var pk, by uint64
		for _, x := range r.Exprs {
			switch x := x.(type) {
			case *expr.Lookup:
				if x.SetName != e.portsSetName() {
					set = x.SetName
				}
			case *expr.Counter:
				pk, by = x.Packets, x.Bytes
			}
		}
		fmt.Fprintf(&b, "  rule saddr @%-8s dropped %d packets, %d bytes\n", set, pk, by)
	}
	return b.String(), nil
}

func describe(s segment, now time.Time) string {
	text := s.Start.String() + "-" + s.End.String()
	if ps := rangePrefixes(s.rng); len(ps) == 1 {
		text = ps[0].String()
	}
	if s.Until.IsZero() {
		return text + " permanent"
	}
	return fmt.Sprintf("%s expires in %s", text, s.Until.Sub(now).Round(time.Second))
}
