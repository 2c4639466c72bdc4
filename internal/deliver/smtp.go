package deliver

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/mtasts"
)

// maxAddrs is how many MX addresses one attempt tries (Postfix
// smtp_mx_address_limit).
const maxAddrs = 5

// SMTP delivers over SMTP: to a domain's mail exchangers, to a fixed host
// from the transport table, or to a smarthost.
type SMTP struct {
	Resolver       *Resolver
	Port           int // port of MX hosts, 0 = 25
	HeloName       string
	ConnectTimeout time.Duration
	CommandTimeout time.Duration
	CacheTime      time.Duration // idle connection reuse; 0 disables
	DefaultTLS     string
	TLSPolicies    map[string]string
	RootCAs        *x509.CertPool
	// STS, when set, applies the recipient domain's MTA-STS policy (RFC
	// 8461); DANE applies DNSSEC-validated TLSA records (RFC 7672);
	// Reporter records the outcomes for TLS reports (RFC 8460).
	STS      *mtasts.Fetcher
	DANE     bool
	Reporter TLSReporter
	// Chunking sends messages with BDAT to peers that offer CHUNKING
	// (RFC 3030).
	Chunking bool

	Smarthost     string
	SmarthostTLS  bool // implicit TLS
	SmarthostUser string
	SmarthostPass string

	Log *slog.Logger

	mu     sync.Mutex
	idle   map[string][]idleConn
	closed bool
	stop   chan struct{}  // closed by Close: ends the janitor
	wg     sync.WaitGroup // the janitor and the QUITs in flight, waited for by Close
}

type idleConn struct {
	c     *client
	since time.Time
}

// errLoop is a peer that is this server itself.
var errLoop = errors.New("mail loops back to myself")

// target is one peer to try.
type target struct {
	addr     string // ip:port or host:port
	name     string // host name for certificate verification and logs
	policy   string
	implicit bool
	user     string
	pass     string
	dane     []*dns.TLSA    // policyDANE: the usable TLSA records
	refNames []string       // policyDANE: names a DANE-TA chain may be for; nil: name
	testing  *mtasts.Policy // an MTA-STS policy in testing mode
	report   *TLSResult     // what a new session records (TLS-RPT); nil: nothing
}

func (t target) key() string {
	// A cached connection is reused only under the same security: the
	// TLSA records and the testing policy are part of the key.
	var sec strings.Builder
	for _, r := range t.dane {
		sec.WriteString(r.String())
	}
	if t.testing != nil {
		sec.WriteString("sts-testing")
	}
	return strings.Join([]string{t.addr, t.name, t.policy, strconv.FormatBool(t.implicit), t.user, sec.String()}, "|")
}

func (s *SMTP) policyFor(domain string) string {
	if p, ok := s.TLSPolicies[strings.ToLower(domain)]; ok {
		return p
	}
	if s.DefaultTLS == "" {
		return config.TLSMay
	}
	return s.DefaultTLS
}

