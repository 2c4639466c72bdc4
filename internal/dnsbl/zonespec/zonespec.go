// Package zonespec parses DNS list zones written in Postfix postscreen's
// syntax zone[=filter][*weight] (postconf(5) postscreen_dnsbl_sites) and
// matches answers against their filter. It has no dependency beyond the
// standard library, so that the configuration can validate zones without
// pulling in the DNS client (internal/dnsbl does the querying).
package zonespec

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Zone is one configured list.
type Zone struct {
	Spec   string       // as written in the configuration
	Name   string       // DNS zone, lower case, without trailing dot
	Filter *[4]octetSet // nil: any valid answer counts
	Weight int          // added to the score when listed; negative for allowlists
}

// octetSet is the set of values one octet of a filter may take.
type octetSet [256]bool

// ParseZone parses postscreen's "zone[=d.d.d.d][*weight]" where each d is a
// number or a bracketed list of ";"-separated numbers and n..m ranges
// (postconf(5) postscreen_dnsbl_sites). The weight defaults to 1.
func Parse(spec string) (*Zone, error) {
	z := &Zone{Spec: spec, Weight: 1}
	s := strings.TrimSpace(spec)
	if i := strings.LastIndexByte(s, '*'); i >= 0 {
		w, err := strconv.Atoi(s[i+1:])
		if err != nil {
			return nil, fmt.Errorf("weight %q: not an integer", s[i+1:])
		}
		z.Weight = w
		s = s[:i]
	}
	if i := strings.IndexByte(s, '='); i >= 0 {
		f, err := parseFilter(s[i+1:])
		if err != nil {
			return nil, err
		}
		z.Filter = f
		s = s[:i]
	}
	s = strings.ToLower(strings.TrimSuffix(s, "."))
	if s == "" || !strings.Contains(s, ".") {
		return nil, fmt.Errorf("zone name %q: want a DNS name such as zen.spamhaus.org", s)
	}
	if !hostName(s) {
		return nil, fmt.Errorf("zone name %q: not a valid DNS name", s)
	}
	z.Name = s
	return z, nil
}

func parseFilter(f string) (*[4]octetSet, error) {
	var parts []string
	depth, start := 0, 0
	for i, c := range f {
		switch c {
		case '[':
			depth++
		case ']':
			depth--
		case '.':
			if depth == 0 {
				parts = append(parts, f[start:i])
				start = i + 1
			}
		}
	}
	parts = append(parts, f[start:])
	if len(parts) != 4 {
		return nil, fmt.Errorf("filter %q: want four octets d.d.d.d", f)
	}
	var out [4]octetSet
	for i, p := range parts {
		if strings.HasPrefix(p, "[") && strings.HasSuffix(p, "]") {
			for _, item := range strings.Split(p[1:len(p)-1], ";") {
				lo, hi, isRange := strings.Cut(item, "..")
				a, err := octet(lo)
				if err != nil {
					return nil, fmt.Errorf("filter %q: %w", f, err)
				}
				b := a
				if isRange {
					if b, err = octet(hi); err != nil {
						return nil, fmt.Errorf("filter %q: %w", f, err)
					}
				}
				if b < a {
					return nil, fmt.Errorf("filter %q: range %q is empty", f, item)
				}
				for v := a; v <= b; v++ {
					out[i][v] = true
				}
			}
			continue
		}
		v, err := octet(p)
		if err != nil {
			return nil, fmt.Errorf("filter %q: %w", f, err)
		}
		out[i][v] = true
	}
	return &out, nil
}

func octet(s string) (int, error) {
	v, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || v < 0 || v > 255 {
		return 0, fmt.Errorf("octet %q: want 0..255", s)
	}
	return v, nil
}

// hostName reports whether s (lower case, no trailing dot) is a DNS name
// of letters, digits, '-' and '_' in labels of 1 to 63 octets, at most 253
// octets in all (RFC 1035 §2.3.4).
func hostName(s string) bool {
	if len(s) > 253 || !HostChars(s) {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if l == "" || len(l) > 63 {
			return false
		}
	}
	return true
}

// HostChars reports whether s has only lower-case letters, digits, '-',
// '_' and '.'.
func HostChars(s string) bool {
	for _, c := range s {
		if !(c == '.' || c == '-' || c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z') {
			return false
		}
	}
	return true
}

// Match reports whether answer a passes the zone's filter.
func (z *Zone) Match(a netip.Addr) bool {
	if z.Filter == nil {
		return true
	}
	b := a.As4()
	for i := range 4 {
		if !z.Filter[i][b[i]] {
			return false
		}
	}
	return true
}
