package policyd

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/dnsutil/dnstest"
)

// TestPolicyDNSFailures drives `relayguard policy` from outside, through
// the policy protocol, with its lists behind a real unbound (NSD behind
// it) reached through a proxy that can slow or cut the path: the resolver
// down at start, slow, cut mid-run, SERVFAIL from a dead authoritative
// server, a list's error code and wrong answers for one address, and a
// list that lists everything. reject_rbl_client, reject_rhsbl_sender and
// dnsbl_score must never answer DUNNO for what they could not ask, and
// never reject for a list's error (issue 13 items 1, 3, 6).
func TestPolicyDNSFailures(t *testing.T) {
	dnstest.NeedReal(t)
	t.Parallel()
	dir, err := os.MkdirTemp("", "rg-policy-dns-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	nsd := dnstest.StartNSD(t, map[string][]string{"rgtest": {
		"2.0.0.127.bl IN A 127.0.0.2", "6.0.0.127.bl IN A 127.0.0.2", "7.0.0.127.bl IN A 127.0.0.2",
		"8.0.0.127.bl IN A 127.0.0.2",
		"7.7.18.198.bl IN A 127.255.255.254", // an error code for one address
		"8.8.18.198.bl IN A 127.0.0.1",       // no listing any list gives (RFC 5782 §2.3)
		"9.9.18.198.bl IN A 192.0.2.80",      // a parking server's address
		"test.dbl IN A 127.0.1.2", "bad.example.dbl IN A 127.0.1.2",
		"*.wild IN A 127.0.0.2"}})
	ub := dnstest.StartUnbound(t, dnstest.Stub{Zone: "rgtest", Addrs: []string{nsd.Addr}})
	path := dnstest.StartProxy(t, ub.Addr) // relayguard → path → unbound
	ub.Stop()

	bin := buildRelayguard(t, dir)
	addr := startPolicyConf(t, bin, dir, fmt.Sprintf(`
local_domains = ["example.test"]

[policy]
listen = "127.0.0.1:0"
recipient_restrictions = ["reject_unauth_destination", "reject_rbl_client bl.rgtest", "reject_rhsbl_sender dbl.rgtest", "dnsbl_score"]

[dnsbl]
zones = ["wild.rgtest*1"]
resolvers = [%q]
timeout = "2s"
`, path.Addr))
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rw := bufio.NewReadWriter(bufio.NewReader(conn), bufio.NewWriter(conn))
	action := func(ip, sender string) string {
		r := req(ip, "user@example.test")
		r["sender"] = sender
		conn.SetDeadline(time.Now().Add(30 * time.Second))
		return ask(t, rw, r)
	}
	want := func(what, ip, sender, prefix string) {
		t.Helper()
		if got := action(ip, sender); !strings.HasPrefix(got, "action="+prefix) {
			t.Errorf("%s: client %s sender %s: %q, want %s", what, ip, sender, got, prefix)
		}
	}
	const good, bad = "a@good.example", "a@bad.example"

	// Started while the resolver is down: nothing can be asked, so
	// nothing passes and nothing is rejected.
	want("resolver down at start", "127.0.0.6", good, "DEFER_IF_PERMIT 4.4.3")
	want("resolver down at start", "127.0.0.9", bad, "DEFER_IF_PERMIT 4.4.3")
	want("resolver down at start", "127.0.0.10", good, "DEFER_IF_PERMIT 4.4.3")

	ub.Start()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.HasPrefix(action("127.0.0.6", good), "action=554 ") {
		if time.Now().After(deadline) {
			t.Fatal("listed client not rejected 30 s after the resolver returned")
		}
		time.Sleep(500 * time.Millisecond)
	}
	// wild.rgtest lists everything: switched off, never a rejection.
	want("resolver up", "127.0.0.9", good, "DUNNO")
	want("resolver up", "127.0.0.9", bad, "554 5.7.1")
	// A list's error code or wrong answer for one address: that client
	// cannot be checked (4xx), and the list still works for the others.
	for _, ip := range []string{"198.18.7.7", "198.18.8.8", "198.18.9.9"} {
		want("wrong answer for one address", ip, good, "DEFER_IF_PERMIT 4.4.3")
	}
	want("after the wrong answers", "127.0.0.7", good, "554 5.7.1")
	want("after the wrong answers", "127.0.0.11", good, "DUNNO")

	// A slow path (0.5 s each way to the resolver, within the 2 s
	// deadline): the same answers, only later.
	path.Delay(500 * time.Millisecond)
	want("slow resolver", "127.0.0.8", good, "554 5.7.1")
	want("slow resolver", "127.0.0.12", good, "DUNNO")
	path.Delay(0)

	// The path is cut mid-run: cached listings still count, everything
	// else is a temporary failure.
	path.DropAll(true)
	for _, ip := range []string{"127.0.0.13", "127.0.0.14", "127.0.0.15", "127.0.0.18"} {
		want("resolver cut", ip, good, "DEFER_IF_PERMIT 4.4.3")
	}
	want("resolver cut, cached clean", "127.0.0.9", good, "DUNNO")
	want("resolver cut, cached listing", "127.0.0.6", good, "554 5.7.1")
	want("resolver cut, cached listing", "127.0.0.9", bad, "554 5.7.1")
	path.DropAll(false)

	// The authoritative server dies: unbound answers SERVFAIL for what
	// it has not cached.
	nsd.Stop()
	want("SERVFAIL", "127.0.0.16", good, "DEFER_IF_PERMIT 4.4.3")
	want("SERVFAIL", "127.0.0.17", good, "DEFER_IF_PERMIT 4.4.3")
	want("SERVFAIL, cached listing", "127.0.0.7", good, "554 5.7.1")
	nsd.Start()
	deadline = time.Now().Add(30 * time.Second)
	for !strings.HasPrefix(action("127.0.0.9", "a@other.example"), "action=DUNNO") {
		if time.Now().After(deadline) {
			t.Fatal("clean client not passed 30 s after the lists returned")
		}
		time.Sleep(500 * time.Millisecond)
	}
	want("lists back", "127.0.0.9", good, "DUNNO")
	want("lists back", "127.0.0.2", good, "554 5.7.1")
}
