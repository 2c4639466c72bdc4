package firewall

// Reading the kernel's sets, and knowing them without reading.
//
// The kernel dumps a set in as many netlink messages as it takes and walks
// the set from its first element again for each message, so a dump costs
// O(n²) in the set's size: 0.5 s for 30,000 single-address ranges, 5.5 s
// for 60,000, 19 s for 80,000 on the benchmark machine. A commit between
// two of those messages shifts the walk: the dump then comes back short or
// with elements twice, without an error — the kernel only marks the
// messages NLM_F_DUMP_INTR, which google/nftables' GetSetElements does not
// look at (TestNFTablesReadDuringWrites). So:
//   - every read is bracketed by the ruleset generation (NFT_MSG_GETGEN:
//     the counter the kernel bumps on every commit and compares for
//     NLM_F_DUMP_INTR) and tried again when it moved;
//   - the enforcer keeps what it last read or wrote (kern) and uses it
//     instead of reading as long as the generation moved by its own commits
//     only — a change by anyone else (`nft delete element`, another table's
//     commit) moves it further, and the sets are read again. The
//     generation is read after each own commit, which must have moved it
//     by exactly one: a batch that changes nothing (an element added again
//     as it is, on a kernel without element timeout updates such as 6.1,
//     or a permanent one) creates no transaction and does not move it, and
//     counting it made the next outside commit look like the enforcer's
//     own (TestNFTablesOwnCommitThatChangesNothing). What is left — an
//     outside commit between such a batch and the generation read after
//     it, microseconds — is caught by a read every fullReadEvery
//     reconciles whatever the generation says.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// fullReadEvery is how many reconciles may use kern before one reads the
// sets regardless (with the guard's minute between reconciles: every ten
// minutes).
const fullReadEvery = 10

// readTries bounds the reads of one consistent read: a ruleset that
// changes during every one of them is an error (the guard reconciles
// again later), never a partial answer.
const readTries = 5

// genRequest is NFT_MSG_GETGEN. google/nftables has no call for it (only
// its monitor decodes the NEWGEN answer), so it is written here: an
// nfgenmsg header (family AF_UNSPEC, version NFNETLINK_V0) and no
// attributes; the answer carries NFTA_GEN_ID, big-endian.
func genRequest() netlink.Message {
	return netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETGEN), Flags: netlink.Request},
		Data:   []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0},
	}
}

// dumpBuffer is the largest message the kernel builds for a dump.
const dumpBuffer = 32 << 10

// bigDumps makes the kernel fill each message of a dump on nl up to 32 KiB
// instead of one page. Netlink sizes a dump's messages by the largest
// buffer the socket was ever read with (af_netlink.c, max_recvmsg_len,
// capped at 32 KiB), and mdlayher/netlink reads each message with a buffer
// of exactly its size, so it stays at one page; neither library lets the
// caller choose (google/nftables dials its own sockets). The kernel walks
// an nftables set from its first element for every message of a dump, so
// eight times fewer messages read a large set about eight times faster.
// One read of dumpBuffer bytes, of the answer to a generation request, is
// enough.
func bigDumps(nl *netlink.Conn) error {
	if _, err := nl.Send(genRequest()); err != nil {
		return fmt.Errorf("firewall: nftables netlink: %w", err)
	}
	rc, err := nl.SyscallConn()
	if err != nil {
		return fmt.Errorf("firewall: nftables netlink: %w", err)
	}
	buf := make([]byte, dumpBuffer)
	var rerr error
	if err := rc.Read(func(fd uintptr) bool {
		_, _, _, _, rerr = unix.Recvmsg(int(fd), buf, nil, 0)
		return rerr != unix.EAGAIN
	}); err != nil {
		return fmt.Errorf("firewall: nftables netlink: %w", err)
	}
	if rerr != nil {
		return fmt.Errorf("firewall: nftables netlink: %w", rerr)
	}
	return nil
}

// generation returns the nftables ruleset generation of nl's namespace.
func generation(nl *netlink.Conn) (uint32, error) {
	msgs, err := nl.Execute(genRequest())
	if err != nil {
		return 0, fmt.Errorf("firewall: nftables generation: %w", err)
	}
	for _, m := range msgs {
		if len(m.Data) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			return 0, fmt.Errorf("firewall: nftables generation: %w", err)
		}
		ad.ByteOrder = binary.BigEndian
		for ad.Next() {
			if ad.Type() == unix.NFTA_GEN_ID {
				return ad.Uint32(), nil
			}
		}
	}
	return 0, errors.New("firewall: nftables generation: no NFTA_GEN_ID in the answer")
}

