package audit

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/relayguard/relayguard/internal/egress"
	"github.com/relayguard/relayguard/internal/relaytest"
)

// Listener is one service on the host that speaks SMTP (or is listening
// on an SMTP port), with what the audit learned about it.
type Listener struct {
	Port uint16 `json:"port"`
	// Addrs are the bound addresses (0.0.0.0 and :: are every address).
	Addrs    []string  `json:"addrs"`
	Programs []Program `json:"programs"`
	// Role is mx (port 25), submission (587), submissions (465) or other.
	Role        string `json:"role"`
	SMTP        bool   `json:"smtp"`
	ImplicitTLS bool   `json:"implicit_tls,omitempty"`
	// View is where it was probed from: "outside" (the probe namespace)
	// or "host" (this host; loopback-only listeners, or no outside view).
	View  string                 `json:"view,omitempty"`
	Probe *relaytest.ProbeResult `json:"probe,omitempty"`
	Relay []RelayRun             `json:"relay,omitempty"`
	// PostfixConfig is the configuration directory of the Postfix
	// instance behind it.
	PostfixConfig string `json:"postfix_config,omitempty"`
	// Relayguard is set when relayguard itself serves it.
	Relayguard bool `json:"relayguard,omitempty"`
	// Remote is the host named on the command line, for a remote
	// listener (tested from this host).
	Remote string `json:"remote,omitempty"`

	inodes   []uint64
	pids     []int
	remoteT  []netip.AddrPort // a remote listener's addresses
	explicit bool             // a remote port named on the command line
}

// Program is a program holding a listening socket.
type Program struct {
	Exe     string `json:"exe"`
	Cmdline string `json:"cmdline"`
	User    string `json:"user"`
	UID     uint32 `json:"uid"`
	PIDs    []int  `json:"pids"`
}

// RelayRun is one run of the relay battery against a listener.
type RelayRun struct {
	Target   string   `json:"target"` // host:port tested
	View     string   `json:"view"`   // outside or host
	Outcome  string   `json:"outcome"`
	Accepted []string `json:"accepted,omitempty"`
	Tests    int      `json:"tests"`
	// Phases are the battery's phases run: plain, starttls (when the
	// listener offers it), authfail (relaytest.Phase*).
	Phases     []string `json:"phases,omitempty"`
	Untestable string   `json:"untestable,omitempty"`
}

// Describe names the listener for findings: "*:25 (master as root, smtpd as postfix)".
func (l *Listener) Describe() string {
	var ps []string
	for _, p := range l.Programs {
		ps = append(ps, fmt.Sprintf("%s as %s", filepath.Base(p.Exe), p.User))
	}
	who := strings.Join(ps, ", ")
	if l.Remote != "" {
		return fmt.Sprintf("%s:%d (remote, %s)", l.Remote, l.Port, strings.Join(l.Addrs, " "))
	}
	if who == "" {
		who = "program unknown"
	}
	return fmt.Sprintf("%s:%d (%s)", strings.Join(l.Addrs, ","), l.Port, who)
}

// smtpPorts are probed first and longer; every other listening port is
// asked whether it speaks SMTP too.
var smtpPorts = map[uint16]string{25: "mx", 465: "submissions", 587: "submission"}

// groupSockets groups the listening sockets of one server: those on the
// same port held by a common process. Each socket's holders are found by
// their own walk of /proc/*/fd, so a server that forks a child (Postfix's
// smtpd inherits its service's sockets) between two walks shows one of
// its sockets held by master and the child, the other by master alone:
// grouping by the exact set of holders made two servers of one. Sockets
// no process is seen holding (another user's, without the rights to
// read its fds) are each a group of their own. Groups keep the order of
// their first socket.
func groupSockets(socks []egress.Listening) [][]egress.Listening {
	var groups [][]egress.Listening
	shares := func(g []egress.Listening, s egress.Listening) bool {
		for _, o := range g {
			if o.Addr.Port() != s.Addr.Port() {
				return false
			}
			for _, p := range o.Processes {
				if slices.ContainsFunc(s.Processes, func(q egress.Process) bool { return q.PID == p.PID }) {
					return true
				}
			}
		}
		return false
	}
	for _, s := range socks {
		into := -1
		for i := 0; i < len(groups); i++ {
			if !shares(groups[i], s) {
				continue
			}
			if into < 0 {
				into = i
				groups[i] = append(groups[i], s)
				continue
			}
			// s joins two groups: one server after all.
			groups[into] = append(groups[into], groups[i]...)
			groups = slices.Delete(groups, i, i+1)
			i--
		}
		if into < 0 {
			groups = append(groups, []egress.Listening{s})
		}
	}
	return groups
}

