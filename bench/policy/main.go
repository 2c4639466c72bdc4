// Command policybench measures a Postfix policy delegation server. It also
// serves the benchmark's DNS lists (-dns) so that relayguard and postfwd
// answer the same questions from a warm cache.
//
// Closed loop (-conns N): N connections, each sending one request at a
// time as Postfix's smtpd does, as fast as the server answers: the
// saturated throughput. Latency there is mostly queueing (Little's law).
//
// Open loop (-rate R): requests are offered at a fixed rate R, on a pool
// of -conns connections (Postfix's smtpd processes), whatever the server
// does; each request's latency is measured from the time it was scheduled
// to be sent, not from when a connection was free to send it, so a server
// that falls behind is charged for the whole wait (no coordinated
// omission). A request that cannot even be sent on time counts late.
//
//	policybench -dns 127.0.0.153:53 -zones 10            # serve bl0.test ... bl9.test
//	policybench -addr 127.0.0.1:10031 -conns 64 -duration 20s
//	policybench -addr 127.0.0.1:10031 -rate 20000 -conns 200 -duration 20s
//
// Every request is distinct (a new sender each time) so that no
// whole-request cache answers; the DNS answers repeat over 256 client
// addresses, so DNS caches are warm after the warm-up.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

func main() {
	var (
		dnsAddr  = flag.String("dns", "", "serve the DNS lists blN.test (-zones) on this UDP address and do nothing else")
		addr     = flag.String("addr", "127.0.0.1:10031", "policy server address: IP:port, or unix:/path")
		conns    = flag.Int("conns", 64, "concurrent connections")
		duration = flag.Duration("duration", 20*time.Second, "measured run time")
		warm     = flag.Duration("warmup", 3*time.Second, "warm-up time before measuring")
		name     = flag.String("name", "", "label for the result line")
		rate     = flag.Float64("rate", 0, "open loop: offer this many requests per second (0: closed loop)")
		nzones   = flag.Int("zones", 10, "with -dns: serve bl0.test ... bl<N-1>.test")
		pids     = flag.String("pids", "", "comma-separated PIDs of the server's processes: report their CPU time per decision")
		users    = flag.Int("users", 0, "closed loop, authenticated load (send limits): requests carry sasl_username from this many logins (0: the unauthenticated mix)")
		rcpts    = flag.Int("rcpts", 1, "with -users: RCPT requests per message (one instance per message)")
		spread   = flag.Bool("spread", false, "open loop: request i goes on connection i mod -conns, as each Postfix smtpd process asks on its own connection (default: any free connection)")
	)
	flag.Parse()
	serverPIDs = *pids
	if *dnsAddr != "" {
		serveDNS(*dnsAddr, *nzones)
		return
	}
	if *rate > 0 {
		openLoop(*name, *addr, *conns, *rate, *warm, *spread, false)
		openLoop(*name, *addr, *conns, *rate, *duration, *spread, true)
		return
	}
	auth = authLoad{users: *users, rcpts: max(*rcpts, 1)}
	run(*name, *addr, *conns, *warm, false)
	run(*name, *addr, *conns, *duration, true)
}

// authLoad shapes the authenticated load (send limits): each message of a
// login is rcpts RCPT requests with one instance, as Postfix sends them.
type authLoad struct{ users, rcpts int }

var auth authLoad

