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
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.RecursionDesired = true
	m.SetEdns0(1232, false)
	tn := dns.TypeToString[qtype]
	var in *dns.Msg
	var err error
	for _, proto := range []string{"udp", "tcp"} {
		c := &dns.Client{Net: proto, Timeout: r.Timeout}
		in, _, err = c.ExchangeContext(ctx, m, r.Server)
		if err != nil {
			return nil, &DNSError{Name: name, Type: tn, Err: err.Error(), Temporary: true}
		}
		if !in.Truncated {
			break
		}
	}
	switch in.Rcode {
	case dns.RcodeSuccess:
	case dns.RcodeNameError:
		return nil, &DNSError{Name: name, Type: tn, Err: "no such domain (NXDOMAIN)", NotFound: true}
	default:
		return nil, &DNSError{Name: name, Type: tn, Err: dns.RcodeToString[in.Rcode], Temporary: true}
	}
	return in.Answer, nil
}

// MX returns the mail exchangers of domain per RFC 5321 §5.1: MX records
// sorted by preference (random order among equal preferences); with no MX
// record, the domain itself as an implicit MX. A null MX gives ErrNullMX.
func (r *Resolver) MX(ctx context.Context, domain string) ([]MXHost, error) {
	rrs, err := r.query(ctx, domain, dns.TypeMX)
	if err != nil {
		return nil, err
	}
	var hosts []MXHost
	for _, rr := range rrs {
		if mx, ok := rr.(*dns.MX); ok {
			hosts = append(hosts, MXHost{Name: strings.TrimSuffix(mx.Mx, "."), Pref: mx.Preference})
		}
	}
	if len(hosts) == 0 {
		// RFC 5321 §5.1: no MX records: the domain is its own implicit MX.
		return []MXHost{{Name: strings.TrimSuffix(domain, "."), Pref: 0}}, nil
	}
	// RFC 7505 §3: a single MX with an empty target (".") means no mail.
	for _, h := range hosts {
		if h.Name == "" {
			return nil, ErrNullMX
		}
	}
	rand.Shuffle(len(hosts), func(i, j int) { hosts[i], hosts[j] = hosts[j], hosts[i] })
	sort.SliceStable(hosts, func(i, j int) bool { return hosts[i].Pref < hosts[j].Pref })
	return hosts, nil
}

// Addrs returns the IPv4 then IPv6 addresses of host. A host with neither
// gives a NotFound DNSError.
func (r *Resolver) Addrs(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a}, nil
	}
	var out []netip.Addr
	var firstErr, tempErr error
	for _, t := range []uint16{dns.TypeA, dns.TypeAAAA} {
		rrs, err := r.query(ctx, host, t)
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
			}
		}
	}
	if len(out) > 0 {
		return out, nil
	}
	if tempErr != nil {
		// One query failed: the host may have addresses we could not
		// see, so this is never "no such host".
		return nil, tempErr
	}
	if firstErr != nil {
		return nil, firstErr
	}
	return nil, &DNSError{Name: host, Type: "A/AAAA", Err: "no address records", NotFound: true}
}
