// Package delivertest starts real delivery peers on loopback for tests:
// Postfix's smtp-sink, Dovecot's LMTP server, and a DNS server answering
// from a fixed list of records. Each helper stops what it started when the
// test ends.
package delivertest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Need skips the test when a program is missing, except under CI where
// every component is installed and a missing one is a failure.
func Need(t testing.TB, prog string) string {
	t.Helper()
	p, err := exec.LookPath(prog)
	if err != nil {
		for _, dir := range []string{"/usr/sbin", "/sbin"} {
			if _, serr := os.Stat(filepath.Join(dir, prog)); serr == nil {
				return filepath.Join(dir, prog)
			}
		}
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not installed: %v", prog, err)
		}
		t.Skipf("%s not installed", prog)
	}
	return p
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

// WaitListening waits until addr accepts connections (bounded: this is
// readiness, not a timing assertion).
func WaitListening(t testing.TB, network, addr string) {
	t.Helper()
	var err error
	for i := 0; i < 400; i++ {
		var c net.Conn
		if c, err = net.DialTimeout(network, addr, time.Second); err == nil {
			c.Close()
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("%s %s never started listening: %v", network, addr, err)
}

// Sink is a running Postfix smtp-sink that dumps each message to a file.
type Sink struct {
	Addr string
	Port int
	Dir  string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	fixed  bool // restarted: keep the port
}

// StartSink starts smtp-sink on a free loopback port with extra flags (for
// example "-r", "." to tempfail every message, "-f", "RCPT" to refuse
// every recipient).
func StartSink(t testing.TB, flags ...string) *Sink {
	t.Helper()
	// Not t.TempDir: smtp-sink drops privileges to postfix, which cannot
	// enter the test's private temp directory.
	dir, err := os.MkdirTemp("", "rgsink")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o777)
	s := &Sink{Dir: dir}
	s.Port = FreePort(t)
	s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port))
	s.start(t, flags...)
	t.Cleanup(s.Stop)
	return s
}

func (s *Sink) start(t testing.TB, flags ...string) {
	t.Helper()
	bin := Need(t, "smtp-sink")
	for try := 0; ; try++ {
		args := []string{}
		if os.Geteuid() == 0 {
			args = append(args, "-u", "postfix")
		}
		args = append(args, "-d", s.Dir+"/%M.")
		args = append(args, flags...)
		args = append(args, s.Addr, "100")
		cmd := exec.Command(bin, args...)
		cmd.Stderr = os.Stderr
		exited, ok := startServing(t, cmd, s.Addr)
		if ok {
			s.mu.Lock()
			s.cmd, s.exited = cmd, exited
			s.mu.Unlock()
			return
		}
		// The port was taken meanwhile by another test: a fresh one,
		// unless this is a restart on a fixed port.
		if s.cmd != nil || try >= 4 || s.fixed {
			t.Fatalf("smtp-sink could not listen on %s", s.Addr)
		}
		s.Port = FreePort(t)
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port))
	}
}

// startServing starts cmd and waits until it accepts on addr; ok is false
// if it exited first (e.g. the port was taken).
func startServing(t testing.TB, cmd *exec.Cmd, addr string) (chan struct{}, bool) {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", cmd.Path, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	for i := 0; i < 400; i++ {
		select {
		case <-exited:
			return exited, false
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			select {
			case <-exited:
				return exited, false
			case <-time.After(10 * time.Millisecond):
			}
			return exited, true
		}
		time.Sleep(25 * time.Millisecond)
	}
	cmd.Process.Kill()
	<-exited
	t.Fatalf("%s never listened on %s", cmd.Path, addr)
	return nil, false
}

// Restart stops the sink, forgets the messages dumped so far (smtp-sink
// dumps a message even when it then rejects it with -r or -f) and starts
// again on the same port with new flags.
func (s *Sink) Restart(t testing.TB, flags ...string) {
	t.Helper()
	s.Stop()
	s.fixed = true
	ents, _ := os.ReadDir(s.Dir)
	for _, e := range ents {
		os.Remove(filepath.Join(s.Dir, e.Name()))
	}
	s.start(t, flags...)
}

// Stop ends the sink.
func (s *Sink) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		s.cmd.Process.Kill()
		<-s.exited
		s.cmd = nil
	}
}

