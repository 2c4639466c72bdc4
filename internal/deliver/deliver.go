// Package deliver moves spooled messages to their next hop: outbound SMTP
// (MX lookup per RFC 5321 §5.1, null MX per RFC 7505, STARTTLS policy,
// smarthost with AUTH), LMTP (RFC 2033) and Maildir. The queue scheduler
// calls Deliverer.Deliver with the recipients of one message that share a
// domain, and gets one Result per recipient.
package deliver

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/relayguard/relayguard/internal/address"
	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/mtasts"
	"github.com/relayguard/relayguard/internal/queue"
)

// Request is one delivery attempt; Result the outcome for one recipient.
// Both are the scheduler's (queue.Deliverer is the contract Deliverer
// implements).
type (
	Request = queue.Request
	Result  = queue.Result
)

func resultsFrom(rcpts []string, host string, replies []Reply, err error) []Result {
	out := make([]Result, len(rcpts))
	for i, rc := range rcpts {
		r := replies[i]
		res := Result{Rcpt: rc, Code: r.Code, Enhanced: r.Enhanced, Text: r.Text, Host: host}
		switch {
		case r.Code == 0:
			res.Temp = true
			if err != nil {
				res.Text = err.Error()
			} else {
				res.Text = "no reply"
			}
		case r.Code/100 == 2:
			res.OK = true
		case r.Code/100 == 5:
		default:
			res.Temp = true
		}
		out[i] = res
	}
	return out
}

// lastHop marks results of a delivery into mailboxes (Maildir, LMTP): the
// last hop, where a SUCCESS notice says "delivered" (RFC 3464 §2.3.3).
func lastHop(rs []Result) []Result {
	for i := range rs {
		rs[i].Final = true
	}
	return rs
}

// all gives every recipient the same outcome.
func all(rcpts []string, tmpl Result) []Result {
	out := make([]Result, len(rcpts))
	for i, r := range rcpts {
		out[i] = tmpl
		out[i].Rcpt = r
	}
	return out
}

func tempAll(rcpts []string, host, enhanced, format string, args ...any) []Result {
	return all(rcpts, Result{Temp: true, Enhanced: enhanced, Text: fmt.Sprintf(format, args...), Host: host})
}

func permAll(rcpts []string, host string, code int, enhanced, format string, args ...any) []Result {
	return all(rcpts, Result{Code: code, Enhanced: enhanced, Text: fmt.Sprintf(format, args...), Host: host})
}

// route is one transport table entry.
type route struct {
	kind string // smtp, lmtp, maildir, discard
	addr string // host:port, unix:/path or /path
}

// Deliverer routes a delivery by the transport table to SMTP (MX,
// smarthost or a fixed host), LMTP or Maildir.
type Deliverer struct {
	SMTP   *SMTP
	routes map[string]route
	local  map[string]bool
	// localRoute delivers local domains without a transports entry
	// (delivery.local_transport); kind "" when there is none.
	localRoute route
	log        *slog.Logger
}

// Options are knobs that the configuration file does not set (tests).
type Options struct {
	// LocalDomains are this server's own domains in canonical form
	// (config.Site.LocalDomains). Mail for them goes to the transport
	// table entry or delivery.local_transport: looking up their MX would
	// send it back to this server.
	LocalDomains []string
	Resolver     *Resolver      // nil: from cfg.DNSServer
	MXPort       int            // port of MX hosts; 0 = 25
	RootCAs      *x509.CertPool // for tls_policy verify, MTA-STS; nil = system roots
	// DataDir holds the MTA-STS policy cache (DATA_DIR/mta-sts); "" keeps
	// policies in memory only.
	DataDir string
	// STSPort is the port MTA-STS policies are fetched from; 0 = 443.
	STSPort int
	// Reporter records TLS results for reports (RFC 8460); nil: none.
	Reporter TLSReporter
}

