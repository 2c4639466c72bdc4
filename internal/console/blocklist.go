package console

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/dnsbl"
	"github.com/relayguard/relayguard/internal/dnsutil"
)

// blocklist keeps the answer of the DNS lists about this server's own
// public addresses: asked every admin.blocklist_check and on demand, with
// `relayguard dnsbl check`'s lookup (configured zones and the built-in
// catalog, each list's health checked so that a dead list is "skipped",
// never "listed").
type blocklist struct {
	cfg *config.Config
	q   dnsbl.Querier
	log *slog.Logger
	now func() time.Time

	run1 sync.Mutex // one check at a time

	mu      sync.Mutex
	state   blocklistView
	running bool
}

// blocklistView is the status the page shows.
type blocklistView struct {
	Addresses  []string    `json:"addresses"`
	Checked    time.Time   `json:"checked,omitzero"`
	Running    bool        `json:"running"`
	Listed     []dnsbl.Row `json:"listed"`     // block lists that list an address
	Unanswered []dnsbl.Row `json:"unanswered"` // block lists that could not say
	Clean      int         `json:"clean"`      // answers "not listed"
	Error      string      `json:"error,omitempty"`
}

func newBlocklist(cfg *config.Config, q dnsbl.Querier, log *slog.Logger, now func() time.Time) (*blocklist, error) {
	if q == nil {
		r, err := dnsutil.New(cfg.DNSBL.Resolvers, cfg.DNSBL.Timeout.D())
		if err != nil {
			return nil, err
		}
		q = r
	}
	b := &blocklist{cfg: cfg, q: q, log: log, now: now}
	b.state = blocklistView{Addresses: publicAddresses(cfg.Site), Listed: []dnsbl.Row{}, Unanswered: []dnsbl.Row{}}
	return b, nil
}

// publicAddresses are the server's own addresses that others see, the
// ones a list may hold: not loopback, private, link-local or unspecified.
func publicAddresses(site *config.Site) []string {
	var out []string
	for _, a := range site.OwnAddresses {
		if a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsUnspecified() || a.IsMulticast() {
			continue
		}
		out = append(out, a.String())
	}
	return out
}

func (b *blocklist) view() blocklistView {
	b.mu.Lock()
	defer b.mu.Unlock()
	v := b.state
	v.Running = b.running
	return v
}

// check asks the lists now.
func (b *blocklist) check(ctx context.Context) {
	b.run1.Lock()
	defer b.run1.Unlock()
	b.mu.Lock()
	addrs := b.state.Addresses
	b.running = true
	b.mu.Unlock()
	next := blocklistView{Addresses: addrs, Listed: []dnsbl.Row{}, Unanswered: []dnsbl.Row{}}
	defer func() {
		next.Checked = b.now()
		b.mu.Lock()
		b.state, b.running = next, false
		b.mu.Unlock()
	}()
	if len(addrs) == 0 {
		next.Error = "no public address of this server (own_addresses) to check"
		return
	}
	lists, err := dnsbl.Lists(true, b.cfg.DNSBL.Zones, nil)
	if err != nil {
		next.Error = err.Error()
		return
	}
	rep, err := dnsbl.Lookup(ctx, b.q, lists, addrs, true, dnsbl.Options{Timeout: b.cfg.DNSBL.Timeout.D(), Logger: b.log})
	if err != nil {
		next.Error = err.Error()
		return
	}
	for _, r := range rep.Rows {
		if r.Kind != "block" {
			continue
		}
		switch {
		case r.Listed:
			next.Listed = append(next.Listed, r)
		case r.Result == dnsbl.TempError.String() || r.Result == dnsbl.ListError.String() || r.Result == dnsbl.Skipped.String():
			next.Unanswered = append(next.Unanswered, r)
		default:
			next.Clean++
		}
	}
	if len(next.Listed) > 0 {
		b.log.Warn("console: this server's address is on a block list", "listed", len(next.Listed))
	}
}

// run checks every interval until ctx is done.
func (b *blocklist) run(ctx context.Context, interval time.Duration) {
	t := time.NewTimer(10 * time.Second) // not in the start's rush
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			t.Reset(interval)
		}
		b.check(ctx)
	}
}

// blocklistStatus: GET /api/blocklist
func (c *Console) blocklistStatus(w http.ResponseWriter, _ *http.Request, _ *principal) {
	writeJSON(w, http.StatusOK, c.block.view())
}

// blocklistCheck: POST /api/blocklist/check asks the lists now and
// answers with the outcome (at most the lists' timeout).
func (c *Console) blocklistCheck(w http.ResponseWriter, r *http.Request, p *principal) {
	ctx, cancel := context.WithTimeout(r.Context(), c.o.Config.DNSBL.Timeout.D()+5*time.Second)
	defer cancel()
	c.block.check(ctx)
	v := c.block.view()
	c.act(w, r, p, "blocklist.check", "", "", v, nil)
}
