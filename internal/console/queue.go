package console

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/relayguard/relayguard/internal/queue"
)

// Message states as the console shows them.
const (
	stateQueued   = "queued"   // waiting for its first attempt
	stateDeferred = "deferred" // tried, to be retried
	stateHeld     = "held"
)

// msgView is a queued message as the list shows it.
type msgView struct {
	ID           string    `json:"id"`
	Received     time.Time `json:"received"`
	AgeS         int64     `json:"age_s"`
	From         string    `json:"from"`
	User         string    `json:"user,omitempty"`
	Client       string    `json:"client,omitempty"`
	Size         int64     `json:"size"`
	State        string    `json:"state"`
	HoldReason   string    `json:"hold_reason,omitempty"`
	Recipients   int       `json:"recipients"` // not yet delivered or failed
	Destinations []string  `json:"destinations"`
	Attempts     int       `json:"attempts"`
	NextAttempt  time.Time `json:"next_attempt,omitzero"`
	LastError    string    `json:"last_error,omitempty"`

	changed time.Time // the spool entry's Changed when loaded
	search  string    // lower-case text a search matches
}

func summarise(env *queue.Envelope, changed time.Time) *msgView {
	v := &msgView{ID: env.ID, Received: env.Received, From: env.From, User: env.AuthUser, Client: env.ClientIP,
		Size: env.Size, HoldReason: env.HoldReason, changed: changed, Destinations: []string{}}
	var rcpts []string
	for _, r := range env.Recipients {
		if r.Status != queue.StatusQueued && r.Status != queue.StatusHeld {
			continue
		}
		v.Recipients++
		rcpts = append(rcpts, r.Addr)
		if d := domainOf(r.Addr); !slices.Contains(v.Destinations, d) && len(v.Destinations) < 5 {
			v.Destinations = append(v.Destinations, d)
		}
		v.Attempts = max(v.Attempts, r.Attempts)
		if !r.NextAttempt.IsZero() && (v.NextAttempt.IsZero() || r.NextAttempt.Before(v.NextAttempt)) {
			v.NextAttempt = r.NextAttempt
		}
		if r.LastError != "" {
			v.LastError = r.LastError
		}
	}
	switch {
	case env.Held:
		v.State = stateHeld
	case v.Attempts > 0:
		v.State = stateDeferred
	default:
		v.State = stateQueued
	}
	v.search = strings.ToLower(env.ID + " " + env.From + " " + env.AuthUser + " " + env.ClientIP + " " + strings.Join(rcpts, " ") + " " + v.LastError)
	return v
}

func domainOf(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return strings.ToLower(addr[i+1:])
	}
	return addr
}

// queueIndex keeps a summary of every message in the spool: with 50,000
// messages the page must not read 50,000 files per request. It is brought
// up to date at most every queueIndexAge, only when the spool changed
// (queue.Spool.Changed), by loading only the envelopes that changed
// (queue.Spool.Entries); the console's own actions patch it in place. A
// request that finds another one refreshing is answered from the list it
// has.
type queueIndex struct {
	spool *queue.Spool
	now   func() time.Time
	log   *slog.Logger

	refresh sync.Mutex // held while refreshing: one refresh at a time

	mu      sync.Mutex // guards what follows
	at      time.Time  // when the index was last found current
	scanned time.Time  // when the last full scan started
	changed time.Time  // the spool's Changed then
	fresh   bool
	msgs    map[string]*msgView
	list    []*msgView // newest first; never modified in place
}

// How old the index may be: for the queue's page, and for the overview's
// counts (refreshed every two seconds by an open page: they must not make
// a busy spool be listed that often).
const (
	queueIndexAge   = 2 * time.Second
	queueSummaryAge = 15 * time.Second
)

// all returns the summaries, newest first, at most queueIndexAge old.
func (q *queueIndex) all(ctx context.Context) ([]*msgView, error) {
	return q.within(ctx, queueIndexAge)
}