// authRequest is the k-th request of connection c (of conns): request n of
// the authenticated load, from the login and message it belongs to, to
// one of 5,000 recipients.
func authRequest(b []byte, k, n int64, c, conns int) []byte {
	msg := k / int64(auth.rcpts)
	user := fmt.Sprintf("u%d", (msg*int64(conns)+int64(c))%int64(auth.users))
	return fmt.Appendf(b, "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"+
		"client_address=203.0.113.%d\nclient_name=unknown\nreverse_client_name=unknown\nhelo_name=client%d.example.net\n"+
		"sender=%s@example.test\nrecipient=r%d@remote.test\nrecipient_count=0\nqueue_id=\ninstance=%x.%d\n"+
		"size=0\nsasl_method=PLAIN\nsasl_username=%s\nsasl_sender=\nccert_subject=\nccert_issuer=\n"+
		"ccert_fingerprint=\nencryption_protocol=\nencryption_cipher=\nencryption_keysize=0\n"+
		"etrn_domain=\nstress=\nclient_port=%d\nserver_address=127.0.0.1\nserver_port=25\n\n",
		n%256, c, user, n%5000, msg, c, user, 1024+c)
}

// client i's address: 203.0.113.x; zone blZ.test lists the clients whose
// last octet is Z modulo 40 (each of 10 zones lists 2.5 %, a client is
// listed in at most one). Clients 10.1.0.x are in mynetworks.
func listedIn(zone int, last byte) bool { return int(last)%40 == zone }

func serveDNS(addr string, nzones int) {
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		name := strings.ToLower(q.Name)
		ok := false
		if q.Qtype == dns.TypeA {
			var a, b, c, d, z int
			if n, _ := fmt.Sscanf(name, "%d.%d.%d.%d.bl%d.test.", &d, &c, &b, &a, &z); n == 5 && z < nzones {
				ok = (a == 127 && b == 0 && c == 0 && d == 2) || (a == 203 && b == 0 && c == 113 && listedIn(z, byte(d)))
			}
		}
		if ok {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 3600}, A: net.IPv4(127, 0, 0, 2)})
		} else {
			m.Rcode = dns.RcodeNameError
			zone := "test."
			if i := strings.LastIndex(strings.TrimSuffix(name, ".test."), "."); i >= 0 {
				zone = name[i+1:]
			}
			m.Ns = []dns.RR{&dns.SOA{Hdr: dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 3600},
				Ns: "ns." + zone, Mbox: "h." + zone, Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: 3600}}
		}
		w.WriteMsg(m)
	})
	srv := &dns.Server{Addr: addr, Net: "udp", Handler: h}
	go func() {
		if err := srv.ListenAndServe(); err != nil {
			log.Fatalf("dns %s: %v", addr, err)
		}
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, os.Interrupt)
	<-sig
	srv.Shutdown()
}

var serverPIDs string

// cpuTime is the user+system CPU time of the server's processes so far
// (/proc/PID/stat; a process that is gone counts nothing).
func cpuTime() time.Duration {
	var total int64
	for _, p := range strings.Split(serverPIDs, ",") {
		if p == "" {
			continue
		}
		b, err := os.ReadFile("/proc/" + p + "/stat")
		if err != nil {
			continue
		}
		// Fields after the command (which may hold spaces): utime, stime,
		// cutime and cstime (children that exited: prefork servers) are
		// the 14th to 17th.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		for i := 11; i <= 14 && i < len(f); i++ {
			v, _ := strconv.ParseInt(f[i], 10, 64)
			total += v
		}
	}
	return time.Duration(total) * time.Second / 100 // USER_HZ
}

// selfCPU is this load generator's own CPU time so far: it shares the
// machine with the server, so what it burns is not the server's.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuNote is the server's (and the load generator's) CPU time used since
// cpu0 (self0), per decision.
func cpuNote(cpu0, self0 time.Duration, n int) string {
	if n == 0 {
		return ""
	}
	out := fmt.Sprintf(" loader_cpu=%.2fs", (selfCPU() - self0).Seconds())
	if serverPIDs == "" {
		return out
	}
	d := cpuTime() - cpu0
	return out + fmt.Sprintf(" server_cpu=%.2fs cpu_per_decision=%.1fµs", d.Seconds(), float64(d.Microseconds())/float64(n))
}

// Reply kinds, so that two servers' answers can be compared.
const (
	kPermit = iota
	kDunno
	kRelay
	kRBL
	kDefer
	kOther
	nKinds
)

