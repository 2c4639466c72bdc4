package policy

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/dnsbl"
	"github.com/relayguard/relayguard/internal/dnsbl/zonespec"
	"github.com/relayguard/relayguard/internal/dnsutil"
	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/maillog"
)

// Resolver is the DNS the checks need. It has the shape of net.Resolver
// (and of blitiri.com.ar/go/spf's DNSResolver); errors must be
// *net.DNSError with IsNotFound set for NXDOMAIN / no data, so that a
// failure is never read as an answer. *dnsutil.Resolver implements it.
type Resolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
	LookupAddr(ctx context.Context, addr string) ([]string, error)
}

// Deps are the engine's outside world. Nil fields get defaults: a
// dnsutil.Resolver over [dnsbl] resolvers (created without network I/O),
// a dnsbl.Checker over the configured zones (whose health checks Run
// runs), time.Now, slog.Default, no events, and metrics not exported.
type Deps struct {
	Resolver   Resolver
	DNSBL      *dnsbl.Checker
	Clock      func() time.Time
	Logger     *slog.Logger
	Events     event.Sink
	Registerer prometheus.Registerer
	Source     string // event source: "smtpd" or "policyd"
}

// Engine evaluates the restriction lists of the configuration.
type Engine struct {
	site   *config.Site
	pol    config.PolicyConfig
	blc    config.DNSBLConfig
	res    Resolver
	bl     *dnsbl.Checker
	now    func() time.Time
	log    *slog.Logger
	events event.Sink
	source string
	lists  map[Stage][]*rule
	stages map[Stage]*stageMetrics // the metrics of each stage with a list
	access map[string]*accessTable
	m      *engineMetrics
	ownBL  bool // bl was made by New: Run runs its health checks
}

// rule is one compiled entry of a restriction list.
type rule struct {
	name string // restriction name, e.g. reject_rbl_client
	text string // as configured, for logs
	warn bool   // warn_if_reject
	zone *dnsbl.Zone
	tbl  *accessTable
	// decisions{stage, action, rule} of the verdicts it decides
	decided counterCache
}

// New compiles the restriction lists of the [policy] section. site is the
// server's canonical identity (config.Site: local and relay domains,
// mynetworks, own addresses); bl is the [dnsbl] section. It sends no DNS
// query and starts no goroutine (see Run).
func New(site *config.Site, pol config.PolicyConfig, bl config.DNSBLConfig, deps Deps) (*Engine, error) {
	if site == nil {
		return nil, fmt.Errorf("policy: no site (config.Finish builds it)")
	}
	e := &Engine{site: site, pol: pol, blc: bl, res: deps.Resolver, bl: deps.DNSBL, now: deps.Clock, log: deps.Logger,
		events: deps.Events, source: deps.Source, lists: map[Stage][]*rule{}, stages: map[Stage]*stageMetrics{}, access: map[string]*accessTable{}}
	if e.now == nil {
		e.now = time.Now
	}
	if e.log == nil {
		e.log = slog.Default()
	}
	if e.events == nil {
		e.events = event.Discard{}
	}
	if e.source == "" {
		e.source = "policy"
	}
	var err error
	for _, t := range pol.Access {
		at, err := loadAccessTable(t)
		if err != nil {
			return nil, err
		}
		e.access[t.Name] = at
	}
	p := pol
	var extra []*dnsbl.Zone
	var extraDomain []*dnsbl.Zone
	needDNS := len(bl.Zones)+len(bl.DomainZones) > 0
	for stage, list := range map[Stage][]string{
		StageConnect: p.ConnectRestrictions, StageHelo: p.HeloRestrictions, StageMail: p.SenderRestrictions,
		StageRcpt: p.RecipientRestrictions, StageData: p.DataRestrictions, StageEndOfData: p.EndOfDataRestrictions,
	} {
		for _, s := range list {
			warn, name, args, err := config.ParseRestriction(s)
			if err != nil {
				return nil, fmt.Errorf("policy: %s restrictions: %w", stage, err)
			}
			r := &rule{name: name, text: s, warn: warn}
			switch name {
			case "reject_rbl_client", "reject_rhsbl_sender", "reject_rhsbl_helo", "reject_rhsbl_client":
				if r.zone, err = zonespec.Parse(args[0]); err != nil {
					return nil, fmt.Errorf("policy: %q: %w", s, err)
				}
				if name == "reject_rbl_client" {
					extra = append(extra, r.zone)
				} else {
					extraDomain = append(extraDomain, r.zone)
				}
			case "check_client_access":
				if r.tbl = e.access[args[0]]; r.tbl == nil {
					return nil, fmt.Errorf("policy: %q: no access table %q", s, args[0])
				}
			}
			if dnsRules[name] {
				needDNS = true
			}
			e.lists[stage] = append(e.lists[stage], r)
		}
	}
	if needDNS && e.res == nil {
		r, err := dnsutil.New(bl.Resolvers, bl.Timeout.D())
		if err != nil {
			return nil, fmt.Errorf("policy: resolver: %w", err)
		}
		e.res = r
		WarnPublicResolvers(e.log, r.Servers())
	}
	if e.bl == nil && needDNS {
		q, ok := e.res.(dnsbl.Querier)
		if !ok {
			return nil, fmt.Errorf("policy: resolver %T cannot query DNS lists (no LookupA4)", e.res)
		}
		e.bl, err = dnsbl.New(q, dnsbl.Options{
			Zones: bl.Zones, DomainZones: bl.DomainZones, Timeout: bl.Timeout.D(),
			MinTTL: bl.CacheMinTTL.D(), MaxTTL: bl.CacheMaxTTL.D(), CacheSize: bl.CacheSize,
			HealthInterval: bl.HealthInterval.D(), Logger: e.log, Clock: e.now, Registerer: deps.Registerer,
		})
		if err != nil {
			return nil, fmt.Errorf("policy: %w", err)
		}
		e.bl.Watch(extra, extraDomain)
		e.ownBL = true
	} else if e.bl != nil {
		e.bl.Watch(extra, extraDomain)
	}
	e.m = newEngineMetrics(deps.Registerer)
	for stage := range e.lists {
		e.stages[stage] = &stageMetrics{latency: e.m.latency.WithLabelValues(string(stage))}
	}
	return e, nil
}

