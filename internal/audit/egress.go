package audit

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/user"
	"slices"
	"strings"
	"time"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/egress"
	"github.com/relayguard/relayguard/internal/maillog"
)

// recentWindow is how far back blocked attempts count as recent.
const recentWindow = 7 * 24 * time.Hour

// egressCommand is the command --fix runs in effect.
const egressCommand = "relayguard egress apply --persist"

// auditEgress checks the outbound lockdown: in place, persisted, who it
// lets through, and what it blocked lately.
func (r *run) auditEgress(ctx context.Context) {
	c := r.cfg.Egress
	spec, err := egress.SpecFromConfig(c, nil)
	if err != nil {
		r.problem(AreaEgress, "spec", err)
		return
	}
	primary, err := egress.NewBackend(c.Backend)
	if err != nil {
		r.problem(AreaEgress, "backend", err)
		return
	}
	subj := "egress lockdown (" + primary.Name() + ")"
	var st egress.Status
	var be egress.Backend
	for _, name := range []string{primary.Name(), map[string]string{"nftables": "iptables", "iptables": "nftables"}[primary.Name()]} {
		b, _ := egress.NewBackend(name)
		s, err := b.Status(ctx)
		if err != nil {
			if name == primary.Name() {
				r.problem(AreaEgress, "status", err)
				return
			}
			continue
		}
		if s.Installed {
			st, be = s, b
			break
		}
	}
	apply := &Remedy{Key: "egress:apply", Show: egressCommand + " (backend " + primary.Name() + ", ports " + portList(spec.Ports) + ", allowed " + idNames(spec.UIDs) + ")",
		Apply: func() error {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := primary.Apply(ctx, spec); err != nil {
				return err
			}
			_, err := egress.WritePersist(primary, spec, r.o.EgressPersistDir, r.o.EgressUnitDir)
			return err
		}}
	if be == nil {
		r.add(withRemedy(Finding{Check: "egress.no-lockdown", Area: AreaEgress, Severity: High, Subject: subj,
			Title: "no egress lockdown: every local user and program can connect to remote SMTP ports — a hacked web script sends spam straight out",
			Evidence: []string{fmt.Sprintf("no table inet %s (nftables) and no iptables chain of relayguard's lockdown", egress.NFTTable),
				fmt.Sprintf("users who can reach remote ports %s: all %d accounts of this host", portList(spec.Ports), countUsers())},
			Fix: egressCommand}, apply))
	} else {
		subj = "egress lockdown (" + be.Name() + ")"
		r.lintLockdown(st, be, spec, subj, apply)
	}
	r.blockedAttempts(ctx, st)
}

