package audit

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/relayguard/relayguard/internal/accounts"
	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/logwatch"
	"github.com/relayguard/relayguard/internal/userdb"
)

// unusedAge is how old an account must be before "never used" counts.
const unusedAge = 30 * 24 * time.Hour

// auditAccounts looks at the accounts: CRAM-MD5 secrets stored in
// relayguard's account database, suspended accounts (relayguard's and
// those the compromise detection of internal/accounts suspended, Postfix
// and Dovecot users included), accounts sending far above their own
// baseline or whose name is being guessed from many addresses (the
// detection's counters), and accounts nobody logs in with.
func (r *run) auditAccounts(ctx context.Context) {
	if r.o.Stores == nil || r.o.Stores.DB == nil {
		r.note("no relayguard data directory (%s): no relayguard accounts to audit", r.cfg.DataDir)
		return
	}
	db, err := userdb.Open(ctx, r.o.Stores.DB, userdb.Options{PasswordHash: r.cfg.Auth.PasswordHash, SCRAMIterations: r.cfg.Auth.SCRAMIterations, Logger: r.log})
	if err != nil {
		r.problem(AreaAccounts, "accounts", err)
		return
	}
	accts, err := db.List(ctx)
	if err != nil {
		r.problem(AreaAccounts, "accounts", err)
		return
	}
	ac := r.cfg.Accounts
	keep := max(ac.KnownNetworkAge.D(), ac.VolumeBaseline.D(), ac.LoginSpreadWindow.D(), ac.GuessingWindow.D())
	st, err := accounts.NewStore(ctx, r.o.Stores, keep, r.log)
	if err != nil {
		r.problem(AreaAccounts, "accounts-state", err)
		st = nil
	}
	var cram []string
	suspended := map[string]string{}
	for _, a := range accts {
		if a.HasCRAM {
			cram = append(cram, a.Name)
		}
		if a.Suspended {
			suspended[strings.ToLower(a.Name)] = a.Name + " (relayguard user suspend)"
		}
	}
	if st != nil {
		sps, err := st.Suspensions(ctx)
		if err != nil {
			r.problem(AreaAccounts, "suspensions", err)
		}
		for _, sp := range sps {
			suspended[strings.ToLower(sp.User)] = fmt.Sprintf("%s (%s since %s by %s: %s)", sp.User, sp.Signal, sp.Since.Format("2006-01-02 15:04"), sp.By, sp.Evidence)
		}
	}
	if len(cram) > 0 {
		fix := "give each a new password with CRAM-MD5 off ([auth] cram_md5 = false, CRAM-MD5 out of mechanisms): relayguard user passwd NAME"
		r.add(Finding{Check: "accounts.cram-md5-secret", Area: AreaAccounts, Severity: Medium, Subject: fmt.Sprintf("%d accounts", len(cram)),
			Title:    "CRAM-MD5 secrets are stored: they are password equivalents, a stolen database logs in as these accounts without cracking anything",
			Evidence: []string{"accounts with a CRAM-MD5 secret: " + list(cram, 20)}, Fix: fix})
	}
	if len(suspended) > 0 {
		var ev []string
		for _, k := range slices.Sorted(maps.Keys(suspended)) {
			ev = append(ev, suspended[k])
		}
		r.add(Finding{Check: "accounts.suspended", Area: AreaAccounts, Severity: Info, Subject: fmt.Sprintf("%d accounts", len(suspended)),
			Title:    "suspended accounts: their mail is refused and held until an operator lifts the suspension",
			Evidence: ev,
			Fix:      "change the password, then relayguard user unsuspend NAME (which releases the held mail), or delete the account"})
	}
	if st != nil {
		r.accountSignals(ctx, st, accts, suspended)
	}
	if len(accts) > 0 {
		r.unusedAccounts(ctx, st, accts)
	}
}

