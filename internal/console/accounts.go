package console

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/relayguard/relayguard/internal/accounts"
	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/queue"
	"github.com/relayguard/relayguard/internal/ratelimit"
	"github.com/relayguard/relayguard/internal/userdb"
)

// accountView is an account in the list.
type accountView struct {
	Name       string               `json:"name"`
	Mailbox    bool                 `json:"mailbox"` // a relayguard account (serve's userdb)
	Suspended  bool                 `json:"suspended"`
	Suspension *accounts.Suspension `json:"suspension,omitempty"`
	Networks   int                  `json:"networks"` // networks logged in from, seen by this process
	Logins     int                  `json:"logins"`
	LastLogin  time.Time            `json:"last_login,omitzero"`
}

// accountDetail is one account.
type accountDetail struct {
	accountView
	Addresses   []string          `json:"addresses"`
	LoginsSeen  []loginView       `json:"recent_logins"`
	VolumeKnown bool              `json:"volume_known"` // the accounts' state is there (sent_this_hour, baseline)
	SentHour    int64             `json:"sent_this_hour"`
	Baseline    int64             `json:"baseline"` // its busiest hour of accounts.volume_baseline
	Volume      volumeRule        `json:"volume_rule"`
	Limits      []ratelimit.Usage `json:"limits"`
	Errors      []string          `json:"errors,omitempty"` // parts that could not be read
}

// volumeRule is the volume signal's threshold, for the page to draw the
// account's hour against it.
type volumeRule struct {
	Factor   float64 `json:"factor"`
	Minimum  int     `json:"minimum"`
	Baseline string  `json:"baseline_window"`
}

// accountList gathers the accounts this process knows: serve's mail
// accounts, the suspensions (every front door's, shared by the store) and
// the logins seen by this process.
func (c *Console) accountList(ctx context.Context) ([]accountView, []string) {
	var errs []string
	byName := map[string]*accountView{}
	get := func(name string) *accountView {
		k := strings.ToLower(name)
		if v := byName[k]; v != nil {
			return v
		}
		v := &accountView{Name: name}
		byName[k] = v
		return v
	}
	if c.o.Users != nil {
		us, err := c.o.Users.List(ctx)
		if err != nil {
			errs = append(errs, err.Error())
		}
		for _, u := range us {
			v := get(u.Name)
			v.Mailbox, v.Suspended = true, u.Suspended
		}
	}
	if c.o.Accounts != nil {
		sps, err := c.o.Accounts.Store().Suspensions(ctx)
		if err != nil {
			errs = append(errs, err.Error())
		}
		for _, sp := range sps {
			v := get(sp.User)
			v.Suspended, v.Suspension = true, &sp
		}
	}
	for _, u := range c.stats.loginUsers() {
		get(u)
	}
	out := make([]accountView, 0, len(byName))
	for _, v := range byName {
		for _, l := range c.stats.loginsOf(v.Name) {
			v.Networks++
			v.Logins += l.Count
			if l.Last.After(v.LastLogin) {
				v.LastLogin = l.Last
			}
		}
		out = append(out, *v)
	}
	slices.SortFunc(out, func(a, b accountView) int {
		if a.Suspended != b.Suspended {
			if a.Suspended {
				return -1
			}
			return 1
		}
		return strings.Compare(strings.ToLower(a.Name), strings.ToLower(b.Name))
	})
	return out, errs
}

type accountPage struct {
	page[accountView]
	Errors []string `json:"errors,omitempty"`
}

// listAccounts: GET /api/accounts?q=&offset=&limit=
func (c *Console) listAccounts(w http.ResponseWriter, r *http.Request, _ *principal) {
	offset, limit, err := paging(r, 100, 1000)
	if err != nil {
		fail(w, http.StatusBadRequest, "%v", err)
		return
	}
	all, errs := c.accountList(r.Context())
	if q := strings.ToLower(strings.TrimSpace(r.URL.Query().Get("q"))); q != "" {
		var m []accountView
		for _, v := range all {
			if strings.Contains(strings.ToLower(v.Name), q) {
				m = append(m, v)
			}
		}
		all = m
	}
	writeJSON(w, http.StatusOK, accountPage{page: pageOf(all, offset, limit), Errors: errs})
}

