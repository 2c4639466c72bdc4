package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// watch --replay with guard.max_tracked = 1000 over a log where 25 times as
// many fresh addresses fail (IPv4 and IPv6, a few twice) as it may track:
// the counters stay within the cap (the last line reports what it tracked
// and dropped, and the first drop is logged once), and it still bans
// exactly the ten addresses that fail maxretry times within findtime, the
// five /24s and the IPv6 /64 whose addresses fail within the subnet
// window — no more, no fewer.
func TestReplayBoundedCounters(t *testing.T) {
	t.Parallel()
	bin := testBinary(t)
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(7, 8))
	var log strings.Builder
	at := time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
	line := func(a string) {
		fmt.Fprintf(&log, "%s mx1 postfix/smtpd[%d]: warning: unknown[%s]: SASL LOGIN authentication failed: UGFzc3dvcmQ6\n", at.Format(time.Stamp), 100+r.IntN(9000), a)
		at = at.Add(200 * time.Millisecond)
	}
	want := []string{"2001:db8:5:5::/64"}
	for i := range 10 {
		want = append(want, fmt.Sprintf("10.1.%d.7/32", i), fmt.Sprintf("10.2.%d.0/24", i%5))
	}
	for round := range 10 {
		for k := range 5 { // five rounds of 500 fresh addresses per attacker and /24
			for range 500 {
				a := fmt.Sprintf("%d.%d.%d.%d", 80+r.IntN(120), r.IntN(256), r.IntN(256), 1+r.IntN(250))
				if r.IntN(5) == 0 {
					a = fmt.Sprintf("2001:db8:%x:%x::%x", r.IntN(65536), r.IntN(65536), 1+r.IntN(65535))
				}
				line(a)
				if r.IntN(50) == 0 {
					line(a)
				}
			}
			line(fmt.Sprintf("10.1.%d.7", round))
			if round < 5 {
				line(fmt.Sprintf("10.2.%d.%d", round, 10+k))
			}
			if round == 5 && k < 3 {
				line(fmt.Sprintf("2001:db8:5:5::%d", k+1))
			}
		}
	}
	bans, errOut := replayBans(t, bin, dir, log.String())
	slices.Sort(want)
	want = slices.Compact(want)
	if !slices.Equal(bans, want) {
		t.Errorf("bans:\n%v\nwant:\n%v", bans, want)
	}
	m := regexp.MustCompile(`replay done.* tracked=(\d+) dropped=(\d+) pairing_dropped=(\d+)`).FindStringSubmatch(errOut)
	if m == nil {
		t.Fatalf("no replay done line:\n%s", errOut)
	}
	tracked, _ := strconv.Atoi(m[1])
	dropped, _ := strconv.Atoi(m[2])
	pairing, _ := strconv.Atoi(m[3])
	if tracked > 1000 || dropped == 0 || pairing == 0 {
		t.Errorf("tracked %d (max 1000), dropped %d, pairing dropped %d: the tables did not fill or overflowed", tracked, dropped, pairing)
	}
	if n := strings.Count(errOut, "failure counters full"); n != 1 {
		t.Errorf("'failure counters full' logged %d times, want once:\n%s", n, errOut)
	}
}

// replayBans runs watch --replay --json with guard.max_tracked = 1000 over
// log and returns the prefixes banned, sorted, and its standard error.
func replayBans(t *testing.T, bin, dir, log string) ([]string, string) {
	t.Helper()
	path := filepath.Join(dir, "mail.log")
	conf := filepath.Join(dir, "relayguard.toml")
	if err := os.WriteFile(path, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, []byte("[guard]\nmax_tracked = 1000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runRG(t, bin, "--config", conf, "--data-dir", filepath.Join(dir, "data"), "watch", "--replay", "--json", path)
	if code != 0 {
		t.Fatalf("watch --replay: %d %s", code, errOut)
	}
	var bans []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l == "" {
			continue
		}
		var b banJSON
		if err := json.Unmarshal([]byte(l), &b); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		bans = append(bans, b.Prefix)
	}
	slices.Sort(bans)
	return bans, errOut
}

// watch --replay with guard.max_tracked = 1000 over a flood of 16,000
// one-shot addresses, each in a /24 (or IPv6 /48) of its own — it renews
// 1,000 records sixteen times — bans the /24 whose five addresses come
// 3,000 lines apart (20 minutes, inside the subnet rule's hour), the /24
// whose first two addresses came 14,000 fresh addresses before its last
// three, the IPv6 /64 whose three addresses come 3,000 lines apart, and the
// address failing five times 1,000 lines apart (within findtime); not the
// /24 with four addresses (the threshold less one; one of them fails
// again), nor the address with four failures, nor any of the flood. Before
// the first failures had a table of their own, the flood pushed the slow
// /24's and the address's first failures out and neither was banned.
func TestReplaySlowSubnetAmidFlood(t *testing.T) {
	t.Parallel()
	bin := testBinary(t)
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(11, 12))
	specials := map[int][]string{}
	at := func(pos int, a string) { specials[pos] = append(specials[pos], a) }
	for k := range 5 {
		at(3000*k, fmt.Sprintf("198.51.100.%d", 10+k))
		if k < 4 {
			at(500+3000*k, fmt.Sprintf("203.0.113.%d", 10+k))
			at(2500+1000*k, "192.0.2.8")
		}
		at(2000+1000*k, "192.0.2.9")
	}
	at(13000, "203.0.113.10")
	at(100, "10.4.0.1")
	at(200, "10.4.0.2")
	for k := range 3 {
		at(14000+100*k, fmt.Sprintf("10.4.0.%d", 3+k))
		at(1000+3000*k, fmt.Sprintf("2001:db8:d::%d", k+1))
	}
	var log strings.Builder
	when := time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
	line := func(a string) {
		fmt.Fprintf(&log, "%s mx1 postfix/smtpd[%d]: warning: unknown[%s]: SASL LOGIN authentication failed: UGFzc3dvcmQ6\n", when.Format(time.Stamp), 100+r.IntN(9000), a)
		when = when.Add(100 * time.Millisecond)
	}
	for i := range 16000 {
		for _, a := range specials[i] {
			line(a)
		}
		if i%5 == 4 {
			line(fmt.Sprintf("2400:%x:%x::1", i>>8, i&0xff))
			continue
		}
		n := (i * 7919) % (180 << 16)
		line(fmt.Sprintf("%d.%d.%d.%d", 20+n>>16, n>>8&0xff, n&0xff, 1+r.IntN(250)))
	}
	bans, errOut := replayBans(t, bin, dir, log.String())
	want := []string{"10.4.0.0/24", "192.0.2.9/32", "198.51.100.0/24", "2001:db8:d::/64"}
	if !slices.Equal(bans, want) {
		t.Errorf("bans %v, want %v", bans, want)
	}
	m := regexp.MustCompile(`replay done.* tracked=(\d+) dropped=(\d+) .*first_failures=(\d+)`).FindStringSubmatch(errOut)
	if m == nil {
		t.Fatalf("no replay done line:\n%s", errOut)
	}
	tracked, _ := strconv.Atoi(m[1])
	dropped, _ := strconv.Atoi(m[2])
	firsts, _ := strconv.Atoi(m[3])
	if tracked > 1000 || firsts > 2*10*1000 || dropped == 0 {
		t.Errorf("tracked %d (max 1000), first failures %d (max 20,000), dropped %d: the tables did not fill or overflowed", tracked, firsts, dropped)
	}
}
