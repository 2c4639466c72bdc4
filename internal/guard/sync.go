package guard

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/relayguard/relayguard/internal/firewall"
)

// Sync makes the in-memory bans equal to the store's (bans added or removed
// by `relayguard ban`, or by another server through a shared store), drops
// expired bans, and applies the differences to the firewall. With reconcile
// the firewall is reconciled to the whole list; when that fails (e.g. the
// operator flushed the ruleset and relayguard's table is gone), the
// enforcer's objects are set up again and the reconcile retried.
//
// Sync reads the whole list; a running guard calls it only at start and
// when the store's ChangeFeed cannot tell what changed (Run).
func (g *Guard) Sync(ctx context.Context, reconcile bool) error {
	g.storeUnstored(ctx)
	g.mu.Lock()
	g.touched = map[netip.Prefix]bool{}
	g.mu.Unlock()
	stored, err := g.o.Store.ListBans(ctx)
	if err != nil {
		g.mu.Lock()
		g.touched = nil
		g.mu.Unlock()
		return err
	}
	now := g.o.Now()
	want := make(map[netip.Prefix]Ban, len(stored))
	for _, b := range stored {
		if b.Expired(now) {
			if err := g.o.Store.DeleteBan(ctx, b.Prefix); err != nil {
				g.o.Log.Warn("guard: drop expired ban", "prefix", b.Prefix.String(), "err", err)
			}
			g.ml.Unbanned(ctx, b.Prefix, "expired")
			continue
		}
		want[b.Prefix] = b
	}
	g.mu.Lock()
	for p := range g.touched { // decided here while the store was listed
		if b, ok := g.bans[p]; ok {
			want[p] = b
		} else {
			delete(want, p)
		}
	}
	g.touched = nil
	for p, b := range g.unstored { // decided here, not yet stored
		if !b.Expired(now) {
			want[p] = b
		}
	}
	var add []Ban
	var del []netip.Prefix
	for p, b := range want {
		if o, ok := g.bans[p]; !ok || !o.Until.Equal(b.Until) {
			add = append(add, b)
		}
	}
	for p := range g.bans {
		if _, ok := want[p]; !ok {
			del = append(del, p)
		}
	}
	g.bans = want
	g.relens()
	g.nextExpiry = time.Time{}
	for _, b := range want {
		g.noteExpiry(b.Until)
	}
	if len(add)+len(del) > 0 {
		g.version.Add(1)
	}
	g.mu.Unlock()
	if g.o.Enforcer == nil {
		return nil
	}
	if reconcile {
		return g.reconcile(ctx)
	}
	// (a failure marks the firewall stale: Run reconciles at once)
	for _, p := range del {
		g.enforceRemove(ctx, p)
	}
	g.enforceAddAll(ctx, add)
	return nil
}

// storeUnstored tries again to store the bans the store refused
// (Guard.unstored); those it still refuses stay in force. One that expired
// meanwhile is forgotten (and said expired if still in force: Sync lifts
// it).
func (g *Guard) storeUnstored(ctx context.Context) {
	g.mu.Lock()
	if len(g.unstored) == 0 {
		g.mu.Unlock()
		return
	}
	now := g.o.Now()
	var try []Ban
	var expired []netip.Prefix
	for p, b := range g.unstored {
		if b.Expired(now) {
			delete(g.unstored, p)
			if o, ok := g.bans[p]; ok && o == b {
				expired = append(expired, p)
			}
			continue
		}
		try = append(try, b)
	}
	g.mu.Unlock()
	for _, p := range expired {
		g.ml.Unbanned(ctx, p, "expired")
	}
	for _, b := range try {
		if err := g.o.Store.PutBan(ctx, b); err != nil {
			continue // (said when decided; tried again at the next Sync)
		}
		g.mu.Lock()
		if o, ok := g.unstored[b.Prefix]; ok && o == b {
			delete(g.unstored, b.Prefix)
		}
		g.mu.Unlock()
		g.o.Log.Info("guard: ban stored after all", "prefix", b.Prefix.String())
	}
}

