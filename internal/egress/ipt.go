package egress

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
)

// IPTChain is the chain of our own that OUTPUT jumps to; IPTForwardChain
// the one FORWARD jumps to (Spec.Forward).
const (
	IPTChain        = "RELAYGUARD-EGRESS"
	IPTForwardChain = "RELAYGUARD-EGRESS-FWD"
)

// IPT is the iptables/ip6tables backend. It drives the iptables tools (the
// rule set is their format; no Go library speaks xtables): every change is
// one iptables-restore --noflush transaction per address family, touching
// only our chain and the jumps to it.
type IPT struct {
	// Bin4 and Bin6 are the iptables and ip6tables commands; empty means
	// "iptables" and "ip6tables" from PATH.
	Bin4, Bin6 string
	// NFT is the nft command ("" means "nft" from PATH), used only to
	// delete an empty filter table that apply created (iptables-nft).
	NFT string
}

// iptCreatedMark ends our chain when apply created the filter table (with
// iptables-nft a table exists only once a rule needs it): remove then
// deletes the table again if nothing else uses it, so that the ruleset is
// exactly as before. The rule only counts packets (and follows -j DROP).
const iptCreatedMark = "-m comment --comment relayguard-created-table"

// Name implements Backend.
func (*IPT) Name() string { return "iptables" }

type iptFamily struct {
	name     string // ipv4, ipv6
	bin      string
	loopback string
	nftFam   string // nft family of the table: ip, ip6
}

func (b *IPT) families() []iptFamily {
	b4, b6 := b.Bin4, b.Bin6
	if b4 == "" {
		b4 = "iptables"
	}
	if b6 == "" {
		b6 = "ip6tables"
	}
	return []iptFamily{{"ipv4", b4, "127.0.0.0/8", "ip"}, {"ipv6", b6, "::1/128", "ip6"}}
}

// iptJump is the OUTPUT rule: TCP SYN (without ACK) to a locked port.
func iptJump(s Spec) string {
	return fmt.Sprintf("-p tcp -m multiport --dports %s --syn -j %s", joinPorts(s.Ports), IPTChain)
}

// iptForwardJump is the FORWARD rule, as iptJump.
func iptForwardJump(s Spec) string {
	return fmt.Sprintf("-p tcp -m multiport --dports %s --syn -j %s", joinPorts(s.Ports), IPTForwardChain)
}

// iptForwardRules are the rules of the forward chain for one family: a
// forwarded connection has no socket here (no owner to match); it passes
// only from a ForwardAllowed network.
func iptForwardRules(s Spec, f iptFamily) []string {
	var rs []string
	for _, p := range s.ForwardAllowed {
		if p.Addr().Is4() == (f.name == "ipv4") {
			// from the network and to it (mail coming in to its MTA)
			rs = append(rs, "-s "+p.String()+" -j ACCEPT", "-d "+p.String()+" -j ACCEPT")
		}
	}
	return append(rs, fmt.Sprintf("-j NFLOG --nflog-group %d", s.Group), "-j DROP")
}

// iptChainRules are the rules of our chain for one family.
func iptChainRules(s Spec, f iptFamily) []string {
	var rs []string
	if s.AllowLoopback {
		rs = append(rs, "-o lo -j ACCEPT", "-d "+f.loopback+" -j ACCEPT")
	}
	for _, u := range s.UIDs {
		rs = append(rs, fmt.Sprintf("-m owner --uid-owner %d -j ACCEPT", u))
	}
	for _, g := range s.GIDs {
		rs = append(rs, fmt.Sprintf("-m owner --gid-owner %d -j ACCEPT", g))
	}
	rs = append(rs, fmt.Sprintf("-j NFLOG --nflog-group %d", s.Group), "-j DROP")
	return rs
}

