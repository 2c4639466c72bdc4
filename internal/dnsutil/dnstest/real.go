package dnstest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// The real servers below run Debian's NSD (authoritative) and unbound
// (caching resolver) on loopback ports with their own configuration in a
// temporary directory, for tests and benchmarks that must see what a
// production resolver does: its cache, its SERVFAILs for a dead upstream,
// its own retries.

const (
	nsdBin     = "/usr/sbin/nsd"
	unboundBin = "/usr/sbin/unbound"
)

// TB is what the real servers need of their caller: a test or benchmark
// (testing.TB), or a benchmark program's own implementation.
type TB interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Skipf(format string, args ...any)
	Cleanup(func())
	TempDir() string
}

var _ TB = testing.TB(nil)

// NeedReal skips the test when NSD or unbound is missing, or fails it
// under CI=true (CI installs them: .ci/packages.d/dns.txt).
func NeedReal(t TB) {
	t.Helper()
	for bin, pkg := range map[string]string{nsdBin: "nsd", unboundBin: "unbound"} {
		if _, err := os.Stat(bin); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s missing (apt-get install %s)", bin, pkg)
			}
			t.Skipf("%s missing (apt-get install %s)", bin, pkg)
		}
	}
}

// freeUDPTCP returns a loopback port free for both UDP and TCP now.
func freeUDPTCP(t TB) int {
	t.Helper()
	for range 50 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		pc.Close()
		if err == nil {
			ln.Close()
			return port
		}
	}
	t.Fatal("dnstest: no port free for UDP and TCP")
	return 0
}

// daemon is a server process that can be stopped and started again on
// the same port.
type daemon struct {
	t    TB
	name string
	args []string
	log  string
	addr string
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	out  syncBuffer
	held []int // sockets holding addr's port while the daemon is stopped
}

// syncBuffer collects a process's output while it runs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }
func (s *syncBuffer) Reset()         { s.mu.Lock(); defer s.mu.Unlock(); s.b.Reset() }

func (d *daemon) start() {
	d.t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd != nil {
		return
	}
	var err error
	for attempt := range 20 {
		d.release()
		d.out.Reset()
		cmd := exec.Command(d.args[0], d.args[1:]...)
		cmd.Stdout, cmd.Stderr = &d.out, &d.out
		// Its own process group: NSD's server processes outlive the main
		// one for a moment, and stop must end them all.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err = cmd.Start(); err != nil {
			d.t.Fatalf("%s: %v", d.name, err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		if err = waitAnswer(d.addr, 10*time.Second, done); err == nil {
			d.cmd, d.done = cmd, done
			return
		}
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		// The port may still be held by the process just stopped.
		time.Sleep(time.Duration(attempt+1) * 50 * time.Millisecond)
	}
	l, _ := os.ReadFile(d.log)
	d.t.Fatalf("%s did not answer on %s: %v\n%s\n%s", d.name, d.addr, err, d.out.String(), l)
}

func (d *daemon) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil {
		return
	}
	pgid := -d.cmd.Process.Pid
	syscall.Kill(pgid, syscall.SIGCONT) // if paused
	syscall.Kill(pgid, syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(5 * time.Second):
	}
	// Whatever of the group is left (a server process still answering)
	// goes now; the port is closed when stop returns.
	syscall.Kill(pgid, syscall.SIGKILL)
	<-d.done
	c := &dns.Client{Timeout: 100 * time.Millisecond}
	m := new(dns.Msg)
	m.SetQuestion("stopped.invalid.", dns.TypeA)
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if _, _, err := c.Exchange(m, d.addr); err != nil {
			break
		}
	}
	d.cmd = nil
	d.hold()
}

// close stops the daemon for good (the test's cleanup).
func (d *daemon) close() {
	d.stop()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.release()
}