// SinkMessage is one message dumped by smtp-sink.
type SinkMessage struct {
	File  string
	Helo  string
	From  string
	Rcpts []string
	Data  string // the message as received (LF line endings)
}

// Messages parses every dump file written so far.
func (s *Sink) Messages(t testing.TB) []SinkMessage {
	t.Helper()
	ents, err := os.ReadDir(s.Dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []SinkMessage
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(s.Dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		m := SinkMessage{File: e.Name()}
		sc := bufio.NewScanner(strings.NewReader(string(b)))
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		var data strings.Builder
		inHdr := true
		for sc.Scan() {
			l := sc.Text()
			if inHdr {
				switch {
				case strings.HasPrefix(l, "X-Client-"):
					continue
				case strings.HasPrefix(l, "X-Helo-Args: "):
					m.Helo = strings.TrimPrefix(l, "X-Helo-Args: ")
					continue
				case strings.HasPrefix(l, "X-Mail-Args: "):
					f := strings.Fields(strings.TrimPrefix(l, "X-Mail-Args: "))
					if len(f) > 0 {
						m.From = strings.Trim(f[0], "<>")
					}
					continue
				case strings.HasPrefix(l, "X-Rcpt-Args: "):
					f := strings.Fields(strings.TrimPrefix(l, "X-Rcpt-Args: "))
					if len(f) > 0 {
						m.Rcpts = append(m.Rcpts, strings.Trim(f[0], "<>"))
					}
					continue
				}
				inHdr = false
			}
			data.WriteString(l + "\n")
		}
		m.Data = data.String()
		if m.From == "" && len(m.Rcpts) == 0 {
			continue // a connection without a transaction
		}
		out = append(out, m)
	}
	return out
}

// DNS is a DNS server on loopback that answers from fixed records.
type DNS struct {
	Addr string
	srv  *dns.Server

	mu     sync.Mutex
	rrs    []dns.RR
	rcodes map[string]int
}

// StartDNS serves records given in zone-file syntax, e.g.
// "example.test. 300 IN MX 10 mx.example.test.". A name with no record
// gets NXDOMAIN; SetRcode makes a name answer with another rcode.
func StartDNS(t testing.TB, records ...string) *DNS {
	t.Helper()
	d := &DNS{rcodes: map[string]int{}}
	for _, r := range records {
		d.Add(t, r)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d.Addr = pc.LocalAddr().String()
	started := make(chan struct{})
	d.srv = &dns.Server{PacketConn: pc, Handler: d, NotifyStartedFunc: func() { close(started) }}
	go d.srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { d.srv.Shutdown() })
	return d
}

// Add adds one record.
func (d *DNS) Add(t testing.TB, record string) {
	t.Helper()
	rr, err := dns.NewRR(record)
	if err != nil {
		t.Fatalf("record %q: %v", record, err)
	}
	d.mu.Lock()
	d.rrs = append(d.rrs, rr)
	d.mu.Unlock()
}

// SetRcode makes queries for name answer with rcode (e.g. dns.RcodeServerFailure).
func (d *DNS) SetRcode(name string, rcode int) {
	d.mu.Lock()
	d.rcodes[dns.Fqdn(strings.ToLower(name))] = rcode
	d.mu.Unlock()
}

// SetRcodeType makes queries for name of type qtype (e.g. dns.TypeAAAA)
// answer with rcode.
func (d *DNS) SetRcodeType(name string, qtype uint16, rcode int) {
	d.mu.Lock()
	d.rcodes[dns.Fqdn(strings.ToLower(name))+"/"+dns.TypeToString[qtype]] = rcode
	d.mu.Unlock()
}

// ServeDNS implements dns.Handler.
func (d *DNS) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if len(req.Question) == 1 {
		q := req.Question[0]
		name := strings.ToLower(q.Name)
		d.mu.Lock()
		if rc, ok := d.rcodes[name+"/"+dns.TypeToString[q.Qtype]]; ok {
			m.Rcode = rc
		} else if rc, ok := d.rcodes[name]; ok {
			m.Rcode = rc
		} else {
			known := false
			for _, rr := range d.rrs {
				if strings.ToLower(rr.Header().Name) != name {
					continue
				}
				known = true
				if rr.Header().Rrtype == q.Qtype {
					m.Answer = append(m.Answer, dns.Copy(rr))
				}
			}
			if !known {
				m.Rcode = dns.RcodeNameError
			}
		}
		d.mu.Unlock()
	}
	w.WriteMsg(m)
}

