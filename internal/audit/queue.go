package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/relayguard/relayguard/internal/queue"
)

// spamRunDomains is how many distinct recipient domains of one sender's
// deferred mail look like a spam run rather than a mail server having a
// bad day.
const spamRunDomains = 20

// queued is one queued message as the checks see it, from Postfix or
// relayguard's spool.
type queued struct {
	ID       string
	Sender   string
	AuthUser string
	Rcpts    []string
	Deferred bool
	Reason   string
}

// queueSource is one queue: a Postfix instance or relayguard's spool.
type queueSource struct {
	name     string
	postfix  *postfixInstance
	messages []queued
}

// auditQueue reads the queues and looks for backscatter and spam runs.
func (r *run) auditQueue(ctx context.Context) {
	var srcs []queueSource
	for _, p := range r.postfix {
		if !p.Running {
			continue
		}
		ms, err := postfixQueue(ctx, p)
		if err != nil {
			r.problem(AreaQueue, "postqueue", err)
			continue
		}
		srcs = append(srcs, queueSource{name: "Postfix " + p.Dir + " queue", postfix: p, messages: ms})
	}
	if fi, err := os.Stat(filepath.Join(r.cfg.Spool.Dir, "msg")); err == nil && fi.IsDir() {
		ms, err := spoolQueue(r.cfg.Spool.Dir)
		if err != nil {
			r.problem(AreaQueue, "spool", err)
		} else {
			srcs = append(srcs, queueSource{name: "relayguard spool " + r.cfg.Spool.Dir, messages: ms})
		}
	}
	local := r.localDomains()
	for _, d := range r.cfg.Site.RelayDomains {
		local = append(local, strings.TrimPrefix(d, "."))
	}
	for _, s := range srcs {
		r.backscatter(s, local)
		r.spamRuns(s)
	}
}

func domainOf(addr string) string {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return ""
	}
	return strings.ToLower(strings.TrimSuffix(addr[i+1:], "."))
}

func isLocal(d string, local []string) bool {
	for _, l := range local {
		if d == l || strings.HasSuffix(d, "."+l) {
			return true
		}
	}
	return false
}

// backscatter: bounces (null sender) queued to addresses outside this
// host's domains go to whoever a spammer forged as sender.
func (r *run) backscatter(s queueSource, local []string) {
	var rcpts []string
	var reasons []string
	n := 0
	for _, m := range s.messages {
		if m.Sender != "" {
			continue
		}
		for _, rc := range m.Rcpts {
			if d := domainOf(rc); d != "" && !isLocal(d, local) {
				n++
				if len(rcpts) < 8 {
					rcpts = append(rcpts, rc)
				}
				if m.Reason != "" && len(reasons) < 3 && !slices.Contains(reasons, m.Reason) {
					reasons = append(reasons, m.Reason)
				}
			}
		}
	}
	if n == 0 {
		return
	}
	sev := Medium
	if n >= 10 {
		sev = High
	}
	ev := []string{fmt.Sprintf("%d bounces queued to outside addresses: %s", n, strings.Join(rcpts, ", "))}
	for _, x := range reasons {
		ev = append(ev, "delivery: "+x)
	}
	fix := "reject unknown recipients at RCPT time instead of bouncing later (see the postfix backscatter findings), then delete the queued bounces"
	if s.postfix != nil {
		fix += fmt.Sprintf(": postqueue -c %s -j | jq -r 'select(.sender==\"\") | .queue_id' | postsuper -c %s -d -", s.postfix.Dir, s.postfix.Dir)
	}
	r.add(Finding{Check: "queue.backscatter", Area: AreaQueue, Severity: sev, Subject: s.name,
		Title: "bounces queued to senders outside this host: backscatter to forged addresses gets the host blocklisted", Evidence: ev, Fix: fix})
}