// dnsRules are the checks that send DNS queries.
var dnsRules = map[string]bool{
	"reject_rbl_client": true, "reject_rhsbl_sender": true, "reject_rhsbl_helo": true, "reject_rhsbl_client": true,
	"reject_unknown_client_hostname": true, "reject_unknown_reverse_client_hostname": true,
	"reject_unknown_sender_domain": true, "check_spf": true, "dnsbl_score": true, "check_dmarc": true,
}

// WarnPublicResolvers logs a warning for each well-known public resolver
// among servers: large lists refuse their queries.
func WarnPublicResolvers(log *slog.Logger, servers []string) {
	for _, s := range servers {
		if who, ok := dnsutil.PublicResolver(s); ok {
			log.Warn("DNS resolver is a public one: large DNS lists (Spamhaus, Barracuda, URIBL) refuse its queries; use a local caching resolver such as unbound",
				"resolver", s, "operator", who)
		}
	}
}

// DNSBL returns the checker the engine uses (nil if no DNS is configured).
func (e *Engine) DNSBL() *dnsbl.Checker { return e.bl }

// Run checks the health of the DNS lists of the checker New made (none
// when Deps.DNSBL was given: its owner runs them) now and every
// [dnsbl] health_interval, until ctx is done. New starts no goroutine: the
// caller runs Run in one it owns and waits for.
func (e *Engine) Run(ctx context.Context) {
	if e.ownBL {
		e.bl.RunHealth(ctx)
	}
}

// stageOf maps Postfix protocol states to the engine's stages.
func stageOf(s Stage) Stage {
	switch strings.ToUpper(string(s)) {
	case "HELO", "EHLO":
		return StageHelo
	case "END-OF-DATA", "END-OF-MESSAGE":
		return StageEndOfData
	}
	return Stage(strings.ToUpper(string(s)))
}