var kindNames = [nKinds]string{"permit", "dunno", "reject-relay", "reject-rbl", "defer", "other"}

// classify reads a reply's action line ("action=..." without the line
// end) without allocating.
func classify(line []byte) int {
	a := bytes.TrimSpace(bytes.TrimPrefix(bytes.TrimSpace(line), []byte("action=")))
	prefix := func(p string) bool { return len(a) >= len(p) && bytes.EqualFold(a[:len(p)], []byte(p)) }
	switch {
	case len(a) == 2 && prefix("OK"):
		return kPermit
	case len(a) == 5 && prefix("DUNNO"), prefix("PREPEND"):
		return kDunno
	case prefix("REJECT"), len(a) > 0 && a[0] == '5':
		for i := 0; i+5 <= len(a); i++ {
			if bytes.EqualFold(a[i:i+5], []byte("relay")) {
				return kRelay
			}
		}
		return kRBL
	case prefix("DEFER"), len(a) > 0 && a[0] == '4':
		return kDefer
	}
	return kOther
}

// mixOf renders counts per kind as percentages of n.
func mixOf(counts *[nKinds]int, n int) string {
	var ks []string
	for k, v := range counts {
		if v > 0 {
			ks = append(ks, fmt.Sprintf("%s=%.1f%%", kindNames[k], 100*float64(v)/float64(max(n, 1))))
		}
	}
	slices.Sort(ks)
	return strings.Join(ks, " ")
}

// request appends the n-th request, sent on connection c: client
// 203.0.113.(n mod 256), one in 20 from mynetworks, one in 10 to a domain
// that is not ours (a relay attempt).
func request(b []byte, n int64, c int) []byte {
	last := n % 256
	b = append(b, "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\nclient_address="...)
	if n%20 == 0 {
		b = append(b, "10.1.0."...)
	} else {
		b = append(b, "203.0.113."...)
	}
	b = strconv.AppendInt(b, last, 10)
	b = append(b, "\nclient_name=unknown\nreverse_client_name=unknown\nhelo_name=client"...)
	b = strconv.AppendInt(b, int64(c), 10)
	b = append(b, ".example.net\nsender=s"...)
	b = strconv.AppendInt(b, int64(c), 10)
	b = append(b, '-')
	b = strconv.AppendInt(b, n, 10)
	b = append(b, "@sender.test\nrecipient="...)
	if n%10 == 3 {
		b = append(b, "victim@elsewhere.test"...)
	} else {
		b = append(b, "user@example.test"...)
	}
	b = append(b, "\nrecipient_count=0\nqueue_id=\ninstance="...)
	b = strconv.AppendInt(b, n, 16)
	b = append(b, '.')
	b = strconv.AppendInt(b, int64(c), 10)
	b = append(b, "\nsize=0\nsasl_method=\nsasl_username=\nsasl_sender=\nccert_subject=\nccert_issuer=\n"+
		"ccert_fingerprint=\nencryption_protocol=\nencryption_cipher=\nencryption_keysize=0\n"+
		"etrn_domain=\nstress=\nclient_port="...)
	b = strconv.AppendInt(b, int64(1024+c), 10)
	return append(b, "\nserver_address=127.0.0.1\nserver_port=25\n\n"...)
}

// exchange sends one request and reads its reply (an action line and the
// empty line that ends it); it returns the reply's kind.
func exchange(conn net.Conn, r *bufio.Reader, req []byte) (int, error) {
	if _, err := conn.Write(req); err != nil {
		return 0, err
	}
	line, err := r.ReadSlice('\n')
	if err != nil {
		return 0, err
	}
	k := classify(line)
	_, err = r.ReadSlice('\n')
	return k, err
}