// DeliverMX delivers to the mail exchangers of domain (RFC 5321 §5.1): MX
// hosts in preference order, each host's addresses in turn, the domain's own
// A/AAAA when it has no MX, and an immediate permanent failure for a null
// MX (RFC 7505).
func (s *SMTP) DeliverMX(ctx context.Context, domain string, req *Request) []Result {
	if strings.HasPrefix(domain, "[") {
		return s.deliverLiteral(ctx, domain, req)
	}
	hosts, mxSecure, err := s.Resolver.MXSecure(ctx, domain)
	if err != nil {
		return dnsFailure(req.Rcpts, domain, err)
	}
	port := s.Port
	if port == 0 {
		port = 25
	}
	var sts mtasts.Result
	if _, explicit := s.TLSPolicies[strings.ToLower(domain)]; !explicit {
		sts = s.stsPolicy(ctx, domain)
		if sts.FetchFailed {
			// RFC 8461 §5: a policy that cannot be fetched (and none is
			// cached) is no policy; it is reported (RFC 8460 §4.3.1.1).
			s.Log.Warn("deliver: MTA-STS policy announced but not fetched; delivering without it", "domain", domain, "err", sts.Err)
			s.report(TLSResult{Domain: domain, Type: "sts", Failure: "sts-policy-fetch-error", Reason: sts.Err.Error()})
		}
	}
	var last []Result
	tried := 0
hosts:
	for _, h := range hosts {
		addrs, err := s.Resolver.Addrs(ctx, h.Name)
		if err != nil {
			var de *DNSError
			if len(hosts) == 1 && h.Name == domain && errors.As(err, &de) && de.NotFound {
				// Implicit MX without an address: the domain has no mail host.
				return permAll(req.Rcpts, "", 550, "5.1.2", "domain %s has no MX and no address records", domain)
			}
			last = tempAll(req.Rcpts, h.Name, "4.4.3", "%v", err)
			continue
		}
		for _, a := range addrs {
			if tried >= maxAddrs {
				break
			}
			tried++
			sec, skip := s.hostSecurity(ctx, domain, h, mxSecure, port, sts)
			if skip != nil {
				s.Log.Warn("deliver: mail exchanger not used", "id", req.ID, "domain", domain, "mx", h.Name, "reason", skip)
				last = tempAll(req.Rcpts, h.Name, "4.7.5", "%v", skip)
				continue hosts
			}
			t := target{addr: netip.AddrPortFrom(a, uint16(port)).String(), name: h.Name, policy: sec.policy,
				dane: sec.dane, testing: sec.testing, report: sec.report}
			res, next := s.attempt(ctx, t, req)
			if next == loopsBack {
				// RFC 5321 §5.1: this host is one of the domain's MX
				// hosts; those of its preference and worse are not
				// tried. As the best MX we have nowhere to send the
				// mail (a loop, permanent); as a backup MX the better
				// ones were unreachable, so the mail waits for them.
				if h.Pref == hosts[0].Pref || last == nil {
					return res
				}
				s.Log.Info("deliver: this host is a backup MX; better MX hosts unreachable", "id", req.ID, "domain", domain, "pref", h.Pref)
				break hosts
			}
			if next == final {
				return res
			}
			last = res
		}
	}
	if last == nil {
		return tempAll(req.Rcpts, "", "4.4.4", "no usable mail exchanger for %s", domain)
	}
	return last
}

// deliverLiteral delivers to an address literal ("[192.0.2.1]",
// "[IPv6:2001:db8::1]"): RFC 5321 §5.1 says the literal is the address to
// connect to, with no DNS lookup.
func (s *SMTP) deliverLiteral(ctx context.Context, domain string, req *Request) []Result {
	inner := strings.TrimSuffix(strings.TrimPrefix(domain, "["), "]")
	v6, isV6 := strings.CutPrefix(inner, "IPv6:") // RFC 5321 §4.1.3
	a, err := netip.ParseAddr(v6)
	if err != nil || !strings.HasSuffix(domain, "]") || a.Zone() != "" || isV6 != a.Is6() || a.Is4In6() {
		return permAll(req.Rcpts, "", 553, "5.1.2", "bad address literal %s", domain)
	}
	port := s.Port
	if port == 0 {
		port = 25
	}
	t := target{addr: netip.AddrPortFrom(a, uint16(port)).String(), name: a.String(), policy: s.policyFor(domain)}
	res, _ := s.attempt(ctx, t, req)
	return res
}

func dnsFailure(rcpts []string, domain string, err error) []Result {
	if errors.Is(err, ErrNullMX) {
		// RFC 7505 §4.1: fail immediately, 556 5.1.10.
		return permAll(rcpts, "", 556, "5.1.10", "domain %s accepts no mail (null MX)", domain)
	}
	var de *DNSError
	if errors.As(err, &de) && de.NotFound {
		return permAll(rcpts, "", 550, "5.1.2", "domain %s not found", domain)
	}
	return tempAll(rcpts, "", "4.4.3", "MX lookup for %s: %v", domain, err)
}

// DeliverHost delivers to a fixed host:port (transport table smtp:host:port),
// under DANE when the host's records say so (nextHopDANE) and no
// tls_policies entry names the domain.
func (s *SMTP) DeliverHost(ctx context.Context, domain, hostport string, req *Request) []Result {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return tempAll(req.Rcpts, hostport, "4.3.5", "bad transport address %q: %v", hostport, err)
	}
	addrs, secure, cname, err := s.Resolver.AddrsSecure(ctx, host)
	if err != nil {
		return tempAll(req.Rcpts, host, "4.4.3", "%v", err)
	}
	if _, explicit := s.TLSPolicies[strings.ToLower(domain)]; explicit {
		secure = false // the operator's word overrides DANE, as for MX hosts
	}
	tmpl, err := s.nextHopDANE(ctx, host, cname, portNumber(port), secure, s.policyFor(domain))
	if err != nil {
		s.Log.Warn("deliver: transport host not used", "id", req.ID, "domain", domain, "host", host, "reason", err)
		return tempAll(req.Rcpts, host, "4.7.5", "%v", err)
	}
	return s.tryAddrs(ctx, tmpl, addrs, port, req)
}