// hold binds addr's TCP port, without listening, while the daemon is
// stopped, so that it can start on it again: a stopped daemon's port is a
// free ephemeral port, and any process's outgoing connection could take
// it and keep it (NSD then failed to start for 10 s with "can't bind tcp
// socket: Address already in use"). A port bound this way is never picked
// for an outgoing connection, and a connection to it is refused as to a
// closed port. UDP is not held: a bound UDP socket would swallow the
// queries that a stopped server's port refuses, and an outgoing UDP
// socket holds a port only for a moment (start retries). Without
// SO_REUSEADDR, so that no other socket may bind it either. Best effort: a
// port already taken stays taken. d.mu must be held.
func (d *daemon) hold() {
	ap, err := netip.ParseAddrPort(d.addr)
	if err != nil || !ap.Addr().Is4() {
		return
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return
	}
	if syscall.Bind(fd, &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}) != nil {
		syscall.Close(fd)
		return
	}
	d.held = append(d.held, fd)
}

// release frees the port held by hold; d.mu must be held.
func (d *daemon) release() {
	for _, fd := range d.held {
		syscall.Close(fd)
	}
	d.held = nil
}

func (d *daemon) signal(s syscall.Signal) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd != nil {
		syscall.Kill(-d.cmd.Process.Pid, s)
	}
}

// waitAnswer waits until addr answers a DNS query (any rcode) or the
// process exits.
func waitAnswer(addr string, within time.Duration, exited <-chan struct{}) error {
	c := &dns.Client{Timeout: 200 * time.Millisecond}
	m := new(dns.Msg)
	m.SetQuestion("ready.invalid.", dns.TypeA)
	end := time.Now().Add(within)
	for time.Now().Before(end) {
		select {
		case <-exited:
			return fmt.Errorf("exited")
		default:
		}
		if _, _, err := c.Exchange(m, addr); err == nil {
			return nil
		}
		time.Sleep(30 * time.Millisecond)
	}
	return fmt.Errorf("no answer within %v", within)
}

// NSD is a running NSD serving some zones.
type NSD struct {
	Addr string // 127.0.0.1:port, UDP and TCP
	d    *daemon
}

// StartNSD serves zones (origin -> records in zone-file syntax, names
// relative to the origin or absolute) on a loopback port until the test
// ends. Each zone gets an SOA whose negative TTL is 60 s, and an NS record
// (ZoneText).
func StartNSD(t TB, zones map[string][]string) *NSD {
	t.Helper()
	files := map[string]string{}
	for z, recs := range zones {
		files[z] = ZoneText(z, recs)
	}
	return StartNSDFiles(t, files)
}

// ZoneText is the zone file StartNSD serves for origin and records.
func ZoneText(origin string, records []string) string {
	origin = dns.Fqdn(strings.ToLower(origin))
	var b strings.Builder
	fmt.Fprintf(&b, "$ORIGIN %s\n$TTL 300\n@ IN SOA ns.%s hostmaster.%s 1 3600 600 86400 60\n@ IN NS ns.%s\nns IN A 127.0.0.1\n",
		origin, origin, origin, origin)
	for _, r := range records {
		b.WriteString(r + "\n")
	}
	return b.String()
}

