package console

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"time"
)

// overviewView is the overview page: everything at a glance.
type overviewView struct {
	Time       time.Time      `json:"time"`
	Host       string         `json:"host"`
	Command    string         `json:"command"`
	Series     seriesView     `json:"series"`
	Bans       banSummary     `json:"bans"`
	Attacks    []attackView   `json:"attacks"`
	Egress     []egressView   `json:"egress"`
	Queue      queueSummary   `json:"queue"`
	Audit      auditView      `json:"audit"`
	Reputation reputationView `json:"reputation"`
}

// overview: GET /api/overview
func (c *Console) overview(w http.ResponseWriter, r *http.Request, _ *principal) {
	writeJSON(w, http.StatusOK, c.overviewData(r.Context()))
}

func (c *Console) overviewData(ctx context.Context) overviewView {
	return overviewView{
		Time: c.o.Now(), Host: c.o.Config.Site.Hostname, Command: c.o.Command,
		Series:     c.stats.view(),
		Bans:       c.bans.summary(),
		Attacks:    c.stats.attacksView(15, c.coveringBan),
		Egress:     c.stats.egressView(),
		Queue:      c.queueSummary(ctx),
		Audit:      latestAudit(c.o.Config.DataDir),
		Reputation: c.reputationView(),
	}
}

// coveringBan names the bans in force over an attacking network: the one
// covering all of it, or those of its addresses and subnets.
func (c *Console) coveringBan(p netip.Prefix) string {
	var in []string
	for _, b := range c.bans.search(p.String()) {
		if b.Prefix.Bits() <= p.Bits() {
			return b.Prefix.String()
		}
		in = append(in, b.Prefix.String())
	}
	if len(in) > 3 {
		return fmt.Sprintf("%s and %d more", strings.Join(in[:3], ", "), len(in)-3)
	}
	return strings.Join(in, ", ")
}

// tick is what the event stream sends: small, so that the page knows what
// changed and fetches only that.
type tick struct {
	Time     time.Time `json:"time"`
	Bans     int       `json:"bans"`
	Queue    int       `json:"queue"`
	Attacks  int       `json:"attacks"`
	Failures int64     `json:"auth_failures_hour"`
}

// maxStreams bounds the open event streams (each holds a goroutine).
const maxStreams = 64

// streamEvery is how often a stream sends a tick.
const streamEvery = 2 * time.Second

// stream: GET /api/stream, server-sent events (one "tick" every two
// seconds) until the client goes, the session ends or the console stops.
func (c *Console) stream(w http.ResponseWriter, r *http.Request, p *principal) {
	fl, ok := w.(http.Flusher)
	if !ok {
		fail(w, http.StatusInternalServerError, "streaming unsupported")
		return
	}
	select {
	case c.streams <- struct{}{}:
		defer func() { <-c.streams }()
	default:
		fail(w, http.StatusServiceUnavailable, "too many open event streams")
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	t := time.NewTicker(streamEvery)
	defer t.Stop()
	for {
		if p.sess != nil {
			if !c.sess.alive(p.sess.id) {
				fmt.Fprint(w, "event: end\ndata: {}\n\n")
				fl.Flush()
				return
			}
		}
		if err := c.sendTick(r.Context(), w); err != nil {
			return
		}
		fl.Flush()
		select {
		case <-r.Context().Done():
			return
		case <-c.stopping:
			return
		case <-t.C:
		}
	}
}

func (c *Console) sendTick(ctx context.Context, w http.ResponseWriter) error {
	v := c.stats.view()
	var f int64
	for _, n := range v.Hour[seriesAuthFailures] {
		f += n
	}
	tk := tick{Time: c.o.Now(), Bans: c.bans.summary().Total, Attacks: len(c.stats.attacksView(1000, func(netip.Prefix) string { return "" })), Failures: f}
	if c.queue != nil {
		// A listing that failed (a slow disk, the request's deadline) is
		// the last count known, not 0: the page would redraw the queue
		// twice for a change that did not happen.
		if all, err := c.queue.within(ctx, queueSummaryAge); err == nil {
			tk.Queue = len(all)
			c.lastQueue.Store(int64(len(all)))
		} else {
			tk.Queue = int(c.lastQueue.Load())
		}
	}
	b, err := json.Marshal(tk)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "event: tick\ndata: %s\n\n", b)
	return err
}
