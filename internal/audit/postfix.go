package audit

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// postfixInstance is one Postfix configuration as postconf(1) reads it.
type postfixInstance struct {
	Dir     string
	Running bool
	// Main holds every parameter's effective value, expanded (postconf
	// -x), Set the parameters main.cf sets, as written (postconf -n).
	Main, Set map[string]string
	Services  []postfixService
	// Overrides are master.cf's -o parameters: "name/type" → parameter →
	// value (postconf -P).
	Overrides map[string]map[string]string
}

// postfixService is one master.cf entry (postconf -M).
type postfixService struct {
	Name, Type, Command string
	Line                string
}

// Key is "name/type", as postconf -P names the service.
func (s postfixService) Key() string { return s.Name + "/" + s.Type }

// param is a parameter's effective value for a service: its -o override,
// else main.cf's.
func (p *postfixInstance) param(svc, name string) string {
	if v, ok := p.Overrides[svc][name]; ok {
		return v
	}
	return p.Main[name]
}

// postconfBin finds postconf(1) (often outside PATH in /usr/sbin).
func postconfBin() string {
	if p, err := exec.LookPath("postconf"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/postconf"); err == nil {
		return "/usr/sbin/postconf"
	}
	return ""
}

// findPostfix reads every Postfix instance: those behind the listeners,
// the ones named in the options and /etc/postfix when it has a main.cf.
func (r *run) findPostfix(ctx context.Context) {
	running := map[string]bool{}
	var dirs []string
	for _, d := range r.masters {
		running[d] = true
		dirs = append(dirs, d)
	}
	dirs = append(dirs, r.o.PostfixDirs...)
	if _, err := os.Stat("/etc/postfix/main.cf"); err == nil {
		dirs = append(dirs, "/etc/postfix")
	}
	bin := postconfBin()
	seen := map[string]bool{}
	for _, d := range dirs {
		d = filepath.Clean(d)
		if seen[d] {
			continue
		}
		seen[d] = true
		if bin == "" {
			r.problem(AreaPostfix, "postconf", fmt.Errorf("Postfix configuration %s found but postconf(1) is not installed", d))
			continue
		}
		p, err := readPostfix(ctx, bin, d)
		if err != nil {
			r.problem(AreaPostfix, "postconf", err)
			continue
		}
		p.Running = running[d]
		r.postfix = append(r.postfix, p)
	}
}

