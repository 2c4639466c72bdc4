package queue

import (
	"bytes"
	"container/heap"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/dsn"
	"github.com/relayguard/relayguard/internal/faillog"
	"github.com/relayguard/relayguard/internal/maillog"
)

// Destinationer is implemented by a Deliverer that knows where a domain's
// mail goes (a smarthost, a transport table host): the concurrency limit
// then applies per destination rather than per recipient domain.
type Destinationer interface {
	Destination(domain string) string
}

// FlushFile is the file in the spool directory whose modification tells a
// running scheduler to reread the spool now (written by `relayguard queue`).
const FlushFile = "flush"

// Scheduler delivers what is in the spool: per-recipient state, retries
// with backoff, a concurrency limit per destination domain and in total,
// and recovery of every spooled message when it starts.
type Scheduler struct {
	spool   *Spool
	conf    atomic.Pointer[schedConf]
	log     *slog.Logger
	saveLog *faillog.Log    // failures to save a round (saveRound), logged without flooding
	ml      *maillog.Logger // delivery records (internal/maillog)
	metrics *metrics
	now     func() time.Time

	mu        sync.Mutex
	sched     timeHeap             // when each message is next due
	due       map[string]time.Time // id -> time in sched (dedupes the heap)
	inflight  map[string]*msgState
	domains   map[string]*domainQ // by destination
	active    int                 // jobs running
	wake      chan struct{}
	jobsWG    sync.WaitGroup
	runCtx    context.Context
	flushStat time.Time
	holdCheck func(*Envelope) string
	outcome   func(env *Envelope, rcpt string, ok bool)
	holdArmed func() bool
	signer    Signer
}

// schedConf is what Reconfigure replaces while the scheduler runs.
type schedConf struct {
	d        Deliverer
	cfg      config.DeliveryConfig
	hostname string
}

// Signer adds DKIM-Signature fields (RFC 6376) to a message before it
// leaves (internal/msgauth.Signer). Sign returns the fields to prepend, or
// nil when no key covers the message's author domain.
type Signer interface {
	Sign(msg io.Reader) ([]byte, error)
}

// msgState is a message with delivery jobs in progress.
type msgState struct {
	env     *Envelope
	pending int
	tried   map[int]bool // recipient indexes attempted this round

	signOnce sync.Once
	sig      []byte // DKIM-Signature fields, once computed for this round
}

// job is the delivery of one message to the due recipients of one domain.
type job struct {
	id     string
	domain string
	dest   string // concurrency key: the destination (domain by default)
	idx    []int
}

type domainQ struct {
	active int
	queue  []job
}

// NewScheduler returns a scheduler over spool for the [delivery] section;
// hostname names this server in delivery status notifications.
func NewScheduler(spool *Spool, d Deliverer, cfg config.DeliveryConfig, hostname string, log *slog.Logger) *Scheduler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Scheduler{
		spool: spool, log: log, ml: maillog.New(log),
		metrics: newMetrics(nil), now: time.Now,
		due: map[string]time.Time{}, inflight: map[string]*msgState{},
		domains: map[string]*domainQ{}, wake: make(chan struct{}, 1),
		saveLog: faillog.New(log, "queue: saving a delivery round",
			"its message stays in flight and is saved again (100ms doubling to 10s), so that its delivered recipients are not delivered again"),
	}
	s.Reconfigure(d, cfg, hostname)
	spool.Subscribe(s.admit)
	return s
}

// Reconfigure puts a Deliverer and a [delivery] section in force for the
// deliveries that start from now on (serve's reload); deliveries in
// progress finish with the ones they started with. It returns the
// Deliverer it replaced (nil at first), for the caller to close. The
// rescan interval changes at the next start.
func (s *Scheduler) Reconfigure(d Deliverer, cfg config.DeliveryConfig, hostname string) Deliverer {
	if hostname == "" {
		hostname = "localhost"
	}
	old := s.conf.Swap(&schedConf{d: d, cfg: cfg, hostname: hostname})
	select { // new concurrency limits may start more jobs at once
	case s.wake <- struct{}{}:
	default:
	}
	if old == nil {
		return nil
	}
	return old.d
}

