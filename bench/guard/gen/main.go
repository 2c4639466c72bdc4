// Command gen writes a synthetic Postfix log for the guard benchmark:
// 35% normal traffic, 25% SASL authentication failures (from a set of
// attacking addresses, in bursts, IPv4 and IPv6), and the rest RBL and
// relay-access rejections. It prints the attacking addresses to the file
// named by -offenders, one per line.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"time"
)

func main() {
	lines := flag.Int("lines", 1_000_000, "lines to write")
	out := flag.String("o", "mail.log", "output file")
	offenders := flag.String("offenders", "offenders.txt", "file for the attacking addresses")
	attackers := flag.Int("attackers", 2000, "number of attacking addresses")
	flag.Parse()

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
