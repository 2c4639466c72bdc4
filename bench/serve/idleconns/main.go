// Command idleconns opens N SMTP connections to an address, waits for the
// banner on each, holds them idle, and prints the server's resident memory
// (read from /proc/PID/status) once all are open.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:2525", "server address")
	n := flag.Int("n", 10000, "connections")
	pid := flag.Int("pid", 0, "server pid (for VmRSS)")
	hold := flag.Duration("hold", 2*time.Second, "how long to hold the connections open once all are up")
	flag.Parse()
	var rl syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
	rl.Cur = rl.Max
	syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)

	before := rss(*pid)
	conns := make([]net.Conn, 0, *n)
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 200)
	failed := 0
	for i := 0; i < *n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			// Spread over 127.0.0.0/8 source addresses, as many clients would.
			local := &net.TCPAddr{IP: net.IPv4(127, 0, byte(1+i/250%250), byte(1+i%250))}
			d := net.Dialer{LocalAddr: local, Timeout: 10 * time.Second}
			c, err := d.Dial("tcp", *addr)
			if err == nil {
				c.SetReadDeadline(time.Now().Add(30 * time.Second))
				var l string
				l, err = bufio.NewReader(c).ReadString('\n')
				if err == nil && !strings.HasPrefix(l, "220") {
					err = fmt.Errorf("banner %q", l)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++
				return
			}
			conns = append(conns, c)
		}(i)
	}
	wg.Wait()
	time.Sleep(*hold)
	after := rss(*pid)
	fmt.Printf("connections=%d failed=%d rss_before_kB=%d rss_with_idle_kB=%d per_conn_B=%d\n",
		len(conns), failed, before, after, int64(after-before)*1024/int64(max(1, len(conns))))
	for _, c := range conns {
		c.Close()
	}
	if failed > 0 {
		os.Exit(1)
	}
}

func rss(pid int) int {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			var kb int
			fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(l, "VmRSS:")), "%d", &kb)
			return kb
		}
	}
	return 0
}