// held is g's first socket with the processes holding any of g's
// sockets, whose programs name the group.
func held(g []egress.Listening) egress.Listening {
	all := g[0]
	all.Processes = slices.Clone(all.Processes)
	for _, s := range g[1:] {
		for _, p := range s.Processes {
			if !slices.ContainsFunc(all.Processes, func(q egress.Process) bool { return q.PID == p.PID }) {
				all.Processes = append(all.Processes, p)
			}
		}
	}
	return all
}

// inventory finds the listening sockets and groups them by the processes
// holding them; with probe it finds which speak SMTP and probes them, with
// battery it also runs the relay battery against each. Without probe, the
// listeners on SMTP ports are kept as they are (the Postfix and queue
// checks only need to know which Postfix instances run).
func (r *run) inventory(ctx context.Context, probe, battery bool) {
	socks, err := egress.Attributor{Proc: r.o.Proc}.Listeners()
	if err != nil {
		r.problem(AreaListeners, "listeners", err)
		return
	}
	var ls []*Listener
	for _, g := range groupSockets(socks) {
		all := held(g)
		l := &Listener{Port: all.Addr.Port(), Role: smtpPorts[all.Addr.Port()], Programs: r.programs(all)}
		if l.Role == "" {
			l.Role = "other"
		}
		for _, p := range all.Processes {
			l.pids = append(l.pids, p.PID)
		}
		for _, s := range g {
			addr := s.Addr.Addr().String()
			if s.Addr.Addr().IsUnspecified() {
				addr = map[bool]string{true: "[::]", false: "0.0.0.0"}[s.Addr.Addr().Is6()]
			} else if s.Addr.Addr().Is6() {
				addr = "[" + addr + "]"
			}
			if !slices.Contains(l.Addrs, addr) {
				l.Addrs = append(l.Addrs, addr)
			}
			l.inodes = append(l.inodes, s.Inode)
		}
		r.identify(l)
		if pc := l.PostfixConfig; pc != "" && !slices.Contains(r.masters, pc) {
			r.masters = append(r.masters, pc)
		}
		ls = append(ls, l)
	}
	if !probe {
		for _, l := range ls {
			if l.Role != "other" {
				l.SMTP = true
				r.listeners = append(r.listeners, l)
			}
		}
		return
	}
	var out *outside
	if !r.o.NoOutside {
		out, err = newOutside()
		if err != nil {
			r.note("listeners were tested from this host, not from outside: %v; a relay seen from here may be trust of local networks", err)
			out = nil
		} else {
			defer out.Close()
			if !out.Src6.IsValid() {
				r.note("no IPv6 outside view: %s", out.v6Reason)
			}
			r.note("listeners were tested from outside addresses %s and %s (a namespace of this host; see docs/audit.md)", out.Src4, orNone(out.Src6))
		}
	} else {
		r.note("listeners were tested from this host (--no-outside): a relay seen from here may be trust of local networks")
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for _, l := range ls {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			r.probeListener(ctx, l, out, battery)
		})
	}
	wg.Wait()
	for _, l := range ls {
		if l.SMTP {
			r.listeners = append(r.listeners, l)
		}
	}
	if battery {
		for _, l := range r.listeners {
			r.listenerFindings(l)
		}
	}
}

func orNone(a netip.Addr) string {
	if !a.IsValid() {
		return "(no IPv6)"
	}
	return a.String()
}

// programs describes the processes holding a socket, one entry per
// program and user.
func (r *run) programs(s egress.Listening) []Program {
	var out []Program
	for _, p := range s.Processes {
		uid, user := r.procUser(p.PID)
		exe := p.Exe
		if exe == "" {
			exe = strings.Fields(p.Cmdline + " ?")[0]
		}
		i := slices.IndexFunc(out, func(x Program) bool { return x.Exe == exe && x.UID == uid })
		if i < 0 {
			out = append(out, Program{Exe: exe, Cmdline: p.Cmdline, User: user, UID: uid})
			i = len(out) - 1
		}
		out[i].PIDs = append(out[i].PIDs, p.PID)
	}
	if len(out) == 0 {
		out = append(out, Program{Exe: "?", User: egress.UserName(s.UID), UID: s.UID})
	}
	return out
}

// procUser is the effective uid of a process (the owner of /proc/PID).
func (r *run) procUser(pid int) (uint32, string) {
	root := r.o.Proc
	if root == "" {
		root = "/proc"
	}
	fi, err := os.Stat(filepath.Join(root, strconv.Itoa(pid)))
	if err != nil {
		return 0, "?"
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, "?"
	}
	return st.Uid, egress.UserName(st.Uid)
}

