package egress

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// The nftables lockdown lives in a table of its own, so that applying and
// removing it never touches anybody else's rules.
const (
	NFTTable   = "relayguard_egress"
	nftChain   = "output"
	nftForward = "forward"
)

// NFT is the nftables backend (netlink through github.com/google/nftables).
type NFT struct{}

// Name implements Backend.
func (*NFT) Name() string { return "nftables" }

func nftTable() *nftables.Table {
	return &nftables.Table{Name: NFTTable, Family: nftables.TableFamilyINet}
}

// nftRuleDef is one rule: the match after the common prefix, the verdict,
// and the text nft(8) uses for it (the comment and the persisted script).
type nftRuleDef struct {
	match   []expr.Any
	drop    bool
	group   uint16
	comment string
	script  string // nft syntax of match+verdict, after the prefix
}

// nftPrefix matches TCP connection attempts (SYN without ACK) to a locked
// port. Only the SYN is judged: a connection that cannot send its SYN
// never exists, and later segments of allowed connections (even from
// TIME_WAIT sockets, which have no owner) pass untouched.
func nftPrefix() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: 1, SetName: "ports"},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x12}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x02}},
	}
}

const nftScriptPrefix = "meta l4proto tcp tcp dport @ports tcp flags & (syn | ack) == syn"

func nftRules(s Spec) []nftRuleDef {
	var rs []nftRuleDef
	if s.AllowLoopback {
		ifname := make([]byte, unix.IFNAMSIZ)
		copy(ifname, "lo")
		rs = append(rs,
			nftRuleDef{
				match: []expr.Any{
					&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname},
				},
				comment: "accept: output interface lo",
				script:  `oifname "lo"`,
			},
			nftRuleDef{
				match: []expr.Any{
					&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
					&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
					&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte{255, 0, 0, 0}, Xor: []byte{0, 0, 0, 0}},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{127, 0, 0, 0}},
				},
				comment: "accept: destination 127.0.0.0/8",
				script:  "ip daddr 127.0.0.0/8",
			},
			nftRuleDef{
				match: []expr.Any{
					&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV6}},
					&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 24, Len: 16},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: net.IPv6loopback.To16()},
				},
				comment: "accept: destination ::1",
				script:  "ip6 daddr ::1",
			})
	}
	rs = append(rs,
		nftRuleDef{
			match: []expr.Any{
				&expr.Meta{Key: expr.MetaKeySKUID, Register: 1},
				&expr.Lookup{SourceRegister: 1, SetName: "uids"},
			},
			comment: "accept: socket owner uid in @uids",
			script:  "meta skuid @uids",
		},
		nftRuleDef{
			match: []expr.Any{
				&expr.Meta{Key: expr.MetaKeySKGID, Register: 1},
				&expr.Lookup{SourceRegister: 1, SetName: "gids"},
			},
			comment: "accept: socket owner gid in @gids",
			script:  "meta skgid @gids",
		},
		nftRuleDef{
			drop:    true,
			group:   s.Group,
			comment: fmt.Sprintf("log to NFLOG group %d and drop", s.Group),
		})
	return rs
}

// nftForwardRules are the rules of the forward chain (Spec.Forward): a
// connection forwarded through this host (from a container, a VM, a
// network it routes) has no socket here, so no uid or gid to allow; it
// passes only from a ForwardAllowed network.
func nftForwardRules(s Spec) []nftRuleDef {
	var rs []nftRuleDef
	for _, p := range s.ForwardAllowed {
		// From the network (its MTA sending) and to it (mail coming in to
		// that MTA: a published port 25, a routed MX; without it every
		// inbound connection from the Internet was dropped).
		for _, dir := range []string{"saddr", "daddr"} {
			proto, off, fam := byte(unix.NFPROTO_IPV4), uint32(12), "ip"
			if p.Addr().Is6() {
				proto, off, fam = unix.NFPROTO_IPV6, 8, "ip6"
			}
			what := "from"
			if dir == "daddr" {
				off += uint32(p.Addr().BitLen() / 8)
				what = "to"
			}
			n := p.Addr().BitLen() / 8
			mask := net.CIDRMask(p.Bits(), p.Addr().BitLen())
			rs = append(rs, nftRuleDef{
				match: []expr.Any{
					&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
					&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: uint32(n)},
					&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: uint32(n), Mask: []byte(mask), Xor: make([]byte, n)},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Addr().AsSlice()},
				},
				comment: "accept: forwarded " + what + " " + p.String(),
				script:  fam + " " + dir + " " + p.String(),
			})
		}
	}
	return append(rs, nftRuleDef{
		drop:    true,
		group:   s.Group,
		comment: fmt.Sprintf("forwarded: log to NFLOG group %d and drop", s.Group),
	})
}

