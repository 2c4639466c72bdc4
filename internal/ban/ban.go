// Package ban holds the Ban type shared by the guard (which decides bans)
// and the firewall enforcers (which apply them). It lives in a package of its
// own so that internal/guard can import internal/firewall without an import
// cycle; internal/guard re-exports it as `type Ban = ban.Ban`.
package ban

import (
	"net/netip"
	"time"
)

// Ban is one banned client prefix (a single address is a /32 or /128).
type Ban struct {
	Prefix  netip.Prefix // masked; IPv4 prefixes are never 4-in-6 mapped
	Until   time.Time    // zero: permanent
	Reason  string
	Source  string // who decided it: "guard", "manual", "redis", ...
	Created time.Time
	Count   int // how many times this prefix has been banned (escalation)
}

// Permanent reports whether the ban never expires.
func (b Ban) Permanent() bool { return b.Until.IsZero() }

// Remaining is the time left until the ban expires at now; 0 for a permanent
// ban, and a negative value for one already expired.
func (b Ban) Remaining(now time.Time) time.Duration {
	if b.Until.IsZero() {
		return 0
	}
	return b.Until.Sub(now)
}

// Expired reports whether a temporary ban has run out at now.
func (b Ban) Expired(now time.Time) bool {
	return !b.Until.IsZero() && !now.Before(b.Until)
}
