// Command console measures the web console's JSON API at size: a running
// `relayguard serve` with -bans bans in force and -queue queued messages,
// each endpoint the page uses asked -n times in a row; and, in the same
// run, the command-line tools an operator has without the console
// (`relayguard ban list`, `relayguard queue list`) on the same data.
//
//	go build -o /tmp/relayguard ./cmd/relayguard
//	go run ./bench/console -bin /tmp/relayguard -bans 100000 -queue 50000
//
// bench/console/run.sh does both. The data directory is made under -dir
// (default /dev/shm when it exists): this measures the console, not the
// disk's fsync.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/relayguard/relayguard/internal/ban"
	"github.com/relayguard/relayguard/internal/guard"
	"github.com/relayguard/relayguard/internal/queue"
	"github.com/relayguard/relayguard/internal/store"
)

var (
	bin    = flag.String("bin", "", "the relayguard binary (required)")
	nBans  = flag.Int("bans", 100000, "bans in force")
	nQueue = flag.Int("queue", 50000, "queued messages")
	reqs   = flag.Int("n", 50, "requests per endpoint")
	root   = flag.String("dir", "", "where to make the data directory (default /dev/shm, else the temporary directory)")
	seed   = flag.Uint64("seed", 1, "random seed of the data's shape")
)

func main() {
	flag.Parse()
	if *bin == "" {
		log.Fatal("-bin: the relayguard binary is required")
	}
	if *root == "" {
		*root = os.TempDir()
		if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
			*root = "/dev/shm"
		}
	}
	dir, err := os.MkdirTemp(*root, "rgconsole")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	rng := rand.New(rand.NewPCG(*seed, 2))
	data := filepath.Join(dir, "data")
	conf := filepath.Join(dir, "relayguard.toml")
	os.WriteFile(conf, []byte(`hostname = "bench.test"
local_domains = ["bench.test"]
own_addresses = ["192.0.2.1"]
[admin]
listen = "127.0.0.1:0"
[[listener]]
name = "submission"
address = "127.0.0.1:0"
mode = "submission"
[delivery]
smarthost = "127.0.0.1:9"
`), 0o644)
	ctx := context.Background()
	os.MkdirAll(data, 0o750)

	t0 := time.Now()
	probe, banned := fillBans(ctx, data, rng)
	fmt.Printf("data: %d bans stored in %.1fs", *nBans, time.Since(t0).Seconds())
	t0 = time.Now()
	ids := fillQueue(filepath.Join(data, "spool"), rng)
	fmt.Printf(", %d messages spooled in %.1fs (under %s)\n", *nQueue, time.Since(t0).Seconds(), *root)

	run := func(stdin string, args ...string) string {
		cmd := exec.Command(*bin, append(args, "--config", conf, "--data-dir", data)...)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.Output()
		if err != nil {
			log.Fatalf("relayguard %v: %v", args, err)
		}
		return strings.TrimSpace(string(out))
	}
	run("bench admin password\n", "admin", "add", "bench", "--password-stdin")
	token := run("", "admin", "token", "bench")

	serve := exec.Command(*bin, "serve", "--config", conf, "--data-dir", data)
	stderr, _ := serve.StderrPipe()
	if err := serve.Start(); err != nil {
		log.Fatal(err)
	}
	defer func() { serve.Process.Kill(); serve.Wait() }()
	t0 = time.Now()
	base := consoleURL(stderr)
	c := &client{base: base, token: token}
	for {
		var p struct{ Total int }
		if c.getJSON("/api/bans?limit=1", &p) == nil && p.Total == *nBans {
			break
		}
		if time.Since(t0) > 5*time.Minute {
			log.Fatalf("serve did not load the %d bans", *nBans)
		}
		time.Sleep(200 * time.Millisecond)
	}
	fmt.Printf("serve: up with every ban loaded after %.1fs\n", time.Since(t0).Seconds())
	time.Sleep(5 * time.Second) // the console's first reading of the queue
	cpu0, t1 := cpuTime(serve.Process.Pid), time.Now()
	time.Sleep(10 * time.Second)
	fmt.Printf("serve idle (no request) with this state: %.0f %% of one core\n", 100*(cpuTime(serve.Process.Pid)-cpu0).Seconds()/time.Since(t1).Seconds())
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Printf("machine load average: %s\n\n", strings.Join(strings.Fields(string(load))[:3], " "))

	fmt.Println("| request | p50 | p90 | p99 | max | body |")
	fmt.Println("|---|---|---|---|---|---|")
	last := strconv.Itoa(*nBans - 100)
	held := ids[len(ids)/2]
	for _, e := range []struct{ name, path string }{
		{"overview", "/api/overview"},
		{"bans, first page (100)", "/api/bans?limit=100"},
		{"bans, last page", "/api/bans?limit=100&offset=" + last},
		{"bans, search by address", "/api/bans?q=" + probe.String()},
		{"bans, search by text", "/api/bans?q=manual"},
		{"queue, first page (100)", "/api/queue?limit=100"},
		{"queue, held only", "/api/queue?state=held&limit=100"},
		{"queue, search by domain", "/api/queue?q=d17.example&limit=100"},
		{"queue, one message with headers", "/api/queue/" + held},
		{"accounts", "/api/accounts"},
	} {
		c.measure(e.name, *reqs, func() (int, error) { return c.get(e.path) })
	}
	// Actions: each unban makes the next list copy the guard's bans again.
	i := 0
	c.measure("unban (POST), 100,000 bans", min(*reqs, 20), func() (int, error) {
		p := banned[i]
		i++
		return c.post("/api/bans/remove", fmt.Sprintf(`{"prefix":%q,"reason":"bench"}`, p))
	})
	c.measure("bans first page right after an action", min(*reqs, 20), func() (int, error) {
		p := banned[i]
		i++
		if _, err := c.post("/api/bans/remove", fmt.Sprintf(`{"prefix":%q,"reason":"bench"}`, p)); err != nil {
			return 0, err
		}
		t := time.Now()
		n, err := c.get("/api/bans?limit=100")
		c.lastDur = time.Since(t)
		return n, err
	})
	j := 0
	c.measure("hold (POST) then queue page (index refreshed)", min(*reqs, 20), func() (int, error) {
		id := ids[j]
		j++
		if _, err := c.post("/api/queue/"+id+"/hold", `{"reason":"bench"}`); err != nil {
			return 0, err
		}
		t := time.Now()
		n, err := c.get("/api/queue?limit=100")
		c.lastDur = time.Since(t)
		return n, err
	})
	c.measure("queue page, index older than 2 s (rescan, nothing changed)", 5, func() (int, error) {
		time.Sleep(2100 * time.Millisecond)
		t := time.Now()
		n, err := c.get("/api/queue?limit=100")
		c.lastDur = time.Since(t)
		return n, err
	})
	rss, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", serve.Process.Pid))
	fmt.Printf("\nserve resident memory: %s\n\n", regexp.MustCompile(`VmRSS:\s+(\d+ kB)`).FindStringSubmatch(string(rss))[1])

	fmt.Println("| the same without the console (same data, same run) | wall |")
	fmt.Println("|---|---|")
	for _, args := range [][]string{{"ban", "list"}, {"queue", "list"}} {
		var ds []time.Duration
		for range 3 {
			t := time.Now()
			out := run("", args...)
			ds = append(ds, time.Since(t))
			_ = out
		}
		slices.Sort(ds)
		fmt.Printf("| relayguard %s (median of 3) | %s |\n", strings.Join(args, " "), ms(ds[1]))
	}
}

