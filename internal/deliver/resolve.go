package deliver

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// ErrNullMX is returned for a domain that publishes a null MX (RFC 7505):
// it accepts no mail at all.
var ErrNullMX = errors.New("domain publishes a null MX (RFC 7505): it accepts no mail")

// DNSError is a failed lookup. Temporary errors (SERVFAIL, timeouts) defer
// delivery; permanent ones (NXDOMAIN) fail it. A DNS failure is never read as
// an answer.
type DNSError struct {
	Name      string
	Type      string
	Err       string
	Temporary bool
	NotFound  bool
}

func (e *DNSError) Error() string {
	return fmt.Sprintf("dns %s %s: %s", e.Type, e.Name, e.Err)
}

// MXHost is one mail exchanger of a domain.
type MXHost struct {
	Name string // host name, without trailing dot
	Pref uint16
}

// Resolver looks up MX, A and AAAA records through one DNS server. It uses
// miekg/dns rather than net.Resolver so that it can be pointed at any
// server, which lets the MX logic be tested against a DNS server on loopback.
type Resolver struct {
	Server  string // host:port
	Timeout time.Duration
}

// NewResolver returns a resolver for server ("" = first nameserver of
// /etc/resolv.conf).
func NewResolver(server string, timeout time.Duration) (*Resolver, error) {
	if server == "" {
		cc, err := dns.ClientConfigFromFile("/etc/resolv.conf")
		if err != nil || len(cc.Servers) == 0 {
			return nil, fmt.Errorf("deliver: no DNS server: /etc/resolv.conf: %v", err)
		}
		server = net.JoinHostPort(cc.Servers[0], cc.Port)
	}
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	return &Resolver{Server: server, Timeout: timeout}, nil
}

func (r *Resolver) query(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	rrs, _, err := r.querySec(ctx, name, qtype)
	return rrs, err
}

// querySec is query that also reports whether the resolver validated the
// answer with DNSSEC (the AD bit, RFC 4035 §3.2.3; asked for with AD and
// DO set, RFC 6840 §5.7). Only a validating resolver the server trusts
// (unbound on the host) makes the bit mean anything: DANE relies on it.
// A bogus answer comes back from a validating resolver as SERVFAIL.
func (r *Resolver) querySec(ctx context.Context, name string, qtype uint16) ([]dns.RR, bool, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.RecursionDesired = true
	m.AuthenticatedData = true
	m.SetEdns0(1232, true)
	tn := dns.TypeToString[qtype]
	var in *dns.Msg
	var err error
	for _, proto := range []string{"udp", "tcp"} {
		c := &dns.Client{Net: proto, Timeout: r.Timeout}
		in, _, err = c.ExchangeContext(ctx, m, r.Server)
		if err != nil {
			return nil, false, &DNSError{Name: name, Type: tn, Err: err.Error(), Temporary: true}
		}
		if !in.Truncated {
			break
		}
	}
	switch in.Rcode {
	case dns.RcodeSuccess:
	case dns.RcodeNameError:
		return nil, in.AuthenticatedData, &DNSError{Name: name, Type: tn, Err: "no such domain (NXDOMAIN)", NotFound: true}
	default:
		return nil, false, &DNSError{Name: name, Type: tn, Err: dns.RcodeToString[in.Rcode], Temporary: true}
	}
	return in.Answer, in.AuthenticatedData, nil
}

// MX returns the mail exchangers of domain per RFC 5321 §5.1: MX records
// sorted by preference (random order among equal preferences); with no MX
// record, the domain itself as an implicit MX. A null MX gives ErrNullMX.
func (r *Resolver) MX(ctx context.Context, domain string) ([]MXHost, error) {
	hosts, _, err := r.MXSecure(ctx, domain)
	return hosts, err
}

// MXSecure is MX that also reports whether the MX RRset (or, for an
// implicit MX, its absence) was validated with DNSSEC: DANE applies to a
// domain's MX hosts only then (RFC 7672 §2.2.1).
func (r *Resolver) MXSecure(ctx context.Context, domain string) ([]MXHost, bool, error) {
	rrs, secure, err := r.querySec(ctx, domain, dns.TypeMX)
	if err != nil {
		return nil, false, err
	}
	var hosts []MXHost
	for _, rr := range rrs {
		if mx, ok := rr.(*dns.MX); ok {
			hosts = append(hosts, MXHost{Name: strings.TrimSuffix(mx.Mx, "."), Pref: mx.Preference})
		}
	}
	if len(hosts) == 0 {
		// RFC 5321 §5.1: no MX records: the domain is its own implicit MX.
		return []MXHost{{Name: strings.TrimSuffix(domain, "."), Pref: 0}}, secure, nil
	}
	// RFC 7505 §3: a single MX with an empty target (".") means no mail.
	for _, h := range hosts {
		if h.Name == "" {
			return nil, secure, ErrNullMX
		}
	}
	rand.Shuffle(len(hosts), func(i, j int) { hosts[i], hosts[j] = hosts[j], hosts[i] })
	sort.SliceStable(hosts, func(i, j int) bool { return hosts[i].Pref < hosts[j].Pref })
	return hosts, secure, nil
}

