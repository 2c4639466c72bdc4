package audit

import (
	"bufio"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/logline"
	"github.com/relayguard/relayguard/internal/logwatch"
	"github.com/relayguard/relayguard/internal/userdb"
)

// unusedAge is how old an account must be before "never used" counts.
const unusedAge = 30 * 24 * time.Hour

// auditAccounts looks at relayguard's accounts: CRAM-MD5 secrets stored,
// suspended accounts, accounts nobody ever logs in with.
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
	if len(accts) == 0 {
		return
	}
	var cram, suspended []string
	for _, a := range accts {
		if a.HasCRAM {
			cram = append(cram, a.Name)
		}
		if a.Suspended {
			suspended = append(suspended, a.Name)
		}
	}
	if len(cram) > 0 {
		fix := "give each a new password with CRAM-MD5 off ([auth] cram_md5 = false, CRAM-MD5 out of mechanisms): relayguard user passwd NAME"
		r.add(Finding{Check: "accounts.cram-md5-secret", Area: AreaAccounts, Severity: Medium, Subject: fmt.Sprintf("%d accounts", len(cram)),
			Title:    "CRAM-MD5 secrets are stored: they are password equivalents, a stolen database logs in as these accounts without cracking anything",
			Evidence: []string{"accounts with a CRAM-MD5 secret: " + list(cram, 20)}, Fix: fix})
	}
	if len(suspended) > 0 {
		r.add(Finding{Check: "accounts.suspended", Area: AreaAccounts, Severity: Info, Subject: fmt.Sprintf("%d accounts", len(suspended)),
			Title:    "suspended accounts: their mail is refused until an operator lifts the suspension",
			Evidence: []string{"suspended: " + list(suspended, 20)},
			Fix:      "change the password, then relayguard user unsuspend NAME (or delete the account: relayguard user del NAME)"})
	}
	r.unusedAccounts(ctx, accts)
}

// unusedAccounts reports accounts older than unusedAge that no log read
// shows logging in: forgotten accounts are the ones whose stolen password
// nobody notices.
func (r *run) unusedAccounts(ctx context.Context, accts []userdb.Account) {
	if len(r.o.Logs) == 0 {
		r.note("no log read (--log or [report] logs): accounts never used are not reported")
		return
	}
	used := map[string]bool{}
	var first time.Time
	for _, name := range r.o.Logs {
		f, err := logline.Open(ctx, name)
		if err != nil {
			r.problem(AreaAccounts, "logs", err)
			return
		}
		var p logwatch.Parser
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			e, ok := p.Parse(sc.Text())
			if !ok {
				continue
			}
			if !e.Time.IsZero() && (first.IsZero() || e.Time.Before(first)) {
				first = e.Time
			}
			if e.Kind == event.AuthSuccess && e.User != "" {
				used[strings.ToLower(e.User)] = true
			}
		}
		f.Close()
	}
	var unused []string
	for _, a := range accts {
		if a.Suspended || r.now.Sub(a.Created) < unusedAge {
			continue
		}
		if !used[strings.ToLower(a.Name)] && !slices.ContainsFunc(a.Addresses, func(ad string) bool { return used[strings.ToLower(ad)] }) {
			unused = append(unused, a.Name)
		}
	}
	if len(unused) == 0 {
		return
	}
	since := "the start of the logs"
	if !first.IsZero() {
		since = first.Format("2006-01-02")
	}
	r.add(Finding{Check: "accounts.never-used", Area: AreaAccounts, Severity: Low, Subject: fmt.Sprintf("%d accounts", len(unused)),
		Title:    "accounts with no login in the logs: a forgotten account's password is guessed or leaked and nobody notices",
		Evidence: []string{fmt.Sprintf("no successful login since %s in %s: %s", since, strings.Join(r.o.Logs, ", "), list(unused, 20))},
		Fix:      "delete the accounts nobody needs (relayguard user del NAME) or suspend them (relayguard user suspend NAME)"})
}