// fillBans stores the bans: 70 % single IPv4 addresses, 20 % IPv4 /24s,
// 10 % IPv6 /64s; guard and manual; 5 % permanent. It returns an address
// inside one of the /24s and prefixes to unban.
func fillBans(ctx context.Context, data string, rng *rand.Rand) (netip.Addr, []string) {
	st, err := store.Open(ctx, data, "", slog.New(slog.DiscardHandler))
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()
	bs, err := guard.NewSQLiteStore(ctx, st.DB)
	if err != nil {
		log.Fatal(err)
	}
	seen := map[netip.Prefix]bool{}
	var probe netip.Addr
	var some []string
	now := time.Now()
	for len(seen) < *nBans {
		var p netip.Prefix
		switch r := rng.IntN(10); {
		case r < 7:
			p = netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(11 + rng.IntN(200)), byte(rng.IntN(256)), byte(rng.IntN(256)), byte(1 + rng.IntN(254))}), 32)
		case r < 9:
			p = netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(11 + rng.IntN(200)), byte(rng.IntN(256)), byte(rng.IntN(256)), 0}), 24)
		default:
			var a [16]byte
			a[0], a[1] = 0x20, 0x01
			for k := 2; k < 8; k++ {
				a[k] = byte(rng.IntN(256))
			}
			p = netip.PrefixFrom(netip.AddrFrom16(a), 64)
		}
		if seen[p] {
			continue
		}
		seen[p] = true
		b := ban.Ban{Prefix: p, Created: now.Add(-time.Duration(rng.IntN(86400)) * time.Second), Count: 1 + rng.IntN(3),
			Source: "guard", Reason: fmt.Sprintf("%d failures in 10m0s (last: auth_failure PLAIN from %s via smtpd)", 5+rng.IntN(20), p.Addr())}
		if rng.IntN(10) == 0 {
			b.Source, b.Reason = "manual", "manual ban: abuse report"
		}
		if rng.IntN(20) > 0 {
			b.Until = now.Add(time.Hour + time.Duration(rng.IntN(7*86400))*time.Second)
		}
		if err := bs.PutBan(ctx, b); err != nil {
			log.Fatal(err)
		}
		if p.Bits() == 24 && !probe.IsValid() {
			probe = netip.AddrFrom4([4]byte{p.Addr().As4()[0], p.Addr().As4()[1], p.Addr().As4()[2], 77})
		}
		if len(some) < 100 {
			some = append(some, p.String())
		}
	}
	return probe, some
}