func (d nftRuleDef) exprs() []expr.Any {
	ex := append(nftPrefix(), d.match...)
	ex = append(ex, &expr.Counter{})
	if d.drop {
		ex = append(ex,
			&expr.Log{Key: 1 << unix.NFTA_LOG_GROUP, Group: d.group},
			&expr.Verdict{Kind: expr.VerdictDrop})
	} else {
		ex = append(ex, &expr.Verdict{Kind: expr.VerdictAccept})
	}
	return ex
}

func u32Elems(ns []uint32) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, len(ns))
	for _, n := range ns {
		// meta skuid/skgid load the id in host byte order.
		out = append(out, nftables.SetElement{Key: binaryutil.NativeEndian.PutUint32(n)})
	}
	return out
}

// Apply implements Backend. The whole table is replaced in one netlink
// batch (one nf_tables transaction): add-if-missing, delete, re-create with
// sets, chain and rules. Either all of it is in place afterwards or, on
// error, the previous state is.
func (n *NFT) Apply(ctx context.Context, s Spec) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("egress: nftables: %w", err)
	}
	t := nftTable()
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	ports := &nftables.Set{Table: t, Name: "ports", KeyType: nftables.TypeInetService}
	pe := make([]nftables.SetElement, 0, len(s.Ports))
	for _, p := range s.Ports {
		pe = append(pe, nftables.SetElement{Key: binaryutil.BigEndian.PutUint16(p)})
	}
	uids := &nftables.Set{Table: t, Name: "uids", KeyType: nftables.TypeUID, KeyByteOrder: binaryutil.NativeEndian}
	gids := &nftables.Set{Table: t, Name: "gids", KeyType: nftables.TypeGID, KeyByteOrder: binaryutil.NativeEndian}
	for _, st := range []struct {
		set   *nftables.Set
		elems []nftables.SetElement
	}{{ports, pe}, {uids, u32Elems(s.UIDs)}, {gids, u32Elems(s.GIDs)}} {
		if err := c.AddSet(st.set, st.elems); err != nil {
			return fmt.Errorf("egress: nftables set %s: %w", st.set.Name, err)
		}
	}
	policy := nftables.ChainPolicyAccept
	ch := c.AddChain(&nftables.Chain{
		Name: nftChain, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter, Policy: &policy,
	})
	setID := map[string]uint32{"ports": ports.ID, "uids": uids.ID, "gids": gids.ID}
	addRules := func(ch *nftables.Chain, defs []nftRuleDef) {
		for _, d := range defs {
			ex := d.exprs()
			for _, e := range ex {
				if l, ok := e.(*expr.Lookup); ok {
					l.SetID = setID[l.SetName]
				}
			}
			c.AddRule(&nftables.Rule{
				Table: t, Chain: ch, Exprs: ex,
				UserData: userdata.AppendString(nil, userdata.TypeComment, d.comment),
			})
		}
	}
	addRules(ch, nftRules(s))
	if s.Forward {
		fw := c.AddChain(&nftables.Chain{
			Name: nftForward, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &policy,
		})
		addRules(fw, nftForwardRules(s))
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("egress: nftables: apply table inet %s: %w", NFTTable, err)
	}
	return nil
}

// Remove implements Backend: it deletes exactly the table inet
// relayguard_egress.
func (n *NFT) Remove(ctx context.Context) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("egress: nftables: %w", err)
	}
	t, err := nftFindTable(c)
	if err != nil || t == nil {
		return err
	}
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("egress: nftables: delete table inet %s: %w", NFTTable, err)
	}
	return nil
}

// nftFindTable returns our table, or nil when it does not exist.
func nftFindTable(c *nftables.Conn) (*nftables.Table, error) {
	ts, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("egress: nftables: list inet tables: %w", err)
	}
	for _, t := range ts {
		if t.Name == NFTTable {
			return t, nil
		}
	}
	return nil, nil
}

