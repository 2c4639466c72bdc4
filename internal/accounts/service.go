package accounts

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/maillog"
	"github.com/relayguard/relayguard/internal/store"
)

// Service is the accounts' detection and response of one process.
type Service struct {
	*Responder
	Detector *Detector
	Gate     *Gate

	// obs holds the observations the front doors make per message
	// (volume, queue ids) for Run's writer: they need no answer, and
	// written from one goroutine, many in one transaction, they cost the
	// SMTP transaction nothing and the database one commit per batch.
	obs     observations
	kick    chan struct{} // something waits in obs
	running atomic.Bool
}

// observations are the front doors' facts waiting for the writer.
type observations struct {
	mu   sync.Mutex
	ties []QueueTie
	sent []SentCount // one per user and hour, N messages each
	idx  map[sentKey]int
}

type sentKey struct {
	user string
	hour int64
}

// pendingWrites bounds the queue ids waiting for Run's writer; past it
// the front door writes the batch itself (back pressure, nothing lost).
const pendingWrites = 4096

// observeLinger is how long the writer lets observations gather after a
// batch: one transaction then carries every message of that time (about
// a dozen at 500 messages/s) instead of one or two.
const observeLinger = 20 * time.Millisecond

// Run runs the writer of the front doors' observations and the
// responder's loop (Responder.Run) until ctx is done.
func (s *Service) Run(ctx context.Context, interval time.Duration) {
	s.running.Store(true)
	done := make(chan struct{})
	go func() {
		defer close(done)
		linger := time.NewTimer(0)
		defer linger.Stop()
		for {
			select {
			case <-s.kick:
				s.flush(ctx)
				linger.Reset(observeLinger)
				select {
				case <-linger.C:
				case <-ctx.Done():
				}
			case <-ctx.Done():
				s.running.Store(false)
				// What was observed before the end is still written.
				s.flush(context.WithoutCancel(ctx))
				return
			}
		}
	}()
	s.Responder.Run(ctx, interval)
	<-done
}

// observe queues a queue id tie (qid not empty) and n messages of user
// in hour for the writer, or writes them now when Run is not running or
// too much waits.
func (s *Service) observe(ctx context.Context, user, qid string, t time.Time, n int64) {
	s.obs.mu.Lock()
	if qid != "" {
		s.obs.ties = append(s.obs.ties, QueueTie{User: user, QID: qid, T: t})
	}
	if n > 0 {
		hour := t.UTC().Truncate(time.Hour)
		k := sentKey{user, hour.UnixMilli()}
		if i, ok := s.obs.idx[k]; ok {
			s.obs.sent[i].N += n
		} else {
			if s.obs.idx == nil {
				s.obs.idx = map[sentKey]int{}
			}
			s.obs.idx[k] = len(s.obs.sent)
			s.obs.sent = append(s.obs.sent, SentCount{User: user, Hour: hour, N: n})
		}
	}
	full := len(s.obs.ties) >= pendingWrites
	s.obs.mu.Unlock()
	if full || !s.running.Load() {
		s.flush(ctx)
		return
	}
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// flush writes the waiting observations now (also before a suspension
// holds the account's queue ids; a batch the writer is writing at this
// moment may be missed, and is held by the responder's next pass). It may
// run inside the writer (a volume signal suspends): it takes no lock
// while writing.
func (s *Service) flush(ctx context.Context) {
	s.obs.mu.Lock()
	ties, sent := s.obs.ties, s.obs.sent
	s.obs.ties, s.obs.sent, s.obs.idx = nil, nil, nil
	s.obs.mu.Unlock()
	if len(ties) > 0 || len(sent) > 0 {
		s.Detector.observe(ctx, ties, sent)
	}
}

// Setup is what the command's wiring gives Open.
type Setup struct {
	Command string   // "serve", "policy", "milter", "watch", "user"
	Holders []Holder // besides Postfix's (accounts.postfix_config_directories)
	Banner  Banner
	Log     *slog.Logger
	// AlertSMTP is the SMTP server for alert mail when accounts.alert_smtp
	// is empty (serve: its own listener; others: 127.0.0.1:25).
	AlertSMTP  string
	Registerer prometheus.Registerer
	Now        func() time.Time
}

// Open builds the accounts' state kind on st and the detector, responder
// and gate of cfg's [accounts].
func Open(ctx context.Context, cfg *config.Config, st *store.Stores, s Setup) (*Service, error) {
	c := cfg.Accounts
	keep := max(c.KnownNetworkAge.D(), c.VolumeBaseline.D(), c.LoginSpreadWindow.D(), c.GuessingWindow.D(), 5*24*time.Hour)
	as, err := NewStore(ctx, st, keep, s.Log)
	if err != nil {
		return nil, err
	}
	ml := maillog.New(s.Log)
	host := cfg.Hostname
	holders := append([]Holder(nil), s.Holders...)
	if len(c.PostfixConfig) > 0 {
		holders = append(holders, PostfixHolder{Postsuper: c.Postsuper, ConfigDirs: c.PostfixConfig, Store: as, Host: host, Now: s.Now})
	}
	al := NewAlerter(c, host, s.AlertSMTP, ml)
	r := NewResponder(Options{Config: c, Store: as, Host: host, Command: s.Command, Holders: holders, Banner: s.Banner,
		Alerter: al, Log: ml, Registerer: s.Registerer, Now: s.Now})
	d := NewDetector(r)
	svc := &Service{Responder: r, Detector: d, Gate: NewGate(d), kick: make(chan struct{}, 1)}
	r.flush = svc.flush
	return svc, nil
}

// NewAlerter is the alert channel of [accounts]: mail to alert_mail_to
// through alert_smtp (else fallbackSMTP, else 127.0.0.1:25) and the
// webhook_url; nil when neither is configured.
func NewAlerter(c config.AccountsConfig, host, fallbackSMTP string, ml *maillog.Logger) *Alerter {
	if c.AlertMailTo == "" && c.WebhookURL == "" {
		return nil
	}
	al := &Alerter{MailTo: c.AlertMailTo, MailFrom: c.AlertMailFrom, SMTP: c.AlertSMTP, WebhookURL: c.WebhookURL, Log: ml}
	if al.SMTP == "" {
		al.SMTP = fallbackSMTP
	}
	if al.SMTP == "" {
		al.SMTP = "127.0.0.1:25"
	}
	if al.MailFrom == "" {
		al.MailFrom = "relayguard@" + host
	}
	return al
}

// Hooks is what the Postfix-facing front doors (policy service, milter)
// tell the accounts and ask them, per message of a login.
type Hooks struct{ S *Service }

// Suspended reports whether user is suspended.
func (h Hooks) Suspended(ctx context.Context, user string) (bool, error) {
	return h.S.Gate.Suspended(ctx, user)
}

// Login records a login of user seen from client at a message.
func (h Hooks) Login(ctx context.Context, user string, client netip.Addr) {
	if client.IsValid() {
		h.S.Detector.Login(ctx, user, client, h.S.o.Now())
	}
}

// Sent counts one message of user; qid (if known) ties it to user.
func (h Hooks) Sent(ctx context.Context, user, qid string) {
	h.S.observe(ctx, user, qid, h.S.o.Now(), 1)
}

// Tie ties queue id qid to user.
func (h Hooks) Tie(ctx context.Context, user, qid string) {
	if qid == "" {
		return
	}
	h.S.observe(ctx, user, qid, h.S.o.Now(), 0)
}