// within returns the summaries, newest first, at most age old.
func (q *queueIndex) within(ctx context.Context, age time.Duration) ([]*msgView, error) {
	q.mu.Lock()
	have, list := q.msgs != nil, q.list
	current := q.fresh && q.now().Sub(q.at) < age
	q.mu.Unlock()
	if current {
		return list, nil
	}
	if have {
		if !q.refresh.TryLock() {
			return list, nil // another request is refreshing: the list it has
		}
	} else {
		q.refresh.Lock()
	}
	defer q.refresh.Unlock()
	return q.rescan(ctx)
}

// rescan brings the index up to date; q.refresh is held.
func (q *queueIndex) rescan(ctx context.Context) ([]*msgView, error) {
	start := q.now()
	changed, err := q.spool.Changed()
	if err != nil {
		return nil, err
	}
	q.mu.Lock()
	old, scanned, list := q.msgs, q.scanned, q.list
	// Nothing was renamed into or removed from the spool since the last
	// full scan: the index is current. (A change within a second before
	// that scan may share the directory's time stamp with a later one.)
	if old != nil && changed.Equal(q.changed) && changed.Before(scanned.Add(-time.Second)) {
		q.at, q.fresh = start, true
		q.mu.Unlock()
		return list, nil
	}
	q.mu.Unlock()
	ents, err := q.spool.Entries()
	if err != nil {
		return nil, err
	}
	// A file changed within a second before the last full scan may have
	// changed again since within the file system's time resolution: it is
	// read again.
	recent := scanned.Add(-time.Second)
	next := make(map[string]*msgView, len(ents))
	for i, e := range ents {
		if i%1000 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		v := old[e.ID]
		if v == nil || !e.Changed.Equal(v.changed) || !e.Changed.IsZero() && !e.Changed.Before(recent) {
			env, err := q.spool.Load(e.ID)
			if err != nil {
				if !errors.Is(err, os.ErrNotExist) {
					q.log.Warn("console: unreadable message skipped", "id", e.ID, "err", err)
				}
				continue
			}
			v = summarise(env, e.Changed)
		}
		next[e.ID] = v
	}
	list = make([]*msgView, 0, len(next))
	for _, v := range next {
		list = append(list, v)
	}
	slices.SortFunc(list, newestMessageFirst)
	q.mu.Lock()
	q.msgs, q.list, q.at, q.scanned, q.changed, q.fresh = next, list, start, start, changed, true
	q.mu.Unlock()
	return list, nil
}

func newestMessageFirst(a, b *msgView) int {
	if c := b.Received.Compare(a.Received); c != 0 {
		return c
	}
	return strings.Compare(a.ID, b.ID)
}

// patch puts the console's own change of message id in the index (env
// nil: it was deleted), so that the list shows it at once without a
// rescan.
func (q *queueIndex) patch(id string, env *queue.Envelope) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.msgs == nil {
		return
	}
	old := q.msgs[id]
	if old == nil && env == nil {
		return
	}
	msgs := make(map[string]*msgView, len(q.msgs)+1)
	for k, v := range q.msgs {
		msgs[k] = v
	}
	list := slices.Clone(q.list)
	if old != nil {
		list = slices.DeleteFunc(list, func(v *msgView) bool { return v.ID == id })
		delete(msgs, id)
	}
	if env != nil {
		v := summarise(env, time.Time{}) // read again at the next rescan
		msgs[id] = v
		i, _ := slices.BinarySearchFunc(list, v, newestMessageFirst)
		list = slices.Insert(list, i, v)
	}
	q.msgs, q.list = msgs, list
}

// invalidate makes the next read rescan the spool.
func (q *queueIndex) invalidate() {
	q.mu.Lock()
	q.fresh = false
	q.mu.Unlock()
}