// tryAddrs tries the addresses of one host in turn (at most maxAddrs).
func (s *SMTP) tryAddrs(ctx context.Context, tmpl target, addrs []netip.Addr, port string, req *Request) []Result {
	var last []Result
	for i, a := range addrs {
		if i >= maxAddrs {
			break
		}
		t := tmpl
		t.addr = net.JoinHostPort(a.String(), port)
		res, next := s.attempt(ctx, t, req)
		if next != tryNext {
			return res
		}
		last = res
	}
	return last
}

func portNumber(port string) int {
	n, _ := strconv.Atoi(port)
	return n
}

// DeliverSmarthost relays through the configured smarthost. With AUTH
// configured, TLS is required: credentials never go out in clear text.
// With DANE on and a smarthost name whose address and TLSA records are
// DNSSEC-validated, the smarthost is authenticated by its TLSA records
// (nextHopDANE); with DANE on, the smarthost's name is resolved through
// dns_server (the answer DANE judged is the one dialled), and dialled as
// configured (the system resolver, /etc/hosts) only when dns_server does
// not know it.
func (s *SMTP) DeliverSmarthost(ctx context.Context, req *Request) []Result {
	host, port, _ := net.SplitHostPort(s.Smarthost)
	pol := s.DefaultTLS
	if s.SmarthostUser != "" && (pol == config.TLSNone || pol == config.TLSMay) {
		pol = config.TLSEncrypt
	}
	t := target{addr: s.Smarthost, name: host, policy: pol}
	if _, err := netip.ParseAddr(host); err != nil && s.DANE {
		addrs, secure, cname, err := s.Resolver.AddrsSecure(ctx, host)
		var de *DNSError
		switch {
		case errors.As(err, &de) && de.NotFound:
			// Not in DNS (a name from /etc/hosts): no DANE, dialled by name.
		case err != nil:
			return tempAll(req.Rcpts, host, "4.4.3", "smarthost %v", err)
		default:
			dt, err := s.nextHopDANE(ctx, host, cname, portNumber(port), secure, pol)
			if err != nil {
				s.Log.Warn("deliver: smarthost not used", "id", req.ID, "host", host, "reason", err)
				return tempAll(req.Rcpts, host, "4.7.5", "%v", err)
			}
			dt.implicit, dt.user, dt.pass = s.SmarthostTLS, s.SmarthostUser, s.SmarthostPass
			return s.tryAddrs(ctx, dt, addrs, port, req)
		}
	}
	t.implicit, t.user, t.pass = s.SmarthostTLS, s.SmarthostUser, s.SmarthostPass
	res, _ := s.attempt(ctx, t, req)
	return res
}

// outcome says what an attempt means for the domain's other peers.
type outcome int

const (
	final     outcome = iota // the results stand
	tryNext                  // the peer could not be used at all (connection, greeting, TLS): try the next address
	loopsBack                // the peer is this server itself (RFC 5321 §5.1)
)

// attempt delivers req to one peer.
func (s *SMTP) attempt(ctx context.Context, t target, req *Request) ([]Result, outcome) {
	for try := 0; try < 2; try++ {
		c, reused, err := s.session(ctx, t)
		if err != nil {
			s.Log.Info("deliver: peer unusable", "id", req.ID, "peer", t.addr, "name", t.name, "err", err)
			if errors.Is(err, errLoop) {
				return permAll(req.Rcpts, t.name, 554, "5.4.6", "mail for %s loops back to myself (%s)", t.name, t.addr), loopsBack
			}
			var re *ReplyError
			if errors.As(err, &re) && re.Stage == "AUTH" {
				// Wrong relay credentials are the operator's to fix: keep
				// the mail queued (as Postfix does), do not bounce it.
				return all(req.Rcpts, Result{Temp: true, Code: re.Reply.Code, Enhanced: re.Reply.Enhanced,
					Text: "smarthost refused AUTH: " + re.Reply.Text, Host: t.name}), final
			}
			return tempAll(req.Rcpts, t.name, "4.4.1", "%s: %v", t.addr, err), tryNext
		}
		if r := checkCaps(c, req, t.name); r != nil {
			s.release(t, c, true)
			return r, final
		}
		body, err := req.Open()
		if err != nil {
			s.release(t, c, true)
			return tempAll(req.Rcpts, t.name, "4.3.0", "opening message %s: %v", req.ID, err), final
		}
		replies, err := c.send(ctx, req.From, req.Rcpts, txOptionsOf(req, s.Chunking), body)
		body.Close()
		if err != nil {
			c.close()
			if reused && noReplies(replies) {
				continue // the cached connection had gone stale: dial afresh
			}
			if noReplies(replies) {
				return resultsFrom(req.Rcpts, t.name, replies, err), tryNext
			}
			res := resultsFrom(req.Rcpts, t.name, replies, err)
			overLimitTemp(replies, res)
			return res, final
		}
		res := resultsFrom(req.Rcpts, t.name, replies, nil)
		for i := range res {
			res[i].PeerDSN = c.has("DSN")
		}
		// Recipients over the peer's per-transaction limit go in new
		// transactions now (RFC 5321 §4.5.3.1.10). Whatever happens to
		// them, the outcome is final: recipients were delivered here.
		if c = s.sendRest(ctx, t, c, req, replies, res); c != nil {
			s.release(t, c, !c.clean)
		}
		return res, final
	}
	return tempAll(req.Rcpts, t.name, "4.4.2", "%s: connection lost", t.addr), tryNext
}