// showAccount: GET /api/accounts/{name}
func (c *Console) showAccount(w http.ResponseWriter, r *http.Request, _ *principal) {
	name := r.PathValue("name")
	d, err := c.accountDetail(r.Context(), name)
	if err != nil {
		fail(w, http.StatusNotFound, "%v", err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

func (c *Console) accountDetail(ctx context.Context, name string) (accountDetail, error) {
	ac := c.o.Config.Accounts
	d := accountDetail{accountView: accountView{Name: name}, Addresses: []string{}, Limits: []ratelimit.Usage{},
		Volume: volumeRule{Factor: ac.VolumeFactor, Minimum: ac.VolumeMinimum, Baseline: humanDuration(ac.VolumeBaseline.D())}}
	known := false
	if c.o.Users != nil {
		a, err := c.o.Users.Get(ctx, name)
		switch {
		case err == nil:
			known = true
			d.Name, d.Mailbox, d.Suspended, d.Addresses = a.Name, true, a.Suspended, a.Addresses
		case !errors.Is(err, userdb.ErrNoSuchUser):
			d.Errors = append(d.Errors, err.Error())
		}
	}
	d.LoginsSeen = c.stats.loginsOf(d.Name)
	for _, l := range d.LoginsSeen {
		d.Networks++
		d.Logins += l.Count
		if l.Last.After(d.LastLogin) {
			d.LastLogin = l.Last
		}
	}
	known = known || len(d.LoginsSeen) > 0
	if c.o.Accounts != nil {
		st := c.o.Accounts.Store()
		if sp, ok, err := st.Suspended(ctx, d.Name); err != nil {
			d.Errors = append(d.Errors, err.Error())
		} else if ok {
			known, d.Suspended, d.Suspension = true, true, &sp
		}
		hour := c.o.Now().UTC().Truncate(time.Hour)
		if n, err := st.PeakHour(ctx, d.Name, hour, hour.Add(time.Hour)); err != nil {
			d.Errors = append(d.Errors, err.Error())
		} else {
			d.SentHour = n
		}
		if n, err := st.PeakHour(ctx, d.Name, hour.Add(-ac.VolumeBaseline.D()), hour); err != nil {
			d.Errors = append(d.Errors, err.Error())
		} else {
			d.Baseline, d.VolumeKnown = n, true
		}
		known = known || d.SentHour > 0 || d.Baseline > 0
	}
	if c.o.Limiter != nil {
		u, err := c.o.Limiter.Usage(ctx, d.Name)
		if err != nil {
			d.Errors = append(d.Errors, err.Error())
		}
		d.Limits = append(d.Limits, u...)
	}
	if !known {
		return d, notFound("account %q: not known here (no mail account, suspension, login or mail seen)", name)
	}
	return d, nil
}

type accountActionRequest struct {
	Reason string `json:"reason"`
}

// accountAction: POST /api/accounts/{name}/suspend|unsuspend {reason}
func (c *Console) accountAction(w http.ResponseWriter, r *http.Request, p *principal) {
	name, action := r.PathValue("name"), r.PathValue("action")
	var req accountActionRequest
	if err := readJSON(r, &req); err != nil {
		c.act(w, r, p, "account."+action, name, "", nil, badRequest("%v", err))
		return
	}
	ctx := r.Context()
	var result any
	var err error
	switch action {
	case "suspend":
		result, err = c.suspend(ctx, name, req.Reason, p)
	case "unsuspend":
		result, err = c.unsuspend(ctx, name, req.Reason)
	default:
		err = notFound("no account action %q (want suspend or unsuspend)", action)
	}
	c.act(w, r, p, "account."+action, name, req.Reason, result, err)
}

// suspend suspends an account everywhere, as `relayguard user suspend`
// does: the mail account (serve refuses its AUTH), the accounts' shared
// suspension (the policy service and milter defer its mail) and its queued
// mail held on this host.
func (c *Console) suspend(ctx context.Context, name, reason string, p *principal) (any, error) {
	reason, err := needReason(reason)
	if err != nil {
		return nil, err
	}
	if c.o.Users == nil && c.o.Accounts == nil {
		return nil, badRequest("no accounts in this process (%s)", c.o.Command)
	}
	if c.o.Users != nil {
		if err := c.o.Users.Suspend(ctx, name); err != nil && !errors.Is(err, userdb.ErrNoSuchUser) {
			return nil, err
		}
	}
	evidence := "suspended by " + p.admin + " from the console: " + reason
	held := 0
	if c.o.Accounts != nil {
		if _, err := c.o.Accounts.Suspend(ctx, name, config.SignalManual, evidence); err != nil {
			return nil, err
		}
	} else if c.o.Spool != nil {
		ids, err := queue.HoldUser(c.o.Spool, name, "account "+name+" suspended: "+evidence)
		if err != nil {
			return nil, err
		}
		held = len(ids)
	}
	if c.queue != nil {
		c.queue.invalidate()
	}
	d, err := c.accountDetail(ctx, name)
	if err != nil {
		return nil, err
	}
	return struct {
		accountDetail
		Held int `json:"held"`
	}{d, held}, nil
}

// unsuspend lifts a suspension and releases the mail held for it.
func (c *Console) unsuspend(ctx context.Context, name, reason string) (any, error) {
	if _, err := needReason(reason); err != nil {
		return nil, err
	}
	found := false
	if c.o.Users != nil {
		switch err := c.o.Users.Unsuspend(ctx, name); {
		case err == nil:
			found = true
		case !errors.Is(err, userdb.ErrNoSuchUser):
			return nil, err
		}
	}
	released := 0
	if c.o.Accounts != nil {
		_, ok, n, err := c.o.Accounts.Unsuspend(ctx, name)
		if err != nil {
			return nil, err
		}
		found, released = found || ok, n
	} else if c.o.Spool != nil {
		n, err := accounts.SpoolHolder{Spool: c.o.Spool}.Release(ctx, name)
		if err != nil {
			return nil, err
		}
		released = n
	}
	if !found {
		return nil, notFound("account %q is not suspended", name)
	}
	if c.queue != nil {
		c.queue.invalidate()
	}
	return map[string]any{"unsuspended": name, "released": released}, nil
}

// humanDuration writes whole days, hours and minutes as "14d", "1h",
// "30m" (Go writes "336h0m0s", "1h0m0s", "30m0s").
func humanDuration(d time.Duration) string {
	switch {
	case d >= 24*time.Hour && d%(24*time.Hour) == 0:
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	case d >= time.Hour && d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d >= time.Minute && d%time.Minute == 0:
		return fmt.Sprintf("%dm", d/time.Minute)
	}
	return d.String()
}