// New builds a Deliverer from the [delivery] section. hostname is the EHLO
// name when helo_name is empty.
func New(cfg config.DeliveryConfig, hostname string, log *slog.Logger, opt Options) (*Deliverer, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	res := opt.Resolver
	if res == nil {
		var err error
		if res, err = NewResolver(cfg.DNSServer, 10*time.Second); err != nil {
			return nil, err
		}
	}
	helo := cfg.HeloName
	if helo == "" {
		helo = hostname
	}
	s := &SMTP{
		Resolver:       res,
		Port:           opt.MXPort,
		HeloName:       helo,
		ConnectTimeout: cfg.ConnectTimeout.D(),
		CommandTimeout: cfg.CommandTimeout.D(),
		CacheTime:      cfg.ConnectionCacheTime.D(),
		DefaultTLS:     cfg.TLSPolicy,
		TLSPolicies:    cfg.TLSPolicies,
		RootCAs:        opt.RootCAs,
		Smarthost:      cfg.Smarthost,
		SmarthostTLS:   cfg.SmarthostImplicitTLS,
		SmarthostUser:  cfg.SmarthostUser,
		DANE:           cfg.DANE,
		Chunking:       cfg.Chunking,
		Reporter:       opt.Reporter,
		Log:            log,
	}
	if cfg.MTASTS {
		dial := res.DialContext
		if opt.STSPort != 0 {
			dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
				host, _, _ := net.SplitHostPort(addr)
				return res.DialContext(ctx, network, net.JoinHostPort(host, strconv.Itoa(opt.STSPort)))
			}
		}
		dir := ""
		if opt.DataDir != "" {
			dir = filepath.Join(opt.DataDir, "mta-sts")
		}
		s.STS = &mtasts.Fetcher{Dir: dir, TXT: res.LookupTXT, Client: mtasts.NewClient(opt.RootCAs, dial)}
	}
	if cfg.SmarthostUser != "" {
		b, err := os.ReadFile(cfg.SmarthostPasswordFile)
		if err != nil {
			return nil, fmt.Errorf("deliver: delivery.smarthost_password_file: %w", err)
		}
		s.SmarthostPass = strings.TrimRight(strings.SplitN(string(b), "\n", 2)[0], "\r")
	}
	d := &Deliverer{SMTP: s, routes: map[string]route{}, local: map[string]bool{}, log: log}
	for _, l := range opt.LocalDomains {
		d.local[l] = true
	}
	for dom, t := range cfg.Transports {
		r, err := parseRoute(t)
		if err != nil {
			return nil, fmt.Errorf("deliver: delivery.transports[%q] %q: %w", dom, t, err)
		}
		d.routes[dom] = r
	}
	if cfg.LocalTransport != "" {
		var err error
		if d.localRoute, err = parseRoute(cfg.LocalTransport); err != nil {
			return nil, fmt.Errorf("deliver: delivery.local_transport %q: %w", cfg.LocalTransport, err)
		}
	}
	return d, nil
}

func parseRoute(t string) (route, error) {
	if err := config.ValidateTransport(t); err != nil {
		return route{}, err
	}
	kind, rest, _ := strings.Cut(t, ":")
	return route{kind: kind, addr: rest}, nil
}

// Close drops cached connections.
func (d *Deliverer) Close() { d.SMTP.Close() }

// canonical puts a recipient domain in the canonical form of the
// configuration's domains (internal/address; recipients are spooled in it
// already). An IP literal or an invalid name is only lower-cased.
func canonical(domain string) string {
	if c, err := address.CanonicalDomain(domain); err == nil {
		return c
	}
	return strings.ToLower(domain)
}

// lookup finds the transport for a canonical domain: the exact domain,
// then ".parent" entries from the closest parent up, then, for a local
// domain, local_transport, then "*".
func (d *Deliverer) lookup(domain string) (route, bool) {
	if r, ok := d.routes[domain]; ok {
		return r, true
	}
	for p := domain; ; {
		i := strings.IndexByte(p, '.')
		if i < 0 {
			break
		}
		p = p[i+1:]
		if r, ok := d.routes["."+p]; ok {
			return r, true
		}
	}
	if d.localRoute.kind != "" && (domain == "" || d.local[domain]) {
		return d.localRoute, true
	}
	r, ok := d.routes["*"]
	return r, ok
}

// Destination names where mail for domain goes, for per-destination
// concurrency limits: the transport table entry, the smarthost, or the
// domain itself (its MX hosts).
func (d *Deliverer) Destination(domain string) string {
	domain = canonical(domain)
	if r, ok := d.lookup(domain); ok {
		return r.kind + ":" + r.addr
	}
	if d.SMTP.Smarthost != "" && domain != "" && !d.local[domain] {
		return "smtp:" + d.SMTP.Smarthost
	}
	return domain
}

// Deliver delivers req to the recipients of one domain and returns one
// Result per recipient, in order.
func (d *Deliverer) Deliver(ctx context.Context, domain string, req *Request) []Result {
	domain = canonical(domain)
	r, ok := d.lookup(domain)
	if !ok {
		if domain == "" || d.local[domain] {
			// A bare <postmaster> or a local domain without a transport
			// (local_transport is empty): keep the mail queued (visible
			// in `relayguard queue list`) rather than send it to our own
			// MX and loop.
			d.log.Error("deliver: no transport for a local domain; set delivery.local_transport or [delivery.transports]", "domain", domain, "id", req.ID)
			return tempAll(req.Rcpts, "", "4.3.5", "no transport for local domain %q: set delivery.local_transport or [delivery.transports]", domain)
		}
		if d.SMTP.Smarthost != "" {
			return d.SMTP.DeliverSmarthost(ctx, req)
		}
		return d.SMTP.DeliverMX(ctx, domain, req)
	}
	switch r.kind {
	case "smtp":
		return d.SMTP.DeliverHost(ctx, domain, r.addr, req)
	case "lmtp":
		return lastHop(DeliverLMTP(ctx, r.addr, d.SMTP.HeloName, d.SMTP.CommandTimeout, req))
	case "maildir":
		return lastHop(DeliverMaildir(req, r.addr))
	case "discard":
		// Postfix's discard(8): report delivery and drop the message.
		reason := r.addr
		if reason == "" {
			reason = "discarded"
		}
		d.log.Info("deliver: discarded", "id", req.ID, "domain", domain, "reason", reason)
		return all(req.Rcpts, Result{OK: true, Code: 250, Enhanced: "2.0.0", Text: reason, Host: "discard", Final: true})
	}
	return tempAll(req.Rcpts, "", "4.3.5", "unknown transport %q for %s", r.kind, domain)
}