func noReplies(rs []Reply) bool {
	for _, r := range rs {
		if r.Code != 0 {
			return false
		}
	}
	return true
}

// checkCaps refuses a message the peer cannot take, before MAIL.
func checkCaps(c *client, req *Request, host string) []Result {
	if v, ok := c.ext["SIZE"]; ok && v != "" {
		if max, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil && max > 0 && req.Size > max {
			// RFC 1870 §6.
			return permAll(req.Rcpts, host, 552, "5.3.4", "message size %d exceeds the peer's limit %d", req.Size, max)
		}
	}
	if req.SMTPUTF8 && !c.has("SMTPUTF8") && needsSMTPUTF8(req) {
		// RFC 6531 §3.2: an SMTPUTF8 message cannot go to a peer without
		// it. One whose addresses and header are all ASCII (the client
		// asked for SMTPUTF8 without needing it) goes as a plain message,
		// as Postfix does.
		return permAll(req.Rcpts, host, 553, "5.6.7", "peer does not support SMTPUTF8")
	}
	if req.Body8Bit && !c.has("8BITMIME") {
		// RFC 6152 §3: 8-bit data may not go to a peer without 8BITMIME
		// and relayguard does not downgrade MIME.
		return permAll(req.Rcpts, host, 554, "5.6.3", "peer does not support 8BITMIME and the message is 8-bit")
	}
	return nil
}

