package egress

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/maillog"
	"github.com/relayguard/relayguard/internal/nflog"
	"github.com/relayguard/relayguard/internal/prom"
)

// Attempt is one blocked connection attempt (SYN retransmissions of the
// same connection are folded into it).
type Attempt struct {
	Time      time.Time  `json:"time"`
	UID       uint32     `json:"uid"`
	GID       uint32     `json:"gid"`
	HasUID    bool       `json:"has_uid"`
	User      string     `json:"user"`
	Src       netip.Addr `json:"src"`
	SrcPort   uint16     `json:"src_port"`
	Dst       netip.Addr `json:"dst"`
	DstPort   uint16     `json:"dst_port"`
	Process   *Process   `json:"process,omitempty"`
	OtherPIDs []int      `json:"other_pids,omitempty"` // further processes sharing the socket
	SockState string     `json:"socket_state,omitempty"`
	Unknown   string     `json:"attribution_error,omitempty"`
}

// String is the one-line text form.
func (a Attempt) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s blocked uid=%d user=%s dst=%s src=%s",
		a.Time.Format(time.RFC3339), a.UID, a.User,
		netip.AddrPortFrom(a.Dst, a.DstPort), netip.AddrPortFrom(a.Src, a.SrcPort))
	if p := a.Process; p != nil {
		fmt.Fprintf(&b, " pid=%d exe=%q cmdline=%q cwd=%q ppid=%d parent=%q",
			p.PID, p.Exe, p.Cmdline, p.Cwd, p.PPID, p.ParentCmdline)
	} else if a.Unknown != "" {
		fmt.Fprintf(&b, " process=unknown (%s)", a.Unknown)
	}
	return b.String()
}

// Metrics are the watcher's Prometheus metrics.
type Metrics struct {
	Blocked *prometheus.CounterVec // by uid and user
	Alerts  *prometheus.CounterVec // by uid and user
	Lost    prometheus.Counter
}

// NewMetrics creates the metrics and registers them with reg (if not nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Blocked: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "relayguard", Subsystem: "egress", Name: "blocked_attempts_total",
			Help: "Outbound connection attempts to locked SMTP ports dropped, by socket owner.",
		}, []string{"uid", "user"}),
		Alerts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "relayguard", Subsystem: "egress", Name: "alerts_total",
			Help: "Alerts raised because a uid exceeded the blocked-attempt threshold.",
		}, []string{"uid", "user"}),
		Lost: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "relayguard", Subsystem: "egress", Name: "nflog_overruns_total",
			Help: "Times the NFLOG socket buffer overflowed and log messages were lost.",
		}),
	}
	m.Blocked = prom.Register(reg, m.Blocked)
	m.Alerts = prom.Register(reg, m.Alerts)
	m.Lost = prom.Register(reg, m.Lost)
	return m
}

// Alert is raised when one uid exceeds the threshold within the window.
type Alert struct {
	UID    uint32
	User   string
	Count  int
	Window time.Duration
	Last   Attempt
}

// Watcher turns NFLOG packets into attributed attempts, events, metrics
// and alerts.
type Watcher struct {
	Group  uint16
	Log    *slog.Logger
	Sink   event.Sink // EgressBlocked events; nil: none
	Metric *Metrics   // nil: none
	Attrib Attributor

	// Dedupe folds packets of the same 5-tuple into one attempt as long as
	// they come less than this apart (0: 3 minutes). TCP retransmits a
	// dropped SYN with a backoff capped at TCP_RTO_MAX, 120 s, for as long
	// as net.ipv4.tcp_syn_retries says (about two minutes by default), so
	// every retransmission falls within the window of the one before.
	Dedupe time.Duration
	// now is the clock (nil: time.Now); tests set it.
	now func() time.Time

	// AttributeRate caps process lookups per second (0: 50); beyond it
	// attempts are reported with uid only and a log line says so.
	AttributeRate int

	AlertThreshold int // 0: no alerts
	AlertWindow    time.Duration
	// OnAlert, if set, is called (in its own goroutine) for each alert,
	// e.g. to mail the administrator. The log line is always written.
	OnAlert func(context.Context, Alert)
	// OnAttempt is called for each attempt, in order.
	OnAttempt func(Attempt)

	alerts    sync.WaitGroup // OnAlert calls in flight, waited for by Run
	mu        sync.Mutex
	seen      map[fiveTuple]time.Time
	perUID    map[uint32][]time.Time
	lastAlert map[uint32]time.Time
	lastPrune time.Time
	rateSec   int64 // unix second of the attribution counter
	rateN     int
	rateSkip  int
}

type fiveTuple struct {
	src, dst         netip.Addr
	srcPort, dstPort uint16
}

