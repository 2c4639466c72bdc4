package accounts

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/event"
)

// Detector turns the event stream into compromise signals (an event.Sink:
// serve's bus, the events of the policy service, the milter, Dovecot's
// authentication policy and the logs `relayguard watch` follows). Every
// observation goes to the shared state, so that a cluster's servers add up
// what each of them saw.
type Detector struct {
	cfg    config.AccountsConfig
	r      *Responder
	st     Store
	decoys map[string]bool

	mu      sync.Mutex
	recent  map[string]time.Time // user and network -> last login written to the store
	peaks   map[string]peak      // user -> baseline, cached for the hour
	guessed map[string]time.Time // user -> when distributed guessing was last logged
	samples map[string][]string  // user -> recent bad recipients (evidence)
}

type peak struct {
	hour time.Time
	n    int64
}

// NewDetector returns the detector that acts through r.
func NewDetector(r *Responder) *Detector {
	d := &Detector{cfg: r.o.Config, r: r, st: r.o.Store, decoys: map[string]bool{}, recent: map[string]time.Time{},
		peaks: map[string]peak{}, guessed: map[string]time.Time{}, samples: map[string][]string{}}
	for _, n := range d.cfg.Decoys {
		d.decoys[key(n)] = true
	}
	return d
}

// IsDecoy reports whether user is a configured decoy name.
func (d *Detector) IsDecoy(user string) bool { return d.decoys[key(user)] }

// Publish implements event.Sink.
func (d *Detector) Publish(ctx context.Context, e event.Event) {
	if e.User == "" && e.QueueID != "" && (e.Kind == event.Delivered || e.Kind == event.DeliveryFailed) {
		// A Postfix delivery line names the queue id only: whose mail it
		// is was tied when it was submitted (milter, policy service, or
		// the "client=..., sasl_username=" line).
		u, ok, err := d.st.QueueUser(ctx, d.r.o.Host, e.QueueID)
		if err != nil || !ok {
			return
		}
		e.User = u
	}
	if e.User == "" {
		return
	}
	t := e.Time
	if t.IsZero() {
		t = d.r.o.Now()
	}
	switch e.Kind {
	case event.AuthSuccess, event.LoginSuccess:
		if e.QueueID != "" {
			// Postfix's "QUEUEID: client=..., sasl_username=USER".
			d.Tie(ctx, e.User, e.QueueID, t)
		}
		if e.IP.IsValid() {
			d.Login(ctx, e.User, e.IP, t)
		}
	case event.AuthFailure:
		if e.IP.IsValid() {
			d.Failure(ctx, e.User, e.IP, t)
		}
	case event.MessageSubmitted:
		d.Sent(ctx, e.User, t)
	case event.Delivered, event.DeliveryFailed:
		d.Outcome(ctx, e.User, e.Detail, e.Kind == event.DeliveryFailed, t)
	}
}

// Tie records that Postfix queue id qid on this host is user's mail.
func (d *Detector) Tie(ctx context.Context, user, qid string, t time.Time) {
	if err := d.st.TieQueueID(ctx, d.r.o.Host, user, qid, t); err != nil {
		d.r.o.Log.Slog().Warn("accounts: state unavailable", "err", err)
	}
}

// Login records a successful login of user from ip: its network becomes
// known, and more than login_spread_networks networks within the window is
// the login spread signal.
func (d *Detector) Login(ctx context.Context, user string, ip netip.Addr, t time.Time) {
	c := d.cfg
	n := Network(ip, c.LoginSpreadIPv4Bits, c.LoginSpreadIPv6Bits)
	// A login from a network this process wrote for the account within
	// the last minute changes nothing the signals count (the network is
	// known, and its last time within the window): every message of a
	// session need not cost a store write.
	rk := key(user) + "\x00" + n.String()
	d.mu.Lock()
	last, seen := d.recent[rk]
	if !seen || t.Sub(last) >= recentLogin || t.Before(last) {
		if len(d.recent) > 100000 {
			clear(d.recent)
		}
		d.recent[rk] = t
		seen = false
	}
	d.mu.Unlock()
	if seen {
		return
	}
	nets, err := d.st.AddLogin(ctx, user, n, t, c.LoginSpreadWindow.D())
	if err != nil {
		d.r.o.Log.Slog().Warn("accounts: state unavailable", "err", err)
		return
	}
	if c.LoginSpreadNetworks <= 0 || len(nets) <= c.LoginSpreadNetworks {
		return
	}
	list := make([]string, len(nets))
	for i, p := range nets {
		list[i] = p.String()
	}
	d.r.Signal(ctx, user, config.SignalLoginSpread,
		fmt.Sprintf("logged in from %d networks within %s (more than %d): %s; last from %s",
			len(nets), c.LoginSpreadWindow.D(), c.LoginSpreadNetworks, strings.Join(list, ", "), ip))
}

