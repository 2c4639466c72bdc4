package guard

import (
	"context"
	"net/netip"
	"time"
)

// dropReplayed keeps a replay's ban map bounded by the bans in force. In a
// replay (`watch --replay`) nothing runs Run, which drops expired bans in a
// running guard: so, once the map has doubled since it last looked (at
// least 1,024 bans), the bans that ended more than the longest counting
// window before t (the event's time; the margin covers lines a little out
// of order across files) are dropped from memory and from the store. The
// map then holds at most twice the most bans in force at once (plus those
// ended within the margin, plus 1,024), and each ban costs O(1) amortised.
// The ban history (escalation: how often a prefix was banned) is the
// store's, one count per prefix ever banned, as in the database of a
// running guard.
func (g *Guard) dropReplayed(ctx context.Context, t time.Time) {
	margin := g.o.Config.FindTime.D()
	for _, r := range g.o.Config.Subnets {
		margin = max(margin, r.Window.D())
	}
	cut := t.Add(-margin)
	var gone []netip.Prefix
	g.mu.Lock()
	if len(g.bans) < max(g.replayed, 1024) {
		g.mu.Unlock()
		return
	}
	for p, b := range g.bans {
		if b.Expired(cut) {
			gone = append(gone, p)
			delete(g.bans, p)
		}
	}
	g.replayed = 2 * len(g.bans)
	if len(gone) > 0 {
		g.relens()
		g.version.Add(1)
	}
	g.mu.Unlock()
	for _, p := range gone {
		if err := g.o.Store.DeleteBan(ctx, p); err != nil {
			g.o.Log.Warn("guard: drop expired ban", "prefix", p.String(), "err", err)
		}
	}
}

// Held is how many bans are held in memory (in force, or ended and not
// yet dropped).
func (g *Guard) Held() int {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return len(g.bans)
}