// Dovecot is a Dovecot instance serving LMTP on loopback.
type Dovecot struct {
	LMTPAddr   string
	LMTPSocket string // the same service on a unix socket
	Dir        string
	cmd        *exec.Cmd
}

// StartDovecot starts Dovecot with only LMTP, a passwd-file user database
// holding users (full addresses), and Maildirs under its temp directory.
func StartDovecot(t testing.TB, users ...string) *Dovecot {
	t.Helper()
	bin := Need(t, "dovecot")
	if os.Geteuid() != 0 && os.Getenv("CI") != "true" {
		t.Skip("the Dovecot test runs as root (CI does)")
	}
	// A short path: Dovecot's unix sockets live under base_dir.
	dir, err := os.MkdirTemp("", "rgdc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	uid, gid := os.Getuid(), os.Getgid()
	if uid == 0 {
		// Dovecot will not deliver as root; use nobody.
		uid, gid = 65534, 65534
		if u, err := user.Lookup("nobody"); err == nil {
			uid, _ = strconv.Atoi(u.Uid)
			gid, _ = strconv.Atoi(u.Gid)
		}
	}
	mail := filepath.Join(dir, "mail")
	os.MkdirAll(mail, 0o755)
	os.Chown(mail, uid, gid)
	var ul strings.Builder
	for _, u := range users {
		fmt.Fprintf(&ul, "%s:{PLAIN}unused:%d:%d::%s\n", u, uid, gid, filepath.Join(mail, u))
	}
	if err := os.WriteFile(filepath.Join(dir, "users"), []byte(ul.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	port := FreePort(t)
	conf := fmt.Sprintf(`base_dir = %[1]s/run
state_dir = %[1]s/state
instance_name = rgtest-%[2]d
log_path = %[1]s/dovecot.log
protocols = lmtp
listen = 127.0.0.1
ssl = no
mail_location = maildir:~/Maildir
first_valid_uid = 1
passdb {
  driver = passwd-file
  args = %[1]s/users
}
userdb {
  driver = passwd-file
  args = %[1]s/users
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = %[2]d
  }
  unix_listener lmtp {
    mode = 0666
  }
}
`, dir, port)
	cf := filepath.Join(dir, "dovecot.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	var cmd *exec.Cmd
	var exited chan struct{}
	for try := 0; ; try++ {
		cmd = exec.Command(bin, "-F", "-c", cf)
		cmd.Stderr = os.Stderr
		var ok bool
		if exited, ok = startServing(t, cmd, net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); ok {
			break
		}
		if try >= 4 {
			b, _ := os.ReadFile(filepath.Join(dir, "dovecot.log"))
			t.Fatalf("dovecot did not start:\n%s", b)
		}
		// Port taken meanwhile: rewrite the configuration with a new one.
		old := fmt.Sprintf("port = %d", port)
		port = FreePort(t)
		conf = strings.Replace(conf, old, fmt.Sprintf("port = %d", port), 1)
		if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	d := &Dovecot{LMTPAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), LMTPSocket: filepath.Join(dir, "run", "lmtp"), Dir: dir, cmd: cmd}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "dovecot.log"))
			t.Logf("dovecot.log:\n%s", b)
		}
	})
	return d
}

// Mailbox returns the contents of the messages in a user's Maildir new/.
func (d *Dovecot) Mailbox(t testing.TB, user string) []string {
	t.Helper()
	return ReadMaildir(t, filepath.Join(d.Dir, "mail", user, "Maildir"))
}

// ReadMaildir returns the messages in dir/new and dir/cur, sorted by name.
func ReadMaildir(t testing.TB, dir string) []string {
	t.Helper()
	var names []string
	for _, sub := range []string{"new", "cur"} {
		ents, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		for _, e := range ents {
			names = append(names, filepath.Join(dir, sub, e.Name()))
		}
	}
	sort.Strings(names)
	var out []string
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}