// Check evaluates the restriction list of req.Stage. The first check with
// an opinion decides; warn_if_reject checks only log; a temporary failure
// marked IfPermit (defer_if_permit) is returned only if nothing later
// rejects. Every verdict names its rule in Rule and in Text.
func (e *Engine) Check(ctx context.Context, req *Request) Verdict {
	start := time.Now()
	stage := stageOf(req.Stage)
	// One deadline for every lookup of this list, made into a context
	// (a timer) only if a check needs one: answers from the caches do not.
	dctx := &deadlineCtx{Context: ctx, at: start.Add(e.pol.DNSTimeout.D())}
	defer dctx.stop()
	ctx = dctx
	var deferred *Verdict
	var deferredBy, by *rule
	var prepends []string
	var authRes, authID string
	final := Verdict{Action: Dunno}
	for _, r := range e.lists[stage] {
		v := e.eval(ctx, r, req)
		if v.Prepend != "" {
			prepends = append(prepends, v.Prepend)
		}
		if v.AuthResults != "" {
			authRes, authID = v.AuthResults, v.AuthservID
		}
		if v.Action == Dunno {
			continue
		}
		v.Rule = r.name
		if v.Action == Warn {
			e.logVerdict(req, stage, v, "warn")
			continue
		}
		if r.warn && (v.Action == Reject || v.Action == Defer) {
			e.logVerdict(req, stage, v, "warn")
			e.m.decisions.WithLabelValues(string(stage), "warn", r.name).Inc()
			prepends = append(prepends, fmt.Sprintf("X-Relayguard-Warn: %s would %s: %d %s", r.name, strings.ToLower(v.Action.String()), v.Code, v.Text))
			continue
		}
		if v.Action == Defer && v.IfPermit {
			if deferred == nil {
				d := v
				deferred, deferredBy = &d, r
			}
			continue
		}
		if v.Action == Permit && deferred != nil {
			break
		}
		final, by = v, r
		break
	}
	if deferred != nil && final.Action != Reject && final.Action != Defer {
		final, by = *deferred, deferredBy
	}
	if final.Action == Dunno || final.Action == Permit {
		final.Prepend = joinPrepends(prepends)
		final.AuthResults, final.AuthservID = authRes, authID
	}
	if final.Rule != "" && final.Text != "" && final.Action != Permit {
		final.Text += " (rule " + final.Rule + ")"
	}
	sm := e.stages[stage]
	switch {
	case sm == nil: // a stage without a list
		e.m.decisions.WithLabelValues(string(stage), final.Action.String(), ruleLabel(final.Rule)).Inc()
		e.m.latency.WithLabelValues(string(stage)).Observe(time.Since(start).Seconds())
	case by == nil:
		sm.none.get(e.m.decisions, stage, final.Action, ruleLabel("")).Inc()
		sm.latency.Observe(time.Since(start).Seconds())
	default:
		by.decided.get(e.m.decisions, stage, final.Action, by.name).Inc()
		sm.latency.Observe(time.Since(start).Seconds())
	}
	if final.Action != Dunno {
		e.logVerdict(req, stage, final, "verdict")
		e.publish(ctx, req, final)
	}
	return final
}

func ruleLabel(r string) string {
	if r == "" {
		return "none"
	}
	return r
}

// joinPrepends merges several headers into one, since a Postfix policy
// reply carries a single PREPEND action.
func joinPrepends(p []string) string {
	switch len(p) {
	case 0:
		return ""
	case 1:
		return p[0]
	}
	var parts []string
	for _, h := range p {
		name, body, _ := strings.Cut(h, ":")
		parts = append(parts, strings.ToLower(name)+"="+strings.TrimSpace(body))
	}
	return "X-Relayguard: " + strings.Join(parts, "; ")
}

// logVerdict writes the decision through internal/maillog; how "warn"
// marks a warn_if_reject rule that would have refused, or a WARN action.
func (e *Engine) logVerdict(req *Request, stage Stage, v Verdict, how string) {
	if !e.log.Enabled(context.Background(), maillog.VerdictLevel(v.Action.String(), how == "warn")) {
		return // nothing to gather (a verdict per request in the policy service)
	}
	code := ""
	if v.Code != 0 {
		code = strings.TrimSpace(strconv.Itoa(v.Code) + " " + v.Enhanced)
	}
	maillog.New(e.log).PolicyVerdict(context.Background(), maillog.Verdict{
		Rule: v.Rule, Action: v.Action.String(), Code: code, Text: v.Text, Stage: string(stage),
		Client: req.ClientAddress, Helo: req.Helo, From: req.Sender, Rcpt: req.Recipient,
		User: req.SASLUsername, QueueID: req.QueueID,
	}, how == "warn")
}

func (e *Engine) publish(ctx context.Context, req *Request, v Verdict) {
	// Only rejections are events: a deferral (often our own DNS failing)
	// says nothing bad about the client and must not feed bans.
	if v.Action != Reject {
		return
	}
	kind := event.Reject
	detail := req.Recipient
	switch v.Rule {
	case "reject_unauth_destination":
		kind = event.RelayDenied
	case "reject_rbl_client", "dnsbl_score":
		kind = event.DNSBLReject
		detail = v.Text
	}
	e.events.Publish(ctx, event.Event{Time: e.now(), Kind: kind, Source: e.source, IP: req.ClientAddress,
		User: req.SASLUsername, Rule: v.Rule, Detail: detail, Service: req.Listener})
}