// reconcile makes the firewall equal to the bans in memory.
func (g *Guard) reconcile(ctx context.Context) error {
	if g.o.Enforcer == nil {
		return nil
	}
	g.fw.Lock() // from the listing to the write (see Guard.fw)
	defer g.fw.Unlock()
	g.mu.RLock()
	all := make([]Ban, 0, len(g.bans))
	for _, b := range g.bans {
		all = append(all, b)
	}
	g.mu.RUnlock()
	all = g.expand(all) // subnet bans carved around graced addresses
	err := g.o.Enforcer.Reconcile(ctx, all)
	if err == nil {
		return nil
	}
	g.o.Log.Warn("guard: firewall reconcile failed; setting the firewall up again", "err", err)
	if serr := g.o.Enforcer.Setup(ctx); serr != nil {
		return fmt.Errorf("guard: firewall reconcile: %w (setup again: %w)", err, serr)
	}
	if err := g.o.Enforcer.Reconcile(ctx, all); err != nil {
		return fmt.Errorf("guard: firewall reconcile after setup: %w", err)
	}
	g.o.Log.Info("guard: firewall set up again and reconciled", "bans", len(all))
	return nil
}

// noteExpiry keeps nextExpiry the earliest end. Called with g.mu held.
func (g *Guard) noteExpiry(until time.Time) {
	if !until.IsZero() && (g.nextExpiry.IsZero() || until.Before(g.nextExpiry)) {
		g.nextExpiry = until
	}
}

// applyChanges applies changes made by others (from the store's
// ChangeFeed) and the expiries due: in memory, then to the firewall, all
// additions in one batch (firewall.Batcher).
func (g *Guard) applyChanges(ctx context.Context, changes []Change) {
	now := g.o.Now()
	var add []Ban
	var del, expired []netip.Prefix
	g.mu.Lock()
	for _, c := range changes {
		p := c.Ban.Prefix.Masked()
		delete(g.unstored, p) // (the store's word on p is newer)
		o, had := g.bans[p]
		if c.Delete {
			if had {
				delete(g.bans, p)
				del = append(del, p)
			}
			continue
		}
		b := c.Ban
		b.Prefix = p
		if b.Expired(now) || (had && o == b) {
			continue
		}
		g.bans[p] = b
		g.noteExpiry(b.Until)
		if !slices.Contains(g.lens, p.Bits()) {
			g.lens = append(g.lens, p.Bits())
			slices.Sort(g.lens)
		}
		if !had || !o.Until.Equal(b.Until) {
			add = append(add, b)
		}
	}
	if !g.nextExpiry.IsZero() && !now.Before(g.nextExpiry) {
		g.nextExpiry = time.Time{}
		for p, b := range g.bans {
			if b.Expired(now) {
				delete(g.bans, p)
				expired = append(expired, p)
			} else {
				g.noteExpiry(b.Until)
			}
		}
	}
	if len(del)+len(expired) > 0 {
		g.relens()
	}
	if len(add)+len(del)+len(expired) > 0 {
		g.version.Add(1)
	}
	g.mu.Unlock()
	add = append(g.takeEnforce(), add...)
	for _, p := range expired {
		if err := g.o.Store.DeleteBan(ctx, p); err != nil {
			g.o.Log.Warn("guard: drop expired ban", "prefix", p.String(), "err", err)
		}
		g.ml.Unbanned(ctx, p, "expired")
	}
	for _, p := range append(del, expired...) {
		g.enforceRemove(ctx, p)
	}
	g.enforceAddAll(ctx, add)
}

// coalesce is the shortest time between two rounds of Run that apply
// changes: the nftables interval sets cost the kernel a walk of the whole
// set per transaction (nft_rbtree_commit), so a thousand bans a second are
// given to it in at most 1/coalesce transactions a second, not one each.
const coalesce = 100 * time.Millisecond

// enqueue leaves the enforcement of b, just decided, to Run's next round,
// if Run batches; it reports whether it did.
func (g *Guard) enqueue(b Ban) bool {
	if !g.batching.Load() {
		return false
	}
	g.mu.Lock()
	g.enforce = append(g.enforce, b)
	g.mu.Unlock()
	select {
	case g.flush <- struct{}{}:
	default:
	}
	return true
}

// takeEnforce returns the queued decisions still in force as decided.
func (g *Guard) takeEnforce() []Ban {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []Ban
	for _, b := range g.enforce {
		if o, ok := g.bans[b.Prefix]; ok && o == b {
			out = append(out, b)
		}
	}
	g.enforce = nil
	return out
}

