package accounts

import (
	"context"
	"log/slog"
	"net/netip"
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

	// later holds the observations the front doors make per message
	// (volume, queue ids) for Run's writer: they need no answer, and
	// written from one goroutine they cost the SMTP transaction nothing
	// and do not contend for the database with the limiter's counters.
	later   chan func(context.Context)
	running atomic.Bool
}

// pendingWrites bounds the observations waiting for Run's writer; when
// it is full the front door writes itself (back pressure, nothing lost).
const pendingWrites = 4096

// Run runs the writer of the front doors' observations and the
// responder's loop (Responder.Run) until ctx is done.
func (s *Service) Run(ctx context.Context, interval time.Duration) {
	s.running.Store(true)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case f := <-s.later:
				f(ctx)
			case <-ctx.Done():
				s.running.Store(false)
				for { // what was queued before the end is still written
					select {
					case f := <-s.later:
						f(context.WithoutCancel(ctx))
					default:
						return
					}
				}
			}
		}
	}()
	s.Responder.Run(ctx, interval)
	<-done
}

// flush writes the deferred observations now (before a suspension holds
// the account's queue ids; one the writer is writing at this moment may
// be missed, and is held by the responder's next pass). It may run inside
// a deferred write (a volume signal suspends): it takes no lock.
func (s *Service) flush(ctx context.Context) {
	for {
		select {
		case f := <-s.later:
			f(ctx)
		default:
			return
		}
	}
}

// deferWrite runs f on Run's writer, or now when Run is not running or its
// queue is full.
func (s *Service) deferWrite(ctx context.Context, f func(context.Context)) {
	if s.running.Load() {
		select {
		case s.later <- f:
			return
		default:
		}
	}
	f(ctx)
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
	svc := &Service{Responder: r, Detector: d, Gate: NewGate(d), later: make(chan func(context.Context), pendingWrites)}
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
	now := h.S.o.Now()
	h.S.deferWrite(ctx, func(ctx context.Context) {
		if qid != "" {
			h.S.Detector.Tie(ctx, user, qid, now)
		}
		h.S.Detector.Sent(ctx, user, now)
	})
}

// Tie ties queue id qid to user.
func (h Hooks) Tie(ctx context.Context, user, qid string) {
	if qid == "" {
		return
	}
	now := h.S.o.Now()
	h.S.deferWrite(ctx, func(ctx context.Context) { h.S.Detector.Tie(ctx, user, qid, now) })
}