// openLoop offers requests at rate per second for d on a pool of conns
// connections. Request i is due at start + i/rate; it goes out on a free
// connection at once, or, when every connection waits for an answer, on
// the first one to get it. Latency runs from the due time to the reply,
// so time spent waiting for a free connection, or for the load generator
// itself, counts.
//
// Which connection: with spread false, any free one (the one freed last:
// at 20,000/s and answers in ~0.1 ms, two or three connections carry
// everything); with spread true, request i goes on connection i mod conns
// and waits for it if it is still busy, as Postfix's requests do: each
// smtpd process has its own connection and asks one question at a time
// for its own SMTP session, so consecutive requests come from different
// processes on different connections.
//
// The load generator shares the machine with the server, so it costs as
// little as it can and says how well it kept its schedule. It is one
// thread with an epoll loop over raw sockets that waits for the next due
// time with epoll_pwait2's nanosecond timeout and a timer slack of 1 ns
// (no goroutine wake-up per request, no Go timer: Go's timers wait in
// epoll_pwait, whose timeout is whole milliseconds, so a sleep of 50 µs
// in an idle process lasts 1 ms; a timerfd costs two more system calls
// per request). For each request it records the
// dispatch lateness (due time to the moment the loop saw it due: the
// generator's own timer and scheduling) and the send lateness (due time
// to the write: that plus any wait for a free connection), and the
// response time from the write to the reply (resp_: the server, the
// loopback and the generator's reading of it, without the generator's
// lateness before the write). A run whose
// requests were handed out late says so on a "# WARNING" line: its
// latency is partly the generator's.
func openLoop(name, addr string, conns int, rate float64, d time.Duration, spread, report bool) {
	total := int64(rate * d.Seconds())
	interval := float64(time.Second) / rate
	due := func(i int64) time.Duration { return time.Duration(float64(i) * interval) }
	lat := make([]time.Duration, total)      // due time to reply
	sendLate := make([]time.Duration, total) // due time to write
	dispLate := make([]time.Duration, total) // due time to dispatch
	done := make([]bool, total)
	var mix [nKinds]int
	fails := 0

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		log.Fatalf("epoll: %v", err)
	}
	defer unix.Close(ep)
	// The default slack (50 µs for a task that is not real-time) would
	// let every wake-up come that much late.
	if err := unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0); err != nil {
		log.Fatalf("timer slack: %v", err)
	}
	fds := make([]int, conns)
	inflight := make([]int64, conns) // request waiting for its answer; -1: free
	replies := make([][]byte, conns)
	free := make([]int, 0, conns)
	for c := range conns {
		fds[c] = dialRaw(addr)
		defer unix.Close(fds[c])
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fds[c], &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(c)}); err != nil {
			log.Fatalf("epoll: %v", err)
		}
		inflight[c] = -1
		free = append(free, c)
	}
	live := conns // connections not dropped
	// drop takes a failed connection out of use (with spread, its
	// requests are sent on the next connection instead).
	drop := func(c int) {
		unix.EpollCtl(ep, unix.EPOLL_CTL_DEL, fds[c], nil)
		inflight[c] = -1
		live--
		fds[c] = -1
	}
	var buf []byte
	events := make([]unix.EpollEvent, 256)
	var rbuf [4096]byte
	cpu0, self0 := cpuTime(), selfCPU()
	start := time.Now()
	next, nextSend, answered := int64(0), int64(0), int64(0) // due so far, sent so far, answered or failed
	for answered < total {
		now := time.Since(start)
		for ; next < total && due(next) <= now; next++ {
			dispLate[next] = now - due(next)
		}
		for nextSend < next {
			c := -1
			if spread {
				if live == 0 {
					log.Fatalf("open loop: every connection to %s failed", addr)
				}
				c = int(nextSend % int64(conns))
				for fds[c] < 0 { // dropped: the next one
					c = (c + 1) % conns
				}
				if inflight[c] >= 0 {
					break // its connection is busy: it waits
				}
			} else if len(free) > 0 {
				c = free[len(free)-1]
				free = free[:len(free)-1]
			} else {
				break
			}
			n := nextSend
			nextSend++
			buf = request(buf[:0], n, c)
			sendLate[n] = time.Since(start) - due(n)
			if w, err := unix.Write(fds[c], buf); err != nil || w != len(buf) {
				log.Printf("open loop: write on connection %d: %d of %d bytes, %v", c, w, len(buf), err)
				fails++
				answered++
				drop(c)
				continue
			}
			inflight[c] = n
		}
		if live == 0 {
			log.Fatalf("open loop: every connection to %s failed", addr)
		}
		// Wait for answers, or until the next due time.
		var timeout *unix.Timespec
		if next < total {
			ts := unix.NsecToTimespec(int64(max(due(next)-time.Since(start), 0)))
			timeout = &ts
		}
		nev, err := epollPwait2(ep, events, timeout)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			log.Fatalf("epoll_pwait2: %v", err)
		}
		for _, ev := range events[:nev] {
			c := int(ev.Fd)
			m, err := unix.Read(fds[c], rbuf[:])
			if m <= 0 || inflight[c] < 0 {
				// closed, failed, or an answer nobody asked for:
				// the connection is dropped
				log.Printf("open loop: connection %d: read %d bytes, %v (waiting for request %d)", c, m, err, inflight[c])
				if inflight[c] >= 0 {
					fails++
					answered++
				}
				drop(c)
				continue
			}
			replies[c] = append(replies[c], rbuf[:m]...)
			end := bytes.Index(replies[c], []byte("\n\n"))
			if end < 0 {
				continue
			}
			n := inflight[c]
			lat[n] = time.Since(start) - due(n)
			done[n] = true
			line, _, _ := bytes.Cut(replies[c], []byte("\n"))
			mix[classify(line)]++
			replies[c] = replies[c][:0]
			inflight[c] = -1
			free = append(free, c)
			answered++
		}
	}
	elapsed := time.Since(start)
	if !report {
		return
	}
	var all, sl, dl, rt []time.Duration
	for i := range total {
		if done[i] {
			all = append(all, lat[i])
			sl = append(sl, sendLate[i])
			dl = append(dl, dispLate[i])
			rt = append(rt, lat[i]-sendLate[i])
		}
	}
	for _, s := range [][]time.Duration{all, sl, dl, rt} {
		slices.Sort(s)
	}
	pct := func(s []time.Duration, p float64) time.Duration {
		if len(s) == 0 {
			return 0
		}
		return s[min(len(s)-1, int(float64(len(s))*p))].Round(time.Microsecond)
	}
	over := func(s []time.Duration, t time.Duration) float64 {
		n := len(s) - sort.Search(len(s), func(i int) bool { return s[i] > t })
		return 100 * float64(n) / float64(max(len(s), 1))
	}
	n := len(all)
	self := selfCPU() - self0
	fmt.Printf("%-12s open-loop offered=%.0f/s conns=%d decisions=%d achieved=%.0f/s p50=%s p90=%s p99=%s p99.9=%s max=%s over_1ms=%.2f%% "+
		"late_p50=%s late_p99=%s late_p99.9=%s late_max=%s sent_late_p99=%s sent_late_p99.9=%s resp_p50=%s resp_p99=%s resp_p99.9=%s loader_cpu_per_request=%.1fµs failures=%d%s mix=[%s]\n",
		name, rate, conns, n, float64(n)/elapsed.Seconds(), pct(all, 0.50), pct(all, 0.90), pct(all, 0.99), pct(all, 0.999), pct(all, 1),
		over(all, time.Millisecond), pct(dl, 0.50), pct(dl, 0.99), pct(dl, 0.999), pct(dl, 1), pct(sl, 0.99), pct(sl, 0.999),
		pct(rt, 0.50), pct(rt, 0.99), pct(rt, 0.999), float64(self.Microseconds())/float64(max(n, 1)), fails, cpuNote(cpu0, self0, n), mixOf(&mix, n))
	// The generator kept its schedule if its own lateness is a small
	// part of the 1 ms the latency is judged against.
	if late := over(dl, 100*time.Microsecond); late > 1 || n < int(total) {
		fmt.Printf("# WARNING %s at %.0f/s: the load generator could not keep its schedule: %.2f%% of the requests were handed out more than 100 µs late (p99 %s), %d of %d answered; the latency above is partly the generator's\n",
			name, rate, late, pct(dl, 0.99), n, total)
	}
}