func postconf(ctx context.Context, bin, dir string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, bin, append([]string{"-c", dir}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("postconf -c %s %s: %v: %s", dir, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// readPostfix runs postconf, postconf -n, -M and -P.
func readPostfix(ctx context.Context, bin, dir string) (*postfixInstance, error) {
	p := &postfixInstance{Dir: dir, Main: map[string]string{}, Set: map[string]string{}, Overrides: map[string]map[string]string{}}
	// -x expands $name and ${name?value} (compatibility_level defaults):
	// the values as smtpd uses them.
	for _, q := range []struct {
		arg string
		m   map[string]string
	}{{"-x", p.Main}, {"-n", p.Set}} {
		out, err := postconf(ctx, bin, dir, q.arg)
		if err != nil {
			return nil, err
		}
		for _, line := range strings.Split(string(out), "\n") {
			k, v, ok := strings.Cut(line, "=")
			if ok {
				q.m[strings.TrimSpace(k)] = strings.TrimSpace(v)
			}
		}
	}
	out, err := postconf(ctx, bin, dir, "-M")
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		p.Services = append(p.Services, postfixService{Name: f[0], Type: f[1], Command: f[7], Line: strings.Join(f, " ")})
	}
	out, err = postconf(ctx, bin, dir, "-P", "-x")
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(string(out), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		parts := strings.SplitN(strings.TrimSpace(k), "/", 3)
		if len(parts) != 3 {
			continue
		}
		svc := parts[0] + "/" + parts[1]
		if p.Overrides[svc] == nil {
			p.Overrides[svc] = map[string]string{}
		}
		p.Overrides[svc][parts[2]] = strings.TrimSpace(v)
	}
	return p, nil
}

// smtpdServices are the master.cf services that run smtpd(8) for network
// clients.
func (p *postfixInstance) smtpdServices() []postfixService {
	var out []postfixService
	for _, s := range p.Services {
		if s.Command == "smtpd" && (s.Type == "inet" || s.Type == "pass") {
			out = append(out, s)
		}
	}
	return out
}

// restriction is one element of a Postfix restriction list: the keyword
// and, for those that take one, its argument.
type restriction struct {
	Name, Arg string
}

func (x restriction) String() string { return strings.TrimSpace(x.Name + " " + x.Arg) }

// takesArg lists the restrictions followed by a table, server or zone.
func takesArg(name string) bool {
	switch {
	case name == "check_relay_domains":
		return false
	case strings.HasPrefix(name, "check_"),
		strings.HasPrefix(name, "reject_rbl_"), strings.HasPrefix(name, "reject_rhsbl_"),
		name == "permit_dnswl_client", name == "permit_rhswl_client":
		return true
	}
	return false
}

// parseRestrictions splits a restriction list (postconf(5): separated by
// commas and/or whitespace).
func parseRestrictions(v string) []restriction {
	f := strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' })
	var out []restriction
	for i := 0; i < len(f); i++ {
		x := restriction{Name: strings.ToLower(f[i])}
		if x.Name == "warn_if_reject" && i+1 < len(f) {
			i++
			x.Name = "warn_if_reject " + strings.ToLower(f[i])
		}
		if takesArg(strings.TrimPrefix(x.Name, "warn_if_reject ")) && i+1 < len(f) {
			i++
			x.Arg = f[i]
		}
		out = append(out, x)
	}
	return out
}

// relayVerdict walks a restriction list as an unauthenticated outside
// client with a foreign recipient: "blocks" at the first restriction that
// refuses such a relay, "permits" at a bare permit or at the end of the
// list. permitAt is the permit that let it through, if any.
func relayVerdict(list []restriction) (blocks bool, by, permitAt string) {
	for _, x := range list {
		switch x.Name {
		case "reject_unauth_destination", "defer_unauth_destination", "reject", "defer", "defer_if_permit":
			return true, x.Name, ""
		case "permit":
			return false, "", x.Name
		}
	}
	return false, "", ""
}

// postfixSet is a remedy that sets main.cf parameters (postconf -e) or
// service parameters (postconf -P, keys "name/type/param") and reloads a
// running instance.
func postfixSet(p *postfixInstance, service bool, kv ...string) *Remedy {
	flag := "-e"
	if service {
		flag = "-P"
	}
	show := fmt.Sprintf("%s %s %s", postconfCmd(p.Dir), flag, quoteAll(kv))
	if p.Running {
		show += " && " + postfixCmd(p.Dir) + " reload"
	}
	return &Remedy{Key: "postfix:" + p.Dir + ":" + strings.Join(kv, ";"), Show: show, Foreign: true, Apply: func() error {
		bin := postconfBin()
		if out, err := exec.Command(bin, append([]string{"-c", p.Dir, flag}, kv...)...).CombinedOutput(); err != nil {
			return fmt.Errorf("postconf -c %s %s: %v: %s", p.Dir, flag, err, out)
		}
		if p.Running {
			pf := filepath.Join(filepath.Dir(bin), "postfix")
			if out, err := exec.Command(pf, "-c", p.Dir, "reload").CombinedOutput(); err != nil {
				return fmt.Errorf("postfix -c %s reload: %v: %s", p.Dir, err, out)
			}
		}
		return nil
	}}
}

func quoteAll(kv []string) string {
	var q []string
	for _, s := range kv {
		q = append(q, "'"+strings.ReplaceAll(s, "'", `'\''`)+"'")
	}
	return strings.Join(q, " ")
}

// auditPostfix lints every Postfix instance found.
func (r *run) auditPostfix(ctx context.Context) {
	if len(r.postfix) == 0 {
		r.note("no Postfix configuration found")
		return
	}
	for _, p := range r.postfix {
		r.lintPostfix(ctx, p)
	}
}

// remedyFinding attaches a remedy and its command as the fix.
func withRemedy(f Finding, rem *Remedy) Finding {
	f.remedy = rem
	if f.Fix == "" {
		f.Fix = rem.Show
	}
	return f
}

func (r *run) lintPostfix(ctx context.Context, p *postfixInstance) {
	subj := "Postfix " + p.Dir
	if !p.Running {
		subj += " (not running)"
	}
	r.lintPostfixRelay(p, subj)
	r.lintPostfixNetworks(p, subj)
	r.lintPostfixAuth(p, subj)
	r.lintPostfixBackscatter(p, subj)
	r.lintPostfixLists(ctx, p, subj)
}

// lintPostfixRelay checks main.cf's and every smtpd service's relay and
// recipient restrictions.
func (r *run) lintPostfixRelay(p *postfixInstance, subj string) {
	scopes := []string{""}
	for _, s := range p.smtpdServices() {
		if _, ok := p.Overrides[s.Key()]["smtpd_relay_restrictions"]; ok {
			scopes = append(scopes, s.Key())
			continue
		}
		if _, ok := p.Overrides[s.Key()]["smtpd_recipient_restrictions"]; ok {
			scopes = append(scopes, s.Key())
		}
	}
	mxBackup := false
	for _, svc := range scopes {
		relay := parseRestrictions(p.param(svc, "smtpd_relay_restrictions"))
		rcpt := parseRestrictions(p.param(svc, "smtpd_recipient_restrictions"))
		where := "main.cf"
		if svc != "" {
			where = "master.cf service " + svc
		}
		rb, rby, rperm := relayVerdict(relay)
		cb, cby, cperm := relayVerdict(rcpt)
		ev := []string{
			fmt.Sprintf("%s: smtpd_relay_restrictions = %s", where, p.param(svc, "smtpd_relay_restrictions")),
			fmt.Sprintf("%s: smtpd_recipient_restrictions = %s", where, p.param(svc, "smtpd_recipient_restrictions")),
		}
		for _, l := range [][]restriction{relay, rcpt} {
			mxBackup = mxBackup || slices.ContainsFunc(l, func(x restriction) bool { return x.Name == "permit_mx_backup" })
		}
		key, service := "smtpd_relay_restrictions=permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination", false
		if svc != "" {
			key, service = svc+"/smtpd_relay_restrictions=permit_mynetworks,permit_sasl_authenticated,reject_unauth_destination", true
		}
		if !rb && !cb {
			// Postfix relays when neither list refuses (RFC 5321 3.9 and
			// postconf(5) smtpd_relay_restrictions).
			why := "neither list has reject_unauth_destination before a permit"
			if rperm != "" || cperm != "" {
				why = fmt.Sprintf("%q comes before any reject_unauth_destination", strings.TrimSpace(rperm+" "+cperm))
			}
			r.add(withRemedy(Finding{Check: "postfix.open-relay-config", Area: AreaPostfix, Severity: Critical, Subject: subj,
				Title:    "the relay restrictions let anyone relay: " + why,
				Evidence: ev}, postfixSet(p, service, key)))
		}
		for _, x := range []struct {
			name  string
			perm  string
			block string
		}{{"smtpd_relay_restrictions", rperm, rby}, {"smtpd_recipient_restrictions", cperm, cby}} {
			if x.perm == "permit" && (rb || cb) {
				r.add(Finding{Check: "postfix.permit-before-reject", Area: AreaPostfix, Severity: Medium, Subject: subj,
					Title:    fmt.Sprintf("%s (%s) permits before reject_unauth_destination: only the other list keeps the relay closed", x.name, where),
					Evidence: ev, Fix: fmt.Sprintf("put reject_unauth_destination before the permit in %s (%s), e.g. %s = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination", x.name, where, x.name)})
			}
		}
		// A policy service placed after permit_sasl_authenticated never
		// sees authenticated clients: per-user send limits cannot bite.
		for _, l := range []struct {
			name string
			list []restriction
		}{{"smtpd_relay_restrictions", relay}, {"smtpd_recipient_restrictions", rcpt}} {
			sasl := slices.IndexFunc(l.list, func(x restriction) bool { return x.Name == "permit_sasl_authenticated" })
			pol := slices.IndexFunc(l.list, func(x restriction) bool { return x.Name == "check_policy_service" })
			if sasl >= 0 && pol > sasl {
				r.add(Finding{Check: "postfix.policy-after-sasl", Area: AreaPostfix, Severity: Medium, Subject: subj,
					Title:    fmt.Sprintf("%s (%s): check_policy_service comes after permit_sasl_authenticated, so the policy service never sees authenticated senders (no per-user send limits)", l.name, where),
					Evidence: []string{fmt.Sprintf("%s = %s", l.name, p.param(svc, l.name))},
					Fix:      fmt.Sprintf("move %q before permit_sasl_authenticated in %s", l.list[pol].String(), l.name)})
			}
		}
	}
	if mxBackup {
		r.add(Finding{Check: "postfix.permit-mx-backup", Area: AreaPostfix, Severity: Medium, Subject: subj,
			Title:    "permit_mx_backup relays for any domain that lists this host as an MX (deprecated since Postfix 3.9)",
			Evidence: []string{"smtpd_recipient_restrictions = " + p.Main["smtpd_recipient_restrictions"]},
			Fix:      "remove permit_mx_backup and list the domains you back up in relay_domains (with relay_recipient_maps)"})
	}
}

func yes(v string) bool {
	return strings.EqualFold(v, "yes") || strings.EqualFold(v, "true") || v == "1"
}