// restoreInput builds iptables-restore input that (re)creates our chains
// and replaces the jumps to them that prev found (from `-S OUTPUT`,
// `-S FORWARD`); without Spec.Forward the forward chain goes.
func restoreInput(s Spec, f iptFamily, prev iptPrev, mark bool) string {
	oldJumps := prev.jumps
	var b strings.Builder
	b.WriteString("*filter\n")
	// With --noflush, declaring an existing chain flushes it.
	fmt.Fprintf(&b, ":%s - [0:0]\n", IPTChain)
	for _, r := range iptChainRules(s, f) {
		fmt.Fprintf(&b, "-A %s %s\n", IPTChain, r)
	}
	if mark {
		fmt.Fprintf(&b, "-A %s %s\n", IPTChain, iptCreatedMark)
	}
	for _, j := range oldJumps {
		fmt.Fprintf(&b, "-D OUTPUT %s\n", j)
	}
	fmt.Fprintf(&b, "-I OUTPUT 1 %s\n", iptJump(s))
	for _, j := range prev.fwdJumps {
		fmt.Fprintf(&b, "-D FORWARD %s\n", j)
	}
	if s.Forward {
		fmt.Fprintf(&b, ":%s - [0:0]\n", IPTForwardChain)
		for _, r := range iptForwardRules(s, f) {
			fmt.Fprintf(&b, "-A %s %s\n", IPTForwardChain, r)
		}
		fmt.Fprintf(&b, "-I FORWARD 1 %s\n", iptForwardJump(s))
	} else if prev.fwdExists {
		fmt.Fprintf(&b, "-F %s\n-X %s\n", IPTForwardChain, IPTForwardChain)
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

func run(ctx context.Context, stdin string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// state reads whether our chain exists and the jumps to it in OUTPUT
// (as rule specifications without "-A OUTPUT").
func (b *IPT) state(ctx context.Context, f iptFamily) (exists bool, jumps []string, err error) {
	out, err := run(ctx, "", f.bin, "-w", "-t", "filter", "-S", "OUTPUT")
	if err != nil {
		return false, nil, fmt.Errorf("egress: %w", err)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "-A OUTPUT ") && strings.HasSuffix(line, "-j "+IPTChain) {
			jumps = append(jumps, strings.TrimPrefix(line, "-A OUTPUT "))
		}
	}
	out, err = run(ctx, "", f.bin, "-w", "-t", "filter", "-S")
	if err != nil {
		return false, nil, fmt.Errorf("egress: %w", err)
	}
	for _, line := range strings.Split(out, "\n") {
		if line == "-N "+IPTChain {
			exists = true
		}
	}
	return exists, jumps, nil
}

// fwdState reads the forward chain (whether it exists, its rules as
// "-A ..." lines) and the jumps to it in FORWARD, as state.
func (b *IPT) fwdState(ctx context.Context, f iptFamily) (exists bool, jumps, rules []string, err error) {
	out, err := run(ctx, "", f.bin, "-w", "-t", "filter", "-S")
	if err != nil {
		return false, nil, nil, fmt.Errorf("egress: %w", err)
	}
	for _, line := range strings.Split(out, "\n") {
		switch {
		case line == "-N "+IPTForwardChain:
			exists = true
		case strings.HasPrefix(line, "-A FORWARD ") && strings.HasSuffix(line, "-j "+IPTForwardChain):
			jumps = append(jumps, strings.TrimPrefix(line, "-A FORWARD "))
		case strings.HasPrefix(line, "-A "+IPTForwardChain+" "):
			rules = append(rules, line)
		}
	}
	return exists, jumps, rules, nil
}

// iptPrev is one family's lockdown before a change: whether our chain
// existed, its rules and the jumps to it.
type iptPrev struct {
	exists bool
	jumps  []string
	rules  []string // "-A RELAYGUARD-EGRESS ..." lines
	// The forward chain (Spec.Forward) as the same three.
	fwdExists bool
	fwdJumps  []string
	fwdRules  []string
	// created: apply made (or, for an existing chain, had made) the
	// filter table.
	created bool
}

// tableExists says whether the family's filter table exists. iptables-save
// without -t lists only existing tables (with iptables-nft, none in a
// fresh network namespace; -t filter would print an empty one anyway).
func (b *IPT) tableExists(ctx context.Context, f iptFamily) (bool, error) {
	out, err := run(ctx, "", f.bin+"-save")
	if err != nil {
		return false, fmt.Errorf("egress: %w", err)
	}
	return strings.HasPrefix(out, "*filter\n") || strings.Contains(out, "\n*filter\n"), nil
}

func (b *IPT) snapshot(ctx context.Context, f iptFamily) (iptPrev, error) {
	var p iptPrev
	var err error
	if p.fwdExists, p.fwdJumps, p.fwdRules, err = b.fwdState(ctx, f); err != nil {
		return p, err
	}
	if p.exists, p.jumps, err = b.state(ctx, f); err != nil {
		return p, err
	}
	if !p.exists {
		if len(p.jumps) == 0 {
			ok, err := b.tableExists(ctx, f)
			p.created = !ok
			return p, err
		}
		return p, nil
	}
	out, err := run(ctx, "", f.bin, "-w", "-t", "filter", "-S", IPTChain)
	if err != nil {
		return p, fmt.Errorf("egress: %w", err)
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "-A "+IPTChain+" ") {
			p.rules = append(p.rules, l)
			if strings.HasSuffix(l, iptCreatedMark) {
				p.created = true
			}
		}
	}
	return p, nil
}

// Apply implements Backend: one iptables-restore --noflush per family.
// iptables has no transaction spanning IPv4 and IPv6, so when the second
// family fails the first is put back as it was: either both families get
// the new lockdown or neither changes.
func (b *IPT) Apply(ctx context.Context, s Spec) error {
	if len(s.Ports) > 15 {
		return fmt.Errorf("egress: iptables backend: %d ports, multiport takes at most 15", len(s.Ports))
	}
	fams := b.families()
	prev := make([]iptPrev, len(fams))
	for i, f := range fams {
		p, err := b.snapshot(ctx, f)
		if err != nil {
			return err
		}
		prev[i] = p
	}
	for i, f := range fams {
		in := restoreInput(s, f, prev[i], prev[i].created)
		if _, err := run(ctx, in, f.bin+"-restore", "-w", "--noflush"); err != nil {
			err = fmt.Errorf("egress: apply %s: %w", f.name, err)
			for j := i - 1; j >= 0; j-- {
				if rerr := b.restore(context.WithoutCancel(ctx), fams[j], prev[j]); rerr != nil {
					return fmt.Errorf("%w; rolling back %s also failed: %v", err, fams[j].name, rerr)
				}
			}
			return err
		}
	}
	return nil
}

// restore puts one family's lockdown back to p (none, or p's chain and jumps).
func (b *IPT) restore(ctx context.Context, f iptFamily, p iptPrev) error {
	if !p.exists {
		return b.removeFamily(ctx, f)
	}
	_, jumps, err := b.state(ctx, f)
	if err != nil {
		return err
	}
	fwdExists, fwdJumps, _, err := b.fwdState(ctx, f)
	if err != nil {
		return err
	}
	var in strings.Builder
	in.WriteString("*filter\n")
	fmt.Fprintf(&in, ":%s - [0:0]\n", IPTChain) // flushes the chain
	for _, r := range p.rules {
		fmt.Fprintf(&in, "%s\n", r)
	}
	for _, j := range jumps {
		fmt.Fprintf(&in, "-D OUTPUT %s\n", j)
	}
	for _, j := range slices.Backward(p.jumps) {
		fmt.Fprintf(&in, "-I OUTPUT 1 %s\n", j)
	}
	for _, j := range fwdJumps {
		fmt.Fprintf(&in, "-D FORWARD %s\n", j)
	}
	switch {
	case p.fwdExists:
		fmt.Fprintf(&in, ":%s - [0:0]\n", IPTForwardChain)
		for _, r := range p.fwdRules {
			fmt.Fprintf(&in, "%s\n", r)
		}
		for _, j := range slices.Backward(p.fwdJumps) {
			fmt.Fprintf(&in, "-I FORWARD 1 %s\n", j)
		}
	case fwdExists:
		fmt.Fprintf(&in, "-F %s\n-X %s\n", IPTForwardChain, IPTForwardChain)
	}
	in.WriteString("COMMIT\n")
	if _, err := run(ctx, in.String(), f.bin+"-restore", "-w", "--noflush"); err != nil {
		return fmt.Errorf("egress: restore %s: %w", f.name, err)
	}
	return nil
}

// Remove implements Backend: the jumps to our chain, then the chain.
func (b *IPT) Remove(ctx context.Context) error {
	for _, f := range b.families() {
		if err := b.removeFamily(ctx, f); err != nil {
			return err
		}
	}
	return nil
}

func (b *IPT) removeFamily(ctx context.Context, f iptFamily) error {
	p, err := b.snapshot(ctx, f)
	if err != nil {
		return err
	}
	exists, jumps := p.exists, p.jumps
	if !exists && len(jumps) == 0 && !p.fwdExists && len(p.fwdJumps) == 0 {
		return nil
	}
	var in strings.Builder
	in.WriteString("*filter\n")
	for _, j := range jumps {
		fmt.Fprintf(&in, "-D OUTPUT %s\n", j)
	}
	if exists {
		fmt.Fprintf(&in, "-F %s\n-X %s\n", IPTChain, IPTChain)
	}
	for _, j := range p.fwdJumps {
		fmt.Fprintf(&in, "-D FORWARD %s\n", j)
	}
	if p.fwdExists {
		fmt.Fprintf(&in, "-F %s\n-X %s\n", IPTForwardChain, IPTForwardChain)
	}
	in.WriteString("COMMIT\n")
	if _, err := run(ctx, in.String(), f.bin+"-restore", "-w", "--noflush"); err != nil {
		return fmt.Errorf("egress: remove %s: %w", f.name, err)
	}
	if exists && p.created {
		return b.dropCreatedTable(ctx, f)
	}
	return nil
}

// dropCreatedTable deletes the filter table that apply created, if it is
// empty again: built-in chains with policy ACCEPT and no rule, no chain of
// anyone else. A table with anything in it is left alone.
func (b *IPT) dropCreatedTable(ctx context.Context, f iptFamily) error {
	out, err := run(ctx, "", f.bin+"-save", "-t", "filter")
	if err != nil {
		return fmt.Errorf("egress: %w", err)
	}
	for _, l := range strings.Split(out, "\n") {
		switch {
		case l == "", strings.HasPrefix(l, "#"), l == "*filter", l == "COMMIT":
		case strings.HasPrefix(l, ":INPUT ACCEPT "), strings.HasPrefix(l, ":FORWARD ACCEPT "), strings.HasPrefix(l, ":OUTPUT ACCEPT "):
		default:
			return nil // in use
		}
	}
	// Only iptables-nft creates tables on demand; a legacy table cannot
	// be deleted and holds nothing when empty.
	if v, err := run(ctx, "", f.bin, "-V"); err != nil || !strings.Contains(v, "nf_tables") {
		return nil
	}
	nft := b.NFT
	if nft == "" {
		nft = "nft"
	}
	if _, err := run(ctx, "", nft, "delete", "table", f.nftFam, "filter"); err != nil {
		return fmt.Errorf("egress: rules removed, but the empty %s filter table they needed is left: %w", f.name, err)
	}
	return nil
}

// Status implements Backend, from `iptables -S -v` of OUTPUT and our chain.
func (b *IPT) Status(ctx context.Context) (Status, error) {
	st := Status{Backend: b.Name(), Group: -1}
	uids, gids := map[uint32]bool{}, map[uint32]bool{}
	for _, f := range b.families() {
		exists, _, err := b.state(ctx, f)
		if err != nil {
			return st, err
		}
		if !exists {
			continue
		}
		st.Installed = true
		var lines []string
		fwdExists, _, _, err := b.fwdState(ctx, f)
		if err != nil {
			return st, err
		}
		chains := []string{"OUTPUT", IPTChain}
		if fwdExists {
			chains = append(chains, "FORWARD", IPTForwardChain)
		}
		for _, chain := range chains {
			out, err := run(ctx, "", f.bin, "-w", "-t", "filter", "-S", chain, "-v")
			if err != nil {
				return st, fmt.Errorf("egress: %w", err)
			}
			for _, l := range strings.Split(out, "\n") {
				if chain == "OUTPUT" && !strings.HasSuffix(l, "-j "+IPTChain) ||
					chain == "FORWARD" && !strings.HasSuffix(l, "-j "+IPTForwardChain) {
					continue
				}
				if strings.HasPrefix(l, "-A ") && !strings.Contains(l, "relayguard-created-table") {
					lines = append(lines, l)
				}
			}
		}
		for _, l := range lines {
			r := Rule{Family: f.name}
			fs := strings.Fields(l)
			var kept []string
			for i := 0; i < len(fs); i++ {
				switch {
				case fs[i] == "-c" && i+2 < len(fs):
					r.Packets, _ = strconv.ParseUint(fs[i+1], 10, 64)
					r.Bytes, _ = strconv.ParseUint(fs[i+2], 10, 64)
					i += 2
					continue
				case fs[i] == "--uid-owner" && i+1 < len(fs):
					if n, err := strconv.ParseUint(fs[i+1], 10, 32); err == nil {
						uids[uint32(n)] = true
					}
				case fs[i] == "--gid-owner" && i+1 < len(fs):
					if n, err := strconv.ParseUint(fs[i+1], 10, 32); err == nil {
						gids[uint32(n)] = true
					}
				case fs[i] == "--nflog-group" && i+1 < len(fs):
					if n, err := strconv.Atoi(fs[i+1]); err == nil {
						st.Group = n
					}
				case fs[i] == "--dports" && i+1 < len(fs) && f.name == "ipv4":
					for _, p := range strings.Split(fs[i+1], ",") {
						if n, err := strconv.ParseUint(p, 10, 16); err == nil {
							st.Ports = append(st.Ports, uint16(n))
						}
					}
				}
				kept = append(kept, fs[i])
			}
			r.Text = strings.Join(kept, " ")
			st.Rules = append(st.Rules, r)
		}
	}
	for u := range uids {
		st.UIDs = append(st.UIDs, u)
	}
	for g := range gids {
		st.GIDs = append(st.GIDs, g)
	}
	slices.Sort(st.UIDs)
	slices.Sort(st.GIDs)
	return st, nil
}

// PersistFiles implements Backend: iptables-restore input per family,
// loaded at boot with --noflush so other rules survive.
func (b *IPT) PersistFiles(s Spec) (map[string]string, [][]string) {
	files := map[string]string{}
	var cmds [][]string
	for _, f := range b.families() {
		name := "egress." + f.name + ".rules"
		files[name] = "# relayguard egress lockdown; generated by `relayguard egress apply --persist`.\n" +
			restoreInput(s, f, iptPrev{}, false)
		cmds = append(cmds, []string{lookBin(f.bin + "-restore"), "-w", "--noflush", "DIR/" + name})
	}
	return files, cmds
}
