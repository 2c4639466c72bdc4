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
// guard at most once a second (or at once after a console action): with
// 100,000 bans a page must not sort them for every request.
type banIndex struct {
	g   Guard
	now func() time.Time

	mu    sync.Mutex
	at    time.Time
	fresh bool
	list  []ban.Ban
	sum   *banSummary // of list, made when first asked
}

const banIndexAge = time.Second

func (b *banIndex) all() []ban.Ban {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	if b.fresh && now.Sub(b.at) < banIndexAge {
		return b.list
	}
	list := b.g.Bans()
	slices.SortStableFunc(list, func(x, y ban.Ban) int {
		if c := y.Created.Compare(x.Created); c != 0 {
			return c
		}
		return x.Prefix.Addr().Compare(y.Prefix.Addr())
	})
	b.list, b.at, b.fresh, b.sum = list, now, true, nil
	return list
}

// summary counts the bans of the list (cached with it).
func (b *banIndex) summary() banSummary {
	all := b.all()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sum != nil {
		return *b.sum
	}
	now := b.now()
	s := banSummary{Total: len(all), BySource: map[string]int{}, Latest: []banView{}, Expiring: []banView{}}
	var next []ban.Ban
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
		if !x.Permanent() {
			next = append(next, x)
		}
	}
	for _, x := range all[:min(len(all), 10)] {
		s.Latest = append(s.Latest, viewBan(x, now))
	}
	slices.SortFunc(next, func(x, y ban.Ban) int { return x.Until.Compare(y.Until) })
	for _, x := range next[:min(len(next), 5)] {
		s.Expiring = append(s.Expiring, viewBan(x, now))
	}
	b.sum = &s
	return s
}

// invalidate makes the next read copy the guard's list again.
func (b *banIndex) invalidate() {
	b.mu.Lock()
	b.fresh = false
	b.mu.Unlock()
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

// matchBans filters the bans by q: an address (the bans covering it), a
// prefix (the bans overlapping it), or else text in the prefix, reason
// or source.
func matchBans(all []ban.Ban, q string) []ban.Ban {
	q = strings.TrimSpace(q)
	if q == "" {
		return all
	}
	var keep func(ban.Ban) bool
	if ip, err := netip.ParseAddr(q); err == nil {
		ip = ip.Unmap()
		keep = func(b ban.Ban) bool { return b.Prefix.Contains(ip) }
	} else if p, err := config.ParsePrefix(q); err == nil {
		keep = func(b ban.Ban) bool { return b.Prefix.Overlaps(p) }
	} else {
		lq := strings.ToLower(q)
		keep = func(b ban.Ban) bool {
			return strings.Contains(b.Prefix.String(), lq) || strings.Contains(strings.ToLower(b.Reason), lq) || b.Source == lq
		}
	}
	var out []ban.Ban
	for _, b := range all {
		if keep(b) {
			out = append(out, b)
		}
	}
	return out
}

// listBans: GET /api/bans?q=&offset=&limit=
func (c *Console) listBans(w http.ResponseWriter, r *http.Request, _ *principal) {
	offset, limit, err := paging(r, 100, 1000)
	if err != nil {
		fail(w, http.StatusBadRequest, "%v", err)
		return
	}
	match := matchBans(c.bans.all(), r.URL.Query().Get("q"))
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
		b, err := c.o.Guard.Ban(r.Context(), pfx, d, reason+" (console: "+p.admin+")")
		if err != nil {
			if strings.Contains(err.Error(), "never banned") {
				return nil, badRequest("%v", err)
			}
			return nil, err
		}
		c.bans.invalidate()
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
		found, err := c.o.Guard.Unban(r.Context(), pfx)
		if err != nil {
			return nil, err
		}
		c.bans.invalidate()
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
