// Package console is the operator's web console and its JSON API, served
// on the admin listener by `relayguard serve` and `relayguard watch`:
//
//   - overview: connections, accepted, rejected and deferred mail and AUTH
//     failures over the last hour and day (inline SVG charts), the bans in
//     force, the attacks in progress (prefixes by failures, with the
//     usernames tried), egress blocks by user and program, the latest
//     audit findings and the reputation monitor's last check (the own
//     addresses and domains on block lists, the certificates);
//   - accounts (logins, send volume against limits and baseline,
//     suspension with its evidence; suspend, unsuspend), the queue (by
//     state, age, destination and last error; hold, release, delete,
//     flush, headers), bans (add, remove, search by address) and the HTML
//     report of any day;
//   - live updates by server-sent events.
//
// Every asset is embedded (web/): no framework, no CDN, a Content Security
// Policy without external origins. Admin accounts are separate from the
// mail accounts (Admins: argon2id, roles admin and readonly, API tokens);
// a login is an AUTH like any other: limited and counted by the guard,
// which bans a brute force. Sessions are cookies (Secure, HttpOnly,
// SameSite=Strict) with a CSRF token required on every action; every
// action is logged through internal/maillog with who did it.
//
// The time series, attacks, logins and egress blocks are kept in memory
// (ring buffers and bounded maps) fed by the process's event stream
// (Console is an event.Sink) and, in serve, by its Prometheus counters.
package console

import (
	"context"
	"embed"
	"io/fs"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relayguard/relayguard/internal/accounts"
	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/maillog"
	"github.com/relayguard/relayguard/internal/queue"
	"github.com/relayguard/relayguard/internal/ratelimit"
	"github.com/relayguard/relayguard/internal/userdb"
)

//go:embed web
var webFS embed.FS

// Accounts is the accounts' detection and response (*accounts.Service).
type Accounts interface {
	Suspend(ctx context.Context, user, signal, evidence string) (bool, error)
	Unsuspend(ctx context.Context, user string) (accounts.Suspension, bool, int, error)
	Store() accounts.Store
}

// Users is the mail account database (*userdb.DB) of serve.
type Users interface {
	List(ctx context.Context) ([]userdb.Account, error)
	Get(ctx context.Context, user string) (userdb.Account, error)
	Suspend(ctx context.Context, user string) error
	Unsuspend(ctx context.Context, user string) error
}

// Options are what the console shows and acts on. Config, Admins and
// Guard are required; the others may be nil where the process has no such
// part (watch has no spool and no mail accounts): the page says so.
type Options struct {
	Config *config.Config
	Admins *Admins
	Guard  Guard
	// Events receives the console's own login outcomes (the guard
	// subscribes to it): serve's bus, watch's sink.
	Events   event.Sink
	Spool    *queue.Spool
	Users    Users
	Accounts Accounts
	Limiter  *ratelimit.Limiter
	// Metrics, when set (serve), feeds connections, accepted, rejected and
	// deferred from the process's counters; otherwise (watch) rejected
	// mail is counted from the events and the others are not measured.
	Metrics prometheus.Gatherer
	// Reputation is the audit's reputation monitor; nil: the panel says
	// there is none.
	Reputation Reputation
	// HTTPS says the admin listener serves TLS (Secure cookie prefix,
	// HSTS).
	HTTPS bool
	// Command names the process ("serve", "watch").
	Command string
	Log     *slog.Logger
	Now     func() time.Time
}

// Console is the web console of one process. It is an event.Sink.
type Console struct {
	o     Options
	log   *slog.Logger
	ml    *maillog.Logger
	mux   *http.ServeMux
	stats *stats
	sess  *sessions
	bans  *banIndex
	queue *queueIndex
	// the queue's summary, and the index list it counted
	qsumMu  sync.Mutex
	qsum    queueSummary
	qsumOf  **msgView
	qsumLen int
	rep     *reports
	// the queue's count in the last tick that could list it
	lastQueue atomic.Int64

	stopOnce sync.Once
	stopping chan struct{} // closed by Stop: streams end
	streams  chan struct{} // a token per open event stream
}

// New returns the console; it starts nothing (see Run).
func New(o Options) (*Console, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Events == nil {
		o.Events = event.Discard{}
	}
	c := &Console{o: o, log: o.Log, ml: maillog.New(o.Log), stopping: make(chan struct{}), streams: make(chan struct{}, maxStreams)}
	c.stats = newStats(o.Now, o.Metrics != nil)
	c.sess = newSessions(o.Config.Admin.SessionIdle.D(), o.Config.Admin.SessionLifetime.D(), o.Now)
	c.bans = &banIndex{g: o.Guard, now: o.Now}
	if o.Spool != nil {
		c.queue = &queueIndex{spool: o.Spool, now: o.Now, log: o.Log}
	}
	c.rep = &reports{cfg: o.Config}
	c.routes()
	return c, nil
}

// Handler is the console's HTTP handler: the page, its assets and the API.
// It is mounted at "/" of the admin listener.
func (c *Console) Handler() http.Handler { return c.mux }

// Publish implements event.Sink: the process's events feed the charts,
// the attacks, the logins and the egress blocks.
func (c *Console) Publish(_ context.Context, e event.Event) { c.stats.publish(e) }

// Run samples the metrics, reads the spool once and drops idle sessions
// until ctx is done; then it ends the event streams.
func (c *Console) Run(ctx context.Context) {
	defer c.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	if c.queue != nil {
		// The first listing reads every envelope (seconds with 50,000
		// messages): done now rather than by the first page shown.
		wg.Go(func() {
			if _, err := c.queue.all(ctx); err != nil && ctx.Err() == nil {
				c.log.Warn("console: reading the queue", "err", err)
			}
		})
	}
	t := time.NewTicker(sampleEvery)
	defer t.Stop()
	c.stats.sample(c.o.Metrics)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.stats.sample(c.o.Metrics)
			c.sess.sweep()
		}
	}
}

// Stop ends the event streams (an http.Server's Shutdown waits for
// handlers, and a stream would never end by itself).
func (c *Console) Stop() { c.stopOnce.Do(func() { close(c.stopping) }) }

// static serves the embedded page and assets.
func (c *Console) static() http.Handler {
	sub, err := fs.Sub(webFS, "web")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return http.FileServerFS(sub)
}