// consistently runs read until no commit happened while it ran (the
// generation is the same before and after) and returns that generation.
func consistently(nl *netlink.Conn, read func() error) (uint32, error) {
	var g0, g1 uint32
	for range readTries {
		var err error
		if g0, err = generation(nl); err != nil {
			return 0, err
		}
		if err := read(); err != nil {
			return 0, err
		}
		if g1, err = generation(nl); err != nil {
			return 0, err
		}
		if g0 == g1 {
			return g0, nil
		}
	}
	return 0, fmt.Errorf("firewall: nftables ruleset changed during each of %d reads (generation %d to %d)", readTries, g0, g1)
}

// dialGen opens a netlink socket for generation in namespace fd netns (-1:
// the current one).
func dialGen(netns int) (*netlink.Conn, error) {
	cfg := &netlink.Config{}
	if netns >= 0 {
		cfg.NetNS = netns
	}
	nl, err := netlink.Dial(unix.NETLINK_NETFILTER, cfg)
	if err != nil {
		return nil, fmt.Errorf("firewall: nftables netlink: %w", err)
	}
	return nl, nil
}

// SetElements returns the elements of s in namespace fd netns (-1: the
// current one), read while no commit changed the ruleset (see the top of
// this file). For readers outside the enforcer (bench/cluster's read-back).
func SetElements(netns int, s *nftables.Set) ([]nftables.SetElement, error) {
	opts := []nftables.ConnOption{nftables.WithSockOptions(bigDumps)}
	if netns >= 0 {
		opts = append(opts, nftables.WithNetNSFd(netns))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("firewall: nftables netlink: %w", err)
	}
	nl, err := dialGen(netns)
	if err != nil {
		return nil, err
	}
	defer nl.Close()
	var els []nftables.SetElement
	_, err = consistently(nl, func() error {
		var err error
		els, err = c.GetSetElements(s)
		if err != nil {
			return fmt.Errorf("firewall: read nftables set %s: %w", s.Name, err)
		}
		return nil
	})
	return els, err
}

// gc returns the enforcer's socket for generation, dialling it on first use.
func (e *nft) gc() (*netlink.Conn, error) {
	if e.gconn != nil {
		return e.gconn, nil
	}
	nl, err := dialGen(e.netns)
	if err != nil {
		return nil, err
	}
	e.gconn = nl
	return nl, nil
}

// commit sends c's batch (one kernel transaction) and counts it as the
// enforcer's own; a failure leaves the sets unknown.
func (e *nft) commit(c *nftables.Conn) error {
	if err := c.Flush(); err != nil {
		e.kern = nil
		return err
	}
	e.commits++
	if e.kern != nil {
		// exactly one more than before, or kern is not known to be the
		// kernel's (see the top of this file)
		nl, err := e.gc()
		var g uint32
		if err == nil {
			g, err = generation(nl)
		}
		if err != nil || g != e.kgen+1 {
			e.kern = nil
		} else {
			e.kgen = g
		}
	}
	if e.afterCommit != nil {
		e.afterCommit()
	}
	return nil
}

// kernel returns the four sets' ranges and ends: kern when the generation
// did not move since the enforcer's last own commit or read, else read
// again, consistently. Ranges whose end has passed are dropped: the kernel
// no longer holds them.
func (e *nft) kernel(c *nftables.Conn) (map[setKind]map[rng]time.Time, error) {
	nl, err := e.gc()
	if err != nil {
		return nil, err
	}
	if e.kern != nil {
		g, err := generation(nl)
		if err != nil {
			e.kern = nil
			return nil, err
		}
		if g == e.kgen {
			now := e.now()
			for _, m := range e.kern {
				for r, u := range m {
					if !u.IsZero() && !u.After(now) {
						delete(m, r)
					}
				}
			}
			return e.kern, nil
		}
		e.kern = nil
	}
	var read map[setKind]map[rng]time.Time
	var took time.Duration
	g, err := consistently(nl, func() error {
		read = map[setKind]map[rng]time.Time{}
		start := e.now()
		for k := temp4; k <= perm6; k++ {
			segs, err := e.dumpSet(c, k, start)
			if err != nil {
				return err
			}
			m := make(map[rng]time.Time, len(segs))
			for _, s := range segs {
				m[s.rng] = s.Until
			}
			read[k] = m
		}
		took = e.now().Sub(start)
		return nil
	})
	if err != nil {
		return nil, err
	}
	e.kern, e.kgen, e.commits, e.slack, e.unread = read, g, 0, took, 0
	e.reads++
	return read, nil
}

