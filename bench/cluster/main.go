// Command cluster drives bench/cluster/run.sh: five `relayguard watch`
// nodes, each in its own network namespace with its own nftables table and
// data directory, sharing one Redis (in a hub namespace, over veths). It
// appends failing-login lines to each node's followed log (the production
// path: one line is one ban with maxretry 1), watches every node's nftables
// sets through netlink (a monitor per namespace: the time each address
// enters each set), and reads the decision times from the bans in Redis
// (Created, set by the deciding node). Phases: steady load; one node
// stopped and restarted under load; Redis killed and restarted under load.
// The namespaces and the bridge are the script's; this program starts and
// stops the processes.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sys/unix"

	"github.com/relayguard/relayguard/internal/firewall"
	"github.com/relayguard/relayguard/internal/hosttest"
	"github.com/relayguard/relayguard/internal/store"
)

var (
	bin       = flag.String("relayguard", "", "relayguard binary")
	dir       = flag.String("dir", "", "work directory")
	hub       = flag.String("hub", "", "namespace of Redis")
	nsList    = flag.String("ns", "", "node namespaces, comma-separated")
	redisAddr = flag.String("redis", "10.77.0.1:6379", "Redis address inside the namespaces")
	rate      = flag.Int("rate", 1000, "new bans per second across the cluster")
	steady    = flag.Duration("steady", 30*time.Second, "steady phase")
	down      = flag.Duration("down", 10*time.Second, "how long one node stays stopped")
	outage    = flag.Duration("outage", 10*time.Second, "how long Redis stays down")
	settle    = flag.Duration("settle", 10*time.Second, "load between phases")
	profile   = flag.Bool("cpuprofile", false, "each node writes a CPU profile into its directory")
)

type node struct {
	i    int
	ns   string
	dir  string
	cmd  *exec.Cmd
	logf *os.File

	mu      sync.Mutex
	seen    map[netip.Addr]time.Time // first time in the node's sets
	recent  map[netip.Addr]time.Time // the same since the last reset (a restart)
	overrun int                      // monitor errors (events lost)
}

type ban struct {
	origin  int
	written time.Time
}

var (
	mu      sync.Mutex
	written = map[netip.Addr]ban{}
	next    uint32
)