// enforceAddAll gives the enforcer bans (each carved around the graced
// addresses), in one kernel batch when it can (firewall.Batcher).
func (g *Guard) enforceAddAll(ctx context.Context, bans []Ban) {
	bt, ok := g.o.Enforcer.(firewall.Batcher)
	if !ok || len(bans) < 2 {
		for _, b := range bans {
			g.enforceAdd(ctx, b)
		}
		return
	}
	g.fw.Lock()
	defer g.fw.Unlock()
	now := g.o.Now()
	var list []Ban
	stale := false
	g.mu.Lock()
	for _, b := range bans {
		old, wasCarved := g.carved[b.Prefix]
		pieces := g.carve(b, g.holesIn(b.Prefix, now), now)
		stale = stale || (wasCarved && (len(pieces) != len(old) || pieces[0].Prefix != old[0]))
		list = append(list, pieces...)
	}
	g.mu.Unlock()
	if err := bt.AddAll(ctx, list); err != nil {
		g.o.Log.Error("guard: firewall add failed; will reconcile", "bans", len(list), "err", err)
		stale = true
	}
	if stale {
		g.markStale()
	}
}

// ReconcileEvery is how often Run reconciles the firewall with the whole
// ban list even without an error, so that changes made behind relayguard's
// back (an element deleted by hand) do not last.
const ReconcileEvery = time.Minute

// ResyncEvery is how often Run reads the whole ban list from the store
// even though its ChangeFeed reported every change: a safety net.
const ResyncEvery = 10 * time.Minute

// Run keeps the guard in step with its store and the firewall until ctx is
// done. When the store is a ChangeFeed (SQLiteStore, Shared) it applies
// only the changes others made, every interval and whenever wake fires
// (an announcement from another server), and reads the whole list at start,
// when the feed cannot tell what changed (ErrResync: the subscription was
// interrupted, Redis failed) and every ResyncEvery. Otherwise it reads the
// whole list every time. The firewall is reconciled with the whole list at
// start, after any error (of a sync, or of the enforcer adding or removing
// a ban as it is decided), and every ReconcileEvery.
func (g *Guard) Run(ctx context.Context, interval time.Duration, wake <-chan struct{}) {
	feed, incremental := g.o.Store.(ChangeFeed)
	pruner, _ := g.o.Store.(interface {
		PruneChanges(context.Context, time.Time) error
	})
	if sh, ok := g.o.Store.(*Shared); ok {
		pruner, _ = sh.Local.(interface {
			PruneChanges(context.Context, time.Time) error
		})
	}
	if _, ok := g.o.Enforcer.(firewall.Batcher); ok && incremental {
		g.batching.Store(true)
		defer func() {
			g.batching.Store(false)
			g.enforceAddAll(context.WithoutCancel(ctx), g.takeEnforce())
		}()
	}
	full, reconcile := true, true
	t := time.NewTicker(interval)
	defer t.Stop()
	lastReconcile, lastFull := time.Now(), time.Now()
	var cursor int64
	for {
		if g.stale.Swap(false) || time.Since(lastReconcile) >= ReconcileEvery || g.holesExpired(g.o.Now()) {
			reconcile = true
		}
		if !incremental || time.Since(lastFull) >= ResyncEvery {
			full = true
		}
		err := g.step(ctx, feed, &cursor, full, reconcile)
		switch {
		case errors.Is(err, ErrResync):
			full = true
			continue // at once: the announcements since are queued
		case err != nil:
			if ctx.Err() != nil {
				return // stopping: not an error of the store
			}
			g.o.Log.Error("guard: sync", "err", err)
			reconcile = true
		default:
			if reconcile {
				lastReconcile = time.Now()
				if pruner != nil {
					if err := pruner.PruneChanges(ctx, time.Now()); err != nil {
						g.o.Log.Warn("guard: prune ban changes", "err", err)
					}
				}
			}
			if full {
				lastFull = time.Now()
			}
			full, reconcile = false, false
		}
		select { // let changes gather (see coalesce)
		case <-ctx.Done():
			return
		case <-time.After(coalesce):
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-wake:
		case <-g.kick:
		case <-g.flush:
		}
	}
}

// step is one round of Run: the whole list (full, or without a feed) or
// the feed's changes; then a firewall reconcile if asked.
func (g *Guard) step(ctx context.Context, feed ChangeFeed, cursor *int64, full, reconcile bool) error {
	if full || feed == nil {
		var mark int64
		if feed != nil {
			var err error
			if mark, err = feed.Cursor(ctx); err != nil {
				return err
			}
		}
		queued := g.takeEnforce()
		if err := g.Sync(ctx, reconcile); err != nil {
			g.enforceAddAll(ctx, queued)
			return err
		}
		if !reconcile { // (a reconcile wrote them)
			g.enforceAddAll(ctx, queued)
		}
		*cursor = mark
		return nil
	}
	changes, next, err := feed.Changes(ctx, *cursor)
	if err != nil {
		return err
	}
	*cursor = next
	g.applyChanges(ctx, changes)
	if reconcile {
		return g.reconcile(ctx)
	}
	return nil
}