// queueSummary is the overview's count of the queue.
type queueSummary struct {
	Available bool           `json:"available"`
	Total     int            `json:"total"`
	ByState   map[string]int `json:"by_state"`
	Oldest    time.Time      `json:"oldest,omitzero"`
	TopDest   []countRow     `json:"top_destinations"`
	Error     string         `json:"error,omitempty"`
}

type countRow struct {
	Key   string `json:"key"`
	Count int    `json:"count"`
}

func topCounts(m map[string]int, n int) []countRow {
	out := make([]countRow, 0, len(m))
	for k, v := range m {
		out = append(out, countRow{k, v})
	}
	slices.SortFunc(out, func(a, b countRow) int {
		if a.Count != b.Count {
			return b.Count - a.Count
		}
		return strings.Compare(a.Key, b.Key)
	})
	return out[:min(len(out), n)]
}

func (c *Console) queueSummary(ctx context.Context) queueSummary {
	s := queueSummary{ByState: map[string]int{stateQueued: 0, stateDeferred: 0, stateHeld: 0}, TopDest: []countRow{}}
	if c.queue == nil {
		return s
	}
	s.Available = true
	all, err := c.queue.within(ctx, queueSummaryAge)
	if err != nil {
		s.Error = err.Error()
		return s
	}
	if len(all) == 0 {
		return s
	}
	// The index's list is never modified in place (a change makes a new
	// one): the same array and length are the same list, already counted
	// (an open page asks every few seconds; counting 50,000 messages'
	// destinations is not free).
	c.qsumMu.Lock()
	defer c.qsumMu.Unlock()
	if c.qsumOf == &all[0] && c.qsumLen == len(all) {
		return c.qsum
	}
	dest := map[string]int{}
	s.Total = len(all)
	for _, v := range all {
		s.ByState[v.State]++
		for _, d := range v.Destinations {
			dest[d]++
		}
	}
	s.Oldest = all[len(all)-1].Received
	s.TopDest = topCounts(dest, 5)
	c.qsum, c.qsumOf, c.qsumLen = s, &all[0], len(all)
	return s
}

// noQueue answers for a process without a spool (watch: the queue is
// Postfix's).
func (c *Console) noQueue(w http.ResponseWriter) bool {
	if c.queue != nil {
		return false
	}
	fail(w, http.StatusNotFound, "no queue in this process (%s): relayguard's queue is served by relayguard serve", c.o.Command)
	return true
}

// listQueue: GET /api/queue?state=&q=&offset=&limit=
func (c *Console) listQueue(w http.ResponseWriter, r *http.Request, _ *principal) {
	if c.noQueue(w) {
		return
	}
	offset, limit, err := paging(r, 100, 1000)
	if err != nil {
		fail(w, http.StatusBadRequest, "%v", err)
		return
	}
	state := r.URL.Query().Get("state")
	switch state {
	case "", "all", stateQueued, stateDeferred, stateHeld:
	default:
		fail(w, http.StatusBadRequest, "state %q: want queued, deferred, held or all", state)
		return
	}
	all, err := c.queue.all(r.Context())
	if err != nil {
		fail(w, http.StatusInternalServerError, "%v", err)
		return
	}
	q := strings.ToLower(strings.TrimSpace(r.URL.Query().Get("q")))
	match := all
	if state != "" && state != "all" || q != "" {
		match = nil
		for _, v := range all {
			if (state == "" || state == "all" || v.State == state) && (q == "" || strings.Contains(v.search, q)) {
				match = append(match, v)
			}
		}
	}
	now := c.o.Now()
	pg := pageOf(match, offset, limit)
	out := page[msgView]{Total: pg.Total, Offset: pg.Offset, Items: make([]msgView, len(pg.Items))}
	for i, v := range pg.Items {
		out.Items[i] = *v
		out.Items[i].AgeS = int64(now.Sub(v.Received) / time.Second)
	}
	writeJSON(w, http.StatusOK, out)
}

// maxHeaderBytes bounds the header section shown.
const maxHeaderBytes = 64 << 10

