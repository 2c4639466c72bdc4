// Command dnsblbench measures `relayguard policy` deciding with 10 DNS
// lists behind a real caching resolver: it starts NSD (the lists' data)
// behind unbound (the resolver) and drives each relayguard given with
// -run over the Postfix policy protocol, all at the same time and against
// the same resolver, each with -conns connections of its own, printing each
// one's decisions per second every second with its answer cache's size and
// evictions and its resident memory. Running them side by side puts the
// machine's noise (a shared 2-core machine) on all of them alike; the
// first -run is the reference the others are compared with second by
// second.
//
// The workload has -clients distinct client addresses (198.18.0.0/15): a
// hot set of -hot clients sends 1 - -tail of the requests, and every other
// request comes from a client never seen before (the tail), until all
// clients have been used. A hot client is cached after its first request;
// a tail client always misses. With a cache smaller than -clients the cache
// fills during the run and then evicts on every tail request, so that a
// run with a small cache and one with the default size differ only in
// that. Each zone lists 5 % of the clients; dnsbl_score rejects at 2.
//
// -kill-zone-at makes the tenth zone stop answering at that time (its
// packets are dropped between unbound and NSD), and the report gives the
// longest stretch during which decisions per second stayed under 80 % of
// the 5 s before.
//
//	dnsblbench -run new=./relayguard -run new-25k=./relayguard:25000   # see bench/dnsbl/run.sh
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/relayguard/relayguard/internal/dnsutil/dnstest"
)

const zones = 10

// spec is one relayguard to drive: every spec runs at the same time,
// against the same resolver, each with its own load, so that machine
// noise falls on all of them alike.
type spec struct {
	label, bin string
	cache      int  // dnsbl.cache_size in clients; 0: the default
	answers    bool // write cache_size in answers (cache × zones)
}

func main() {
	var (
		runs     []spec
		clients  = flag.Int("clients", 100000, "distinct client addresses over each run")
		hot      = flag.Int("hot", 10000, "clients that come back")
		tail     = flag.Float64("tail", 0.1, "share of requests from clients never seen before")
		conns    = flag.Int("conns", 32, "concurrent policy connections per relayguard")
		maxDur   = flag.Duration("max", 10*time.Minute, "stop after this long even if clients remain")
		killAt   = flag.Duration("kill-zone-at", 0, "make the tenth zone stop answering after this long (0: never)")
		killFor  = flag.Duration("kill-for", 20*time.Second, "with -kill-zone-at: run this long after the kill")
		timeoutS = flag.String("timeout", "5s", "dnsbl.timeout")
	)
	flag.Func("run", "`label=BIN[:CACHE[:answers]]`: a relayguard to drive, with dnsbl.cache_size CACHE clients (0 or none: the default; 'answers': written as CACHE × 10 answers, as relayguard counted before issue 13); repeat to run several at once, the first being the reference", func(v string) error {
		label, rest, ok := strings.Cut(v, "=")
		if !ok {
			return fmt.Errorf("want label=BIN[:CACHE[:answers]]")
		}
		parts := strings.Split(rest, ":")
		sp := spec{label: label, bin: parts[0]}
		if len(parts) > 1 {
			n, err := strconv.Atoi(parts[1])
			if err != nil {
				return fmt.Errorf("cache %q: %w", parts[1], err)
			}
			sp.cache = n
		}
		sp.answers = len(parts) > 2 && parts[2] == "answers"
		runs = append(runs, sp)
		return nil
	})
	flag.Parse()
	if len(runs) == 0 {
		log.Fatal("no -run given")
	}
	tb := &benchTB{}
	defer tb.cleanup()
	go func() { // clean up on ^C too
		<-interrupted()
		tb.cleanup()
		os.Exit(1)
	}()

	// The lists' data: zone k lists client i when (7i + 13k) % 20 == 0.
	var recs []string
	for k := range zones {
		recs = append(recs, fmt.Sprintf("2.0.0.127.z%d IN A 127.0.0.2", k),
			fmt.Sprintf("2.0.0.0.0.0.f.7.f.f.f.f.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.z%d IN A 127.0.0.2", k))
		for i := range *clients {
			if (7*i+13*k)%20 == 0 {
				a := client(i)
				recs = append(recs, fmt.Sprintf("%d.%d.%d.%d.z%d IN A 127.0.0.2", a[3], a[2], a[1], a[0], k))
			}
		}
	}
	nsd := dnstest.StartNSD(tb, map[string][]string{"rgtest": recs})
	last := dnstest.StartProxy(tb, nsd.Addr)
	ub := dnstest.StartUnbound(tb, dnstest.Stub{Zone: "rgtest", Addrs: []string{nsd.Addr}},
		dnstest.Stub{Zone: fmt.Sprintf("z%d.rgtest", zones-1), Addrs: []string{last.Addr}})

	var rs []*runner
	for _, sp := range runs {
		rs = append(rs, startRelayguard(tb, sp, ub.Addr, *timeoutS))
	}
	fmt.Printf("# %s %d clients (%d hot, %.0f%% of requests from new ones), %d zones behind unbound, %d connections each, timeout %s\n",
		time.Now().UTC().Format(time.RFC3339), *clients, *hot, 100**tail, zones, *conns, *timeoutS)
	start := time.Now()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, r := range rs {
		fmt.Printf("# %s: %s, cache %s\n", r.label, r.bin, orDefault(r.cache))
		r.l = &load{addr: r.addr, hot: *hot, clients: *clients, tail: *tail, next: int64(*hot)}
		for range *conns {
			wg.Go(func() { r.l.run(stop) })
		}
	}
	if *killAt > 0 {
		go func() {
			time.Sleep(*killAt)
			last.DropAll(true)
			fmt.Printf("# %.2fs: z%d.rgtest stops answering\n", time.Since(start).Seconds(), zones-1)
		}()
	}
	end := start.Add(*maxDur)
	if *killAt > 0 {
		end = start.Add(*killAt + *killFor)
	}
	tick := time.NewTicker(250 * time.Millisecond)
	for now := range tick.C {
		running := 0
		for _, r := range rs {
			if r.finished {
				continue
			}
			running++
			r.sample(now.Sub(start), *clients)
			r.finished = now.After(end) || r.l.exhausted.Load()
		}
		if running == 0 {
			break
		}
	}
	close(stop)
	wg.Wait()
	for i, r := range rs {
		r.report(*killAt)
		if i > 0 && *killAt == 0 {
			r.against(rs[0])
		}
	}
}

