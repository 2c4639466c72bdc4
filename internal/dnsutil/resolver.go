// Package dnsutil is relayguard's DNS client: a small resolver over
// github.com/miekg/dns with a configurable server list and timeout that, unlike
// net.Resolver, tells apart the outcomes a mail policy must not confuse:
// NXDOMAIN, no data, SERVFAIL, REFUSED and timeout (RFC 1035 §4.1.1 RCODEs,
// RFC 2308 negative answers). A DNS failure is never "clean" and never
// "listed": callers get a typed *Error and decide.
package dnsutil

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// Kind classifies a failed lookup.
type Kind int

// Kinds of lookup failure.
const (
	NXDomain Kind = iota + 1 // RCODE 3: the name does not exist
	NoData                   // NOERROR with no record of the asked type (RFC 2308 §2.2)
	ServFail                 // RCODE 2
	Refused                  // RCODE 5
	Timeout                  // no answer before the deadline
	Other                    // network error, FORMERR, truncated and unusable...
	BadName                  // not a valid domain name (RFC 1035 §2.3.4): no query sent; no such name can exist
)

func (k Kind) String() string {
	switch k {
	case NXDomain:
		return "NXDOMAIN"
	case NoData:
		return "NODATA"
	case ServFail:
		return "SERVFAIL"
	case Refused:
		return "REFUSED"
	case Timeout:
		return "timeout"
	case BadName:
		return "invalid domain name"
	}
	return "error"
}

// Error is a failed lookup. NXDomain, NoData and BadName are definite
// negative answers; every other kind is temporary.
type Error struct {
	Kind   Kind
	Name   string
	Type   string
	Server string
	Err    error // underlying network error, if any
	// TTL is the negative-caching TTL from the SOA of a negative answer
	// (RFC 2308 §5), 0 when unknown.
	TTL time.Duration
}