// recentLogin is how long a login from one network is not written again.
const recentLogin = time.Minute

// Failure records a failed login as user from ip: a decoy name bans the
// network at once; more than guessing_addresses addresses within the
// window is distributed guessing, answered by Gate.AuthAllowed.
func (d *Detector) Failure(ctx context.Context, user string, ip netip.Addr, t time.Time) {
	if d.IsDecoy(user) {
		d.r.Decoy(ctx, user, ip)
		return
	}
	c := d.cfg
	if c.GuessingAddresses <= 0 {
		return
	}
	n, err := d.st.AddFailure(ctx, user, ip, t, c.GuessingWindow.D())
	if err != nil {
		d.r.o.Log.Slog().Warn("accounts: state unavailable", "err", err)
		return
	}
	if n <= c.GuessingAddresses {
		return
	}
	d.mu.Lock()
	last, seen := d.guessed[key(user)]
	fresh := !seen || t.Sub(last) >= c.GuessingWindow.D()
	if fresh {
		d.guessed[key(user)] = t
	}
	d.mu.Unlock()
	if fresh {
		// Not a suspension: the account may be fine, only its name is
		// being guessed. Gate refuses it from new networks meanwhile.
		d.r.signals.WithLabelValues(config.SignalGuessing).Inc()
		d.r.o.Log.AccountSignal(ctx, user, config.SignalGuessing,
			fmt.Sprintf("%d addresses failed to log in within %s (more than %d), last %s; refused from networks it has not logged in from within %s",
				n, c.GuessingWindow.D(), c.GuessingAddresses, ip, c.KnownNetworkAge.D()))
	}
}

// Sent counts one message of user: far more in this hour than the
// account's busiest hour of the baseline is the volume signal.
func (d *Detector) Sent(ctx context.Context, user string, t time.Time) {
	hour := t.UTC().Truncate(time.Hour)
	n, err := d.st.AddSent(ctx, user, hour, 1)
	if err != nil {
		d.r.o.Log.Slog().Warn("accounts: state unavailable", "err", err)
		return
	}
	d.volume(ctx, user, hour, n)
}

// observe writes the front doors' queue id ties and message counts (the
// batch Service's writer gathered): in one transaction when the store
// can, then checks the volume of each account counted.
func (d *Detector) observe(ctx context.Context, ties []QueueTie, sent []SentCount) {
	if b, ok := d.st.(batchObserver); ok {
		if err := b.Observe(ctx, d.r.o.Host, ties, sent); err != nil {
			d.r.o.Log.Slog().Warn("accounts: state unavailable", "err", err)
			return
		}
	} else {
		for _, t := range ties {
			d.Tie(ctx, t.User, t.QID, t.T)
		}
		for i, c := range sent {
			n, err := d.st.AddSent(ctx, c.User, c.Hour, c.N)
			if err != nil {
				d.r.o.Log.Slog().Warn("accounts: state unavailable", "err", err)
				return
			}
			sent[i].Count = n
		}
	}
	for _, c := range sent {
		d.volume(ctx, c.User, c.Hour, c.Count)
	}
}

// volume is the volume signal: n messages of user in the hour starting
// at hour.
func (d *Detector) volume(ctx context.Context, user string, hour time.Time, n int64) {
	c := d.cfg
	if c.VolumeFactor <= 0 || n <= int64(c.VolumeMinimum) {
		return
	}
	d.mu.Lock()
	p, ok := d.peaks[key(user)]
	d.mu.Unlock()
	if !ok || !p.hour.Equal(hour) {
		pn, err := d.st.PeakHour(ctx, user, hour.Add(-c.VolumeBaseline.D()), hour)
		if err != nil {
			d.r.o.Log.Slog().Warn("accounts: state unavailable", "err", err)
			return
		}
		p = peak{hour: hour, n: pn}
		d.mu.Lock()
		if len(d.peaks) > 100000 {
			clear(d.peaks)
		}
		d.peaks[key(user)] = p
		d.mu.Unlock()
	}
	if float64(n) <= c.VolumeFactor*float64(p.n) {
		return
	}
	d.r.Signal(ctx, user, config.SignalVolume,
		fmt.Sprintf("%d messages in the hour from %s UTC; its busiest hour of the last %s: %d (more than %g times that, and more than %d)",
			n, hour.Format("2006-01-02 15:04"), c.VolumeBaseline.D(), p.n, c.VolumeFactor, c.VolumeMinimum))
}