// runner is one relayguard under load.
type runner struct {
	spec
	addr     string
	mon      *monitor
	l        *load
	prev     int64
	samples  []sample
	finished bool
}

func startRelayguard(tb *benchTB, sp spec, resolver, timeout string) *runner {
	dir := tb.TempDir()
	port, mport := freePort(), freePort()
	var zs []string
	for k := range zones {
		zs = append(zs, fmt.Sprintf("%q", fmt.Sprintf("z%d.rgtest*1", k)))
	}
	cache := ""
	if sp.cache > 0 {
		n := sp.cache
		if sp.answers {
			n *= zones
		}
		cache = fmt.Sprintf("cache_size = %d\n", n)
	}
	conf := fmt.Sprintf(`local_domains = ["example.test"]

[log]
level = "warn"

[policy]
listen = "127.0.0.1:%d"
recipient_restrictions = ["reject_unauth_destination", "dnsbl_score"]

[dnsbl]
zones = [%s]
reject_threshold = 2
resolvers = [%q]
timeout = %q
%s`, port, strings.Join(zs, ", "), resolver, timeout, cache)
	cf := filepath.Join(dir, "relayguard.toml")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		tb.Fatal(err)
	}
	os.MkdirAll(filepath.Join(dir, "data"), 0o700)
	cmd := exec.Command(sp.bin, "--config", cf, "--data-dir", filepath.Join(dir, "data"), "policy", "--metrics", fmt.Sprintf("127.0.0.1:%d", mport))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		if i > 600 {
			tb.Fatalf("%s does not listen on %s", sp.bin, addr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return &runner{spec: sp, addr: addr, mon: &monitor{metrics: fmt.Sprintf("http://127.0.0.1:%d/metrics", mport), pid: cmd.Process.Pid}}
}

// sample records the decisions of the last 250 ms and, each second,
// prints the last second's rate with the cache's size and the memory.
func (r *runner) sample(t time.Duration, clients int) {
	n := r.l.done.Load()
	s := sample{t: t, n: n - r.prev, distinct: min(atomic.LoadInt64(&r.l.next), int64(clients))}
	r.prev = n
	if len(r.samples)%4 == 3 {
		s.entries, s.evictions, s.rss = r.mon.read()
		k := s.n
		for _, x := range r.samples[len(r.samples)-3:] {
			k += x.n
		}
		fmt.Printf("%-12s t=%5.1fs rate=%6d/s entries=%d evictions=%d rss=%.0fMB defer=%d failures=%d\n", r.label,
			s.t.Seconds(), k, s.entries, s.evictions, float64(s.rss)/(1<<20), r.l.deferred.Load(), r.l.fails.Load())
	}
	r.samples = append(r.samples, s)
}

// client is the i-th client address, from 198.18.0.0/15 (RFC 2544).
func client(i int) [4]byte {
	return [4]byte{198, 18 + byte(i>>16), byte(i >> 8), byte(i)}
}

func orDefault(n int) string {
	if n == 0 {
		return "default"
	}
	return strconv.Itoa(n) + " clients"
}

type sample struct {
	t         time.Duration
	n         int64 // decisions in the 250 ms before t
	entries   int64
	evictions int64
	rss       int64
	distinct  int64 // clients seen so far
}

// rate is the mean decisions per second of the samples in (from, to].
func (r *runner) rate(from, to time.Duration) float64 {
	var n int64
	k := 0
	for _, s := range r.samples {
		if s.t > from && s.t <= to {
			n += s.n
			k++
		}
	}
	if k == 0 {
		return 0
	}
	return float64(n) / (float64(k) / 4)
}

func (r *runner) end() time.Duration { return r.samples[len(r.samples)-1].t }

// firstEviction is when the cache first dropped an entry (-1: never).
// relayguard before issue 13 has no eviction metric: its cache was full
// once it held cache_size answers, that is once as many clients were seen.
func (r *runner) firstEviction() time.Duration {
	for _, s := range r.samples {
		if s.evictions > 0 || (r.answers && r.cache > 0 && s.distinct >= int64(r.cache)) {
			return s.t
		}
	}
	return -1
}

// windows are the phases compared: empty (the first 5 s), warm (from 30 s,
// when the hot clients are cached, to the first eviction or the end),
// full (the 15 s from the first eviction) and full for a while (the last
// 30 s, if they start 30 s after the first eviction or later).
type window struct {
	name     string
	from, to time.Duration
}

func (r *runner) windows() []window {
	endT, fe := r.end(), r.firstEviction()
	warmTo := endT
	if fe > 0 {
		warmTo = fe
	}
	ws := []window{{"empty", 0, 5 * time.Second}, {"warm", min(30*time.Second, warmTo/2), warmTo}}
	if fe > 0 {
		ws = append(ws, window{"full", fe, fe + 15*time.Second})
		if endT-30*time.Second >= fe+30*time.Second {
			ws = append(ws, window{"full-for-a-while", endT - 30*time.Second, endT})
		}
	}
	return ws
}

// report prints the run's phases, or with a killed zone the longest
// stretch under 80 % of the 5 s before the kill.
func (r *runner) report(killAt time.Duration) {
	if killAt > 0 {
		before := r.rate(killAt-5*time.Second, killAt)
		longest, cur := time.Duration(0), time.Duration(0)
		for _, s := range r.samples {
			if s.t <= killAt {
				continue
			}
			if float64(s.n)*4 < 0.8*before {
				cur += 250 * time.Millisecond
				longest = max(longest, cur)
			} else {
				cur = 0
			}
		}
		fmt.Printf("%-12s RESULT before=%.0f/s under80%%=%.2fs (longest stretch after the kill) after=%.0f/s (from 10 s after the kill)\n",
			r.label, before, longest.Seconds(), r.rate(killAt+10*time.Second, r.end()))
		return
	}
	line := fmt.Sprintf("%-12s RESULT", r.label)
	warm := 0.0
	for _, w := range r.windows() {
		v := r.rate(w.from, w.to)
		line += fmt.Sprintf(" %s=%.0f/s", w.name, v)
		switch w.name {
		case "warm":
			warm = v
		case "full", "full-for-a-while":
			line += fmt.Sprintf(" (%.0f%% of warm)", 100*v/warm)
		}
		line += fmt.Sprintf(" [%.0f-%.0fs]", w.from.Seconds(), w.to.Seconds())
	}
	fmt.Println(line)
}

// against compares the run's full phases with the reference run over the
// same seconds: the two ran at the same time on the same machine.
func (r *runner) against(ref *runner) {
	line := fmt.Sprintf("%-12s VS %s", r.label, ref.label)
	any := false
	for _, w := range r.windows() {
		if (w.name != "full" && w.name != "full-for-a-while") || w.to > ref.end() {
			continue
		}
		v, rv := r.rate(w.from, w.to), ref.rate(w.from, w.to)
		line += fmt.Sprintf(" %s=%.0f/s vs %.0f/s (%.0f%%) [%.0f-%.0fs]", w.name, v, rv, 100*v/rv, w.from.Seconds(), w.to.Seconds())
		any = true
	}
	if any {
		fmt.Println(line)
	}
}

// load sends policy requests.
type load struct {
	addr                  string
	hot, clients          int
	tail                  float64
	next                  int64 // next tail client
	done, deferred, fails atomic.Int64
	exhausted             atomic.Bool
}

func (l *load) pick() (int, bool) {
	if rand.Float64() >= l.tail {
		return rand.IntN(l.hot), true
	}
	i := atomic.AddInt64(&l.next, 1) - 1
	if i >= int64(l.clients) {
		l.exhausted.Store(true)
		return 0, false
	}
	return int(i), true
}

func (l *load) run(stop <-chan struct{}) {
	c, err := net.Dial("tcp", l.addr)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	var b strings.Builder
	for n := 0; ; n++ {
		select {
		case <-stop:
			return
		default:
		}
		i, ok := l.pick()
		if !ok {
			return
		}
		a := client(i)
		b.Reset()
		fmt.Fprintf(&b, "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"+
			"client_address=%d.%d.%d.%d\nclient_name=unknown\nreverse_client_name=unknown\nhelo_name=\n"+
			"sender=s%d@sender.test\nrecipient=user@example.test\ninstance=%x\n\n", a[0], a[1], a[2], a[3], n, n)
		if _, err := io.WriteString(c, b.String()); err != nil {
			l.fails.Add(1)
			return
		}
		line, err := r.ReadString('\n')
		if err == nil {
			_, err = r.ReadString('\n')
		}
		if err != nil {
			l.fails.Add(1)
			return
		}
		if act := strings.TrimPrefix(strings.TrimSpace(line), "action="); strings.HasPrefix(act, "DEFER") || strings.HasPrefix(act, "4") {
			l.deferred.Add(1)
		}
		l.done.Add(1)
	}
}

// monitor reads the server's metrics and resident memory.
type monitor struct {
	metrics string
	pid     int
}

var metricLine = regexp.MustCompile(`^(relayguard_dnsbl_cache_entries|relayguard_dnsbl_cache_evictions_total) (\S+)`)

func (m *monitor) read() (entries, evictions, rss int64) {
	if resp, err := http.Get(m.metrics); err == nil {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if mm := metricLine.FindStringSubmatch(sc.Text()); mm != nil {
				v, _ := strconv.ParseFloat(mm[2], 64)
				if mm[1] == "relayguard_dnsbl_cache_entries" {
					entries = int64(v)
				} else {
					evictions = int64(v)
				}
			}
		}
		resp.Body.Close()
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", m.pid)); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				rss = kb << 10
			}
		}
	}
	return
}

