package deliver_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/deliver"
	"github.com/relayguard/relayguard/internal/deliver/delivertest"
	"github.com/relayguard/relayguard/internal/dnsutil/dnstest"
	"github.com/relayguard/relayguard/internal/msgauth/authtest"
)

func tlsa(t *testing.T, usage, selector, matching uint8, cert *x509.Certificate) string {
	t.Helper()
	h, err := dns.CertificateToDANE(selector, matching, cert)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%d %d %d %s", usage, selector, matching, h)
}

func peerPort(p *delivertest.GoPeer) int {
	n, _ := strconv.Atoi(tlsPeerPort(p.Addr))
	return n
}

// DANE (RFC 7672) against a DNSSEC-signed zone (ldns-signzone) served by
// NSD and validated by unbound, both started by the test: DANE-EE and
// DANE-TA records authenticate peers no WebPKI root trusts; a mismatch, a
// missing STARTTLS or a bogus zone defers the mail (fail closed, never
// clear text); unusable (PKIX) records still make TLS mandatory; TLSA
// records in an unsigned zone are ignored.
func TestDANE(t *testing.T) {
	ca := authtest.NewCA(t)
	eeCert, _ := delivertest.SelfSigned(t, "mx1.dane.example")
	taCert := ca.Issue(t, time.Time{}, "mx2.dane.example")
	wrongName := ca.Issue(t, time.Time{}, "other.test")
	ee := delivertest.StartGoPeer(t, delivertest.GoPeerOptions{Cert: &eeCert})
	ta := delivertest.StartGoPeer(t, delivertest.GoPeerOptions{Cert: &taCert})
	wrong := delivertest.StartGoPeer(t, delivertest.GoPeerOptions{Cert: &wrongName})
	plain := delivertest.StartGoPeer(t, delivertest.GoPeerOptions{})
	other, _ := delivertest.SelfSigned(t, "unrelated.test")

	host := func(dom, mx string, port int, rec string) []string {
		return []string{
			fmt.Sprintf("%s. IN MX 10 %s.", dom, mx), fmt.Sprintf("%s. IN A 127.0.0.1", mx),
			fmt.Sprintf("_%d._tcp.%s. IN TLSA %s", port, mx, rec),
		}
	}
	var recs []string
	for _, r := range [][]string{
		host("ee.dane.example", "mx1.dane.example", peerPort(ee), tlsa(t, 3, 1, 1, eeCert.Leaf)),
		host("ta.dane.example", "mx2.dane.example", peerPort(ta), tlsa(t, 2, 0, 1, ca.Cert)),
		host("taname.dane.example", "mx3.dane.example", peerPort(wrong), tlsa(t, 2, 0, 1, ca.Cert)),
		host("mismatch.dane.example", "mx4.dane.example", peerPort(ee), tlsa(t, 3, 1, 1, other.Leaf)),
		host("notls.dane.example", "mx5.dane.example", peerPort(plain), tlsa(t, 3, 1, 1, other.Leaf)),
		host("pkix.dane.example", "mx6.dane.example", peerPort(ee), tlsa(t, 1, 1, 1, other.Leaf)),
	} {
		recs = append(recs, r...)
	}
	signed, ds := authtest.SignZone(t, "dane.example", dnstest.ZoneText("dane.example", recs))
	bogus, _ := authtest.SignZone(t, "bogus.example", dnstest.ZoneText("bogus.example", host("bogus.example", "mx.bogus.example", peerPort(ee), tlsa(t, 3, 1, 1, eeCert.Leaf))))
	_, otherDS := authtest.SignZone(t, "bogus.example", dnstest.ZoneText("bogus.example", nil))
	nsd := dnstest.StartNSDFiles(t, map[string]string{
		"dane.example":  signed,
		"bogus.example": bogus,
		"plain.example": dnstest.ZoneText("plain.example", host("plain.example", "mx.plain.example", peerPort(plain), tlsa(t, 3, 1, 1, other.Leaf))),
	})
	// bogus.example is anchored to a key that did not sign it.
	ub := dnstest.StartValidatingUnbound(t, []string{ds, otherDS},
		dnstest.Stub{Zone: "dane.example", Addrs: []string{nsd.Addr}},
		dnstest.Stub{Zone: "bogus.example", Addrs: []string{nsd.Addr}},
		dnstest.Stub{Zone: "plain.example", Addrs: []string{nsd.Addr}})

	cfg := config.Default().Delivery
	cfg.MTASTS = false
	cfg.ConnectTimeout = config.Duration(5 * time.Second)
	cfg.CommandTimeout = config.Duration(30 * time.Second)
	rep := &tlsResults{}
	deliverTo := func(peer *delivertest.GoPeer, domain string) deliver.Result {
		t.Helper()
		res, err := deliver.NewResolver(ub.Addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		d, err := deliver.New(cfg, "relay.test", slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
			deliver.Options{Resolver: res, MXPort: peerPort(peer), RootCAs: x509.NewCertPool(), Reporter: rep})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		return d.Deliver(context.Background(), domain, request("b@"+domain))[0]
	}
	ok := func(what string, r deliver.Result, peer *delivertest.GoPeer, n int, overTLS bool) {
		t.Helper()
		m := peer.Messages()
		if !r.OK || len(m) != n || m[n-1].TLS != overTLS {
			t.Fatalf("%s: result %+v, peer has %d messages (want %d, TLS %v)", what, r, len(m), n, overTLS)
		}
	}
	deferred := func(what string, r deliver.Result, peer *delivertest.GoPeer, n int) {
		t.Helper()
		if r.OK || !r.Temp || len(peer.Messages()) != n {
			t.Fatalf("%s: result %+v with %d messages at the peer, want deferred and %d", what, r, len(peer.Messages()), n)
		}
	}
	results := func(what string, want ...string) {
		t.Helper()
		var got []string
		for _, r := range rep.take() {
			k := r.Type + ":" + r.Domain + ":"
			if r.OK {
				k += "ok"
			} else {
				k += r.Failure
			}
			got = append(got, k)
		}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Fatalf("%s: TLS results %v, want %v", what, got, want)
		}
	}

	ok("DANE-EE", deliverTo(ee, "ee.dane.example"), ee, 1, true)
	results("DANE-EE", "tlsa:ee.dane.example:ok")
	ok("DANE-TA", deliverTo(ta, "ta.dane.example"), ta, 1, true)
	results("DANE-TA", "tlsa:ta.dane.example:ok")
	deferred("DANE-TA, certificate for another name", deliverTo(wrong, "taname.dane.example"), wrong, 0)
	results("DANE-TA wrong name", "tlsa:taname.dane.example:validation-failure")
	deferred("DANE-EE mismatch", deliverTo(ee, "mismatch.dane.example"), ee, 1)
	results("mismatch", "tlsa:mismatch.dane.example:validation-failure")
	deferred("TLSA but no STARTTLS", deliverTo(plain, "notls.dane.example"), plain, 0)
	results("no STARTTLS", "tlsa:notls.dane.example:starttls-not-supported")
	ok("PKIX-EE only: TLS without authentication", deliverTo(ee, "pkix.dane.example"), ee, 2, true)
	results("pkix", "tlsa:pkix.dane.example:ok")
	r := deliverTo(ee, "bogus.example")
	deferred("bogus zone", r, ee, 2)
	if !strings.Contains(r.Text, "SERVFAIL") {
		t.Fatalf("bogus zone: %+v", r)
	}
	ok("insecure zone: TLSA ignored", deliverTo(plain, "plain.example"), plain, 1, false)
	results("insecure", "")
}