// c returns the configuration in force.
func (s *Scheduler) c() *schedConf { return s.conf.Load() }

// SetHoldCheck sets a check asked about every message as it is spooled,
// before the scheduler sees it: a non-empty reason holds the message
// (`relayguard serve` holds the mail of an account a send limit suspended,
// so that a session which passed its limit check before the suspension
// cannot slip a message out). armed, when not nil, is a cheap test that
// skips the check (and the envelope read) while it is false. Messages
// released by an operator are not asked again. Call it before Run.
func (s *Scheduler) SetHoldCheck(armed func() bool, fn func(env *Envelope) string) {
	s.mu.Lock()
	s.holdArmed, s.holdCheck = armed, fn
	s.mu.Unlock()
	if fn == nil {
		s.spool.SetGate(nil)
		return
	}
	s.spool.SetGate(func(env *Envelope) string {
		if armed != nil && !armed() {
			return ""
		}
		return fn(env)
	})
}

// SetOutcome sets a function told of every recipient delivered (ok) or
// refused for good by its destination (not ok; a recipient that expired
// in the queue is neither): the accounts' bad-recipients signal
// (internal/accounts) reads it. Call it before Run.
func (s *Scheduler) SetOutcome(fn func(env *Envelope, rcpt string, ok bool)) {
	s.mu.Lock()
	s.outcome = fn
	s.mu.Unlock()
}

// SetRegisterer exports the scheduler's metrics through reg (the
// process's registry; see internal/prom). Call it before Run.
func (s *Scheduler) SetRegisterer(reg prometheus.Registerer) {
	s.mu.Lock()
	s.metrics = newMetrics(reg)
	s.mu.Unlock()
}

// SetSigner makes the scheduler sign the mail of authenticated users,
// trusted networks and this server itself (see Signable) before it goes to
// an SMTP destination. A reload may replace it while the scheduler runs.
func (s *Scheduler) SetSigner(sg Signer) {
	s.mu.Lock()
	s.signer = sg
	s.mu.Unlock()
}

// Signable reports whether env's message is signed on its way out: it was
// submitted by an authenticated user, a trusted network (mynetworks) or
// this server itself (notices, local submissions). Mail that arrived on
// the MX listener from anyone else and is relayed (relay_domains) is not
// ours to sign.
func Signable(env *Envelope) bool {
	return env.AuthUser != "" || env.Trusted || env.Mode == "local"
}

// signature returns the DKIM-Signature fields for the message of ms,
// computed once per delivery round (a retry signs afresh, with a new
// timestamp). A message that cannot be signed (no key for its author
// domain, no single From:) goes out unsigned, with a log line: refusing
// to deliver it would not make it signable.
func (s *Scheduler) signature(ms *msgState, dest string) []byte {
	s.mu.Lock()
	sg := s.signer
	s.mu.Unlock()
	if sg == nil || !Signable(ms.env) || localDest(dest) {
		return nil
	}
	ms.signOnce.Do(func() {
		rc, err := s.spool.Open(ms.env.ID)
		if err != nil {
			s.log.Error("queue: dkim: opening message", "id", ms.env.ID, "err", err)
			return
		}
		defer rc.Close()
		sig, err := sg.Sign(rc)
		if err != nil {
			s.log.Warn("queue: dkim: message sent unsigned", "id", ms.env.ID, "from", ms.env.From, "err", err)
			s.metrics.dkim.WithLabelValues("error").Inc()
			return
		}
		if sig == nil {
			s.metrics.dkim.WithLabelValues("no_key").Inc()
			return
		}
		s.metrics.dkim.WithLabelValues("signed").Inc()
		ms.sig = sig
	})
	return ms.sig
}