func (e *Error) Error() string {
	s := fmt.Sprintf("dns %s %s: %s", e.Type, e.Name, e.Kind)
	if e.Server != "" {
		s += " from " + e.Server
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// NotFound reports whether the answer was a definite "no such record". A
// name that is not a valid domain name is one: it cannot exist, and
// retrying cannot change that (a malformed sender domain is "not found",
// never a temporary failure the client would retry forever).
func (e *Error) NotFound() bool { return e.Kind == NXDomain || e.Kind == NoData || e.Kind == BadName }

// Temporary reports whether the lookup may succeed if retried.
func (e *Error) Temporary() bool { return !e.NotFound() }

// IsNotFound reports whether err is a definite negative answer (NXDOMAIN or
// no data), from this package or from net.
func IsNotFound(err error) bool {
	var e *Error
	if errors.As(err, &e) {
		return e.NotFound()
	}
	var ne *net.DNSError
	return errors.As(err, &ne) && ne.IsNotFound
}

// Resolver sends queries to a list of servers, retransmitting with
// backoff. The zero value is not usable; use New.
type Resolver struct {
	servers []string         // host:port, for errors
	addrs   []netip.AddrPort // the same, to send to
	timeout time.Duration
	rto     time.Duration
	next    atomic.Uint32
}

// FirstRetransmit is how long a query waits for its first answer before it
// is sent again (to the next server, if there are several). Each further
// wait doubles. A local caching resolver answers from cache in well under
// a millisecond and a cold recursive lookup mostly within a few hundred.
const FirstRetransmit = 400 * time.Millisecond

// New returns a resolver over servers ("host:port" or "host"; port 53 is
// added). An empty list reads the nameservers of /etc/resolv.conf.
// timeout bounds one query (all its retransmissions) when the caller's
// context has no earlier deadline.
func New(servers []string, timeout time.Duration) (*Resolver, error) {
	if len(servers) == 0 {
		var err error
		servers, err = SystemServers("/etc/resolv.conf")
		if err != nil {
			return nil, err
		}
	}
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	r := &Resolver{timeout: timeout, rto: FirstRetransmit}
	for _, s := range servers {
		hp, err := normalizeServer(s)
		if err != nil {
			return nil, err
		}
		ua, err := net.ResolveUDPAddr("udp", hp)
		if err != nil {
			return nil, fmt.Errorf("dns server %q: %w", s, err)
		}
		ap := ua.AddrPort()
		r.servers = append(r.servers, hp)
		r.addrs = append(r.addrs, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
	}
	return r, nil
}

// Servers returns the servers queried, as host:port.
func (r *Resolver) Servers() []string { return append([]string(nil), r.servers...) }

func normalizeServer(s string) (string, error) {
	s = strings.TrimSpace(s)
	if _, _, err := net.SplitHostPort(s); err == nil {
		return s, nil
	}
	a, err := netip.ParseAddr(strings.Trim(s, "[]"))
	if err != nil {
		return "", fmt.Errorf("dns server %q: want an IP address or host:port", s)
	}
	return netip.AddrPortFrom(a, 53).String(), nil
}

// SystemServers reads the nameserver lines of a resolv.conf file.
func SystemServers(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("dns: reading nameservers: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) >= 2 && fs[0] == "nameserver" {
			a, err := netip.ParseAddr(strings.SplitN(fs[1], "%", 2)[0])
			if err != nil {
				continue
			}
			out = append(out, netip.AddrPortFrom(a, 53).String())
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("dns: no nameserver in %s", path)
	}
	return out, nil
}

// Answer is a successful reply.
type Answer struct {
	Msg *dns.Msg
	TTL time.Duration // smallest TTL of the answer records of the asked type
}

// Query asks for name/qtype and returns the reply or a typed *Error.
//
// RFC 1035 §4.2.1 leaves retransmission to the client and RFC 1536 §1 warns
// against both too few and too eager retries: the query is sent to one
// server; if no reply came after FirstRetransmit it is sent again to the
// next server (the same one if there is only one) and the wait doubles,
// until the deadline. All attempts share one socket, so a late reply to an
// earlier one is taken. A SERVFAIL, REFUSED or unusable reply, or a refused
// connection, moves on to the next server at once; NXDOMAIN and NODATA are
// definite and end the query.
func (r *Resolver) Query(ctx context.Context, name string, qtype uint16) (Answer, error) {
	fqdn := dns.Fqdn(name)
	tname := dns.TypeToString[qtype]
	if _, ok := dns.IsDomainName(fqdn); !ok {
		return Answer{}, &Error{Kind: BadName, Name: name, Type: tname}
	}
	if len(r.addrs) == 0 {
		return Answer{}, &Error{Kind: Other, Name: name, Type: tname, Err: errors.New("no DNS server configured")}
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.timeout)
		defer cancel()
	}
	m := new(dns.Msg)
	m.SetQuestion(fqdn, qtype)
	m.RecursionDesired = true
	m.SetEdns0(1232, false)
	wire, err := m.Pack()
	if err != nil {
		return Answer{}, &Error{Kind: BadName, Name: name, Type: tname, Err: err}
	}
	a := attempt{r: r, m: m, wire: wire, failed: make([]bool, len(r.addrs)), next: int(r.next.Add(1))}
	if err := a.open(); err != nil {
		return Answer{}, &Error{Kind: Other, Name: name, Type: tname, Err: err}
	}
	defer a.conn.Close()
	stop := context.AfterFunc(ctx, func() { a.conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	deadline, _ := ctx.Deadline()
	wait := r.rto
	resend := time.Now().Add(wait)
	a.send()
	var last *Error
	buf := make([]byte, 4096)
	for {
		a.conn.SetReadDeadline(minTime(resend, deadline))
		n, from, err := a.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			var ne net.Error
			switch {
			case ctx.Err() != nil || !time.Now().Before(deadline):
				if last == nil {
					last = &Error{Kind: Timeout, Name: name, Type: tname, Server: a.lastServer(), Err: context.Cause(ctx)}
				}
				return Answer{}, last
			case errors.As(err, &ne) && ne.Timeout():
				if a.anyLeft() {
					a.send()
				}
				wait *= 2
				resend = time.Now().Add(wait)
			default:
				// A refused connection (ICMP port unreachable on the
				// connected socket of a single server), or a socket error.
				last = &Error{Kind: Other, Name: name, Type: tname, Server: a.lastServer(), Err: err}
				a.failed[a.sentTo] = true
				if !a.anyLeft() {
					return Answer{}, last
				}
				a.send()
			}
			continue
		}
		k := a.from(from)
		if k < 0 {
			continue // not from a server asked: ignored
		}
		resp := new(dns.Msg)
		if resp.Unpack(buf[:n]) != nil || resp.Id != m.Id || len(resp.Question) != 1 ||
			!strings.EqualFold(resp.Question[0].Name, fqdn) || resp.Question[0].Qtype != qtype {
			continue // not the answer to this query (RFC 5452 §4.3)
		}
		srv := r.servers[k]
		var terr error
		if resp.Truncated {
			// RFC 7766 §5: the full answer over TCP.
			tc := &dns.Client{Net: "tcp", Timeout: time.Hour}
			resp, _, terr = tc.ExchangeContext(ctx, m, srv)
		}
		ans, derr := r.interpret(resp, terr, name, tname, qtype, srv)
		if derr == nil {
			return ans, nil
		}
		if derr.NotFound() {
			return Answer{}, derr
		}
		if last == nil || last.Kind == Timeout || derr.Kind != Other {
			last = derr
		}
		a.failed[k] = true
		if !a.anyLeft() {
			return Answer{}, last
		}
		a.send() // this server gave up: ask the next one now
	}
}

// attempt is one query's socket and the servers it was sent to. With one
// server the socket is connected to it (the kernel drops anything from
// elsewhere and reports a refused port); with several it is not, and a
// reply counts only if it comes from one of them.
type attempt struct {
	r      *Resolver
	m      *dns.Msg
	wire   []byte
	conn   *net.UDPConn
	failed []bool // servers that answered SERVFAIL, REFUSED or unusably
	next   int    // rotation: the server after the last one asked
	sentTo int
}

func (a *attempt) open() error {
	var err error
	if len(a.r.addrs) == 1 {
		a.conn, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(a.r.addrs[0]))
	} else {
		a.conn, err = net.ListenUDP("udp", nil)
	}
	return err
}

func (a *attempt) anyLeft() bool {
	for _, f := range a.failed {
		if !f {
			return true
		}
	}
	return false
}

// send sends the query to the next server that has not failed.
func (a *attempt) send() {
	n := len(a.r.addrs)
	for i := range n {
		k := (a.next + i) % n
		if a.failed[k] {
			continue
		}
		a.next, a.sentTo = k+1, k
		if n == 1 {
			a.conn.Write(a.wire)
		} else {
			a.conn.WriteToUDPAddrPort(a.wire, a.r.addrs[k])
		}
		return
	}
}

// from returns the index of the server a reply came from, or -1.
func (a *attempt) from(ap netip.AddrPort) int {
	if len(a.r.addrs) == 1 {
		return 0
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	for i, s := range a.r.addrs {
		if s == ap {
			return i
		}
	}
	return -1
}

func (a *attempt) lastServer() string { return a.r.servers[a.sentTo] }

func minTime(x, y time.Time) time.Time {
	if x.Before(y) {
		return x
	}
	return y
}

// interpret turns one server's reply into an answer or a typed error.
func (r *Resolver) interpret(resp *dns.Msg, err error, name, tname string, qtype uint16, srv string) (Answer, *Error) {
	if err != nil {
		k := Other
		var ne net.Error
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || (errors.As(err, &ne) && ne.Timeout()) {
			k = Timeout
		}
		return Answer{}, &Error{Kind: k, Name: name, Type: tname, Server: srv, Err: err}
	}
	switch resp.Rcode {
	case dns.RcodeSuccess:
		ans := Answer{Msg: resp}
		n := 0
		for _, rr := range resp.Answer {
			if rr.Header().Rrtype != qtype {
				continue
			}
			t := time.Duration(rr.Header().Ttl) * time.Second
			if n == 0 || t < ans.TTL {
				ans.TTL = t
			}
			n++
		}
		if n == 0 {
			if isReferral(resp) {
				// Not an answer: the server does not recurse (RFC 2308
				// §2.2 tells a referral from NODATA by its NS records
				// and missing SOA). Reading it as "no such record"
				// would make a DNS misconfiguration a pass.
				return Answer{}, &Error{Kind: Other, Name: name, Type: tname, Server: srv, Err: errors.New("referral instead of an answer: the server does not recurse")}
			}
			return Answer{}, &Error{Kind: NoData, Name: name, Type: tname, Server: srv, TTL: negTTL(resp)}
		}
		return ans, nil
	case dns.RcodeNameError:
		return Answer{}, &Error{Kind: NXDomain, Name: name, Type: tname, Server: srv, TTL: negTTL(resp)}
	case dns.RcodeServerFailure:
		return Answer{}, &Error{Kind: ServFail, Name: name, Type: tname, Server: srv}
	case dns.RcodeRefused:
		return Answer{}, &Error{Kind: Refused, Name: name, Type: tname, Server: srv}
	}
	return Answer{}, &Error{Kind: Other, Name: name, Type: tname, Server: srv, Err: fmt.Errorf("rcode %s", dns.RcodeToString[resp.Rcode])}
}

// isReferral reports whether an empty NOERROR reply is a referral (NS
// records in the authority section, no SOA, not authoritative) rather
// than a NODATA answer.
func isReferral(m *dns.Msg) bool {
	if m.Authoritative {
		return false
	}
	ns := false
	for _, rr := range m.Ns {
		switch rr.(type) {
		case *dns.SOA:
			return false
		case *dns.NS:
			ns = true
		}
	}
	return ns
}

// negTTL is the negative-caching TTL of RFC 2308 §5: the smaller of the SOA's
// TTL and its MINIMUM field.
func negTTL(m *dns.Msg) time.Duration {
	for _, rr := range m.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			t := min(soa.Hdr.Ttl, soa.Minttl)
			return time.Duration(t) * time.Second
		}
	}
	return 0
}

// LookupA4 returns the IPv4 addresses of name with the answer's TTL.
func (r *Resolver) LookupA4(ctx context.Context, name string) ([]netip.Addr, time.Duration, error) {
	ans, err := r.Query(ctx, name, dns.TypeA)
	if err != nil {
		return nil, 0, err
	}
	var out []netip.Addr
	for _, rr := range ans.Msg.Answer {
		if a, ok := rr.(*dns.A); ok {
			if ip, ok := netip.AddrFromSlice(a.A.To4()); ok {
				out = append(out, ip)
			}
		}
	}
	return out, ans.TTL, nil
}

// The methods below give the net.Resolver-shaped interface that
// blitiri.com.ar/go/spf and the policy checks use. Errors are *net.DNSError
// with IsNotFound, IsTemporary and IsTimeout set from the RCODE, and they
// wrap the *Error.

func toNetErr(err error) error {
	var e *Error
	if !errors.As(err, &e) {
		return err
	}
	return &net.DNSError{
		Err:         e.Kind.String(),
		Name:        e.Name,
		Server:      e.Server,
		IsNotFound:  e.NotFound(),
		IsTimeout:   e.Kind == Timeout,
		IsTemporary: e.Temporary(),
		UnwrapErr:   e,
	}
}

// LookupTXT returns the TXT strings of name, each record's strings joined.
func (r *Resolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	ans, err := r.Query(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, toNetErr(err)
	}
	var out []string
	for _, rr := range ans.Msg.Answer {
		if t, ok := rr.(*dns.TXT); ok {
			out = append(out, strings.Join(t.Txt, ""))
		}
	}
	return out, nil
}

// LookupMX returns the MX records of name. A null MX (RFC 7505) comes back
// as one record with Host ".".
func (r *Resolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	ans, err := r.Query(ctx, name, dns.TypeMX)
	if err != nil {
		return nil, toNetErr(err)
	}
	var out []*net.MX
	for _, rr := range ans.Msg.Answer {
		if mx, ok := rr.(*dns.MX); ok {
			out = append(out, &net.MX{Host: mx.Mx, Pref: mx.Preference})
		}
	}
	return out, nil
}

// LookupIPAddr returns the A and AAAA addresses of host, asked in
// parallel. It fails only if both lookups fail; a temporary failure of
// either wins over "not found".
func (r *Resolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	type res struct {
		ans Answer
		err error
	}
	c4, c6 := make(chan res, 1), make(chan res, 1)
	go func() { a, err := r.Query(ctx, host, dns.TypeA); c4 <- res{a, err} }()
	go func() { a, err := r.Query(ctx, host, dns.TypeAAAA); c6 <- res{a, err} }()
	r4, r6 := <-c4, <-c6
	var out []net.IPAddr
	for _, x := range []res{r4, r6} {
		if x.err != nil {
			continue
		}
		for _, rr := range x.ans.Msg.Answer {
			switch v := rr.(type) {
			case *dns.A:
				out = append(out, net.IPAddr{IP: v.A})
			case *dns.AAAA:
				out = append(out, net.IPAddr{IP: v.AAAA})
			}
		}
	}
	if len(out) > 0 {
		return out, nil
	}
	for _, x := range []res{r4, r6} {
		var e *Error
		if errors.As(x.err, &e) && e.Temporary() {
			return nil, toNetErr(x.err)
		}
	}
	if r4.err != nil {
		return nil, toNetErr(r4.err)
	}
	return nil, toNetErr(&Error{Kind: NoData, Name: host, Type: "A/AAAA"})
}

// LookupNetIP returns the addresses of host for network "ip4" (A records),
// "ip6" (AAAA) or "ip" (both, as LookupIPAddr), with net.Resolver's
// signature. Asking one family lets a caller that needs that family (the
// forward confirmation of a client's reverse name) tell a failure of it
// from an answer of the other family.
func (r *Resolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	var qtype uint16
	switch network {
	case "ip4":
		qtype = dns.TypeA
	case "ip6":
		qtype = dns.TypeAAAA
	case "ip":
		ips, err := r.LookupIPAddr(ctx, host)
		var out []netip.Addr
		for _, a := range ips {
			if x, ok := netip.AddrFromSlice(a.IP); ok {
				out = append(out, x.Unmap())
			}
		}
		return out, err
	default:
		return nil, &net.DNSError{Err: "unsupported network " + network, Name: host}
	}
	ans, err := r.Query(ctx, host, qtype)
	if err != nil {
		return nil, toNetErr(err)
	}
	var out []netip.Addr
	for _, rr := range ans.Msg.Answer {
		switch v := rr.(type) {
		case *dns.A:
			if x, ok := netip.AddrFromSlice(v.A.To4()); ok && qtype == dns.TypeA {
				out = append(out, x)
			}
		case *dns.AAAA:
			if x, ok := netip.AddrFromSlice(v.AAAA.To16()); ok && qtype == dns.TypeAAAA {
				out = append(out, x)
			}
		}
	}
	return out, nil
}

// LookupAddr returns the PTR names of addr (RFC 1035 §3.5, RFC 3596 §2.5).
func (r *Resolver) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	rev, err := dns.ReverseAddr(addr)
	if err != nil {
		return nil, &net.DNSError{Err: "invalid address", Name: addr}
	}
	ans, err := r.Query(ctx, rev, dns.TypePTR)
	if err != nil {
		return nil, toNetErr(err)
	}
	var out []string
	for _, rr := range ans.Msg.Answer {
		if p, ok := rr.(*dns.PTR); ok {
			out = append(out, p.Ptr)
		}
	}
	return out, nil
}

