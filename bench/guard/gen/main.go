// Command gen writes a synthetic Postfix log for the guard benchmark:
// 35% normal traffic, 25% SASL authentication failures (from a set of
// attacking addresses, in bursts, IPv4 and IPv6), and the rest RBL and
// relay-access rejections. It prints the attacking addresses to the file
// named by -offenders, one per line.
//
// With -distinct N it writes the guard's memory workload instead
// (bench/guard/memory.sh): N distinct IPv4 addresses spread over the
// address space each fail SASL twice within 30 minutes (2N lines, inside
// findtime and the subnet window: nothing may expire), and among them
// -attackers addresses fail six times each (over maxretry: they must be
// banned however full the guard's tables are) and five /24s have five
// failing addresses each (a subnet ban each, with the default rules); the
// offenders file gets the attackers and the /24s.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"time"
)

func main() {
	lines := flag.Int("lines", 1_000_000, "lines to write")
	out := flag.String("o", "mail.log", "output file")
	offenders := flag.String("offenders", "offenders.txt", "file for the attacking addresses")
	attackers := flag.Int("attackers", 2000, "number of attacking addresses")
	distinct := flag.Int("distinct", 0, "write the memory workload: this many distinct addresses failing twice in 30 minutes")
	flag.Parse()
	if *distinct > 0 {
		if err := dense(*out, *offenders, *distinct, *attackers); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}

	r := rand.New(rand.NewPCG(1, 2))
	f, err := os.Create(*out)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	att := make([]string, *attackers)
	for i := range att {
		if i%10 == 9 {
			att[i] = fmt.Sprintf("2001:db8:%x:%x::%x", 0x100+i/256, i%256, r.IntN(0xffff)+1)
		} else {
			// spread over many /24s so that subnet aggregation does not
			// merge them (the comparison is per address)
			att[i] = fmt.Sprintf("%d.%d.%d.%d", 45+i%80, r.IntN(250)+1, (i/80)%250+1, r.IntN(250)+1)
		}
	}
	seen := map[string]bool{}
	start := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	step := 24 * time.Hour / time.Duration(*lines)
	mechs := []string{"LOGIN", "PLAIN", "LOGIN", "CRAM-MD5", "DIGEST-MD5"}
	zones := []string{"zen.spamhaus.org", "b.barracudacentral.org", "bl.spamcop.net"}
	sasl := 0
	cur := 0
	for i := range *lines {
		ts := start.Add(time.Duration(i) * step).Format(time.Stamp)
		pid := 1000 + r.IntN(30000)
		roll := r.IntN(100)
		switch {
		case roll < 35: // normal traffic
			qid := fmt.Sprintf("4X%08X", r.Uint32())
			client := fmt.Sprintf("198.51.%d.%d", r.IntN(100), r.IntN(250)+1)
			switch r.IntN(5) {
			case 0:
				fmt.Fprintf(w, "%s mx1 postfix/smtpd[%d]: connect from mail.example.com[%s]\n", ts, pid, client)
			case 1:
				fmt.Fprintf(w, "%s mx1 postfix/smtpd[%d]: %s: client=mail.example.com[%s]\n", ts, pid, qid, client)
			case 2:
				fmt.Fprintf(w, "%s mx1 postfix/qmgr[900]: %s: from=<news@example.com>, size=%d, nrcpt=1 (queue active)\n", ts, qid, 2000+r.IntN(50000))
			case 3:
				fmt.Fprintf(w, "%s mx1 postfix/smtp[%d]: %s: to=<user%d@example.org>, relay=mx.example.org[192.0.2.10]:25, delay=0.%d, delays=0.1/0/0.1/0.2, dsn=2.0.0, status=sent (250 2.0.0 Ok)\n", ts, pid, qid, r.IntN(500), r.IntN(9))
			default:
				fmt.Fprintf(w, "%s mx1 postfix/smtpd[%d]: disconnect from mail.example.com[%s] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5\n", ts, pid, client)
			}
		case roll < 60: // SASL failures, in bursts of 10 per attacker
			if sasl%10 == 0 {
				cur = r.IntN(len(att))
			}
			sasl++
			a := att[cur]
			seen[a] = true
			fmt.Fprintf(w, "%s mx1 postfix/smtpd[%d]: warning: unknown[%s]: SASL %s authentication failed: UGFzc3dvcmQ6\n", ts, pid, a, mechs[r.IntN(len(mechs))])
		case roll < 80: // RBL rejections
			c := fmt.Sprintf("185.%d.%d.%d", r.IntN(250), r.IntN(250), r.IntN(250)+1)
			fmt.Fprintf(w, "%s mx1 postfix/smtpd[%d]: NOQUEUE: reject: RCPT from unknown[%s]: 554 5.7.1 Service unavailable; Client host [%s] blocked using %s; from=<x@spam.example> to=<user@example.net> proto=ESMTP helo=<spam.example>\n", ts, pid, c, c, zones[r.IntN(len(zones))])
		default: // relay attempts
			c := fmt.Sprintf("80.%d.%d.%d", r.IntN(250), r.IntN(250), r.IntN(250)+1)
			fmt.Fprintf(w, "%s mx1 postfix/smtpd[%d]: NOQUEUE: reject: RCPT from unknown[%s]: 554 5.7.1 <victim%d@elsewhere.example>: Relay access denied; from=<spoof@example.net> to=<victim%d@elsewhere.example> proto=ESMTP helo=<WIN-%X>\n", ts, pid, c, i%1000, i%1000, r.Uint32())
		}
	}
	if err := w.Flush(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	f.Close()
	o, err := os.Create(*offenders)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for a := range seen {
		fmt.Fprintln(o, a)
	}
	o.Close()
}

// dense writes the memory workload (see the package comment).
func dense(out, offenders string, n, attackers int) error {
	r := rand.New(rand.NewPCG(3, 4))
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	// Distinct addresses: a random permutation of the /24s (outside the
	// attackers' and the subnets' 10/8), a random host in each, then the
	// next /24 round of hosts when n is above 2^24 - 2^16.
	seen := make(map[uint32]bool, n)
	addrs := make([]uint32, 0, n+attackers)
	for len(addrs) < n {
		a := r.Uint32()
		if a>>24 == 10 || a>>24 == 0 || a>>24 >= 224 || a>>24 == 127 || a&0xff == 0 || a&0xff == 255 || seen[a] {
			continue
		}
		seen[a] = true
		addrs = append(addrs, a)
	}
	var truth []string
	// Each attacker fails six times (maxretry 5): its failures are spread
	// over the 30 minutes among the others'.
	type failure struct {
		a     uint32
		times int
	}
	var fs []failure
	for _, a := range addrs {
		fs = append(fs, failure{a, 2})
	}
	for i := range attackers {
		a := uint32(10)<<24 | uint32(i/200+1)<<16 | uint32(i%200+1)<<8 | 7
		fs = append(fs, failure{a, 6})
		truth = append(truth, fmt.Sprintf("%d.%d.%d.%d", a>>24, a>>16&0xff, a>>8&0xff, a&0xff))
	}
	for s := range 5 { // five /24s of five addresses failing twice
		for h := range 5 {
			fs = append(fs, failure{uint32(10)<<24 | 250<<16 | uint32(s+1)<<8 | uint32(h+10), 2})
		}
		truth = append(truth, fmt.Sprintf("10.250.%d.0/24", s+1))
	}
	// Lines: every failure of every address, shuffled, over 30 minutes;
	// an attacker's six within five minutes of each other (findtime 10m).
	var lines []uint32
	var burst [][2]int // attackers' failures: position among the others, failure
	for i, f := range fs {
		if f.times == 6 {
			continue
		}
		for range f.times {
			lines = append(lines, uint32(i))
		}
	}
	r.Shuffle(len(lines), func(i, j int) { lines[i], lines[j] = lines[j], lines[i] })
	span := len(lines) / 6
	for i, f := range fs {
		if f.times == 6 {
			p := r.IntN(len(lines) - span)
			for j := range 6 {
				burst = append(burst, [2]int{p + j*span/6, i})
			}
		}
	}
	slices.SortFunc(burst, func(a, b [2]int) int { return a[0] - b[0] })
	all := make([]uint32, 0, len(lines)+len(burst))
	for i, l := range lines {
		for len(burst) > 0 && burst[0][0] == i {
			all = append(all, uint32(burst[0][1]))
			burst = burst[1:]
		}
		all = append(all, l)
	}
	lines = all
	start := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	step := 30 * time.Minute / time.Duration(len(lines))
	for i, l := range lines {
		a := fs[l].a
		ts := start.Add(time.Duration(i) * step).Format(time.Stamp)
		fmt.Fprintf(w, "%s mx1 postfix/smtpd[%d]: warning: unknown[%d.%d.%d.%d]: SASL LOGIN authentication failed: UGFzc3dvcmQ6\n", ts, 1000+i%30000, a>>24, a>>16&0xff, a>>8&0xff, a&0xff)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return os.WriteFile(offenders, []byte(strings.Join(truth, "\n")+"\n"), 0o644)
}