// known records that set k holds exactly want (after a rebuild).
func (e *nft) known(k setKind, want []segment) {
	if e.kern == nil {
		return
	}
	m := make(map[rng]time.Time, len(want))
	for _, s := range want {
		m[s.rng] = s.Until
	}
	e.kern[k] = m
}

// wrote records a write that succeeded.
func (e *nft) wrote(k setKind, del, add []segment) {
	if e.kern == nil {
		return
	}
	m := e.kern[k]
	if m == nil {
		m = map[rng]time.Time{}
		e.kern[k] = m
	}
	for _, s := range del {
		delete(m, s.rng)
	}
	for _, s := range add {
		m[s.rng] = s.Until
	}
}

// readSet returns set k's segments, read consistently (Status, tests).
func (e *nft) readSet(c *nftables.Conn, k setKind) ([]segment, error) {
	nl, err := e.gc()
	if err != nil {
		return nil, err
	}
	var segs []segment
	_, err = consistently(nl, func() error {
		var err error
		segs, err = e.dumpSet(c, k, e.now())
		return err
	})
	return segs, err
}

// dumpSet returns a set's elements as sorted segments, in one dump that
// started at start (see consistently). The kernel dumps interval sets as
// start elements and end elements (end = last address + 1, flag
// NFT_SET_ELEM_INTERVAL_END); a start without an end runs to the top of the
// address space. Expired elements are not dumped. An element's end is
// start plus its time left, so up to the dump's duration early (see
// nft.slack): the time left is the kernel's when it wrote the element's
// message, and a dump of 60,000 ranges takes seconds.
func (e *nft) dumpSet(c *nftables.Conn, k setKind, start time.Time) ([]segment, error) {
	s := e.set(k)
	els, err := c.GetSetElements(s)
	if err != nil {
		return nil, fmt.Errorf("firewall: read nftables set %s: %w", s.Name, err)
	}
	type el struct {
		a     netip.Addr
		end   bool
		until time.Time
	}
	list := make([]el, 0, len(els))
	for _, x := range els {
		a, ok := netip.AddrFromSlice(x.Key)
		if !ok {
			continue
		}
		var u time.Time
		if x.Timeout != 0 || x.Expires != 0 {
			u = start.Add(x.Expires)
		}
		list = append(list, el{a, x.IntervalEnd, u})
	}
	slices.SortFunc(list, func(x, y el) int {
		if c := x.a.Compare(y.a); c != 0 {
			return c
		}
		if x.end == y.end {
			return 0
		}
		if x.end {
			return -1
		}
		return 1
	})
	// Pair ends with starts like parentheses: an element written inside
	// another by someone else (the kernel accepts a range nested in a
	// range) comes back as its own segment, so a reconcile can delete it.
	var out []segment
	var stack []el
	for _, x := range list {
		switch {
		case !x.end:
			stack = append(stack, x)
		case len(stack) > 0:
			open := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			out = append(out, segment{rng: rng{open.a, x.a.Prev()}, Until: open.until})
		}
		// an end without a start (its start expired and awaits garbage
		// collection) matches nothing and is left to the kernel: deleting
		// it alone would make the collector pair the start with another end.
	}
	for _, open := range stack { // no end: the range runs to the top
		top := netip.AddrFrom4([4]byte{255, 255, 255, 255})
		if !open.a.Is4() {
			top = netip.AddrFrom16([16]byte{255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255})
		}
		out = append(out, segment{rng: rng{open.a, top}, Until: open.until})
	}
	slices.SortFunc(out, func(a, b segment) int { return a.Start.Compare(b.Start) })
	return out, nil
}