// accountSignals reads the compromise detection's counters for every
// relayguard account not already suspended: the busiest hour of the last
// day against the busiest of its baseline ([accounts] volume_*), and the
// addresses that failed to log in as it within guessing_window.
func (r *run) accountSignals(ctx context.Context, st accounts.Store, accts []userdb.Account, suspended map[string]string) {
	ac := r.cfg.Accounts
	day := r.now.Add(-24 * time.Hour)
	for _, a := range accts {
		if _, ok := suspended[strings.ToLower(a.Name)]; ok {
			continue
		}
		if ac.VolumeFactor > 0 {
			recent, err1 := st.PeakHour(ctx, a.Name, day.Truncate(time.Hour), r.now.Add(time.Hour))
			base, err2 := st.PeakHour(ctx, a.Name, r.now.Add(-ac.VolumeBaseline.D()).Truncate(time.Hour), day.Truncate(time.Hour))
			if err := errors.Join(err1, err2); err != nil {
				r.problem(AreaAccounts, "volume", fmt.Errorf("%s: %w", a.Name, err))
			} else if recent >= int64(ac.VolumeMinimum) && float64(recent) > ac.VolumeFactor*float64(base) {
				r.add(Finding{Check: "accounts.volume", Area: AreaAccounts, Severity: High, Subject: a.Name,
					Title: fmt.Sprintf("the account sent %d messages in one hour of the last day, more than %g times its busiest hour before (%d)", recent, ac.VolumeFactor, base),
					Evidence: []string{fmt.Sprintf("busiest hour of the last 24 h: %d; of the %s before: %d ([accounts] volume_factor %g, volume_minimum %d)",
						recent, ac.VolumeBaseline.D(), base, ac.VolumeFactor, ac.VolumeMinimum)},
					Fix: fmt.Sprintf("if the owner did not send it: relayguard user suspend %s (holds its queued mail), change the password", a.Name)})
			}
		}
		if ac.GuessingAddresses > 0 {
			n, err := st.Failures(ctx, a.Name, r.now.Add(-ac.GuessingWindow.D()))
			if err != nil {
				r.problem(AreaAccounts, "guessing", fmt.Errorf("%s: %w", a.Name, err))
			} else if n > ac.GuessingAddresses {
				r.add(Finding{Check: "accounts.guessed", Area: AreaAccounts, Severity: Medium, Subject: a.Name,
					Title:    fmt.Sprintf("%d addresses failed to log in as this account within %s: its password is being guessed", n, ac.GuessingWindow.D()),
					Evidence: []string{fmt.Sprintf("%d distinct addresses ([accounts] guessing_addresses %d)", n, ac.GuessingAddresses)},
					Fix:      "make sure the password is long and unique; logins from new networks are refused while the guessing lasts"})
			}
		}
	}
}

// unusedAccounts reports accounts older than unusedAge that never logged
// in: not in the compromise detection's record of logins, and not in the
// logs read. Forgotten accounts are the ones whose stolen password nobody
// notices.
func (r *run) unusedAccounts(ctx context.Context, st accounts.Store, accts []userdb.Account) {
	used := map[string]bool{}
	var first time.Time
	r.readLogs(ctx, AreaAccounts, func(string) func(string) {
		var p logwatch.Parser // one per file: the syslog year runs on within it
		return func(line string) {
			e, ok := p.Parse(line)
			if !ok {
				return
			}
			if !e.Time.IsZero() && (first.IsZero() || e.Time.Before(first)) {
				first = e.Time
			}
			if e.Kind == event.AuthSuccess && e.User != "" {
				used[strings.ToLower(e.User)] = true
			}
		}
	})
	loggedIn := func(name string) bool {
		if used[strings.ToLower(name)] || st == nil {
			return used[strings.ToLower(name)]
		}
		ok, err := st.LoggedIn(ctx, name)
		if err != nil {
			r.problem(AreaAccounts, "logins", fmt.Errorf("%s: %w", name, err))
			return true
		}
		return ok
	}
	var unused []string
	for _, a := range accts {
		if a.Suspended || r.now.Sub(a.Created) < unusedAge {
			continue
		}
		if !loggedIn(a.Name) && !slices.ContainsFunc(a.Addresses, func(ad string) bool { return used[strings.ToLower(ad)] }) {
			unused = append(unused, a.Name)
		}
	}
	if len(unused) == 0 {
		return
	}
	where := "in relayguard's record of logins"
	if len(r.o.Logs) > 0 {
		since := "their start"
		if !first.IsZero() {
			since = first.Format("2006-01-02")
		}
		where += fmt.Sprintf(" nor in %s (since %s)", strings.Join(r.o.Logs, ", "), since)
	}
	r.add(Finding{Check: "accounts.never-used", Area: AreaAccounts, Severity: Low, Subject: fmt.Sprintf("%d accounts", len(unused)),
		Title:    "accounts older than 30 days that never logged in: a forgotten account's password is guessed or leaked and nobody notices",
		Evidence: []string{fmt.Sprintf("no successful login %s: %s", where, list(unused, 20))},
		Fix:      "delete the accounts nobody needs (relayguard user del NAME) or suspend them (relayguard user suspend NAME)"})
}