// localDest reports whether a destination (Destinationer) delivers into a
// mailbox here, where a signature would only cost time.
func localDest(dest string) bool {
	return strings.HasPrefix(dest, "maildir:") || strings.HasPrefix(dest, "lmtp:") || strings.HasPrefix(dest, "discard")
}

// admit is the spool's notice of a newly stored message. The hold check
// ran inside the spool's Commit (SetHoldCheck's gate), so a message held
// on arrival is on disk held before the SMTP reply and before any rescan
// can see it; admit logs it and leaves it alone.
func (s *Scheduler) admit(id string) {
	s.mu.Lock()
	check, armed := s.holdCheck, s.holdArmed
	s.mu.Unlock()
	if check != nil && (armed == nil || armed()) {
		if env, err := s.spool.Load(id); err == nil && env.Held {
			s.ml.Held(context.Background(), id, env.AuthUser, env.HoldReason)
			return
		}
	}
	s.schedule(id, time.Time{})
}

// Run delivers until ctx is done, then waits for deliveries in progress.
func (s *Scheduler) Run(ctx context.Context) error {
	s.mu.Lock()
	s.runCtx = ctx
	s.mu.Unlock()
	if err := s.rescan(); err != nil {
		return err
	}
	rescan := time.NewTicker(s.c().cfg.RescanInterval.D())
	defer rescan.Stop()
	poll := time.NewTicker(time.Second)
	defer poll.Stop()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		next := s.dispatch()
		if !next.IsZero() {
			timer.Reset(max(time.Until(next), time.Millisecond))
		} else {
			timer.Reset(time.Hour)
		}
		select {
		case <-ctx.Done():
			s.jobsWG.Wait()
			return nil
		case <-s.wake:
		case <-timer.C:
		case <-rescan.C:
			if err := s.rescan(); err != nil {
				s.log.Error("queue: rescan", "err", err)
			}
		case <-poll.C:
			if s.flushRequested() {
				if err := s.rescan(); err != nil {
					s.log.Error("queue: rescan", "err", err)
				}
			}
		}
	}
}

// flushRequested reports whether FlushFile changed since last looked at.
func (s *Scheduler) flushRequested() bool {
	fi, err := os.Stat(filepath.Join(s.spool.Dir(), FlushFile))
	if err != nil {
		return false
	}
	if fi.ModTime().Equal(s.flushStat) {
		return false
	}
	s.flushStat = fi.ModTime()
	return true
}

// rescan schedules every message in the spool that has queued recipients.
// It is how the scheduler recovers after a restart.
func (s *Scheduler) rescan() error {
	envs, err := s.spool.List()
	if err != nil {
		return err
	}
	n := 0
	for _, env := range envs {
		if env.Held {
			continue
		}
		if at, ok := nextDue(env); ok {
			s.schedule(env.ID, at)
			n++
		}
	}
	s.cleanMarkers(envs)
	s.log.Debug("queue: rescan", "messages", len(envs), "scheduled", n)
	s.metrics.queued.Set(float64(len(envs)))
	return nil
}

// nextDue is the earliest NextAttempt of a queued recipient.
func nextDue(env *Envelope) (time.Time, bool) {
	var at time.Time
	found := false
	for _, r := range env.Recipients {
		if r.Status != StatusQueued {
			continue
		}
		if !found || r.NextAttempt.Before(at) {
			at = r.NextAttempt
		}
		found = true
	}
	return at, found
}