func (r *run) lintLockdown(st egress.Status, be egress.Backend, spec egress.Spec, subj string, apply *Remedy) {
	mta := map[uint32]bool{}
	for _, name := range config.DefaultEgressUsers {
		if uid, err := config.LookupUID(name); err == nil {
			mta[uid] = true
		}
	}
	for _, uid := range st.UIDs {
		if mta[uid] {
			continue
		}
		sev, why := Medium, "may connect to remote SMTP ports directly, bypassing the MTA's limits and logs"
		if uid == 0 {
			sev, why = Low, "root may connect to remote SMTP ports directly (allow_root): root daemons should mail through the MTA"
		}
		r.add(Finding{Check: "egress.allowed-user", Area: AreaEgress, Severity: sev, Subject: subj,
			Title:    fmt.Sprintf("user %s (uid %d) %s", egress.UserName(uid), uid, why),
			Evidence: []string{"allowed uids in the installed rules: " + idNames(st.UIDs)},
			Fix:      "remove the user from [egress] allowed_users (or allow_root = false) and run " + egressCommand})
	}
	for _, gid := range st.GIDs {
		members := groupMembers(gid)
		r.add(Finding{Check: "egress.allowed-group", Area: AreaEgress, Severity: Medium, Subject: subj,
			Title:    fmt.Sprintf("every member of group %s (gid %d) may connect to remote SMTP ports directly", egress.GroupName(gid), gid),
			Evidence: []string{"members: " + orDash(strings.Join(members, ", "))},
			Fix:      "remove the group from [egress] allowed_groups and run " + egressCommand})
	}
	for _, p := range []uint16{25, 465, 587} {
		if !slices.Contains(st.Ports, p) {
			r.add(withRemedy(Finding{Check: "egress.port-open", Area: AreaEgress, Severity: Low, Subject: subj,
				Title:    fmt.Sprintf("remote port %d is not locked down: any program can submit mail to outside servers through it", p),
				Evidence: []string{"locked ports: " + portList(st.Ports)},
				Fix:      fmt.Sprintf("add %d to [egress] ports and run %s", p, egressCommand)}, apply))
		}
	}
	if !sameSet(st.UIDs, spec.UIDs) || !sameSet(st.GIDs, spec.GIDs) || !sameSet(st.Ports, spec.Ports) {
		r.add(withRemedy(Finding{Check: "egress.rules-differ", Area: AreaEgress, Severity: Low, Subject: subj,
			Title: "the installed lockdown is not the configured one",
			Evidence: []string{fmt.Sprintf("installed: ports %s, uids %s, gids %v", portList(st.Ports), idNames(st.UIDs), st.GIDs),
				fmt.Sprintf("configured: ports %s, uids %s, gids %v", portList(spec.Ports), idNames(spec.UIDs), spec.GIDs)}}, apply))
	}
	missing, differ := egress.PersistState(be, spec, r.o.EgressPersistDir, r.o.EgressUnitDir)
	switch {
	case len(missing) > 0:
		r.add(withRemedy(Finding{Check: "egress.not-persisted", Area: AreaEgress, Severity: Medium, Subject: subj,
			Title:    "the lockdown is not persisted: it is gone after the next reboot",
			Evidence: []string{"missing: " + strings.Join(missing, ", ")}, Fix: egressCommand}, apply))
	case len(differ) > 0:
		r.add(withRemedy(Finding{Check: "egress.persist-differs", Area: AreaEgress, Severity: Medium, Subject: subj,
			Title:    "the persisted lockdown differs from the configuration: a reboot brings back other rules",
			Evidence: []string{"differ: " + strings.Join(differ, ", ")}, Fix: egressCommand}, apply))
	}
}