// epollPwait2 is epoll_pwait2(2) (Linux 5.11): epoll_wait with a
// nanosecond timeout (nil: none). golang.org/x/sys has no wrapper.
func epollPwait2(ep int, events []unix.EpollEvent, timeout *unix.Timespec) (int, error) {
	n, _, errno := unix.Syscall6(unix.SYS_EPOLL_PWAIT2, uintptr(ep), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)),
		uintptr(unsafe.Pointer(timeout)), 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// dialRaw connects a blocking socket to addr (IP:port, or unix:/path),
// outside Go's netpoller (the open loop polls it itself), with
// TCP_NODELAY as Postfix sets it.
func dialRaw(addr string) int {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			log.Fatalf("socket: %v", err)
		}
		if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
			log.Fatalf("connect %s: %v", addr, err)
		}
		return fd
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		log.Fatalf("-addr %q: want IP:port or unix:/path (%v)", addr, err)
	}
	var sa unix.Sockaddr
	family := unix.AF_INET
	if ap.Addr().Is4() {
		sa = &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	} else {
		family = unix.AF_INET6
		sa = &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		log.Fatalf("socket: %v", err)
	}
	if err := unix.Connect(fd, sa); err != nil {
		log.Fatalf("connect %s: %v", ap, err)
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
		log.Fatalf("TCP_NODELAY: %v", err)
	}
	return fd
}