// messageDetail is one message: its envelope and its header section.
type messageDetail struct {
	Envelope *queue.Envelope `json:"envelope"`
	Headers  string          `json:"headers"`
	Cut      bool            `json:"headers_cut,omitempty"`
}

// showMessage: GET /api/queue/{id}
func (c *Console) showMessage(w http.ResponseWriter, r *http.Request, _ *principal) {
	if c.noQueue(w) {
		return
	}
	id := r.PathValue("id")
	env, err := c.o.Spool.Load(id)
	if err != nil {
		fail(w, http.StatusNotFound, "message %q: %v", id, err)
		return
	}
	rc, err := c.o.Spool.Open(id)
	if err != nil {
		fail(w, http.StatusNotFound, "message %q: %v", id, err)
		return
	}
	defer rc.Close()
	h, cut, err := headerSection(rc)
	if err != nil {
		fail(w, http.StatusInternalServerError, "message %s: %v", id, err)
		return
	}
	writeJSON(w, http.StatusOK, messageDetail{Envelope: env, Headers: h, Cut: cut})
}

// headerSection reads a message's header section (RFC 5322 §2.1: up to the
// first empty line), at most maxHeaderBytes of it.
func headerSection(r io.Reader) (string, bool, error) {
	br := bufio.NewReader(io.LimitReader(r, maxHeaderBytes+1))
	var b bytes.Buffer
	for {
		line, err := br.ReadString('\n')
		if strings.TrimRight(line, "\r\n") == "" && (err == nil || line != "") {
			break
		}
		b.WriteString(line)
		if b.Len() > maxHeaderBytes {
			return strings.ToValidUTF8(b.String()[:maxHeaderBytes], "\uFFFD"), true, nil
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", false, err
		}
	}
	return strings.ToValidUTF8(b.String(), "\uFFFD"), false, nil
}

type queueActionRequest struct {
	Reason string `json:"reason"`
}

// queueAction: POST /api/queue/{id}/hold|release|delete {reason}
func (c *Console) queueAction(w http.ResponseWriter, r *http.Request, p *principal) {
	if c.noQueue(w) {
		return
	}
	id, action := r.PathValue("id"), r.PathValue("action")
	var req queueActionRequest
	if err := readJSON(r, &req); err != nil && !errors.Is(err, io.EOF) {
		c.act(w, r, p, "queue."+action, id, "", nil, badRequest("%v", err))
		return
	}
	result, err := func() (any, error) {
		if _, err := c.o.Spool.Load(id); err != nil {
			return nil, notFound("message %q: not in the queue", id)
		}
		switch action {
		case "hold":
			reason, err := needReason(req.Reason)
			if err != nil {
				return nil, err
			}
			env, err := queue.Hold(c.o.Spool, id, "held by "+p.admin+" (console): "+reason)
			if err != nil {
				return nil, err
			}
			c.queue.patch(id, env)
			return summarise(env, time.Time{}), nil
		case "release":
			env, err := queue.Release(c.o.Spool, id)
			if err != nil {
				return nil, err
			}
			c.queue.patch(id, env)
			return summarise(env, time.Time{}), nil
		case "delete":
			if _, err := needReason(req.Reason); err != nil {
				return nil, err
			}
			if err := queue.Delete(c.o.Spool, id); err != nil {
				return nil, err
			}
			c.queue.patch(id, nil)
			return map[string]string{"deleted": id}, nil
		}
		return nil, notFound("no queue action %q (want hold, release or delete)", action)
	}()
	c.act(w, r, p, "queue."+action, id, req.Reason, result, err)
}

// flushQueue: POST /api/queue/flush
func (c *Console) flushQueue(w http.ResponseWriter, r *http.Request, p *principal) {
	if c.noQueue(w) {
		return
	}
	n, err := queue.Flush(c.o.Spool)
	c.queue.invalidate()
	c.act(w, r, p, "queue.flush", "", "", map[string]int{"flushed": n}, err)
}
