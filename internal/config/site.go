package config

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/relayguard/relayguard/internal/address"
)

// Site is this server's identity in canonical form, built once by Finish
// from hostname, local_domains, relay_domains, mynetworks, own_addresses,
// allow_ip_literals and the listeners. The SMTP server, the policy engine,
// delivery, the account checks and the guard all read this one value, so
// that they agree on what is local, what may be relayed and what is ours.
//
// Domains are in the form internal/address gives a parsed recipient: IDNA
// A-labels, lower case, without the root dot ("例え.jp." and "XN--R8JZ45G.JP"
// are both "xn--r8jz45g.jp"). Callers look up domains in that form.
type Site struct {
	// Hostname names this server in the banner, EHLO and Received.
	Hostname string
	// LocalDomains are the domains whose mailboxes live here.
	LocalDomains []string
	// RelayDomains are accepted from anyone and relayed; an entry
	// ".example.com" also matches every subdomain of example.com.
	RelayDomains []string
	// MyNetworks may relay without authentication.
	MyNetworks []netip.Prefix
	// OwnAddresses are this server's addresses: own_addresses, or, when
	// that is empty, the interface addresses and the listeners' addresses.
	OwnAddresses []netip.Addr
	// AllowIPLiterals makes [own address] recipients local.
	AllowIPLiterals bool

	local map[string]bool
	own   map[netip.Addr]bool
}

// IsLocal reports whether a canonical domain is one of local_domains.
func (s *Site) IsLocal(domain string) bool { return s.local[domain] }

// IsRelay reports whether a canonical domain is one of relay_domains.
func (s *Site) IsRelay(domain string) bool {
	for _, r := range s.RelayDomains {
		if domain == r || strings.HasPrefix(r, ".") && strings.HasSuffix(domain, r) {
			return true
		}
	}
	return false
}

// IsOwn reports whether a is one of this server's addresses.
func (s *Site) IsOwn(a netip.Addr) bool { return s.own[a.Unmap()] }

// Trusted reports whether a is in mynetworks.
func (s *Site) Trusted(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range s.MyNetworks {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// NeverBan lists the networks the guard must never ban: mynetworks and this
// server's own addresses (guard.allow is added by the guard itself).
func (s *Site) NeverBan() []netip.Prefix {
	out := slices.Clone(s.MyNetworks)
	for _, a := range s.OwnAddresses {
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out
}

// CanonicalDomain is the one canonical form of a configured domain (see
// Site). An entry of relay_domains or of a per-domain table may start with
// "." to cover subdomains; the rest is canonical.
func CanonicalDomain(d string) (string, error) {
	if rest, ok := strings.CutPrefix(d, "."); ok {
		c, err := address.CanonicalDomain(rest)
		if err != nil {
			return "", err
		}
		return "." + c, nil
	}
	return address.CanonicalDomain(d)
}

// canonicalDomains canonicalises a list, naming the bad entry by key.
func canonicalDomains(key string, list []string, subdomains bool) ([]string, error) {
	out := make([]string, 0, len(list))
	for i, d := range list {
		canon := address.CanonicalDomain
		if subdomains {
			canon = CanonicalDomain
		}
		c, err := canon(strings.TrimSpace(d))
		if err != nil {
			return nil, fmt.Errorf("%s[%d] %q: want a domain name such as example.com: %v", key, i, d, err)
		}
		if !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out, nil
}

// buildSite makes the Site of a configuration whose hostname is set.
func (c *Config) buildSite() (*Site, error) {
	s := &Site{Hostname: c.Hostname, AllowIPLiterals: c.AllowIPLiterals, local: map[string]bool{}, own: map[netip.Addr]bool{}}
	var err error
	if s.LocalDomains, err = canonicalDomains("local_domains", c.LocalDomains, false); err != nil {
		return nil, err
	}
	for _, d := range s.LocalDomains {
		s.local[d] = true
	}
	if s.RelayDomains, err = canonicalDomains("relay_domains", c.RelayDomains, true); err != nil {
		return nil, err
	}
	for i, n := range c.MyNetworks {
		p, err := ParsePrefix(n)
		if err != nil {
			return nil, fmt.Errorf("mynetworks[%d] %q: want a network such as 192.0.2.0/24 or 2001:db8::/32: %v", i, n, err)
		}
		s.MyNetworks = append(s.MyNetworks, p)
	}
	addOwn := func(a netip.Addr) {
		a = a.Unmap()
		if a.IsValid() && !a.IsUnspecified() && !s.own[a] {
			s.own[a] = true
			s.OwnAddresses = append(s.OwnAddresses, a)
		}
	}
	for i, a := range c.OwnAddresses {
		ip, err := netip.ParseAddr(strings.TrimSpace(a))
		if err != nil {
			return nil, fmt.Errorf("own_addresses[%d] %q: want an IP address: %v", i, a, err)
		}
		addOwn(ip)
	}
	if len(c.OwnAddresses) == 0 {
		if addrs, err := net.InterfaceAddrs(); err == nil {
			for _, a := range addrs {
				if p, err := netip.ParsePrefix(a.String()); err == nil {
					addOwn(p.Addr())
				}
			}
		}
		for _, l := range c.Listeners {
			if host, _, err := net.SplitHostPort(l.Address); err == nil {
				if ip, err := netip.ParseAddr(host); err == nil {
					addOwn(ip)
				}
			}
		}
	}
	return s, nil
}

// SMTP is the part of a finished configuration the SMTP server reads: the
// site (embedded, so that Hostname, LocalDomains, ... read directly), the
// sender binding, [limits] and [auth]. Listeners are given one by one.
type SMTP struct {
	*Site
	SenderBinding bool
	Limits        LimitsConfig
	Auth          AuthConfig
	// AuthservID names this server in Authentication-Results fields.
	AuthservID string
	Spool      SpoolConfig
}

// SMTP returns the SMTP server's part of a finished configuration.
func (c *Config) SMTP() *SMTP {
	return &SMTP{Site: c.Site, SenderBinding: c.SenderBinding, Limits: c.Limits, Auth: c.Auth, Spool: c.Spool,
		AuthservID: c.Policy.DMARC.ID(c.Site.Hostname)}
}
