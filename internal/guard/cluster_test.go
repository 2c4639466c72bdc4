package guard

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/firewall"
	"github.com/relayguard/relayguard/internal/hosttest"
	"github.com/relayguard/relayguard/internal/redistest"
	"github.com/relayguard/relayguard/internal/store"
)

var nsSeq atomic.Int32

// clusterNode is one relayguard server of a cluster test: its own database
// directory, its own network namespace with relayguard's nftables table,
// the guard wired as serve wires it (Open's stores, Start's sync loop).
type clusterNode struct {
	ns     string
	dir    string
	g      *Guard
	cancel context.CancelFunc
	done   sync.WaitGroup
}

func newNetns(t *testing.T) (string, int) {
	t.Helper()
	hosttest.NeedRoot(t, "ip", "nft")
	ns := fmt.Sprintf("rgcl%d-%d", os.Getpid(), nsSeq.Add(1))
	hosttest.Run(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	fd, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return ns, fd
}

// start runs the node's guard (again, after stop: a restart over the same
// database and firewall).
func (n *clusterNode) start(t *testing.T, url string, fd int) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	n.cancel = cancel
	st, err := store.Open(ctx, n.dir, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	fc := config.Default().Firewall
	fc.Backend = config.FirewallNFTables
	enf := firewall.NewNFTablesIn(fc, nil, fd)
	if err := enf.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	g, err := Open(ctx, testConfig(), &config.Site{}, nil, st, Options{Enforcer: enf})
	if err != nil {
		t.Fatal(err)
	}
	n.g = g
	g.Start(ctx, st.Redis, &n.done)
	t.Cleanup(func() { n.stop(); st.Close() })
}

func (n *clusterNode) stop() {
	if n.cancel != nil {
		n.cancel()
		n.done.Wait()
		n.cancel = nil
	}
}

// inKernel reports whether relayguard's nftables sets in the node's
// namespace hold an element printed as elem (nft's own listing).
func (n *clusterNode) inKernel(t *testing.T, elem string) bool {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", n.ns, "nft", "list", "table", "inet", "relayguard").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list: %v\n%s", err, out)
	}
	for _, f := range strings.FieldsFunc(string(out), func(r rune) bool { return r == ' ' || r == ',' || r == '{' || r == '}' || r == '\n' || r == '\t' }) {
		if f == elem {
			return true
		}
	}
	return false
}

// proxy forwards TCP connections to Redis until cut, which closes them
// and refuses new ones until restore: one server's link to Redis broken
// while the others keep theirs.
type proxy struct {
	t      *testing.T
	target string
	addr   string
	mu     sync.Mutex
	ln     net.Listener
	conns  []net.Conn
}

func newProxy(t *testing.T, target string) *proxy {
	p := &proxy{t: t, target: target}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(p.cut)
	return p
}

func (p *proxy) serve(ln net.Listener) {
	p.ln = ln
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { io.Copy(u, c); u.Close() }()
			go func() { io.Copy(c, u); c.Close() }()
		}
	}()
}

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *proxy) restore() {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatalf("proxy listen again on %s: %v", p.addr, err)
	}
	p.mu.Lock()
	p.serve(ln)
	p.mu.Unlock()
}

// The incremental sync between servers, with a real Redis and each
// server's nftables in its own namespace: a ban reaches the other server's
// kernel set; a ban made while that server's link to Redis is cut (its
// announcement lost) reaches it after the reconnection; an unban
// propagates; a short ban expires everywhere; a restarted server catches
// up with what was decided while it was down.
func TestClusterIncrementalSync(t *testing.T) {
	rs := redistest.Start(t)
	ctx := t.Context()
	nsA, fdA := newNetns(t)
	nsB, fdB := newNetns(t)
	a := &clusterNode{ns: nsA, dir: t.TempDir()}
	b := &clusterNode{ns: nsB, dir: t.TempDir()}
	px := newProxy(t, rs.Addr())
	bURL := "redis://" + px.addr + "/0"
	a.start(t, rs.URL(), fdA)
	b.start(t, bURL, fdB)

	ban := func(n *clusterNode, p string, d time.Duration) {
		t.Helper()
		if _, err := n.g.Ban(ctx, netip.MustParsePrefix(p), d, "test"); err != nil {
			t.Fatal(err)
		}
	}
	isBanned := func(n *clusterNode, ip string) bool { _, ok := n.g.Banned(netip.MustParseAddr(ip)); return ok }

	ban(a, "198.51.100.7/32", time.Hour)
	eventually(t, "B enforces A's ban in its kernel set", func() bool { return b.inKernel(t, "198.51.100.7") })
	if !isBanned(b, "198.51.100.7") {
		t.Fatal("in B's kernel set but not in its guard")
	}

	// B's link to Redis is cut: A's announcement of the next ban is lost
	// for B, which learns it when its subscription is back.
	px.cut()
	time.Sleep(300 * time.Millisecond) // B's subscription notices
	ban(a, "203.0.113.0/24", time.Hour)
	time.Sleep(300 * time.Millisecond)
	if isBanned(b, "203.0.113.9") {
		t.Fatal("B learnt a ban while its link to Redis was cut (the test cuts nothing)")
	}
	px.restore()
	eventually(t, "B learns the ban announced while its link was cut", func() bool {
		return isBanned(b, "203.0.113.9") && b.inKernel(t, "203.0.113.0/24")
	})

	// An unban on B reaches A's guard and kernel.
	if found, err := b.g.Unban(ctx, netip.MustParsePrefix("198.51.100.7/32")); !found || err != nil {
		t.Fatalf("Unban: %v %v", found, err)
	}
	eventually(t, "A lifts B's unban", func() bool { return !isBanned(a, "198.51.100.7") && !a.inKernel(t, "198.51.100.7") })

	// A short ban reaches B and expires on both, in memory and store.
	ban(a, "192.0.2.77/32", 3*time.Second)
	eventually(t, "B learns the short ban", func() bool { return isBanned(b, "192.0.2.77") })
	eventually(t, "the short ban expires on both", func() bool {
		return !isBanned(a, "192.0.2.77") && !isBanned(b, "192.0.2.77") && !a.inKernel(t, "192.0.2.77") && !b.inKernel(t, "192.0.2.77")
	})
	eventually(t, "B's database drops the expired ban", func() bool {
		st, err := store.OpenSQLite(ctx, b.dir)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		l, _ := NewSQLiteStore(ctx, st)
		bans, err := l.ListBans(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range bans {
			if x.Prefix == netip.MustParsePrefix("192.0.2.77/32") {
				return false
			}
		}
		return true
	})

	// B stops; A bans and unbans meanwhile; B restarted catches up.
	b.stop()
	ban(a, "198.51.100.99/32", time.Hour)
	if _, err := a.g.Unban(ctx, netip.MustParsePrefix("203.0.113.0/24")); err != nil {
		t.Fatal(err)
	}
	b.start(t, bURL, fdB)
	eventually(t, "restarted B has the ban decided while it was down", func() bool {
		return isBanned(b, "198.51.100.99") && b.inKernel(t, "198.51.100.99")
	})
	eventually(t, "restarted B lifted the unban made while it was down", func() bool {
		return !isBanned(b, "203.0.113.9") && !b.inKernel(t, "203.0.113.0/24")
	})
}