// StartNSDFiles serves whole zone files (origin -> file text, e.g. a zone
// signed with ldns-signzone) on a loopback port until the test ends.
func StartNSDFiles(t TB, files map[string]string) *NSD {
	t.Helper()
	NeedReal(t)
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	port := freeUDPTCP(t)
	var conf strings.Builder
	fmt.Fprintf(&conf, `server:
	ip-address: 127.0.0.1@%d
	port: %d
	do-ip6: no
	username: ""
	chroot: ""
	zonesdir: %q
	database: ""
	zonelistfile: %q
	xfrdfile: %q
	xfrdir: %q
	pidfile: %q
	logfile: %q
	server-count: 1
	tcp-count: 32
	verbosity: 1
	hide-version: yes
	# Debian's NSD limits responses per client to 200/s (RRL); unbound
	# on loopback is one client asking for everyone.
	rrl-ratelimit: 0
	rrl-whitelist-ratelimit: 0
remote-control:
	control-enable: no
`, port, port, dir, filepath.Join(dir, "zone.list"), filepath.Join(dir, "xfrd.state"), dir,
		filepath.Join(dir, "nsd.pid"), filepath.Join(dir, "nsd.log"))
	names := make([]string, 0, len(files))
	for z := range files {
		names = append(names, z)
	}
	sort.Strings(names)
	for i, z := range names {
		origin := dns.Fqdn(strings.ToLower(z))
		file := fmt.Sprintf("zone%d.zone", i)
		if err := os.WriteFile(filepath.Join(dir, file), []byte(files[z]), 0o644); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&conf, "zone:\n\tname: %q\n\tzonefile: %q\n", origin, file)
	}
	cf := filepath.Join(dir, "nsd.conf")
	if err := os.WriteFile(cf, []byte(conf.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	n := &NSD{Addr: fmt.Sprintf("127.0.0.1:%d", port)}
	n.d = &daemon{t: t, name: "nsd", args: []string{nsdBin, "-d", "-c", cf}, log: filepath.Join(dir, "nsd.log"), addr: n.Addr}
	n.d.start()
	t.Cleanup(n.d.close)
	return n
}

// Stop kills NSD; Start runs it again on the same port.
func (n *NSD) Stop()  { n.d.stop() }
func (n *NSD) Start() { n.d.start() }

// Stub sends the queries for a zone to the given servers (host:port).
type Stub struct {
	Zone  string
	Addrs []string
}

// Unbound is a running unbound: a caching, recursive resolver whose only
// upstreams are the stub zones it was given.
type Unbound struct {
	Addr string
	d    *daemon
}

// StartUnbound runs unbound on a loopback port until the test ends.
func StartUnbound(t TB, stubs ...Stub) *Unbound {
	t.Helper()
	return startUnbound(t, nil, stubs)
}

// StartValidatingUnbound is StartUnbound with DNSSEC validation and the
// given trust anchors (DS or DNSKEY records in zone-file syntax): answers
// from the anchored zones come back with the AD bit, bogus ones as
// SERVFAIL; other zones are insecure.
func StartValidatingUnbound(t TB, anchors []string, stubs ...Stub) *Unbound {
	t.Helper()
	return startUnbound(t, anchors, stubs)
}

func startUnbound(t TB, anchors []string, stubs []Stub) *Unbound {
	t.Helper()
	NeedReal(t)
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	port := freeUDPTCP(t)
	var conf strings.Builder
	fmt.Fprintf(&conf, `server:
	interface: 127.0.0.1
	port: %d
	do-ip6: no
	username: ""
	chroot: ""
	directory: %q
	pidfile: %q
	logfile: %q
	use-syslog: no
	verbosity: 1
	num-threads: 1
	so-reuseport: no
	access-control: 127.0.0.0/8 allow
	do-not-query-localhost: no
	module-config: "%s"
	qname-minimisation: no
	infra-host-ttl: 5
	infra-keep-probing: yes
	outgoing-interface: 127.0.0.1
	num-queries-per-thread: 4096
	outgoing-range: 8192
	msg-cache-size: 64m
	rrset-cache-size: 128m
remote-control:
	control-enable: no
`, port, dir, filepath.Join(dir, "unbound.pid"), filepath.Join(dir, "unbound.log"), modules(anchors))
	for _, a := range anchors {
		fmt.Fprintf(&conf, "server:\n\ttrust-anchor: %q\n", a)
	}
	for _, s := range stubs {
		fmt.Fprintf(&conf, "stub-zone:\n\tname: %q\n", dns.Fqdn(s.Zone))
		for _, a := range s.Addrs {
			h, p, err := net.SplitHostPort(a)
			if err != nil {
				t.Fatalf("stub %s: %v", a, err)
			}
			fmt.Fprintf(&conf, "\tstub-addr: %s@%s\n", h, p)
		}
	}
	cf := filepath.Join(dir, "unbound.conf")
	if err := os.WriteFile(cf, []byte(conf.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("/usr/sbin/unbound-checkconf", cf).CombinedOutput(); err != nil {
		t.Fatalf("unbound-checkconf: %v\n%s\n%s", err, out, conf.String())
	}
	u := &Unbound{Addr: fmt.Sprintf("127.0.0.1:%d", port)}
	u.d = &daemon{t: t, name: "unbound", args: []string{unboundBin, "-d", "-c", cf}, log: filepath.Join(dir, "unbound.log"), addr: u.Addr}
	u.d.start()
	t.Cleanup(u.d.close)
	return u
}

func modules(anchors []string) string {
	if len(anchors) > 0 {
		return "validator iterator"
	}
	return "iterator"
}

// Stop kills unbound (its port then refuses queries); Start runs it again
// on the same port with an empty cache.
func (u *Unbound) Stop()  { u.d.stop() }
func (u *Unbound) Start() { u.d.start() }

// Pause freezes unbound (SIGSTOP): queries go unanswered, as with a hung
// or unreachable resolver; Resume (SIGCONT) undoes it.
func (u *Unbound) Pause()  { u.d.signal(syscall.SIGSTOP) }
func (u *Unbound) Resume() { u.d.signal(syscall.SIGCONT) }

// Proxy relays UDP DNS packets to an upstream server and can delay or
// drop them: a slow or lossy path to one list.
type Proxy struct {
	Addr     string
	upstream atomic.Pointer[string]
	pc       net.PacketConn
	delay    atomic.Int64 // nanoseconds
	dropAll  atomic.Bool
	dropNth  atomic.Int64 // drop every nth query (0: none)
	seen     atomic.Int64
	Relayed  atomic.Int64
	Dropped  atomic.Int64

	mu        sync.Mutex
	dropFirst bool
	asked     map[string]bool // names seen while dropFirst
}

// StartProxy relays to upstream (host:port) until the test ends.
func StartProxy(t TB, upstream string) *Proxy {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{Addr: pc.LocalAddr().String(), pc: pc}
	p.SetUpstream(upstream)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { p.serve(ctx, &wg) })
	t.Cleanup(func() { cancel(); pc.Close(); wg.Wait() })
	return p
}

// SetUpstream relays the next queries to upstream (host:port) instead: a
// list whose name servers were replaced (a dead list's domain parked).
func (p *Proxy) SetUpstream(upstream string) { p.upstream.Store(&upstream) }

// Delay holds every packet d before relaying it (0: none).
func (p *Proxy) Delay(d time.Duration) { p.delay.Store(int64(d)) }

// DropAll drops every query (a dead list) while on.
func (p *Proxy) DropAll(on bool) { p.dropAll.Store(on) }

// DropEvery drops every nth query (0: none), as a lossy path or a
// rate-limiting server does.
func (p *Proxy) DropEvery(n int) { p.dropNth.Store(int64(n)) }

// DropFirst drops the first query for each name (and type) while on: a
// client that does not retransmit never gets an answer.
func (p *Proxy) DropFirst(on bool) {
	p.mu.Lock()
	p.dropFirst, p.asked = on, map[string]bool{}
	p.mu.Unlock()
}

func (p *Proxy) drop(pkt []byte) bool {
	k := p.seen.Add(1)
	if p.dropAll.Load() {
		return true
	}
	if nth := p.dropNth.Load(); nth > 0 && k%nth == 0 {
		return true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.dropFirst {
		return false
	}
	var m dns.Msg
	if m.Unpack(pkt) != nil || len(m.Question) != 1 {
		return false
	}
	q := strings.ToLower(m.Question[0].Name) + "/" + dns.TypeToString[m.Question[0].Qtype]
	if p.asked[q] {
		return false
	}
	p.asked[q] = true
	return true
}

func (p *Proxy) serve(ctx context.Context, wg *sync.WaitGroup) {
	buf := make([]byte, 65535)
	for {
		n, from, err := p.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		if p.drop(buf[:n]) {
			p.Dropped.Add(1)
			continue
		}
		pkt := append([]byte(nil), buf[:n]...)
		wg.Go(func() {
			if d := time.Duration(p.delay.Load()); d > 0 {
				select {
				case <-time.After(d):
				case <-ctx.Done():
					return
				}
			}
			up, err := net.Dial("udp", *p.upstream.Load())
			if err != nil {
				return
			}
			defer up.Close()
			up.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := up.Write(pkt); err != nil {
				return
			}
			rb := make([]byte, 65535)
			m, err := up.Read(rb)
			if err != nil {
				return
			}
			p.Relayed.Add(1)
			p.pc.WriteTo(rb[:m], from)
		})
	}
}