// schedule makes id due at at (zero: now), unless it is due earlier already.
func (s *Scheduler) schedule(id string, at time.Time) {
	s.mu.Lock()
	if cur, ok := s.due[id]; !ok || at.Before(cur) {
		s.due[id] = at
		heap.Push(&s.sched, heapItem{at: at, id: id})
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// dispatch starts every due message and returns when the next one is due.
func (s *Scheduler) dispatch() time.Time {
	now := s.now()
	var ids []string
	s.mu.Lock()
	for s.sched.Len() > 0 {
		top := s.sched[0]
		if top.at.After(now) {
			break
		}
		heap.Pop(&s.sched)
		if cur, ok := s.due[top.id]; !ok || !cur.Equal(top.at) {
			continue // superseded entry
		}
		delete(s.due, top.id)
		if _, busy := s.inflight[top.id]; busy {
			continue // rescheduled when the jobs in progress end
		}
		ids = append(ids, top.id)
	}
	s.mu.Unlock()
	for _, id := range ids {
		s.start(id, now)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sched.Len() > 0 {
		return s.sched[0].at
	}
	return time.Time{}
}

// start loads a message and queues one job per destination domain of its
// due recipients.
func (s *Scheduler) start(id string, now time.Time) {
	env, err := s.spool.Load(id)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			s.log.Error("queue: load", "id", id, "err", err)
		}
		return
	}
	if env.Held {
		return
	}
	byDomain := map[string][]int{}
	var order []string
	for i, r := range env.Recipients {
		if r.Status != StatusQueued || r.NextAttempt.After(now) {
			continue
		}
		d := domainOf(r.Addr)
		if _, ok := byDomain[d]; !ok {
			order = append(order, d)
		}
		byDomain[d] = append(byDomain[d], i)
	}
	if len(order) == 0 {
		if at, ok := nextDue(env); ok {
			s.schedule(id, at)
		}
		return
	}
	s.mu.Lock()
	ms := &msgState{env: env, pending: len(order), tried: map[int]bool{}}
	s.inflight[id] = ms
	for _, d := range order {
		dest := d
		if dn, ok := s.c().d.(Destinationer); ok {
			dest = dn.Destination(d)
		}
		q := s.domains[dest]
		if q == nil {
			q = &domainQ{}
			s.domains[dest] = q
		}
		q.queue = append(q.queue, job{id: id, domain: d, dest: dest, idx: byDomain[d]})
	}
	s.pumpLocked()
	s.mu.Unlock()
}

// pumpLocked starts queued jobs within the total and per-domain limits.
func (s *Scheduler) pumpLocked() {
	if s.runCtx.Err() != nil {
		return // stopping: what is not started stays queued on disk
	}
	for d, q := range s.domains {
		for len(q.queue) > 0 && q.active < s.c().cfg.PerDomainConcurrency && s.active < s.c().cfg.Workers {
			j := q.queue[0]
			q.queue = q.queue[1:]
			q.active++
			s.active++
			s.jobsWG.Add(1)
			go s.run(j)
		}
		if len(q.queue) == 0 && q.active == 0 {
			delete(s.domains, d)
		}
		if s.active >= s.c().cfg.Workers {
			return
		}
	}
}

func domainOf(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return strings.ToLower(addr[i+1:])
	}
	return ""
}

// run performs one job and records its results.
func (s *Scheduler) run(j job) {
	defer s.jobsWG.Done()
	s.mu.Lock()
	ms := s.inflight[j.id]
	ctx := s.runCtx
	s.mu.Unlock()
	env := ms.env
	sig := s.signature(ms, j.dest)
	req := &Request{
		ID: env.ID, From: env.From, Size: env.Size + int64(len(sig)), SMTPUTF8: env.SMTPUTF8, Body8Bit: env.Body8Bit,
		Open: func() (io.ReadCloser, error) {
			rc, err := s.spool.Open(env.ID)
			if err != nil || sig == nil {
				return rc, err
			}
			return struct {
				io.Reader
				io.Closer
			}{io.MultiReader(bytes.NewReader(sig), rc), rc}, nil
		},
	}
	req.Ret, req.EnvID = env.DSNRet, env.DSNEnvID
	for _, i := range j.idx {
		r := env.Recipients[i]
		req.Rcpts = append(req.Rcpts, r.Addr)
		req.DSN = append(req.DSN, RcptDSN{Notify: r.Notify, ORcpt: r.ORcpt})
	}
	results := s.c().d.Deliver(ctx, j.domain, req)
	now := s.now()

	s.mu.Lock()
	for k, i := range j.idx {
		var res Result
		if k < len(results) {
			res = results[k]
		} else {
			res = Result{Rcpt: req.Rcpts[k], Temp: true, Text: "deliverer returned no result"}
		}
		if res.Temp && ctx.Err() != nil {
			continue // stopping: not an attempt; due again at the next start
		}
		s.apply(env, i, res, now)
		ms.tried[i] = true
	}
	ms.pending--
	done := ms.pending == 0
	q := s.domains[j.dest]
	q.active--
	s.active--
	s.pumpLocked()
	s.mu.Unlock()
	if !done {
		return
	}
	// The message stays in flight until its round is on disk: until then
	// the spool still shows the recipients just delivered as queued, and a
	// rescan (or a flush) meanwhile must not start them again.
	next, again := s.finish(ctx, ms, now)
	s.mu.Lock()
	delete(s.inflight, j.id)
	s.mu.Unlock()
	if again {
		s.schedule(j.id, next)
	}
}