// Outcome counts one recipient of user's mail, refused or bounced by the
// remote server (bad) or delivered: a high share of bad ones is the bad
// recipients signal.
func (d *Detector) Outcome(ctx context.Context, user, rcpt string, bad bool, t time.Time) {
	c := d.cfg
	if c.BadRecipientShare <= 0 {
		return
	}
	w := c.BadRecipientWindow.D()
	total, nbad, err := d.st.AddOutcome(ctx, user, t.UTC().Truncate(w), w, bad)
	if err != nil {
		d.r.o.Log.Slog().Warn("accounts: state unavailable", "err", err)
		return
	}
	var samples []string
	d.mu.Lock()
	if bad && rcpt != "" {
		s := append(d.samples[key(user)], rcpt)
		if len(s) > 5 {
			s = s[len(s)-5:]
		}
		if len(d.samples) > 100000 {
			clear(d.samples)
		}
		d.samples[key(user)] = s
	}
	samples = append(samples, d.samples[key(user)]...)
	d.mu.Unlock()
	if !bad || total < int64(c.BadRecipientMinimum) || float64(nbad) < c.BadRecipientShare*float64(total) {
		return
	}
	d.r.Signal(ctx, user, config.SignalBadRcpts,
		fmt.Sprintf("%d of %d recipients within %s refused or bounced (at least %.0f%%); e.g. %s",
			nbad, total, w, c.BadRecipientShare*100, strings.Join(samples, ", ")))
}

// Gate answers the front doors' questions about accounts.
type Gate struct {
	cfg config.AccountsConfig
	st  Store
	now func() time.Time
	d   *Detector

	mu    sync.Mutex
	cache map[string]cachedSuspension
}

// NewGate returns the gate over d's state.
func NewGate(d *Detector) *Gate {
	return &Gate{cfg: d.cfg, st: d.st, now: d.r.o.Now, d: d, cache: map[string]cachedSuspension{}}
}

// Suspended reports whether user is suspended. Answers are cached for
// SuspendedTTL (every message of every session asks); a suspension or
// unsuspension made by this process is seen at once.
func (g *Gate) Suspended(ctx context.Context, user string) (bool, error) {
	k := key(user)
	now := g.now()
	g.mu.Lock()
	c, ok := g.cache[k]
	g.mu.Unlock()
	if ok && now.Sub(c.at) < SuspendedTTL && !now.Before(c.at) && c.gen == g.d.r.gen.Load() {
		return c.suspended, nil
	}
	gen := g.d.r.gen.Load()
	_, susp, err := g.st.Suspended(ctx, user)
	if err != nil {
		if ok && c.suspended {
			// The store failed (Redis down and the database too): an
			// account last known suspended stays refused, the others
			// are let through by the callers (a broken store must not
			// lock everyone out). It was let through like the others.
			return true, nil
		}
		return false, err
	}
	g.mu.Lock()
	if len(g.cache) > 100000 {
		// The suspended accounts' answers stay: they keep those refused
		// when the store fails, and a client asking about 100,000
		// names must not wipe them. (Should they alone pass the bound,
		// all go.)
		maps.DeleteFunc(g.cache, func(_ string, c cachedSuspension) bool { return !c.suspended })
		if len(g.cache) > 100000 {
			clear(g.cache)
		}
	}
	g.cache[k] = cachedSuspension{susp, now, gen}
	g.mu.Unlock()
	return susp, nil
}

// SuspendedTTL is how long Gate.Suspended trusts an answer: a suspension
// made on another server is in force here within it.
const SuspendedTTL = time.Second

type cachedSuspension struct {
	suspended bool
	at        time.Time
	gen       int64 // Responder.gen when asked
}

// AuthAllowed reports whether user may log in from ip now: not when it is
// suspended, and not from a network where it has not logged in within
// known_network_age while its name is being guessed from many addresses.
// A state store error allows (the password check still applies; a broken
// store must not lock everyone out), but an account last seen suspended
// stays refused (Gate.Suspended).
func (g *Gate) AuthAllowed(ctx context.Context, user string, ip netip.Addr) (bool, string) {
	if ok, err := g.Suspended(ctx, user); err == nil && ok {
		return false, "account suspended"
	}
	c := g.cfg
	if c.GuessingAddresses <= 0 || !ip.IsValid() {
		return true, ""
	}
	now := g.now()
	n, err := g.st.Failures(ctx, user, now.Add(-c.GuessingWindow.D()))
	if err != nil || n <= c.GuessingAddresses {
		return true, ""
	}
	net := Network(ip, c.LoginSpreadIPv4Bits, c.LoginSpreadIPv6Bits)
	if known, err := g.st.KnownNetwork(ctx, user, net, now.Add(-c.KnownNetworkAge.D())); err != nil || known {
		return true, ""
	}
	return false, fmt.Sprintf("username under distributed guessing (%d addresses within %s); refused from new network %s", n, c.GuessingWindow.D(), net)
}
