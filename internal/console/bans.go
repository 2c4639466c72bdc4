package console

import (
	"cmp"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/relayguard/relayguard/internal/ban"
	"github.com/relayguard/relayguard/internal/config"
)

// banIndex is the list of bans in force, newest first, copied from the
// guard only when its list changed (Guard.Version), at most once every
// banIndexAge, and patched in place after the console's own actions: with
// 100,000 bans a page must not copy and sort them for every request.
type banIndex struct {
	g   Guard
	now func() time.Time

	mu   sync.Mutex
	at   time.Time
	ver  uint64
	have bool
	list []ban.Ban
	keys []string    // lower-case search text of each ban, made at the first text search
	sum  *banSummary // of list, made when first asked
}

// banIndexAge bounds how often the list is copied while the guard's list
// keeps changing (a flood of new bans).
const banIndexAge = time.Second

func newestFirst(x, y ban.Ban) int {
	if c := y.Created.Compare(x.Created); c != 0 {
		return c
	}
	return x.Prefix.Addr().Compare(y.Prefix.Addr())
}

func (b *banIndex) all() []ban.Ban {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.current()
}

// current returns the list, copied again if the guard's changed; b.mu is
// held.
func (b *banIndex) current() []ban.Ban {
	now := b.now()
	v := b.g.Version()
	if b.have && (v == b.ver || now.Sub(b.at) < banIndexAge) {
		return b.list
	}
	list := b.g.Bans()
	slices.SortFunc(list, newestFirst)
	b.list, b.at, b.ver, b.have, b.sum, b.keys = list, now, v, true, nil, nil
	return list
}

// removed patches the list after the console removed p, when nothing
// else changed meanwhile (the guard's version moved by exactly this one
// change); otherwise the next read copies the guard's list again.
func (b *banIndex) removed(p netip.Prefix, before uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.have || b.ver != before || b.g.Version() != before+1 {
		b.have = false
		return
	}
	b.list = slices.DeleteFunc(slices.Clone(b.list), func(x ban.Ban) bool { return x.Prefix == p })
	b.ver, b.sum, b.keys = before+1, nil, nil
}

// added patches the list after the console banned one address (a subnet
// ban may have replaced bans inside it: then the list is copied again).
func (b *banIndex) added(nb ban.Ban, before uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.have || b.ver != before || b.g.Version() != before+1 || !nb.Prefix.IsSingleIP() {
		b.have = false
		return
	}
	list := slices.DeleteFunc(slices.Clone(b.list), func(x ban.Ban) bool { return x.Prefix == nb.Prefix })
	b.list = append([]ban.Ban{nb}, list...)
	b.ver, b.sum, b.keys = before+1, nil, nil
}

// search returns the bans q matches: an address (the bans covering it), a
// network (the bans overlapping it), or else text in the prefix, reason
// or source.
func (b *banIndex) search(q string) []ban.Ban {
	q = strings.TrimSpace(q)
	b.mu.Lock()
	defer b.mu.Unlock()
	all := b.current()
	if q == "" {
		return all
	}
	var keep func(i int) bool
	if ip, err := netip.ParseAddr(q); err == nil {
		ip = ip.Unmap()
		keep = func(i int) bool { return all[i].Prefix.Contains(ip) }
	} else if p, err := config.ParsePrefix(q); err == nil {
		keep = func(i int) bool { return all[i].Prefix.Overlaps(p) }
	} else {
		if b.keys == nil {
			b.keys = make([]string, len(all))
			for i, x := range all {
				b.keys[i] = strings.ToLower(x.Prefix.String() + " " + x.Reason + " " + x.Source)
			}
		}
		lq := strings.ToLower(q)
		keep = func(i int) bool { return strings.Contains(b.keys[i], lq) }
	}
	var out []ban.Ban
	for i := range all {
		if keep(i) {
			out = append(out, all[i])
		}
	}
	return out
}

// summary counts the bans of the list (cached with it).
func (b *banIndex) summary() banSummary {
	b.mu.Lock()
	defer b.mu.Unlock()
	all := b.current()
	if b.sum != nil {
		return *b.sum
	}
	now := b.now()
	s := banSummary{Total: len(all), BySource: map[string]int{}, Latest: []banView{}, Expiring: []banView{}}
	var next []ban.Ban // the five that expire first, in order
	for _, x := range all {
		s.BySource[cmp.Or(x.Source, "guard")]++
		if x.Prefix.Addr().Is4() {
			s.IPv4++
		} else {
			s.IPv6++
		}
		if !x.Prefix.IsSingleIP() {
			s.Subnets++
		}
		if !x.Permanent() && (len(next) < 5 || x.Until.Before(next[len(next)-1].Until)) {
			i, _ := slices.BinarySearchFunc(next, x, func(a, b ban.Ban) int { return a.Until.Compare(b.Until) })
			next = slices.Insert(next, i, x)
			if len(next) > 5 {
				next = next[:5]
			}
		}
	}
	for _, x := range all[:min(len(all), 10)] {
		s.Latest = append(s.Latest, viewBan(x, now))
	}
	for _, x := range next {
		s.Expiring = append(s.Expiring, viewBan(x, now))
	}
	b.sum = &s
	return s
}