// apply records one recipient's result: delivered, failed, or queued again
// after the next wait of the retry schedule; a recipient past the maximum
// queue lifetime fails.
func (s *Scheduler) apply(env *Envelope, i int, res Result, now time.Time) {
	r := &env.Recipients[i]
	r.Attempts++
	r.Updated = now
	r.LastCode = res.Code
	r.LastError = res.Error()
	d := maillog.Delivery{ID: env.ID, Rcpt: r.Addr, Attempt: r.Attempts, Reply: r.LastError}
	switch {
	case res.OK:
		r.Status = StatusDelivered
		r.LastError = ""
		// RFC 3461 §4.1: a peer that took the DSN parameters notifies
		// from now on; otherwise the SUCCESS notice is ours to send.
		r.Relayed = !res.PeerDSN && !res.Final
		if dsn.Wants(r.Notify, dsn.Success) && !res.PeerDSN {
			r.success = "relayed"
			if res.Final {
				r.success = "delivered"
			}
		}
		d.Relay = res.Host
		s.ml.Delivered(context.Background(), d)
		s.metrics.result.WithLabelValues("delivered").Inc()
		if s.outcome != nil {
			s.outcome(env, r.Addr, true)
		}
	case !res.Temp:
		r.Status = StatusFailed
		d.Reason = "failed permanently"
		s.ml.Bounced(context.Background(), d)
		s.metrics.result.WithLabelValues("failed").Inc()
		if s.outcome != nil {
			s.outcome(env, r.Addr, false)
		}
	case now.Sub(env.Received) >= s.c().cfg.MaxQueueLifetime.D():
		r.Status = StatusFailed
		r.LastError = expiredPrefix + s.c().cfg.MaxQueueLifetime.D().String() + " in the queue; last error: " + r.LastError
		d.Reason = "expired after " + s.c().cfg.MaxQueueLifetime.D().String()
		s.ml.Bounced(context.Background(), d)
		s.metrics.result.WithLabelValues("expired").Inc()
	default:
		sched := s.c().cfg.RetrySchedule
		wait := sched[min(r.Attempts-1, len(sched)-1)].D()
		r.NextAttempt = now.Add(wait)
		d.RetryIn = wait
		s.ml.Deferred(context.Background(), d)
		s.metrics.result.WithLabelValues("deferred").Inc()
	}
}

