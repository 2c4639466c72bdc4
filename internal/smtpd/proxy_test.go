package smtpd

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/event"
)

// On a listener with proxy_protocol, the client address of the PROXY
// header (v1 text, v2 binary) is the one the session sees: in Received,
// in the listener's deny list and in events. A connection without a
// valid header, or from outside proxy_from, is closed before the banner.
func TestPROXYProtocol(t *testing.T) {
	ts := startServer(t, func(c *config.Config) {
		c.Listeners = append(c.Listeners,
			config.ListenerConfig{Name: "lb", Address: "127.0.0.1:0", Mode: config.ModeMX, ProxyProtocol: true,
				ProxyFrom: []string{"127.0.0.0/8"}, Deny: []string{"198.51.100.66"}},
			config.ListenerConfig{Name: "lb-elsewhere", Address: "127.0.0.1:0", Mode: config.ModeMX, ProxyProtocol: true,
				ProxyFrom: []string{"10.0.0.0/8"}})
	})
	send := func(listener string, header []byte) *client {
		t.Helper()
		c := ts.dial(t, listener)
		if header != nil {
			c.send(string(header))
		}
		return c
	}
	deliverOne := func(c *client) string {
		t.Helper()
		c.dialogue(`
S: 220
C: EHLO client.example
S: 250
C: MAIL FROM:<someone@remote.example>
S: 250
C: RCPT TO:<alice@mail.test>
S: 250
C: DATA
S: 354`)
		c.send("Subject: proxied\r\n\r\nhi\r\n.\r\n")
		id := strings.TrimPrefix(c.expect("250 2.0.0 Ok: queued as "), "250 2.0.0 Ok: queued as ")
		return ts.messageData(t, id)
	}

	// v1, as HAProxy's "send-proxy" writes it.
	msg := deliverOne(send("lb", []byte("PROXY TCP4 203.0.113.7 127.0.0.1 56324 25\r\n")))
	if !strings.Contains(msg, "Received: from client.example ([203.0.113.7])") {
		t.Fatalf("v1: Received does not name the real client:\n%s", msg)
	}
	// v2 (binary), IPv6.
	h := &proxyproto.Header{Version: 2, Command: proxyproto.PROXY, TransportProtocol: proxyproto.TCPv6,
		SourceAddr:      net.TCPAddrFromAddrPort(netip.MustParseAddrPort("[2001:db8::25]:40000")),
		DestinationAddr: net.TCPAddrFromAddrPort(netip.MustParseAddrPort("[2001:db8::1]:25"))}
	v2, err := h.Format()
	if err != nil {
		t.Fatal(err)
	}
	msg = deliverOne(send("lb", v2))
	if !strings.Contains(msg, "([2001:db8::25])") {
		t.Fatalf("v2: Received does not name the real client:\n%s", msg)
	}
	// The listener's deny list applies to the real client.
	c := send("lb", []byte("PROXY TCP4 198.51.100.66 127.0.0.1 5000 25\r\n"))
	c.expect("554 5.7.1")
	found := false
	for _, e := range ts.events.Snapshot() {
		found = found || e.Kind == event.Reject && e.IP == netip.MustParseAddr("198.51.100.66")
	}
	if !found {
		t.Fatalf("no reject event for the proxied address: %+v", ts.events.Snapshot())
	}

	// No header, a garbled one, and a peer outside proxy_from: closed
	// without a banner.
	for _, tc := range []struct {
		listener string
		header   string
	}{{"lb", "EHLO client.example\r\n"}, {"lb", "PROXY TCP4 nonsense\r\n"}, {"lb-elsewhere", "PROXY TCP4 203.0.113.7 127.0.0.1 1 25\r\n"}} {
		c := send(tc.listener, []byte(tc.header))
		c.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		if l, err := c.r.ReadString('\n'); err == nil {
			t.Fatalf("%s with %q: got %q, want the connection closed", tc.listener, tc.header, l)
		}
	}
	if n := len(ts.spooled(t)); n != 2 {
		t.Fatalf("%d messages spooled, want 2", n)
	}
}