// fillQueue spools the messages: one to three recipients at 2,000
// domains (a few large, most small), 10 % held, 30 % deferred with an
// error; none due within the hour (the scheduler leaves them alone).
func fillQueue(dir string, rng *rand.Rand) []string {
	sp, err := queue.OpenSpool(dir, 5*time.Millisecond, slog.New(slog.DiscardHandler))
	if err != nil {
		log.Fatal(err)
	}
	defer sp.Close()
	type job struct {
		env *queue.Envelope
	}
	jobs := make(chan job)
	var mu sync.Mutex
	var ids []string
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for j := range jobs {
				msg := "From: <" + j.env.From + ">\r\nTo: <" + j.env.Recipients[0].Addr + ">\r\nSubject: bench " +
					j.env.Recipients[0].Addr + "\r\nMessage-ID: <" + strconv.Itoa(rand.Int()) + "@bench.test>\r\n\r\n" + strings.Repeat("x", 2000) + "\r\n"
				id, err := sp.Put(context.Background(), j.env, strings.NewReader(msg))
				if err != nil {
					log.Fatal(err)
				}
				mu.Lock()
				ids = append(ids, id)
				mu.Unlock()
			}
		})
	}
	now := time.Now()
	for i := range *nQueue {
		env := &queue.Envelope{Received: now.Add(-time.Duration(rng.IntN(5*86400)) * time.Second), From: fmt.Sprintf("user%d@bench.test", rng.IntN(500)),
			AuthUser: fmt.Sprintf("user%d@bench.test", rng.IntN(500)), ClientIP: "192.0.2.10", Mode: "submission", Size: 2100}
		for k := range 1 + rng.IntN(3) {
			d := rng.IntN(2000)
			if rng.IntN(2) == 0 {
				d = rng.IntN(20)
			}
			r := queue.Recipient{Addr: fmt.Sprintf("r%d.%d@d%d.example", i, k, d), Status: queue.StatusQueued, NextAttempt: now.Add(time.Hour)}
			if rng.IntN(10) < 3 {
				r.Attempts, r.LastError = 1+rng.IntN(5), fmt.Sprintf("451 4.7.1 d%d.example: try again later", d)
			}
			env.Recipients = append(env.Recipients, r)
		}
		if rng.IntN(10) == 0 {
			env.Held, env.HoldReason = true, "rate limit user_messages_per_hour"
			for k := range env.Recipients {
				env.Recipients[k].Status = queue.StatusHeld
			}
		}
		jobs <- job{env}
	}
	close(jobs)
	wg.Wait()
	return ids
}

// cpuTime is the user and system time a process has used
// (/proc/PID/stat fields 14 and 15, in clock ticks of 1/100 s).
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	u, _ := strconv.Atoi(f[11])
	s, _ := strconv.Atoi(f[12])
	return time.Duration(u+s) * 10 * time.Millisecond
}

func consoleURL(r io.Reader) string {
	re := regexp.MustCompile(`console on (http://127\.0\.0\.1:\d+)/`)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			go io.Copy(io.Discard, r)
			return m[1]
		}
	}
	log.Fatal("serve ended before it named the console's address")
	return ""
}

type client struct {
	base, token string
	hc          http.Client
	lastDur     time.Duration // set by a measured func that times only part of itself
}

func (c *client) do(req *http.Request) (int, error) {
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s %s: %d %s", req.Method, req.URL.Path, resp.StatusCode, b)
	}
	return len(b), err
}

func (c *client) get(path string) (int, error) {
	req, _ := http.NewRequest("GET", c.base+path, nil)
	return c.do(req)
}

func (c *client) post(path, body string) (int, error) {
	req, _ := http.NewRequest("POST", c.base+path, strings.NewReader(body))
	return c.do(req)
}

func (c *client) getJSON(path string, v any) error {
	req, _ := http.NewRequest("GET", c.base+path, nil)
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

// measure runs fn n times (after one unmeasured run) and prints the
// percentiles of its duration (or of the part it timed itself).
func (c *client) measure(name string, n int, fn func() (int, error)) {
	var ds []time.Duration
	size := 0
	for k := range n + 1 {
		c.lastDur = 0
		t := time.Now()
		sz, err := fn()
		d := time.Since(t)
		if err != nil {
			log.Fatalf("%s: %v", name, err)
		}
		if c.lastDur > 0 {
			d = c.lastDur
		}
		if k > 0 {
			ds = append(ds, d)
			size = sz
		}
	}
	slices.Sort(ds)
	q := func(p float64) time.Duration { return ds[min(len(ds)-1, int(p*float64(len(ds))))] }
	fmt.Printf("| %s | %s | %s | %s | %s | %s |\n", name, ms(q(.5)), ms(q(.9)), ms(q(.99)), ms(ds[len(ds)-1]), kb(size))
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

func kb(n int) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	return fmt.Sprintf("%.1f KiB", float64(n)/1024)
}