// DANE for a next hop reached by name, not through MX records (RFC 7672
// §2.2.2): the smarthost and a transport's smtp:host:port. With secure
// address records, TLSA records at _PORT._tcp.HOST authenticate the peer
// (DANE-EE), at the end of a CNAME chain first (DANE-TA with a
// certificate for the configured name, §3.2.2); a mismatch or a bogus
// zone defers the mail and nothing is sent; a host in an unsigned zone,
// or reached by address, goes as configured (opportunistic TLS).
func TestDANENextHop(t *testing.T) {
	ca := authtest.NewCA(t)
	eeCert, _ := delivertest.SelfSigned(t, "relay.dane.example")
	aliasCert := ca.Issue(t, time.Time{}, "alias.dane.example")
	other, _ := delivertest.SelfSigned(t, "unrelated.test")
	ee := delivertest.StartGoPeer(t, delivertest.GoPeerOptions{Cert: &eeCert})
	aliased := delivertest.StartGoPeer(t, delivertest.GoPeerOptions{Cert: &aliasCert})
	plain := delivertest.StartGoPeer(t, delivertest.GoPeerOptions{})
	eeTLSA := tlsa(t, 3, 1, 1, eeCert.Leaf)
	signed, ds := authtest.SignZone(t, "dane.example", dnstest.ZoneText("dane.example", []string{
		"relay.dane.example. IN A 127.0.0.1",
		fmt.Sprintf("_%d._tcp.relay.dane.example. IN TLSA %s", peerPort(ee), eeTLSA),
		"badrelay.dane.example. IN A 127.0.0.1",
		fmt.Sprintf("_%d._tcp.badrelay.dane.example. IN TLSA %s", peerPort(ee), tlsa(t, 3, 1, 1, other.Leaf)),
		"alias.dane.example. IN CNAME target.dane.example.",
		"target.dane.example. IN A 127.0.0.1",
		fmt.Sprintf("_%d._tcp.target.dane.example. IN TLSA %s", peerPort(aliased), tlsa(t, 2, 0, 1, ca.Cert)),
	}))
	bogus, _ := authtest.SignZone(t, "bogus.example", dnstest.ZoneText("bogus.example", []string{
		"relay.bogus.example. IN A 127.0.0.1",
		fmt.Sprintf("_%d._tcp.relay.bogus.example. IN TLSA %s", peerPort(ee), eeTLSA),
	}))
	_, otherDS := authtest.SignZone(t, "bogus.example", dnstest.ZoneText("bogus.example", nil))
	nsd := dnstest.StartNSDFiles(t, map[string]string{
		"dane.example":  signed,
		"bogus.example": bogus,
		"plain.example": dnstest.ZoneText("plain.example", []string{
			"relay.plain.example. IN A 127.0.0.1",
			fmt.Sprintf("_%d._tcp.relay.plain.example. IN TLSA %s", peerPort(plain), tlsa(t, 3, 1, 1, other.Leaf)),
		}),
	})
	ub := dnstest.StartValidatingUnbound(t, []string{ds, otherDS},
		dnstest.Stub{Zone: "dane.example", Addrs: []string{nsd.Addr}},
		dnstest.Stub{Zone: "bogus.example", Addrs: []string{nsd.Addr}},
		dnstest.Stub{Zone: "plain.example", Addrs: []string{nsd.Addr}})

	send := func(smarthost, transport string) deliver.Result {
		t.Helper()
		cfg := config.Default().Delivery
		cfg.MTASTS = false
		cfg.ConnectTimeout = config.Duration(5 * time.Second)
		cfg.CommandTimeout = config.Duration(30 * time.Second)
		cfg.Smarthost = smarthost
		if transport != "" {
			cfg.Transports = map[string]string{"dest.test": "smtp:" + transport}
		}
		res, err := deliver.NewResolver(ub.Addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		d, err := deliver.New(cfg, "relay.test", slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
			deliver.Options{Resolver: res, RootCAs: x509.NewCertPool()})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		return d.Deliver(context.Background(), "dest.test", request("b@dest.test"))[0]
	}
	hostport := func(host string, p *delivertest.GoPeer) string { return fmt.Sprintf("%s:%d", host, peerPort(p)) }
	check := func(what string, r deliver.Result, peer *delivertest.GoPeer, n int, delivered, overTLS bool) {
		t.Helper()
		m := peer.Messages()
		switch {
		case len(m) != n:
			t.Fatalf("%s: result %+v, the peer has %d messages, want %d", what, r, len(m), n)
		case delivered && (!r.OK || !m[n-1].TLS == overTLS):
			t.Fatalf("%s: result %+v, last message over TLS %v, want delivered (TLS %v)", what, r, m[n-1].TLS, overTLS)
		case !delivered && (r.OK || !r.Temp):
			t.Fatalf("%s: result %+v, want deferred", what, r)
		}
	}

	check("smarthost, DANE-EE", send(hostport("relay.dane.example", ee), ""), ee, 1, true, true)
	check("transport host, DANE-EE", send("", hostport("relay.dane.example", ee)), ee, 2, true, true)
	check("smarthost, TLSA mismatch", send(hostport("badrelay.dane.example", ee), ""), ee, 2, false, false)
	check("transport host, TLSA mismatch", send("", hostport("badrelay.dane.example", ee)), ee, 2, false, false)
	check("smarthost behind a CNAME, DANE-TA", send(hostport("alias.dane.example", aliased), ""), aliased, 1, true, true)
	r := send(hostport("relay.bogus.example", ee), "")
	check("smarthost in a bogus zone", r, ee, 2, false, false)
	if !strings.Contains(r.Text, "SERVFAIL") {
		t.Fatalf("bogus zone: %+v", r)
	}
	check("smarthost in an unsigned zone: TLSA ignored", send(hostport("relay.plain.example", plain), ""), plain, 1, true, false)
	check("smarthost by address: no DANE", send(plain.Addr, ""), plain, 2, true, false)
}