// banView is a ban as the API shows it.
type banView struct {
	Prefix    string    `json:"prefix"`
	Reason    string    `json:"reason"`
	Source    string    `json:"source"`
	Created   time.Time `json:"created"`
	Until     time.Time `json:"until,omitzero"` // zero: permanent
	Count     int       `json:"count"`          // the n-th ban of this prefix
	Remaining int64     `json:"remaining_s"`    // seconds left; 0 permanent
}

func viewBan(b ban.Ban, now time.Time) banView {
	v := banView{Prefix: b.Prefix.String(), Reason: b.Reason, Source: b.Source, Created: b.Created, Until: b.Until, Count: b.Count}
	if !b.Permanent() {
		v.Remaining = int64(b.Remaining(now) / time.Second)
	}
	return v
}

// listBans: GET /api/bans?q=&offset=&limit=
func (c *Console) listBans(w http.ResponseWriter, r *http.Request, _ *principal) {
	offset, limit, err := paging(r, 100, 1000)
	if err != nil {
		fail(w, http.StatusBadRequest, "%v", err)
		return
	}
	match := c.bans.search(r.URL.Query().Get("q"))
	now := c.o.Now()
	pg := pageOf(match, offset, limit)
	out := page[banView]{Total: pg.Total, Offset: pg.Offset, Items: make([]banView, len(pg.Items))}
	for i, b := range pg.Items {
		out.Items[i] = viewBan(b, now)
	}
	writeJSON(w, http.StatusOK, out)
}

type banRequest struct {
	Prefix   string `json:"prefix"`   // an address or a network
	Duration string `json:"duration"` // "1h", "7d"; "" or "0": permanent
	Reason   string `json:"reason"`
}

// needReason checks the operator's reason for an action: it is logged
// with the action, so it must be given and fit on one line.
func needReason(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", badRequest("reason: required (it is logged with the action)")
	}
	if len(s) > 500 || strings.ContainsAny(s, "\r\n") {
		return "", badRequest("reason: one line of at most 500 characters")
	}
	return s, nil
}

func parseTarget(s string) (netip.Prefix, error) {
	p, err := config.ParsePrefix(strings.TrimSpace(s))
	if err != nil {
		return netip.Prefix{}, badRequest("prefix %q: want an address or a network such as 192.0.2.7 or 2001:db8::/64", s)
	}
	return p.Masked(), nil
}

// addBan: POST /api/bans {prefix, duration, reason}
func (c *Console) addBan(w http.ResponseWriter, r *http.Request, p *principal) {
	var req banRequest
	if err := readJSON(r, &req); err != nil {
		c.act(w, r, p, "ban", "", "", nil, badRequest("%v", err))
		return
	}
	result, err := func() (any, error) {
		reason, err := needReason(req.Reason)
		if err != nil {
			return nil, err
		}
		pfx, err := parseTarget(req.Prefix)
		if err != nil {
			return nil, err
		}
		var d time.Duration
		if req.Duration != "" && req.Duration != "0" {
			var cd config.Duration
			if err := cd.UnmarshalText([]byte(req.Duration)); err != nil || cd.D() <= 0 {
				return nil, badRequest("duration %q: want a duration such as 1h or 7d, or empty for a permanent ban", req.Duration)
			}
			d = cd.D()
		}
		before := c.o.Guard.Version()
		b, err := c.o.Guard.Ban(r.Context(), pfx, d, reason+" (console: "+p.admin+")")
		if err != nil {
			if strings.Contains(err.Error(), "never banned") {
				return nil, badRequest("%v", err)
			}
			return nil, err
		}
		c.bans.added(b, before)
		return viewBan(b, c.o.Now()), nil
	}()
	c.act(w, r, p, "ban", req.Prefix, req.Reason, result, err)
}

type unbanRequest struct {
	Prefix string `json:"prefix"`
	Reason string `json:"reason"`
}

// removeBan: POST /api/bans/remove {prefix, reason}
func (c *Console) removeBan(w http.ResponseWriter, r *http.Request, p *principal) {
	var req unbanRequest
	if err := readJSON(r, &req); err != nil {
		c.act(w, r, p, "unban", "", "", nil, badRequest("%v", err))
		return
	}
	result, err := func() (any, error) {
		if _, err := needReason(req.Reason); err != nil {
			return nil, err
		}
		pfx, err := parseTarget(req.Prefix)
		if err != nil {
			return nil, err
		}
		before := c.o.Guard.Version()
		found, err := c.o.Guard.Unban(r.Context(), pfx)
		if err != nil {
			return nil, err
		}
		c.bans.removed(pfx, before)
		if !found {
			return nil, notFound("%s is not banned", pfx)
		}
		return map[string]string{"removed": pfx.String()}, nil
	}()
	c.act(w, r, p, "unban", req.Prefix, req.Reason, result, err)
}

// banSummary is the overview's count of the bans in force.
type banSummary struct {
	Total    int            `json:"total"`
	BySource map[string]int `json:"by_source"`
	IPv4     int            `json:"ipv4"`
	IPv6     int            `json:"ipv6"`
	Subnets  int            `json:"subnets"`
	Latest   []banView      `json:"latest"`
	Expiring []banView      `json:"expiring"` // the next to expire
}

// String is for logs and tests.
func (v banView) String() string { return fmt.Sprintf("%s (%s)", v.Prefix, v.Reason) }