func run(name, addr string, conns int, d time.Duration, report bool) {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		lats  []time.Duration
		kinds [nKinds]int
		seq   atomic.Int64
		fails atomic.Int64
	)
	cpu0, self0 := cpuTime(), selfCPU()
	stop := time.Now().Add(d)
	for c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			network, a := "tcp", addr
			if path, ok := strings.CutPrefix(addr, "unix:"); ok {
				network, a = "unix", path
			}
			conn, err := net.Dial(network, a)
			if err != nil {
				log.Fatalf("connect %s: %v", addr, err)
			}
			defer conn.Close()
			r := bufio.NewReader(conn)
			var my []time.Duration
			var mk [nKinds]int
			var buf []byte
			k := int64(0) // this connection's requests
			for time.Now().Before(stop) {
				n := seq.Add(1)
				if auth.users > 0 {
					buf = authRequest(buf[:0], k, n, c, conns)
				} else {
					buf = request(buf[:0], n, c)
				}
				k++
				t0 := time.Now()
				kind, err := exchange(conn, r, buf)
				if err != nil {
					fails.Add(1)
					return
				}
				my = append(my, time.Since(t0))
				mk[kind]++
			}
			mu.Lock()
			lats = append(lats, my...)
			for k, v := range mk {
				kinds[k] += v
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	if !report {
		return
	}
	slices.Sort(lats)
	pct := func(p float64) time.Duration {
		if len(lats) == 0 {
			return 0
		}
		return lats[min(len(lats)-1, int(float64(len(lats))*p))]
	}
	total := len(lats)
	fmt.Printf("%-12s conns=%d decisions=%d rate=%.0f/s p50=%s p99=%s max=%s failures=%d%s mix=[%s]\n",
		name, conns, total, float64(total)/d.Seconds(), pct(0.50), pct(0.99), pct(1), fails.Load(), cpuNote(cpu0, self0, total), mixOf(&kinds, total))
}