// needsSMTPUTF8 reports whether the envelope or the message header of req
// has non-ASCII text (RFC 6532 header fields), i.e. cannot be sent without
// SMTPUTF8. An unreadable message counts as needing it.
func needsSMTPUTF8(req *Request) bool {
	if !isASCII(req.From) {
		return true
	}
	for _, r := range req.Rcpts {
		if !isASCII(r) {
			return true
		}
	}
	rc, err := req.Open()
	if err != nil {
		return true
	}
	defer rc.Close()
	br := bufio.NewReader(rc)
	for {
		line, err := br.ReadSlice('\n')
		if len(bytes.TrimRight(line, "\r\n")) == 0 && err != bufio.ErrBufferFull {
			return false // end of the header (or of the message)
		}
		if !isASCII(string(line)) {
			return true
		}
		if err != nil && err != bufio.ErrBufferFull {
			return false
		}
	}
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// session returns a ready connection to t, from the cache or new.
func (s *SMTP) session(ctx context.Context, t target) (*client, bool, error) {
	if c := s.getIdle(t.key()); c != nil {
		return c, true, nil
	}
	c, err := s.dial(ctx, t, t.policy)
	if t.report != nil {
		s.reportSession(t, c, err)
	}
	if err != nil {
		var te *TLSError
		if t.policy == config.TLSMay && errors.As(err, &te) {
			// Opportunistic TLS (RFC 7435): a failed handshake falls back
			// to a clear-text session on a new connection.
			s.Log.Info("deliver: STARTTLS failed, retrying without TLS", "peer", t.addr, "err", err)
			c, err = s.dial(ctx, t, config.TLSNone)
		}
	}
	return c, false, err
}

func (s *SMTP) dial(ctx context.Context, t target, policy string) (*client, error) {
	d := net.Dialer{Timeout: s.ConnectTimeout}
	conn, err := d.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		return nil, err
	}
	var verifyErr error
	cfg := s.tlsConfig(t, policy, func(err error) { verifyErr = err })
	if t.implicit {
		tc := tls.Client(conn, cfg)
		tc.SetDeadline(time.Now().Add(s.CommandTimeout))
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, &TLSError{Err: err}
		}
		conn = tc
	}
	c := newClient(conn, false, s.CommandTimeout)
	c.tls = t.implicit
	defer func() { c.verifyErr = verifyErr }()
	raw := conn // STARTTLS replaces c.conn; closing the socket ends either
	defer context.AfterFunc(ctx, func() { raw.Close() })()
	fail := func(err error) (*client, error) { c.close(); return nil, err }
	if err := c.greet(); err != nil {
		return fail(err)
	}
	if err := c.hello(s.HeloName); err != nil {
		return fail(err)
	}
	if strings.EqualFold(c.peer, s.HeloName) || strings.EqualFold(c.banner, s.HeloName) {
		// RFC 5321 §5.1 asks the client to recognise itself among the
		// MX hosts; a peer that greets with our own name is us.
		return fail(errLoop)
	}
	if !c.tls && policy != config.TLSNone {
		if c.has("STARTTLS") {
			if err := c.startTLS(cfg, s.HeloName); err != nil {
				var re *ReplyError
				if policy != config.TLSMay || !errors.As(err, &re) || re.Stage != "STARTTLS" {
					if tlsRequired(policy) && errors.As(err, &re) && re.Stage == "STARTTLS" {
						err = fmt.Errorf("%w: %v", errNoStartTLS, err)
					}
					return fail(err)
				}
				// RFC 3207 §4 leaves it to the client whether to go on
				// after STARTTLS is refused (454); opportunistic TLS
				// (RFC 7435) goes on in clear text, in the same session.
				s.Log.Info("deliver: STARTTLS refused, continuing without TLS", "peer", t.addr, "reply", re.Reply.String())
			}
		} else if tlsRequired(policy) {
			return fail(fmt.Errorf("tls policy %s but %w", policy, errNoStartTLS))
		}
	}
	if t.user != "" {
		if err := c.auth(t.user, t.pass); err != nil {
			return fail(err)
		}
	}
	return c, nil
}

func (s *SMTP) getIdle(key string) *client {
	if s.CacheTime <= 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	list := s.idle[key]
	for len(list) > 0 {
		ic := list[len(list)-1]
		list = list[:len(list)-1]
		if time.Since(ic.since) < s.CacheTime {
			s.idle[key] = list
			return ic.c
		}
		s.quit(ic.c)
	}
	delete(s.idle, key)
	return nil
}

// release caches a healthy connection for reuse or ends it. dirty means a
// transaction may still be open on it.
func (s *SMTP) release(t target, c *client, dirty bool) {
	if s.CacheTime <= 0 {
		s.quit(c)
		return
	}
	if dirty {
		if err := c.reset(); err != nil {
			c.close()
			return
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		s.quit(c)
		return
	}
	if s.idle == nil {
		s.idle = map[string][]idleConn{}
		stop := make(chan struct{})
		s.stop = stop
		s.wg.Go(func() { s.janitor(stop) })
	}
	s.idle[t.key()] = append(s.idle[t.key()], idleConn{c: c, since: time.Now()})
}

// quit says QUIT on c and closes it, without holding up the caller.
func (s *SMTP) quit(c *client) { s.wg.Go(c.quit) }

// janitor ends connections idle longer than CacheTime, until Close.
func (s *SMTP) janitor(stop <-chan struct{}) {
	tick := time.NewTicker(s.CacheTime)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		s.mu.Lock()
		for k, list := range s.idle {
			keep := list[:0]
			for _, ic := range list {
				if time.Since(ic.since) >= s.CacheTime {
					s.quit(ic.c)
				} else {
					keep = append(keep, ic)
				}
			}
			if len(keep) == 0 {
				delete(s.idle, k)
			} else {
				s.idle[k] = keep
			}
		}
		s.mu.Unlock()
	}
}

// Close ends every cached connection and waits for the goroutines that
// did so. Deliveries must have returned.
func (s *SMTP) Close() {
	s.mu.Lock()
	s.closed = true
	for _, list := range s.idle {
		for _, ic := range list {
			s.quit(ic.c)
		}
	}
	s.idle = nil
	if s.stop != nil {
		close(s.stop)
		s.stop = nil
	}
	s.mu.Unlock()
	s.wg.Wait()
}