// finish saves a message after all its jobs of this round: removes it when
// every recipient is final (after any notification is durably queued),
// otherwise rewrites its envelope and returns when it is next due (again
// false: nothing left to schedule). Changes made meanwhile by an operator
// (hold, delete) win over queued states. The caller keeps the message in
// flight until finish returns, and schedules it only after that.
//
// A round whose outcome cannot be written (a full disk, an I/O error) is
// written again until it is (saveRound, in saveround.go).
func (s *Scheduler) finish(ctx context.Context, ms *msgState, now time.Time) (next time.Time, again bool) {
	env := ms.env
	unlock := lockEnv(env.ID)
	defer func() { unlock() }()
	if !s.reload(env) {
		return time.Time{}, false
	}
	var failed []Recipient
	final := true
	for i, r := range env.Recipients {
		if r.Status == StatusFailed && ms.tried[i] {
			failed = append(failed, r)
		}
		if r.Status == StatusQueued || r.Status == StatusHeld {
			final = false
		}
	}
	if len(failed) > 0 {
		if err := s.notify(env, failed, dsnFailed); err != nil {
			// A failure is final only once its notice is on disk: the
			// recipients go back to the queue, and the next round fails
			// them again and retries the notice.
			wait := s.c().cfg.RetrySchedule[0].D()
			for i := range env.Recipients {
				if r := &env.Recipients[i]; r.Status == StatusFailed && ms.tried[i] {
					r.Status, r.NextAttempt = StatusQueued, now.Add(wait)
				}
			}
			final = false
			s.log.Warn("queue: failure notice not spooled; recipients kept queued to try again", "id", env.ID, "retry_in", wait)
		}
	}
	var succeeded []Recipient
	for i, r := range env.Recipients {
		if ms.tried[i] && r.Status == StatusDelivered && r.success != "" {
			succeeded = append(succeeded, r)
		}
	}
	if len(succeeded) > 0 {
		// Best effort, like the delay notice: the mail itself is delivered.
		if err := s.notify(env, succeeded, dsnSuccess); err != nil {
			s.log.Warn("queue: success notice not spooled", "id", env.ID, "err", err)
		}
	}
	if !final && s.c().cfg.DelayNoticeAfter > 0 && !env.Held && now.Sub(env.Received) >= s.c().cfg.DelayNoticeAfter.D() && s.markDelayed(env.ID) {
		var late []Recipient
		for _, r := range env.Recipients {
			if r.Status == StatusQueued {
				late = append(late, r)
			}
		}
		s.notify(env, late, dsnDelayed) // best effort: at most one anyway
	}
	return s.saveRound(ctx, env, final, &unlock)
}

// notifiedDir, in the spool directory, holds one empty file per message
// whose sender was sent a delay notice, so that a restart does not send
// another.
const notifiedDir = "notified"

// markDelayed records that a delay notice goes out for id; false if one
// already did.
func (s *Scheduler) markDelayed(id string) bool {
	dir := filepath.Join(s.spool.Dir(), notifiedDir)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		s.log.Error("queue: delay notice marker", "err", err)
		return false
	}
	f, err := os.OpenFile(filepath.Join(dir, id), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		if !errors.Is(err, os.ErrExist) {
			s.log.Error("queue: delay notice marker", "err", err)
		}
		return false
	}
	f.Close()
	return true
}

// cleanMarkers removes delay-notice markers of messages no longer spooled
// (deleted by an operator).
func (s *Scheduler) cleanMarkers(envs []*Envelope) {
	ents, err := os.ReadDir(filepath.Join(s.spool.Dir(), notifiedDir))
	if err != nil {
		return
	}
	have := make(map[string]bool, len(envs))
	for _, e := range envs {
		have[e.ID] = true
	}
	for _, e := range ents {
		if have[e.Name()] {
			continue
		}
		if _, err := s.spool.Load(e.Name()); errors.Is(err, os.ErrNotExist) {
			os.Remove(filepath.Join(s.spool.Dir(), notifiedDir, e.Name()))
		}
	}
}

// expiredPrefix starts the last error of a recipient that outlived the
// maximum queue lifetime.
const expiredPrefix = "gave up after "

// heapItem and timeHeap order messages by due time.
type heapItem struct {
	at time.Time
	id string
}

type timeHeap []heapItem

func (h timeHeap) Len() int           { return len(h) }
func (h timeHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h timeHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *timeHeap) Push(x any)        { *h = append(*h, x.(heapItem)) }
func (h *timeHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