// publicResolvers are well-known open resolvers. Large DNSBLs (Spamhaus,
// SURBL, URIBL, Barracuda) refuse queries that come through them and answer
// with an error code instead, so relayguard warns when one is configured.
var publicResolvers = map[string]string{
	"8.8.8.8": "Google", "8.8.4.4": "Google", "2001:4860:4860::8888": "Google", "2001:4860:4860::8844": "Google",
	"1.1.1.1": "Cloudflare", "1.0.0.1": "Cloudflare", "2606:4700:4700::1111": "Cloudflare", "2606:4700:4700::1001": "Cloudflare",
	"9.9.9.9": "Quad9", "149.112.112.112": "Quad9", "2620:fe::fe": "Quad9", "2620:fe::9": "Quad9",
	"208.67.222.222": "OpenDNS", "208.67.220.220": "OpenDNS",
	"94.140.14.14": "AdGuard", "94.140.15.15": "AdGuard",
	"64.6.64.6": "Verisign", "64.6.65.6": "Verisign",
	"8.26.56.26": "Comodo", "8.20.247.20": "Comodo",
	"185.228.168.9": "CleanBrowsing", "76.76.2.0": "Control D", "77.88.8.8": "Yandex",
}

// PublicResolver reports whether server (host or host:port) is a
// well-known public resolver, and whose.
func PublicResolver(server string) (string, bool) {
	host := server
	if h, _, err := net.SplitHostPort(server); err == nil {
		host = h
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return "", false
	}
	name, ok := publicResolvers[a.Unmap().String()]
	return name, ok
}