func main() {
	flag.Parse()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var nodes []*node
	for i, ns := range strings.Split(*nsList, ",") {
		n := &node{i: i + 1, ns: ns, dir: filepath.Join(*dir, fmt.Sprintf("node%d", i+1)), seen: map[netip.Addr]time.Time{}, recent: map[netip.Addr]time.Time{}}
		nodes = append(nodes, n)
	}
	redisCmd := startRedis()
	defer func() { redisCmd.Process.Kill(); redisCmd.Wait() }()
	rc := redis.NewClient(&redis.Options{Addr: *redisAddr, Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := hosttest.InNS(*hub, func() error {
			var err error
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}})
	for _, n := range nodes {
		must(os.MkdirAll(n.dir, 0o755))
		must(os.WriteFile(filepath.Join(n.dir, "rg.toml"), []byte(fmt.Sprintf(`[guard]
maxretry = 1
bantime = "2h"
files = [%q]
subnet = []
[firewall]
backend = "nftables"
[store]
url = "redis://%s/0"
`, filepath.Join(n.dir, "mail.log"), *redisAddr)), 0o644))
		f, err := os.OpenFile(filepath.Join(n.dir, "mail.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		must(err)
		n.logf = f
		n.monitor(ctx)
		n.start()
	}
	defer func() {
		for _, n := range nodes {
			n.stop()
		}
	}()
	for _, n := range nodes {
		n.waitReady()
	}
	fmt.Printf("# %s, %d nodes, load average %s\n", time.Now().UTC().Format(time.RFC3339), len(nodes), loadavg())
	live := slices.Clone(nodes)
	load := newLoad(live)
	go load.run(ctx)

	progress("steady load")
	// 1. steady
	t0 := time.Now()
	time.Sleep(*steady)
	t1 := time.Now()
	// (every steady ban in every set before a node stops: its latency is
	// the sync's, not the restart's)
	steadyBans := between(t0, t1)
	dl := time.Now().Add(10 * time.Second)
	for _, n := range nodes {
		n.waitIn(&n.seen, steadyBans, t1, dl)
	}
	progress("steady done; node 3 stops")
	// 2. one node down and back
	victim := nodes[2]
	// (its lines stop first: a stopping watch reads its log to the end,
	// and under load it never reached the end of a log still written)
	load.set(without(nodes, victim))
	victim.stop()
	tDown := time.Now()
	time.Sleep(*down)
	tUp := time.Now()
	progress("node 3 starts again")
	victim.reset()
	victim.start()
	load.set(nodes)
	downBans := between(tDown, tUp)
	catchUp, missing := victim.waitAll(downBans, tUp, tUp.Add(15*time.Second))
	progress("node 3 caught up")
	time.Sleep(*settle)
	// 3. Redis killed under load, restarted empty (no persistence)
	tKill := time.Now()
	progress("Redis killed")
	redisCmd.Process.Signal(syscall.SIGKILL)
	redisCmd.Wait()
	time.Sleep(*outage)
	progress("Redis starts again")
	redisCmd = startRedis()
	tBack := time.Now()
	outBans := between(tKill, tBack)
	time.Sleep(*settle)
	progress("load stops")
	load.stop()
	tEnd := time.Now()
	// every node must end with every ban
	all := between(time.Time{}, tEnd)
	var outWorst time.Duration
	outMissing := 0
	dl = time.Now().Add(30 * time.Second)
	for _, n := range nodes {
		d, m := n.waitAll(outBans, tBack, dl)
		outWorst, outMissing = max(outWorst, d), outMissing+m
	}
	var drain time.Duration
	dl = time.Now().Add(20 * time.Second)
	for _, n := range nodes {
		d, _ := n.waitIn(&n.seen, all, tEnd, dl)
		drain = max(drain, d)
	}
	progress("every node's sets read back")
	finalMissing := 0
	for _, n := range nodes {
		m := n.verify(all)
		finalMissing += m
		progress("node %d read back: %d missing", n.i, m)
	}

	// decision times from Redis (pushed back after the outage)
	created := map[netip.Addr]time.Time{}
	m, err := rc.HGetAll(ctx, "relayguard:bans").Result()
	must(err)
	progress("bans read from Redis")
	for _, v := range m {
		msg, err := store.ParseBanMessage("add " + prefixOf(v) + " - " + v)
		if err == nil && msg.Prefix.IsSingleIP() {
			created[msg.Prefix.Addr()] = msg.Ban.Created
		}
	}
	var lat, decide []time.Duration
	nSteady := 0
	for a, b := range written {
		if b.written.Before(t0) || !b.written.Before(t1) {
			continue
		}
		nSteady++
		c, ok := created[a]
		if !ok {
			continue
		}
		decide = append(decide, c.Sub(b.written))
		for _, n := range nodes {
			if n.i == b.origin {
				continue
			}
			if s, ok := n.firstSeen(a); ok {
				lat = append(lat, s.Sub(c))
			}
		}
	}
	overruns := 0
	for _, n := range nodes {
		overruns += n.overrun
	}
	fmt.Printf("steady %s at %d new bans/s offered across %d nodes: %d bans (%.0f/s), %d in Redis\n", t1.Sub(t0).Round(time.Second), *rate, len(nodes), nSteady, float64(nSteady)/t1.Sub(t0).Seconds(), len(created))
	fmt.Printf("  log line -> ban decided on its node: %s\n", pct(decide))
	fmt.Printf("  decided on one node -> in each other node's nftables set: %s (%d samples of %d wanted, monitor overruns %d)\n", pct(lat), len(lat), nSteady*(len(nodes)-1), overruns)
	p99 := quantile(lat, 0.99)
	fmt.Printf("  target p99 < 1 s: %s\n", verdict(p99 < time.Second && len(lat) == nSteady*(len(nodes)-1)))
	fmt.Printf("restart: node %d stopped %s under load, %d bans decided by the others meanwhile; all in its set %s after it was started again (missing %d)\n", victim.i, tUp.Sub(tDown).Round(100*time.Millisecond), len(downBans), catchUp.Round(10*time.Millisecond), missing)
	fmt.Printf("  target catch-up < 5 s: %s\n", verdict(missing == 0 && catchUp < 5*time.Second))
	fmt.Printf("redis: killed (SIGKILL) %s under load and restarted empty; %d bans decided meanwhile; every one in every node's set %s after Redis was back (missing %d)\n", tBack.Sub(tKill).Round(100*time.Millisecond), len(outBans), outWorst.Round(10*time.Millisecond), outMissing)
	fmt.Printf("final: %d bans written; every node's set complete %s after the load stopped; missing from a node's set (read back through netlink): %d\n", len(all), drain.Round(10*time.Millisecond), finalMissing)
	fmt.Printf("  target no ban lost: %s\n", verdict(outMissing == 0 && finalMissing == 0))
	fmt.Printf("cpu: %s; load average %s\n", cpuSummary(nodes), loadavg())
	fmt.Printf("| cluster | 5 nodes, %d new bans/s: propagation p50/p99/max; restart catch-up; Redis kill | %s / %s / %s; %s; %d lost | — | p99 < 1 s: %s; < 5 s: %s; none lost: %s |\n",
		*rate, quantile(lat, .5).Round(time.Millisecond), p99.Round(time.Millisecond), quantile(lat, 1).Round(time.Millisecond), catchUp.Round(10*time.Millisecond), outMissing+finalMissing,
		verdict(p99 < time.Second), verdict(missing == 0 && catchUp < 5*time.Second), verdict(outMissing == 0 && finalMissing == 0))
}

var begin = time.Now()

// progress says on stderr where the run is.
func progress(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "[%5.1fs] %s\n", time.Since(begin).Seconds(), fmt.Sprintf(format, a...))
}

func prefixOf(js string) string {
	_, rest, _ := strings.Cut(js, `"prefix":"`)
	p, _, _ := strings.Cut(rest, `"`)
	return p
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

func between(a, b time.Time) []netip.Addr {
	mu.Lock()
	defer mu.Unlock()
	var out []netip.Addr
	for ad, w := range written {
		if !w.written.Before(a) && w.written.Before(b) {
			out = append(out, ad)
		}
	}
	return out
}

func without(ns []*node, x *node) []*node {
	var out []*node
	for _, n := range ns {
		if n != x {
			out = append(out, n)
		}
	}
	return out
}

// load appends one failing-login line per new address, spread over the
// live nodes at the cluster-wide rate.
type load struct {
	mu    sync.Mutex
	nodes []*node
	done  chan struct{}
}

func newLoad(ns []*node) *load { return &load{nodes: ns, done: make(chan struct{})} }

func (l *load) set(ns []*node) { l.mu.Lock(); l.nodes = slices.Clone(ns); l.mu.Unlock() }
func (l *load) stop()          { close(l.done); time.Sleep(10 * time.Millisecond) }

func (l *load) run(ctx context.Context) {
	start := time.Now()
	sent := 0
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-l.done:
			return
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		want := int(time.Since(start).Seconds() * float64(*rate))
		l.mu.Lock()
		ns := l.nodes
		l.mu.Unlock()
		bufs := make([][]byte, len(ns))
		now := time.Now()
		stamp := now.Format("Jan _2 15:04:05")
		for ; sent < want; sent++ {
			k := sent % len(ns)
			mu.Lock()
			// 100.64.0.0/10 (RFC 6598): 4,194,304 addresses, so a slow run never
			// wraps (198.18.0.0/15 held 131,072 and wrapped at 16:21Z).
			a := netip.AddrFrom4([4]byte{100, 64 + byte(next>>16&63), byte(next >> 8), byte(next)})
			next++
			written[a] = ban{origin: ns[k].i, written: now}
			mu.Unlock()
			bufs[k] = fmt.Appendf(bufs[k], "%s mx%d postfix/smtpd[1]: warning: unknown[%s]: SASL LOGIN authentication failed: UGFzc3dvcmQ6\n", stamp, ns[k].i, a)
		}
		for k, b := range bufs {
			if len(b) > 0 {
				ns[k].logf.Write(b)
			}
		}
	}
}

func startRedis() *exec.Cmd {
	host, port, _ := strings.Cut(*redisAddr, ":")
	cmd := exec.Command("ip", "netns", "exec", *hub, "redis-server", "--bind", host, "--port", port, "--save", "", "--appendonly", "no", "--protected-mode", "no", "--dir", *dir, "--logfile", filepath.Join(*dir, "redis.log"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	must(cmd.Start())
	for i := 0; ; i++ {
		if exec.Command("ip", "netns", "exec", *hub, "redis-cli", "-h", host, "-p", port, "ping").Run() == nil {
			return cmd
		}
		if i > 200 {
			panic("redis did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (n *node) start() {
	errf, err := os.OpenFile(filepath.Join(n.dir, "watch.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	must(err)
	args := []string{"netns", "exec", n.ns, *bin, "--config", filepath.Join(n.dir, "rg.toml"), "--data-dir", filepath.Join(n.dir, "data"), "--create-data-dir", "watch"}
	if *profile {
		args = append(args, "--cpuprofile", filepath.Join(n.dir, fmt.Sprintf("cpu-%d.pprof", time.Now().UnixNano())))
	}
	n.cmd = exec.Command("ip", args...)
	n.cmd.Stderr, n.cmd.Stdout = errf, errf
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	must(n.cmd.Start())
}

func (n *node) stop() {
	if n.cmd == nil {
		return
	}
	n.cmd.Process.Signal(syscall.SIGTERM)
	n.cmd.Wait()
	n.cmd = nil
}

func (n *node) reset() {
	n.mu.Lock()
	n.recent = map[netip.Addr]time.Time{}
	n.mu.Unlock()
}

func (n *node) waitReady() {
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		b, _ := os.ReadFile(filepath.Join(n.dir, "watch.log"))
		if strings.Contains(string(b), "logwatch: following") {
			return
		}
	}
	b, _ := os.ReadFile(filepath.Join(n.dir, "watch.log"))
	panic(fmt.Sprintf("node %d not ready:\n%s", n.i, b))
}

func (n *node) firstSeen(a netip.Addr) (time.Time, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	t, ok := n.seen[a]
	return t, ok
}

// waitAll waits until every address of want is seen in the node's sets and
// returns how long after from the last one came, and how many never did.
func (n *node) waitAll(want []netip.Addr, from, deadline time.Time) (time.Duration, int) {
	return n.waitIn(&n.recent, want, from, deadline)
}

// waitIn is waitAll over seen (the first time ever) or recent.
func (n *node) waitIn(m *map[netip.Addr]time.Time, want []netip.Addr, from, deadline time.Time) (time.Duration, int) {
	for {
		var worst time.Duration
		missing := 0
		n.mu.Lock()
		for _, a := range want {
			if t, ok := (*m)[a]; ok {
				worst = max(worst, t.Sub(from))
			} else {
				missing++
			}
		}
		n.mu.Unlock()
		if missing == 0 || time.Now().After(deadline) {
			return worst, missing
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// monitor records when addresses enter the node's nftables sets.
func (n *node) monitor(ctx context.Context) {
	fd, err := unix.Open("/run/netns/"+n.ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	must(err)
	c, err := nftables.New(nftables.WithNetNSFd(fd), nftables.WithSockOptions(func(c *netlink.Conn) error { return c.SetReadBuffer(64 << 20) }))
	must(err)
	go func() {
		for ctx.Err() == nil {
			m := nftables.NewMonitor(nftables.WithMonitorObject(nftables.MonitorObjectElements), nftables.WithMonitorAction(nftables.MonitorActionNew), nftables.WithMonitorEventBuffer(1<<16))
			ch, err := c.AddMonitor(m)
			must(err)
			for ev := range ch {
				now := time.Now()
				if ev.Error != nil {
					n.mu.Lock()
					n.overrun++
					n.mu.Unlock()
					break
				}
				els, ok := ev.Data.([]nftables.SetElement)
				if !ok {
					continue
				}
				n.mu.Lock()
				for _, e := range els {
					if e.IntervalEnd || len(e.Key) != 4 {
						continue
					}
					a := netip.AddrFrom4([4]byte(e.Key))
					if _, ok := n.seen[a]; !ok {
						n.seen[a] = now
					}
					if _, ok := n.recent[a]; !ok {
						n.recent[a] = now
					}
				}
				n.mu.Unlock()
			}
			m.Close()
		}
	}()
}

// verify reads the node's IPv4 sets through netlink and counts the
// addresses of want that no interval covers (all of them when a set could
// not be read consistently within 3 minutes).
func (n *node) verify(want []netip.Addr) int {
	fd, err := unix.Open("/run/netns/"+n.ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	must(err)
	defer unix.Close(fd)
	c, err := nftables.New(nftables.WithNetNSFd(fd))
	must(err)
	table := &nftables.Table{Family: nftables.TableFamilyINet, Name: "relayguard"}
	type rng struct{ lo, hi netip.Addr } // [lo, hi)
	var rs []rng
	for _, name := range []string{"ban4", "perm4"} {
		set, err := c.GetSetByName(table, name)
		must(err)
		// (a plain dump can be short: SetElements reads again when a
		// commit fell inside it; a node still deciding commits often)
		var els []nftables.SetElement
		for deadline := time.Now().Add(3 * time.Minute); ; {
			if els, err = firewall.SetElements(fd, set); err == nil || time.Now().After(deadline) {
				break
			}
			progress("node %d: %v; reading again", n.i, err)
		}
		if err != nil { // counted as all missing: not read is not shown present
			progress("node %d: set %s not read back: %v", n.i, name, err)
			return len(want)
		}
		// by address; at one address the end of a range before the
		// start of the next
		slices.SortFunc(els, func(a, b nftables.SetElement) int {
			if c := netip.AddrFrom4([4]byte(a.Key)).Compare(netip.AddrFrom4([4]byte(b.Key))); c != 0 {
				return c
			}
			switch {
			case a.IntervalEnd == b.IntervalEnd:
				return 0
			case a.IntervalEnd:
				return -1
			}
			return 1
		})
		for k, e := range els {
			if e.IntervalEnd {
				continue
			}
			lo := netip.AddrFrom4([4]byte(e.Key))
			hi := netip.MustParseAddr("255.255.255.255")
			if k+1 < len(els) && els[k+1].IntervalEnd {
				hi = netip.AddrFrom4([4]byte(els[k+1].Key))
			}
			rs = append(rs, rng{lo, hi})
		}
	}
	missing := 0
	for _, a := range want {
		i, _ := slices.BinarySearchFunc(rs, a, func(r rng, a netip.Addr) int { return r.lo.Compare(a) })
		if i < len(rs) && rs[i].lo == a {
			continue
		}
		if i > 0 && rs[i-1].hi.Compare(a) > 0 {
			continue
		}
		if missing < 3 {
			progress("node %d: %s missing (written to node %d at %s)", n.i, a, written[a].origin, written[a].written.Sub(begin))
		}
		missing++
	}
	return missing
}

func pct(d []time.Duration) string {
	if len(d) == 0 {
		return "no samples"
	}
	return fmt.Sprintf("p50 %s, p90 %s, p99 %s, max %s", quantile(d, .5).Round(time.Millisecond), quantile(d, .9).Round(time.Millisecond), quantile(d, .99).Round(time.Millisecond), quantile(d, 1).Round(time.Millisecond))
}

func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	i := int(q*float64(len(d))+0.5) - 1
	return d[min(max(i, 0), len(d)-1)]
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func cpuSummary(ns []*node) string {
	// the relayguard processes' CPU, from their children accounting is
	// not available while they run: read /proc/PID/stat of each.
	var parts []string
	for _, n := range ns {
		if n.cmd == nil {
			continue
		}
		parts = append(parts, fmt.Sprintf("node%d %s", n.i, procCPU(n.cmd.Process.Pid)))
	}
	return strings.Join(parts, ", ")
}

// procCPU is the user+system CPU of pid's process tree leaf (ip netns exec
// execs relayguard in place, so pid is relayguard).
func procCPU(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "?"
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndex(s, ")")+2:])
	var u, st float64
	fmt.Sscan(f[11], &u)
	fmt.Sscan(f[12], &st)
	return fmt.Sprintf("%.1f s", (u+st)/100)
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}