func (w *Watcher) clock() time.Time {
	if w.now != nil {
		return w.now()
	}
	return time.Now()
}

// record is the attempt as internal/maillog writes it.
func (a Attempt) record() maillog.Egress {
	e := maillog.Egress{UID: -1, User: a.User, Dst: netip.AddrPortFrom(a.Dst, a.DstPort), SrcPort: int(a.SrcPort), Reason: a.Unknown}
	if a.HasUID {
		e.UID = int(a.UID)
	}
	if p := a.Process; p != nil {
		e.PID, e.Exe, e.Cmdline, e.Cwd, e.PPID, e.Parent = p.PID, p.Exe, p.Cmdline, p.Cwd, p.PPID, p.ParentCmdline
	} else if e.Reason == "" {
		e.Reason = "process unknown"
	}
	return e
}

func (w *Watcher) log() *slog.Logger {
	if w.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return w.Log
}

// Run binds the NFLOG group and handles packets until ctx ends. ready, if
// not nil, is called once the group is bound.
func (w *Watcher) Run(ctx context.Context, ready func()) error {
	c, err := nflog.Open(w.Group, 256)
	if err != nil {
		return err
	}
	defer c.Close()
	defer w.alerts.Wait() // alert mail in flight ends with ctx
	if ready != nil {
		ready()
	}
	err = c.Read(ctx, func(p nflog.Packet) { w.Handle(ctx, p) }, func(error) {
		w.log().Warn("egress: NFLOG socket buffer overflow, log messages lost", "group", w.Group)
		if w.Metric != nil {
			w.Metric.Lost.Inc()
		}
	})
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// Handle processes one logged packet. It returns the attempt and true for
// a new attempt, false for a retransmission or a non-TCP packet.
func (w *Watcher) Handle(ctx context.Context, p nflog.Packet) (Attempt, bool) {
	if !p.TCP {
		return Attempt{}, false
	}
	key := fiveTuple{p.Src, p.Dst, p.SrcPort, p.DstPort}
	now := w.clock()
	dedupe := w.Dedupe
	if dedupe <= 0 {
		dedupe = 3 * time.Minute
	}
	w.mu.Lock()
	if w.seen == nil {
		w.seen = map[fiveTuple]time.Time{}
		w.perUID = map[uint32][]time.Time{}
		w.lastAlert = map[uint32]time.Time{}
	}
	if t, ok := w.seen[key]; ok && now.Sub(t) < dedupe {
		// A retransmission: it extends the attempt's window, so that a
		// long retry sequence (tcp_syn_retries raised) stays one attempt.
		w.seen[key] = now
		w.mu.Unlock()
		return Attempt{}, false
	}
	w.seen[key] = now
	if now.Sub(w.lastPrune) > dedupe {
		for k, t := range w.seen {
			if now.Sub(t) >= dedupe {
				delete(w.seen, k)
			}
		}
		w.lastPrune = now
	}
	w.mu.Unlock()

	a := Attempt{
		Time: p.Time, UID: p.UID, GID: p.GID, HasUID: p.HasUID,
		Src: p.Src, SrcPort: p.SrcPort, Dst: p.Dst, DstPort: p.DstPort,
	}
	if p.HasUID {
		a.User = UserName(p.UID)
	} else {
		// Only a packet of no local socket comes without an owner: one
		// the forward chain (Spec.Forward) dropped. Its program is in a
		// container, a VM or on a routed network: named by its source,
		// not looked for in this host's /proc.
		a.User = "(no socket owner)"
		a.Unknown = "no socket on this host: forwarded from " + p.Src.String() + " (a container, a virtual machine or a routed network)"
		w.emit(ctx, a)
		return a, true
	}
	if !w.attributeAllowed(now) {
		a.Unknown = "attribution rate limit (egress.attribute_per_second) reached"
		w.emit(ctx, a)
		return a, true
	}
	ps, st, err := w.Attrib.Attribute(netip.AddrPortFrom(p.Src, p.SrcPort), netip.AddrPortFrom(p.Dst, p.DstPort))
	if err != nil {
		a.Unknown = err.Error()
	} else {
		a.Process = &ps[0]
		for _, o := range ps[1:] {
			a.OtherPIDs = append(a.OtherPIDs, o.PID)
		}
		if st == tcpSynSent {
			a.SockState = "SYN_SENT"
		} else {
			a.SockState = "state " + strconv.Itoa(st)
		}
	}
	w.emit(ctx, a)
	return a, true
}

// attributeAllowed counts process lookups per second. When the limit
// bites it logs once, and the next second logs how many were skipped.
func (w *Watcher) attributeAllowed(now time.Time) bool {
	limit := w.AttributeRate
	if limit <= 0 {
		limit = 50
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if sec := now.Unix(); sec != w.rateSec {
		if w.rateSkip > 0 {
			w.log().Warn("egress: process lookups skipped by the attribution rate limit", "skipped", w.rateSkip, "limit_per_second", limit)
		}
		w.rateSec, w.rateN, w.rateSkip = sec, 0, 0
	}
	if w.rateN >= limit {
		if w.rateSkip == 0 {
			w.log().Warn("egress: attribution rate limit reached; reporting attempts by uid only", "limit_per_second", limit)
		}
		w.rateSkip++
		return false
	}
	w.rateN++
	return true
}

func (w *Watcher) emit(ctx context.Context, a Attempt) {
	uidS := strconv.FormatUint(uint64(a.UID), 10)
	maillog.New(w.log()).EgressBlocked(ctx, a.record())

	if w.Metric != nil {
		w.Metric.Blocked.WithLabelValues(uidS, a.User).Inc()
	}
	if w.Sink != nil {
		detail := fmt.Sprintf("uid=%d dst=%s", a.UID, netip.AddrPortFrom(a.Dst, a.DstPort))
		if p := a.Process; p != nil {
			detail += fmt.Sprintf(" pid=%d exe=%s cmdline=%q", p.PID, p.Exe, p.Cmdline)
		}
		w.Sink.Publish(ctx, event.Event{
			Time: a.Time, Kind: event.EgressBlocked, Source: "kernel", IP: a.Dst,
			User: a.User, Rule: "egress", Detail: detail, Service: "smtp",
		})
	}
	if w.OnAttempt != nil {
		w.OnAttempt(a)
	}
	w.checkAlert(ctx, a)
}

// maxAlertHistory bounds the attempt times kept per uid for alerting.
const maxAlertHistory = 10000

// checkAlert counts the uid's attempts in the sliding window and raises at
// most one alert per uid per window.
func (w *Watcher) checkAlert(ctx context.Context, a Attempt) {
	if w.AlertThreshold <= 0 || w.AlertWindow <= 0 {
		return
	}
	now := w.clock()
	w.mu.Lock()
	ts := w.perUID[a.UID]
	keep := ts[:0]
	for _, t := range ts {
		if now.Sub(t) < w.AlertWindow {
			keep = append(keep, t)
		}
	}
	keep = append(keep, now)
	if len(keep) > maxAlertHistory {
		// Under a flood, remember only the latest attempts: enough to
		// know the threshold is exceeded, bounded in memory.
		keep = append(keep[:0], keep[len(keep)-maxAlertHistory:]...)
	}
	w.perUID[a.UID] = keep
	fire := len(keep) >= w.AlertThreshold && now.Sub(w.lastAlert[a.UID]) >= w.AlertWindow
	if fire {
		w.lastAlert[a.UID] = now
	}
	n := len(keep)
	w.mu.Unlock()
	if !fire {
		return
	}
	al := Alert{UID: a.UID, User: a.User, Count: n, Window: w.AlertWindow, Last: a}
	maillog.New(w.log()).EgressAlert(ctx, a.record(), n, w.AlertWindow)

	if w.Metric != nil {
		w.Metric.Alerts.WithLabelValues(strconv.FormatUint(uint64(a.UID), 10), a.User).Inc()
	}
	if w.OnAlert != nil {
		w.alerts.Go(func() { w.OnAlert(ctx, al) })
	}
}

// NewWatcherFromConfig builds the watcher `relayguard egress watch` and
// `relayguard serve` run: the [egress] NFLOG group, alert threshold and
// window, and alert mail when alert_mail_to is set. Events go to sink,
// metrics to reg (either may be nil).
func NewWatcherFromConfig(c config.EgressConfig, hostname string, log *slog.Logger, sink event.Sink, reg prometheus.Registerer) *Watcher {
	w := &Watcher{
		Group:          uint16(c.NFLogGroup),
		Log:            log,
		Sink:           sink,
		Metric:         NewMetrics(reg),
		AttributeRate:  c.AttributeRate,
		AlertThreshold: c.AlertThreshold,
		AlertWindow:    c.AlertWindow.D(),
	}
	if c.AlertMailTo != "" {
		m := Mailer{Addr: c.AlertSMTP, From: c.AlertMailFrom, To: c.AlertMailTo, Hostname: hostname}
		w.OnAlert = func(ctx context.Context, al Alert) {
			if err := m.Send(ctx, al); err != nil {
				w.log().Error("egress: alert mail failed", "to", m.To, "err", err)
				return
			}
			w.log().Info("egress: alert mailed", "to", m.To, "uid", al.UID)
		}
	}
	return w
}