// blockedAttempts reports the drop rule's counter and the attempts the
// logs name (relayguard's "egress blocked" records and kernel LOG lines
// with --log-uid).
func (r *run) blockedAttempts(ctx context.Context, st egress.Status) {
	var drops uint64
	for _, rule := range st.Rules {
		if strings.Contains(strings.ToLower(rule.Text), "drop") {
			drops += rule.Packets
		}
	}
	type who struct {
		user     string
		uid      int
		count    int
		last     time.Time
		exe, cmd string
		cwd      string
		dsts     []string
	}
	byUID := map[int]*who{}
	cut := r.now.Add(-recentWindow)
	var kernel egress.Summary
	var kernelLines strings.Builder
	flush := func(name string) {
		if kernelLines.Len() > 0 {
			if err := kernel.Summarise(strings.NewReader(kernelLines.String()), name, 0); err != nil {
				r.problem(AreaEgress, "logs", err)
			}
			kernelLines.Reset()
		}
	}
	prev := ""
	r.readLogs(ctx, AreaEgress, func(name string) func(string) {
		flush(prev)
		prev = name
		return func(line string) {
			if strings.Contains(line, "IN=") && strings.Contains(line, "DPT=") {
				kernelLines.WriteString(line + "\n")
				return
			}
			rec, ok := maillog.Parse(line)
			if !ok || rec.Kind != maillog.KindEgressBlocked || !rec.Time.IsZero() && rec.Time.Before(cut) {
				return
			}
			w := byUID[rec.UID]
			if w == nil {
				w = &who{user: rec.User, uid: rec.UID}
				byUID[rec.UID] = w
			}
			w.count++
			if rec.Time.After(w.last) || w.last.IsZero() {
				w.last = rec.Time
				if rec.Exe != "" {
					w.exe, w.cmd, w.cwd = rec.Exe, rec.Cmdline, rec.Cwd
				}
			}
			if d := rec.Dst.String(); !slices.Contains(w.dsts, d) && len(w.dsts) < 5 {
				w.dsts = append(w.dsts, d)
			}
		}
	})
	flush(prev)
	for _, u := range kernel.Users {
		if !u.HasUID || !u.Last.IsZero() && u.Last.Before(cut) {
			continue
		}
		w := byUID[int(u.UID)]
		if w == nil {
			w = &who{user: u.User, uid: int(u.UID)}
			byUID[int(u.UID)] = w
		}
		w.count += u.Attempts
		if u.Last.After(w.last) {
			w.last = u.Last
		}
		for _, d := range u.Destinations {
			if len(w.dsts) < 5 && !slices.Contains(w.dsts, d.Dst.String()) {
				w.dsts = append(w.dsts, d.Dst.String())
			}
		}
	}
	for _, uid := range slices.Sorted(maps.Keys(byUID)) {
		w := byUID[uid]
		ev := []string{fmt.Sprintf("%d blocked attempts in the logs since %s, the last at %s", w.count, cut.Format("2006-01-02"), fmtTime(w.last)),
			"destinations: " + strings.Join(w.dsts, ", ")}
		if w.exe != "" {
			ev = append(ev, fmt.Sprintf("process: %s (%s), working directory %s", w.exe, w.cmd, orDash(w.cwd)))
		}
		r.add(Finding{Check: "egress.blocked-attempts", Area: AreaEgress, Severity: High, Subject: fmt.Sprintf("user %s (uid %d)", w.user, w.uid),
			Title:    "a local program tried to send mail directly to remote servers: the lockdown stopped it, but the program is still there",
			Evidence: ev,
			Fix:      "find and remove the program (look in its working directory for dropped scripts), change the account's passwords, then watch with: relayguard egress watch"})
	}
	if drops > 0 && len(byUID) == 0 {
		r.add(Finding{Check: "egress.blocked-counter", Area: AreaEgress, Severity: Medium, Subject: "egress lockdown",
			Title:    fmt.Sprintf("the lockdown dropped %d packets to remote SMTP ports since it was loaded, and no log read names the program", drops),
			Evidence: []string{"drop rule counter: " + fmt.Sprint(drops), "logs read: " + orDash(strings.Join(r.o.Logs, ", "))},
			Fix:      "run relayguard egress watch to name the programs, or pass the logs it writes with --log"})
	}
}

func portList(ps []uint16) string {
	var s []string
	for _, p := range ps {
		s = append(s, fmt.Sprint(p))
	}
	return orDash(strings.Join(s, ","))
}

func idNames(ids []uint32) string {
	var s []string
	for _, id := range ids {
		s = append(s, fmt.Sprintf("%s(%d)", egress.UserName(id), id))
	}
	return orDash(strings.Join(s, ", "))
}

func orDash(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "(unknown time)"
	}
	return t.Format("2006-01-02 15:04:05")
}

// countUsers counts the accounts in /etc/passwd.
func countUsers() int {
	b, err := os.ReadFile("/etc/passwd")
	if err != nil {
		return 0
	}
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Count(l, ":") >= 6 {
			n++
		}
	}
	return n
}

// groupMembers lists a group's members (its supplementary members and the
// users whose primary group it is).
func groupMembers(gid uint32) []string {
	var out []string
	if g, err := user.LookupGroupId(fmt.Sprint(gid)); err == nil {
		if b, err := os.ReadFile("/etc/group"); err == nil {
			for _, l := range strings.Split(string(b), "\n") {
				f := strings.Split(l, ":")
				if len(f) == 4 && f[0] == g.Name && f[3] != "" {
					out = append(out, strings.Split(f[3], ",")...)
				}
			}
		}
	}
	if b, err := os.ReadFile("/etc/passwd"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Split(l, ":")
			if len(f) >= 4 && f[3] == fmt.Sprint(gid) && !slices.Contains(out, f[0]) {
				out = append(out, f[0])
			}
		}
	}
	return out
}

func sameSet[T uint16 | uint32](a, b []T) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}
