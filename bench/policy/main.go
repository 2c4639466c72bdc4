// Command policybench measures a Postfix policy delegation server: policy
// decisions per second and latency percentiles with N concurrent
// connections, each sending one request at a time as Postfix's smtpd does.
// It also serves the benchmark's DNS list (-dns) so that relayguard and
// postfwd answer the same questions from a warm cache.
//
//	policybench -dns 127.0.0.153:53                      # serve bl.test
//	policybench -addr 127.0.0.1:10031 -conns 64 -duration 20s
//
// Every request is distinct (a new sender each time) so that no
// whole-request cache answers; the DNS answers repeat over 256 client
// addresses, so DNS caches are warm after the warm-up.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

func main() {
	var (
		dnsAddr  = flag.String("dns", "", "serve the bl.test DNS list on this UDP address and do nothing else")
		addr     = flag.String("addr", "127.0.0.1:10031", "policy server address")
		conns    = flag.Int("conns", 64, "concurrent connections")
		duration = flag.Duration("duration", 20*time.Second, "measured run time")
		warm     = flag.Duration("warmup", 3*time.Second, "warm-up time before measuring")
		name     = flag.String("name", "", "label for the result line")
	)
	flag.Parse()
	if *dnsAddr != "" {
		serveDNS(*dnsAddr)
		return
	}
	run(*name, *addr, *conns, *warm, false)
	run(*name, *addr, *conns, *duration, true)
}

// client i's address: 203.0.113.x; every fourth one is listed in bl.test.
// Clients 10.1.0.x are in mynetworks.
func listed(last byte) bool { return last%4 == 0 }

func serveDNS(addr string) {
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		name := strings.ToLower(q.Name)
		ok := false
		if q.Qtype == dns.TypeA && strings.HasSuffix(name, ".bl.test.") {
			var a, b, c, d int
			if n, _ := fmt.Sscanf(name, "%d.%d.%d.%d.", &d, &c, &b, &a); n == 4 {
				ok = (a == 127 && b == 0 && c == 0 && d == 2) || (a == 203 && b == 0 && c == 113 && listed(byte(d)))
			}
		}
		if ok {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 3600}, A: net.IPv4(127, 0, 0, 2)})
		} else {
			m.Rcode = dns.RcodeNameError
			m.Ns = []dns.RR{&dns.SOA{Hdr: dns.RR_Header{Name: "bl.test.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 3600},
				Ns: "ns.bl.test.", Mbox: "h.bl.test.", Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: 3600}}
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

// kind classifies a reply so that two servers can be compared.
func kind(action string) string {
	switch a := strings.ToUpper(action); {
	case a == "OK":
		return "permit"
	case a == "DUNNO" || strings.HasPrefix(a, "PREPEND"):
		return "dunno"
	case strings.HasPrefix(a, "REJECT") || strings.HasPrefix(a, "5"):
		if strings.Contains(strings.ToLower(a), "relay") {
			return "reject-relay"
		}
		return "reject-rbl"
	case strings.HasPrefix(a, "DEFER") || strings.HasPrefix(a, "4"):
		return "defer"
	}
	return "other:" + action
}

func run(name, addr string, conns int, d time.Duration, report bool) {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		lats  []time.Duration
		kinds = map[string]int{}
		seq   atomic.Int64
		fails atomic.Int64
	)
	stop := time.Now().Add(d)
	for c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				log.Fatalf("connect %s: %v", addr, err)
			}
			defer conn.Close()
			r := bufio.NewReader(conn)
			var my []time.Duration
			mk := map[string]int{}
			var b strings.Builder
			for time.Now().Before(stop) {
				n := seq.Add(1)
				last := byte(n % 256)
				client := fmt.Sprintf("203.0.113.%d", last)
				if n%20 == 0 {
					client = fmt.Sprintf("10.1.0.%d", last)
				}
				rcpt := "user@example.test"
				if n%10 == 3 {
					rcpt = "victim@elsewhere.test"
				}
				b.Reset()
				fmt.Fprintf(&b, "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"+
					"client_address=%s\nclient_name=unknown\nreverse_client_name=unknown\nhelo_name=client%d.example.net\n"+
					"sender=s%d-%d@sender.test\nrecipient=%s\nrecipient_count=0\nqueue_id=\ninstance=%x.%d\n"+
					"size=0\nsasl_method=\nsasl_username=\nsasl_sender=\nccert_subject=\nccert_issuer=\n"+
					"ccert_fingerprint=\nencryption_protocol=\nencryption_cipher=\nencryption_keysize=0\n"+
					"etrn_domain=\nstress=\nclient_port=%d\nserver_address=127.0.0.1\nserver_port=25\n\n",
					client, c, c, n, rcpt, n, c, 1024+c)
				t0 := time.Now()
				if _, err := conn.Write([]byte(b.String())); err != nil {
					fails.Add(1)
					return
				}
				line, err := r.ReadString('\n')
				if err == nil {
					_, err = r.ReadString('\n')
				}
				if err != nil {
					fails.Add(1)
					return
				}
				my = append(my, time.Since(t0))
				mk[kind(strings.TrimPrefix(strings.TrimSpace(line), "action="))]++
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
	var ks []string
	for k, v := range kinds {
		ks = append(ks, fmt.Sprintf("%s=%.1f%%", k, 100*float64(v)/float64(max(total, 1))))
	}
	slices.Sort(ks)
	fmt.Printf("%-12s conns=%d decisions=%d rate=%.0f/s p50=%s p99=%s max=%s failures=%d mix=[%s]\n",
		name, conns, total, float64(total)/d.Seconds(), pct(0.50), pct(0.99), pct(1), fails.Load(), strings.Join(ks, " "))
}