// TLSA returns the TLSA records of an SMTP server (RFC 6698 §3:
// _PORT._tcp.HOST) and whether the answer, or the denial that there are
// any, was validated with DNSSEC. A lookup failure (SERVFAIL, which a
// validating resolver also answers for bogus data, or a timeout) is an
// error: DANE then fails closed (RFC 7672 §2.2.1).
func (r *Resolver) TLSA(ctx context.Context, host string, port int) ([]*dns.TLSA, bool, error) {
	name := fmt.Sprintf("_%d._tcp.%s", port, strings.TrimSuffix(host, "."))
	rrs, secure, err := r.querySec(ctx, name, dns.TypeTLSA)
	var de *DNSError
	if errors.As(err, &de) && de.NotFound {
		return nil, secure, nil
	}
	if err != nil {
		return nil, false, err
	}
	var out []*dns.TLSA
	for _, rr := range rrs {
		if t, ok := rr.(*dns.TLSA); ok {
			out = append(out, t)
		}
	}
	return out, secure, nil
}

// Addrs returns the IPv4 then IPv6 addresses of host. A host with neither
// gives a NotFound DNSError.
func (r *Resolver) Addrs(ctx context.Context, host string) ([]netip.Addr, error) {
	addrs, _, _, err := r.AddrsSecure(ctx, host)
	return addrs, err
}

// AddrsSecure is Addrs that also reports whether both address lookups
// were validated with DNSSEC, and the name the CNAME chain of host ends
// at ("" without one): for a host reached by name rather than through MX
// records (a smarthost, a transport's host) DANE applies only when its
// address records are secure, and looks for TLSA records at the expanded
// name first (RFC 7672 §2.2.2).
func (r *Resolver) AddrsSecure(ctx context.Context, host string) (addrs []netip.Addr, secure bool, cname string, err error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a}, false, "", nil
	}
	var out []netip.Addr
	var firstErr, tempErr error
	secure = true
	for _, t := range []uint16{dns.TypeA, dns.TypeAAAA} {
		rrs, ad, err := r.querySec(ctx, host, t)
		secure = secure && ad
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			var de *DNSError
			if tempErr == nil && (!errors.As(err, &de) || de.Temporary) {
				tempErr = err
			}
			continue
		}
		for _, rr := range rrs {
			switch v := rr.(type) {
			case *dns.A:
				if a, ok := netip.AddrFromSlice(v.A.To4()); ok {
					out = append(out, a)
				}
			case *dns.AAAA:
				if a, ok := netip.AddrFromSlice(v.AAAA); ok {
					out = append(out, a)
				}
			case *dns.CNAME:
				cname = strings.TrimSuffix(v.Target, ".")
			}
		}
	}
	if len(out) > 0 {
		return out, secure, cname, nil
	}
	if tempErr != nil {
		// One query failed: the host may have addresses we could not
		// see, so this is never "no such host".
		return nil, false, "", tempErr
	}
	if firstErr != nil {
		return nil, false, "", firstErr
	}
	return nil, false, "", &DNSError{Name: host, Type: "A/AAAA", Err: "no address records", NotFound: true}
}

// LookupTXT returns the TXT strings of name, each record's strings joined,
// with net's errors (*net.DNSError, IsNotFound for NXDOMAIN or no data):
// the shape internal/mtasts asks for.
func (r *Resolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	rrs, err := r.query(ctx, name, dns.TypeTXT)
	var de *DNSError
	if errors.As(err, &de) {
		return nil, &net.DNSError{Err: de.Err, Name: name, IsNotFound: de.NotFound, IsTemporary: de.Temporary}
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, rr := range rrs {
		if t, ok := rr.(*dns.TXT); ok {
			out = append(out, strings.Join(t.Txt, ""))
		}
	}
	if len(out) == 0 {
		return nil, &net.DNSError{Err: "no TXT records", Name: name, IsNotFound: true}
	}
	return out, nil
}

// DialContext connects to host:port, resolving host through this
// resolver (so that every lookup of delivery, the MTA-STS policy host
// included, asks the same server).
func (r *Resolver) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	addrs, err := r.Addrs(ctx, host)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	var last error
	for _, a := range addrs {
		c, err := d.DialContext(ctx, network, net.JoinHostPort(a.String(), port))
		if err == nil {
			return c, nil
		}
		last = err
	}
	return nil, last
}