// targets are the addresses to test a listener at: per family, one the
// outsider can reach (a specific non-loopback address, or an own address
// for a wildcard), else a loopback one (tested from the host).
func (r *run) targets(l *Listener) (outsideT, localT []netip.AddrPort) {
	have := map[bool]bool{}
	for _, a := range l.Addrs {
		ip, err := netip.ParseAddr(strings.Trim(a, "[]"))
		if err != nil {
			continue
		}
		v6 := ip.Is6()
		switch {
		case ip.IsUnspecified():
			fams := []bool{v6}
			if v6 {
				fams = []bool{true, false} // a dual-stack socket takes IPv4 too
			}
			for _, f := range fams {
				if o := firstOf(r.own, f); o.IsValid() && !have[f] {
					outsideT = append(outsideT, netip.AddrPortFrom(o, l.Port))
					have[f] = true
				}
			}
		case !ip.IsLoopback():
			if !have[v6] {
				outsideT = append(outsideT, netip.AddrPortFrom(ip, l.Port))
				have[v6] = true
			}
		}
	}
	for _, a := range l.Addrs {
		ip, err := netip.ParseAddr(strings.Trim(a, "[]"))
		if err != nil {
			continue
		}
		lo := netip.MustParseAddr("127.0.0.1")
		if ip.Is6() {
			lo = netip.IPv6Loopback()
		}
		if (ip.IsLoopback() || ip.IsUnspecified()) && !have[ip.Is6()] {
			if ip.IsLoopback() {
				lo = ip
			}
			localT = append(localT, netip.AddrPortFrom(lo, l.Port))
			have[ip.Is6()] = true
		}
	}
	return outsideT, localT
}

// probeListener finds out whether l speaks SMTP (plain, else implicit
// TLS), probes it, and runs the battery per family.
func (r *run) probeListener(ctx context.Context, l *Listener, out *outside, battery bool) {
	outsideT, localT := r.targets(l)
	type try struct {
		t    netip.AddrPort
		view string
		dial func(context.Context, string, string) (net.Conn, error)
	}
	var tries []try
	for _, t := range outsideT {
		if out == nil {
			tries = append(tries, try{t, "host", nil})
			continue
		}
		if t.Addr().Is6() && !out.Src6.IsValid() {
			tries = append(tries, try{t, "host", nil})
			continue
		}
		tries = append(tries, try{t, "outside", out.Dial})
	}
	for _, t := range localT {
		tries = append(tries, try{t, "host", nil})
	}
	if len(tries) == 0 {
		return
	}
	if l.Role == "other" {
		tries = tries[:1] // is it SMTP at all? One look is enough.
	}
	for i := 0; i < len(tries); i++ {
		t := tries[i]
		if r.probeTarget(ctx, l, t.t, t.view, t.dial, battery) && t.view == "outside" && l.Role != "other" && wildcard(l) {
			// Filtered or refused for outsiders: look from the host.
			lt := netip.AddrPortFrom(loopbackOf(t.t.Addr()), l.Port)
			if !slices.ContainsFunc(tries, func(x try) bool { return x.t == lt }) {
				tries = append(tries, try{lt, "host", nil})
			}
		}
	}
	if l.Probe == nil && l.Role != "other" {
		// Listening on an SMTP port but not answering as SMTP: keep it in
		// the inventory so that it is not silently passed over.
		l.SMTP = true
	}
}

// probeTarget probes l at t unless an earlier target answered (plain, and
// implicit TLS when no banner comes on a port that is not 25 or 587), then
// with battery runs the relay battery against t. It reports whether t
// could not be reached at all (refused, filtered).
func (r *run) probeTarget(ctx context.Context, l *Listener, t netip.AddrPort, view string, dial func(context.Context, string, string) (net.Conn, error), battery bool) (unreachable bool) {
	timeout := r.o.Timeout
	if l.Role == "other" {
		timeout = min(timeout, 4*time.Second) // most non-SMTP services never greet
	}
	o := relaytest.Options{Addr: t.String(), Host: t.Addr().String(), Timeout: timeout, Dial: dial, ImplicitTLS: l.ImplicitTLS}
	if l.Probe == nil {
		po := relaytest.ProbeOptions{}
		if l.Role == "submission" || l.Role == "submissions" {
			po.LocalRcpt = r.localRcpt(ctx, l)
		}
		o.ImplicitTLS = l.Port == 465
		start := time.Now()
		p, err := relaytest.Probe(ctx, o, po)
		r.log.Debug("audit: probe", "target", o.Addr, "view", view, "took", time.Since(start), "err", err)
		if err != nil && !o.ImplicitTLS && l.Port != 25 && l.Port != 587 && isNoBanner(err) {
			o.ImplicitTLS = true
			p, err = relaytest.Probe(ctx, o, po)
		}
		if err != nil {
			var ue *relaytest.UntestableError
			if errors.As(err, &ue) && (ue.Reason == relaytest.ReasonConnect || ue.Reason == relaytest.ReasonRefused) {
				if view == "outside" && l.Role != "other" {
					l.Relay = append(l.Relay, RelayRun{Target: t.String(), View: view, Outcome: "unreachable", Untestable: err.Error()})
				}
				return true
			}
			return false
		}
		l.SMTP, l.ImplicitTLS, l.Probe, l.View = true, o.ImplicitTLS, p, view
	}
	if !battery {
		return false
	}
	o.Parallel, o.ErrorsPerConn = 8, 8
	start := time.Now()
	rep, err := relaytest.Run(ctx, o)
	r.log.Debug("audit: relay battery", "target", o.Addr, "view", view, "took", time.Since(start), "err", err)
	run := RelayRun{Target: t.String(), View: view}
	if rep != nil {
		run.Outcome, run.Accepted, run.Tests = rep.Outcome, rep.AcceptedIDs(), len(rep.Results)
		for _, ph := range rep.Phases {
			run.Phases = append(run.Phases, ph.Name)
		}
	}
	if err != nil {
		run.Untestable = err.Error()
	}
	l.Relay = append(l.Relay, run)
	return false
}