func interrupted() <-chan os.Signal {
	c := make(chan os.Signal, 1)
	signal.Notify(c, os.Interrupt, syscall.SIGTERM)
	return c
}

func freePort() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// benchTB gives the real DNS servers of dnstest what they need outside a
// test: temporary directories and cleanups, run on exit.
type benchTB struct {
	mu  sync.Mutex
	fns []func()
}

func (b *benchTB) Helper()           {}
func (b *benchTB) Fatal(args ...any) { b.cleanup(); log.Fatal(args...) }
func (b *benchTB) Fatalf(f string, args ...any) {
	b.cleanup()
	log.Fatalf(f, args...)
}
func (b *benchTB) Skipf(f string, args ...any) { b.Fatalf(f, args...) }
func (b *benchTB) Cleanup(f func()) {
	b.mu.Lock()
	b.fns = append(b.fns, f)
	b.mu.Unlock()
}

func (b *benchTB) TempDir() string {
	d, err := os.MkdirTemp("", "dnsblbench-")
	if err != nil {
		log.Fatal(err)
	}
	os.Chmod(d, 0o755)
	b.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func (b *benchTB) cleanup() {
	b.mu.Lock()
	fns := b.fns
	b.fns = nil
	b.mu.Unlock()
	slices.Reverse(fns)
	for _, f := range fns {
		f()
	}
}