// spamRuns: deferred mail of one sender to many distinct domains.
func (r *run) spamRuns(s queueSource) {
	type acc struct {
		msgs    int
		domains map[string]bool
		user    string
		reason  string
	}
	by := map[string]*acc{}
	for _, m := range s.messages {
		if !m.Deferred || m.Sender == "" {
			continue
		}
		a := by[m.Sender]
		if a == nil {
			a = &acc{domains: map[string]bool{}}
			by[m.Sender] = a
		}
		a.msgs++
		a.user = m.AuthUser
		if a.reason == "" {
			a.reason = m.Reason
		}
		for _, rc := range m.Rcpts {
			if d := domainOf(rc); d != "" {
				a.domains[d] = true
			}
		}
	}
	for _, snd := range slices.Sorted(maps.Keys(by)) {
		a := by[snd]
		if len(a.domains) < spamRunDomains {
			continue
		}
		ds := slices.Sorted(maps.Keys(a.domains))
		ev := []string{fmt.Sprintf("%d deferred messages from %s to %d domains: %s", a.msgs, snd, len(ds), list(ds, 8))}
		if a.reason != "" {
			ev = append(ev, "deferred because: "+a.reason)
		}
		fix := "find how it was sent (relayguard report, the account's logins), suspend the account (relayguard user suspend NAME, which holds its queued mail) and delete the spam"
		if a.user != "" {
			ev = append(ev, "authenticated as "+a.user)
			fix = fmt.Sprintf("relayguard user suspend %s (holds its queued mail), change its password, then delete the spam with relayguard queue delete ID", a.user)
		} else if s.postfix != nil {
			fix = fmt.Sprintf("hold it: postqueue -c %s -j | jq -r 'select(.sender==\"%s\") | .queue_id' | postsuper -c %s -h -; find the account or script that sent it (relayguard report; egress watch; the milter's per-uid log)", s.postfix.Dir, snd, s.postfix.Dir)
		}
		r.add(Finding{Check: "queue.spam-run", Area: AreaQueue, Severity: High, Subject: snd,
			Title: fmt.Sprintf("one sender has deferred mail to %d domains in %s: a spam run in progress looks like this", len(ds), s.name), Evidence: ev, Fix: fix})
	}
}

// postfixQueue lists a running instance's queue (postqueue -j, one JSON
// object per message).
func postfixQueue(ctx context.Context, p *postfixInstance) ([]queued, error) {
	bin := filepath.Join(filepath.Dir(postconfBin()), "postqueue")
	cmd := exec.CommandContext(ctx, bin, "-c", p.Dir, "-j")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("postqueue -c %s -j: %v: %s", p.Dir, err, strings.TrimSpace(stderr.String()))
	}
	var ms []queued
	for _, line := range bytes.Split(out, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var e struct {
			QueueName  string `json:"queue_name"`
			QueueID    string `json:"queue_id"`
			Sender     string `json:"sender"`
			Recipients []struct {
				Address string `json:"address"`
				Reason  string `json:"delay_reason"`
			} `json:"recipients"`
		}
		if err := json.Unmarshal(line, &e); err != nil {
			return nil, fmt.Errorf("postqueue -c %s -j: line %q: %w", p.Dir, line, err)
		}
		m := queued{ID: e.QueueID, Sender: e.Sender, Deferred: e.QueueName == "deferred"}
		if m.Sender == "MAILER-DAEMON" {
			m.Sender = ""
		}
		for _, rc := range e.Recipients {
			m.Rcpts = append(m.Rcpts, rc.Address)
			if m.Reason == "" {
				m.Reason = rc.Reason
			}
		}
		ms = append(ms, m)
	}
	return ms, nil
}

// spoolQueue lists relayguard's spool (read-only: OpenForAdmin removes
// nothing).
func spoolQueue(dir string) ([]queued, error) {
	sp, err := queue.OpenForAdmin(dir, nil)
	if err != nil {
		return nil, err
	}
	defer sp.Close()
	envs, err := sp.List()
	if err != nil {
		return nil, fmt.Errorf("spool %s: %w", dir, err)
	}
	var ms []queued
	for _, e := range envs {
		m := queued{ID: e.ID, Sender: e.From, AuthUser: e.AuthUser}
		for _, rc := range e.Recipients {
			if rc.Status != queue.StatusQueued && rc.Status != queue.StatusHeld {
				continue
			}
			m.Rcpts = append(m.Rcpts, rc.Addr)
			if rc.Attempts > 0 {
				m.Deferred = true
				if m.Reason == "" {
					m.Reason = rc.LastError
				}
			}
		}
		ms = append(ms, m)
	}
	return ms, nil
}
