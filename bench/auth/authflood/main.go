// Command authflood makes N password attempts at once against an SMTP
// submissions listener (implicit TLS, AUTH PLAIN) or an IMAP listener
// (LOGIN, plaintext on loopback), each from its own connection: all
// connections are opened and greeted first, then every attempt is sent at
// the same moment. It prints how the attempts were answered and, with
// -pids, the peak memory of the server processes sampled every 20 ms while
// it runs: the sum of their proportional set sizes (Pss, so that pages
// shared between the processes of a multi-process server count once), and
// for a single process its peak resident set (VmHWM) as well.
//
// Source addresses come from 127.0.0.0/8: -shape oneaddr sends every
// attempt from 127.0.1.1 (one guesser: its per-address cap bites), -shape
// onenet from the addresses of 127.0.1.0/24 (a guessing network of fresh
// addresses: each may try once, then the /24's cap bites on it), -shape
// spread gives each client its own /24 (no limit bites: only the bound on
// concurrent password hashing holds memory down).
package main

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"flag"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:5465", "server address")
	proto := flag.String("proto", "smtps", "smtps (implicit TLS, AUTH PLAIN) or imap (LOGIN)")
	n := flag.Int("n", 100, "concurrent attempts")
	shape := flag.String("shape", "spread", "oneaddr (one address), onenet (one /24) or spread (one /24 per client)")
	user := flag.String("user", "alice", "user name tried")
	pass := flag.String("pass", "wrong password", "password tried")
	pids := flag.String("pids", "", "comma-separated server pids to sample (children included)")
	flag.Parse()
	var rl syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
	rl.Cur = rl.Max
	syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)

	var roots []int
	for _, p := range strings.Split(*pids, ",") {
		if v, err := strconv.Atoi(strings.TrimSpace(p)); err == nil {
			roots = append(roots, v)
		}
	}
	stop := make(chan struct{})
	peak := make(chan int64)
	go sample(roots, stop, peak)

	type conn struct {
		c net.Conn
		r *bufio.Reader
	}
	conns := make([]*conn, *n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	errs := map[string]int{}
	gate := make(chan struct{}, 100) // connect 100 at a time; the attempts are sent together
	for i := range *n {
		wg.Add(1)
		gate <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-gate }()
			src := net.IPv4(127, 0, 1, byte(1+i%254))
			switch *shape {
			case "oneaddr":
				src = net.IPv4(127, 0, 1, 1)
			case "spread":
				src = net.IPv4(127, byte(1+i/250), byte(i%250), 1)
			}
			d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: 30 * time.Second}
			var c net.Conn
			var err error
			if *proto == "smtps" {
				c, err = tls.DialWithDialer(d, "tcp", *addr, &tls.Config{InsecureSkipVerify: true})
			} else {
				c, err = d.Dial("tcp", *addr)
			}
			if err != nil {
				mu.Lock()
				errs["dial: "+err.Error()]++
				mu.Unlock()
				return
			}
			c.SetDeadline(time.Now().Add(10 * time.Minute))
			cc := &conn{c: c, r: bufio.NewReader(c)}
			if l := readReply(cc.r); !strings.HasPrefix(l, "220") && !strings.HasPrefix(l, "* OK") {
				mu.Lock()
				errs["banner: "+l]++
				mu.Unlock()
				c.Close()
				return
			}
			if *proto == "smtps" {
				fmt.Fprintf(c, "EHLO flood.test\r\n")
				readReply(cc.r)
			}
			conns[i] = cc
		}()
	}
	wg.Wait()
	start := time.Now()
	replies := map[string]int{}
	for _, cc := range conns {
		if cc == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cc.c.Close()
			if *proto == "smtps" {
				fmt.Fprintf(cc.c, "AUTH PLAIN %s\r\n", base64.StdEncoding.EncodeToString([]byte("\x00"+*user+"\x00"+*pass)))
			} else {
				fmt.Fprintf(cc.c, "a LOGIN %s \"%s\"\r\n", *user, *pass)
			}
			l := readReply(cc.r)
			for *proto == "imap" && strings.HasPrefix(l, "* ") {
				l = readReply(cc.r) // untagged ("* OK Waiting for authentication process")
			}
			code := l
			if *proto == "smtps" && len(l) >= 3 {
				code = l[:3]
			} else if f := strings.Fields(l); len(f) >= 2 {
				code = f[1]
			}
			mu.Lock()
			replies[code]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	time.Sleep(200 * time.Millisecond)
	close(stop)
	p := <-peak
	var keys []string
	for k := range replies {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s×%d", k, replies[k]))
	}
	fmt.Printf("attempts=%d answered in %.1fs: %s", *n, elapsed.Seconds(), strings.Join(parts, " "))
	for e, k := range errs {
		fmt.Printf(" [%d %s]", k, e)
	}
	fmt.Printf(" peak_pss_sum=%.0fMB", float64(p)/1e6)
	if len(roots) == 1 {
		fmt.Printf(" vmhwm=%.0fMB", float64(status(roots[0], "VmHWM:"))/1e6)
	}
	fmt.Println()
}

func readReply(r *bufio.Reader) string {
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			return "EOF"
		}
		if len(l) < 4 || l[3] != '-' {
			return strings.TrimRight(l, "\r\n")
		}
	}
}

// sample sums the resident memory of roots and their descendants every
// 20 ms and sends the peak when stop closes.
func sample(roots []int, stop chan struct{}, out chan int64) {
	var peak int64
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		var sum int64
		for _, p := range tree(roots) {
			sum += pss(p)
		}
		peak = max(peak, sum)
		select {
		case <-stop:
			out <- peak
			return
		case <-t.C:
		}
	}
}

// tree is roots and every process whose ancestry reaches one of them.
func tree(roots []int) []int {
	if len(roots) == 0 {
		return nil
	}
	parent := map[int]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i >= 0 {
			if f := strings.Fields(s[i+1:]); len(f) > 1 {
				parent[pid], _ = strconv.Atoi(f[1])
			}
		}
	}
	in := map[int]bool{}
	for _, r := range roots {
		in[r] = true
	}
	var out []int
	for pid := range parent {
		for p, hops := pid, 0; p > 1 && hops < 64; p, hops = parent[p], hops+1 {
			if in[p] {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}

// status reads a "Vm...:" line of /proc/PID/status, in bytes.
func status(pid int, key string) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, key); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// pss is the proportional set size of pid in bytes (smaps_rollup).
func pss(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
	if err != nil {
		return status(pid, "VmRSS:")
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Pss:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