// Status implements Backend.
func (n *NFT) Status(ctx context.Context) (Status, error) {
	st := Status{Backend: n.Name(), Group: -1}
	c, err := nftables.New()
	if err != nil {
		return st, fmt.Errorf("egress: nftables: %w", err)
	}
	t, err := nftFindTable(c)
	if err != nil || t == nil {
		return st, err
	}
	st.Installed = true
	sets, err := c.GetSets(t)
	if err != nil {
		return st, fmt.Errorf("egress: nftables: sets of %s: %w", NFTTable, err)
	}
	for _, set := range sets {
		elems, err := c.GetSetElements(set)
		if err != nil {
			return st, fmt.Errorf("egress: nftables: set %s: %w", set.Name, err)
		}
		for _, e := range elems {
			switch set.Name {
			case "ports":
				if len(e.Key) >= 2 {
					st.Ports = append(st.Ports, binaryutil.BigEndian.Uint16(e.Key))
				}
			case "uids":
				if len(e.Key) >= 4 {
					st.UIDs = append(st.UIDs, binaryutil.NativeEndian.Uint32(e.Key))
				}
			case "gids":
				if len(e.Key) >= 4 {
					st.GIDs = append(st.GIDs, binaryutil.NativeEndian.Uint32(e.Key))
				}
			}
		}
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return st, fmt.Errorf("egress: nftables: chains of %s: %w", NFTTable, err)
	}
	var rules []*nftables.Rule
	for _, name := range []string{nftChain, nftForward} {
		if !slices.ContainsFunc(chains, func(ch *nftables.Chain) bool { return ch.Table.Name == NFTTable && ch.Name == name }) {
			continue
		}
		rs, err := c.GetRules(t, &nftables.Chain{Name: name, Table: t})
		if err != nil {
			return st, fmt.Errorf("egress: nftables: rules of %s/%s: %w", NFTTable, name, err)
		}
		rules = append(rules, rs...)
	}
	for _, r := range rules {
		text, _ := userdata.GetString(r.UserData, userdata.TypeComment)
		var rule Rule
		rule.Family = "inet"
		for _, e := range r.Exprs {
			switch e := e.(type) {
			case *expr.Counter:
				rule.Packets, rule.Bytes = e.Packets, e.Bytes
			case *expr.Log:
				st.Group = int(e.Group)
			}
		}
		if text == "" {
			text = fmt.Sprintf("rule handle %d (no comment: not installed by relayguard?)", r.Handle)
		}
		rule.Text = text
		st.Rules = append(st.Rules, rule)
	}
	return st, nil
}

// Script renders the lockdown in nft(8) syntax: the persisted rules file,
// loaded at boot with `nft -f`. It replaces the table atomically, as Apply.
func (n *NFT) Script(s Spec) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# relayguard egress lockdown; generated by `relayguard egress apply --persist`.\n")
	fmt.Fprintf(&b, "table inet %s\ndelete table inet %s\n", NFTTable, NFTTable)
	fmt.Fprintf(&b, "table inet %s {\n", NFTTable)
	fmt.Fprintf(&b, "\tset ports {\n\t\ttype inet_service\n\t\telements = { %s }\n\t}\n", joinPorts(s.Ports))
	for _, x := range []struct {
		name, typ string
		ids       []uint32
	}{{"uids", "uid", s.UIDs}, {"gids", "gid", s.GIDs}} {
		fmt.Fprintf(&b, "\tset %s {\n\t\ttype %s\n", x.name, x.typ)
		if len(x.ids) > 0 {
			fmt.Fprintf(&b, "\t\telements = { %s }\n", joinU32(x.ids, ", "))
		}
		b.WriteString("\t}\n")
	}
	writeNFTChain(&b, nftChain, "output", nftRules(s))
	if s.Forward {
		writeNFTChain(&b, nftForward, "forward", nftForwardRules(s))
	}
	b.WriteString("}\n")
	return b.String()
}

// PersistFiles implements Backend.
func (n *NFT) PersistFiles(s Spec) (map[string]string, [][]string) {
	return map[string]string{"egress.nft": n.Script(s)},
		[][]string{{lookBin("nft"), "-f", "DIR/egress.nft"}}
}

// writeNFTChain writes chain name, a filter chain on hook, with rules, in
// nft's script syntax.
func writeNFTChain(b *strings.Builder, name, hook string, rules []nftRuleDef) {
	fmt.Fprintf(b, "\tchain %s {\n\t\ttype filter hook %s priority filter; policy accept;\n", name, hook)
	for _, d := range rules {
		verdict := "accept"
		if d.drop {
			verdict = fmt.Sprintf("log group %d drop", d.group)
		}
		match := d.script
		if match != "" {
			match += " "
		}
		fmt.Fprintf(b, "\t\t%s %scounter %s comment %q\n", nftScriptPrefix, match, verdict, d.comment)
	}
	b.WriteString("\t}\n")
}
