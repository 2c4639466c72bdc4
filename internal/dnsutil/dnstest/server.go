// Package dnstest runs a real authoritative-style DNS server (miekg/dns) on
// 127.0.0.1 with an ephemeral port for tests: plain records, wildcard
// suffixes that answer every name under them, suffixes that never answer
// (dead lists) and suffixes that answer SERVFAIL.
package dnstest

import (
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Server is a running test DNS server on UDP and TCP.
type Server struct {
	Addr    string // 127.0.0.1:port, for UDP and TCP
	Queries atomic.Int64

	mu       sync.RWMutex
	records  map[string][]dns.RR // by lower-case fqdn
	wild     map[string][]string // suffix -> A answers for every name under it
	dead     map[string]bool
	servfail map[string]bool
	sfType   map[string]uint16 // exact name -> the one type answered SERVFAIL
	referral map[string]bool
	outage   bool                     // answer nothing at all
	drop     map[string]int           // suffix -> queries still to leave unanswered
	delay    map[string]time.Duration // suffix -> how long to wait before answering
}

// Start runs a server until the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{records: map[string][]dns.RR{}, wild: map[string][]string{}, dead: map[string]bool{}, servfail: map[string]bool{}, sfType: map[string]uint16{}, referral: map[string]bool{},
		drop: map[string]int{}, delay: map[string]time.Duration{}}
	// UDP and TCP share one port number. The UDP port is free by
	// construction; the same TCP port may be taken (another test's
	// connection, another package's listener), so try fresh ports.
	var pc net.PacketConn
	var ln net.Listener
	var err error
	for range 50 {
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatalf("dnstest: %v", err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
	}
	if err != nil {
		t.Fatalf("dnstest: no port free for both UDP and TCP: %v", err)
	}
	s.Addr = pc.LocalAddr().String()
	udp := &dns.Server{PacketConn: pc, Handler: s}
	tcp := &dns.Server{Listener: ln, Handler: s}
	go udp.ActivateAndServe()
	go tcp.ActivateAndServe()
	t.Cleanup(func() { udp.Shutdown(); tcp.Shutdown() })
	return s
}

// Add adds records in zone-file syntax, e.g. "2.0.0.127.zen.test. 300 IN A 127.0.0.2".
func (s *Server) Add(t testing.TB, lines ...string) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range lines {
		rr, err := dns.NewRR(l)
		if err != nil || rr == nil {
			t.Fatalf("dnstest: record %q: %v", l, err)
		}
		k := strings.ToLower(rr.Header().Name)
		s.records[k] = append(s.records[k], rr)
	}
}

// Remove deletes every record of name.
func (s *Server) Remove(name string) {
	s.mu.Lock()
	delete(s.records, strings.ToLower(dns.Fqdn(name)))
	s.mu.Unlock()
}

// Wildcard makes every name under suffix answer A with ips (a list that
// lists everything); no ips removes the wildcard.
func (s *Server) Wildcard(suffix string, ips ...string) {
	s.mu.Lock()
	if len(ips) == 0 {
		delete(s.wild, strings.ToLower(dns.Fqdn(suffix)))
	} else {
		s.wild[strings.ToLower(dns.Fqdn(suffix))] = ips
	}
	s.mu.Unlock()
}

// Dead makes every query under suffix go unanswered (on = false undoes it).
func (s *Server) Dead(suffix string, on bool) {
	s.mu.Lock()
	s.dead[strings.ToLower(dns.Fqdn(suffix))] = on
	s.mu.Unlock()
}

// ServFail makes every query under suffix answer SERVFAIL.
func (s *Server) ServFail(suffix string, on bool) {
	s.mu.Lock()
	s.servfail[strings.ToLower(dns.Fqdn(suffix))] = on
	s.mu.Unlock()
}

// Referral makes every query under suffix answer like a non-recursive
// server: NOERROR, no answer, an NS record in the authority section.
func (s *Server) Referral(suffix string, on bool) {
	s.mu.Lock()
	s.referral[strings.ToLower(dns.Fqdn(suffix))] = on
	s.mu.Unlock()
}

// Outage makes the server answer nothing at all (on = false undoes it),
// as a resolver that is down or cut off.
func (s *Server) Outage(on bool) {
	s.mu.Lock()
	s.outage = on
	s.mu.Unlock()
}

// Drop leaves the next n queries under suffix unanswered, as a lost
// packet would, and answers the ones after.
func (s *Server) Drop(suffix string, n int) {
	s.mu.Lock()
	s.drop[strings.ToLower(dns.Fqdn(suffix))] = n
	s.mu.Unlock()
}

// Delay makes every answer under suffix wait d (0 undoes it).
func (s *Server) Delay(suffix string, d time.Duration) {
	s.mu.Lock()
	s.delay[strings.ToLower(dns.Fqdn(suffix))] = d
	s.mu.Unlock()
}

// ServFailType makes queries for name and type qtype (only) answer
// SERVFAIL, e.g. a name whose A records answer and whose AAAA fail.
func (s *Server) ServFailType(name string, qtype uint16) {
	s.mu.Lock()
	s.sfType[strings.ToLower(dns.Fqdn(name))] = qtype
	s.mu.Unlock()
}

func under(name, suffix string) bool {
	return name == suffix || strings.HasSuffix(name, "."+suffix)
}

// ServeDNS implements dns.Handler.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	s.Queries.Add(1)
	if len(req.Question) != 1 {
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeFormatError)
		w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	s.mu.Lock()
	if s.outage {
		s.mu.Unlock()
		return
	}
	var wait time.Duration
	for suf, n := range s.drop {
		if n > 0 && under(name, suf) {
			s.drop[suf] = n - 1
			s.mu.Unlock()
			return
		}
	}
	for suf, d := range s.delay {
		if under(name, suf) {
			wait = max(wait, d)
		}
	}
	s.mu.Unlock()
	if wait > 0 {
		time.Sleep(wait)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	for suf, on := range s.dead {
		if on && under(name, suf) {
			return // no answer at all
		}
	}
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	for suf, on := range s.referral {
		if on && under(name, suf) {
			m.Authoritative = false
			m.Ns = []dns.RR{&dns.NS{Hdr: dns.RR_Header{Name: suf, Rrtype: dns.TypeNS, Class: dns.ClassINET, Ttl: 300}, Ns: "ns." + suf}}
			w.WriteMsg(m)
			return
		}
	}
	if t, ok := s.sfType[name]; ok && t == q.Qtype {
		m.SetRcode(req, dns.RcodeServerFailure)
		w.WriteMsg(m)
		return
	}
	for suf, on := range s.servfail {
		if on && under(name, suf) {
			m.SetRcode(req, dns.RcodeServerFailure)
			w.WriteMsg(m)
			return
		}
	}
	rrs, exists := s.records[name]
	for _, rr := range rrs {
		if rr.Header().Rrtype == q.Qtype {
			m.Answer = append(m.Answer, dns.Copy(rr))
		}
	}
	if !exists {
		for suf, ips := range s.wild {
			if under(name, suf) {
				exists = true
				if q.Qtype == dns.TypeA {
					for _, ip := range ips {
						a := netip.MustParseAddr(ip)
						m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300}, A: a.AsSlice()})
					}
				}
			}
		}
	}
	if len(m.Answer) == 0 {
		if !exists {
			m.Rcode = dns.RcodeNameError
		}
		m.Ns = []dns.RR{&dns.SOA{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 120},
			Ns: "ns.test.", Mbox: "hostmaster.test.", Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: 120}}
	}
	w.WriteMsg(m)
}