func isNoBanner(err error) bool {
	var ue *relaytest.UntestableError
	return errors.As(err, &ue) && (ue.Reason == relaytest.ReasonNoBanner || ue.Reason == relaytest.ReasonProtocol)
}

func loopbackOf(a netip.Addr) netip.Addr {
	if a.Is6() {
		return netip.IPv6Loopback()
	}
	return netip.MustParseAddr("127.0.0.1")
}

func wildcard(l *Listener) bool {
	return slices.Contains(l.Addrs, "0.0.0.0") || slices.Contains(l.Addrs, "[::]")
}

// localRcpt is a recipient every mail server must take: postmaster of
// its own name (RFC 5321 4.5.1).
func (r *run) localRcpt(ctx context.Context, l *Listener) string {
	if l.PostfixConfig != "" {
		if d := postfixLocalDomain(ctx, l.PostfixConfig); d != "" {
			return "postmaster@" + d
		}
	}
	if len(r.cfg.Site.LocalDomains) > 0 {
		return "postmaster@" + r.cfg.Site.LocalDomains[0]
	}
	return "postmaster@" + r.cfg.Site.Hostname
}

// postfixLocalDomain is a domain the Postfix instance in dir takes mail
// for: the first of mydestination, virtual_mailbox_domains,
// virtual_alias_domains and relay_domains (expanded) that names a domain
// rather than a lookup table; "" when it takes mail for none.
func postfixLocalDomain(ctx context.Context, dir string) string {
	bin := postconfBin()
	if bin == "" {
		return ""
	}
	out, err := postconf(ctx, bin, dir, "-xh", "mydestination", "virtual_mailbox_domains", "virtual_alias_domains", "relay_domains")
	if err != nil {
		return ""
	}
	for _, d := range strings.FieldsFunc(string(out), func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' }) {
		if !strings.ContainsAny(d, "$:/") && strings.Contains(d, ".") && !strings.HasPrefix(d, "localhost") {
			return strings.ToLower(d)
		}
	}
	return ""
}

// identify tells Postfix and relayguard from other programs.
func (r *run) identify(l *Listener) {
	self, _ := os.Executable()
	for _, p := range l.Programs {
		base := filepath.Base(p.Exe)
		switch {
		case base == "master" && strings.Contains(p.Exe, "postfix"):
			l.PostfixConfig = r.postfixConfigOf(p.PIDs[0])
		case base == "relayguard" || p.Exe == self:
			l.Relayguard = true
		}
	}
}

// postfixConfigOf reads a Postfix master's configuration directory from
// its environment (postfix(1) exports MAIL_CONFIG to the master it starts).
func (r *run) postfixConfigOf(pid int) string {
	root := r.o.Proc
	if root == "" {
		root = "/proc"
	}
	b, err := os.ReadFile(filepath.Join(root, strconv.Itoa(pid), "environ"))
	if err == nil {
		for _, kv := range strings.Split(string(b), "\x00") {
			if v, ok := strings.CutPrefix(kv, "MAIL_CONFIG="); ok && v != "" {
				return filepath.Clean(v)
			}
		}
	}
	return "/etc/postfix"
}

// knownMTA reports whether a program is a mail server the operator most
// likely means to run.
func knownMTA(l *Listener) bool {
	if l.Relayguard || l.PostfixConfig != "" {
		return true
	}
	for _, p := range l.Programs {
		switch filepath.Base(p.Exe) {
		case "exim4", "exim", "sendmail", "sendmail-mta", "smtpd", "dovecot", "opensmtpd", "postfix":
			return true
		}
	}
	return false
}
