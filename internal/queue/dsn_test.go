package queue_test

import (
	"context"
	"strings"
	"testing"

	"github.com/relayguard/relayguard/internal/deliver/delivertest"
	"github.com/relayguard/relayguard/internal/queue"
)

// A failure notice quotes the original header; when that header is 8-bit
// (a client that sent raw UTF-8 without BODY=8BITMIME) the notice is 8-bit
// too and must say so (BODY=8BITMIME, RFC 6152) on its way out.
func TestNoticeOf8BitHeaderDeclares8BitMIME(t *testing.T) {
	sink := delivertest.StartSink(t, "-f", "RCPT")
	peer := delivertest.StartGoPeer(t, delivertest.GoPeerOptions{})
	sp := openSpool(t, t.TempDir())
	cfg := testConfig(map[string]string{"a.test": "smtp:" + sink.Addr, "sender.test": "smtp:" + peer.Addr})
	startScheduler(t, sp, cfg)
	id, err := sp.Put(context.Background(), &queue.Envelope{From: "alice@sender.test", AuthUser: "alice", Mode: "submission", Recipients: rcpts("nobody@a.test")},
		strings.NewReader("From: alice@sender.test\r\nSubject: Grüße aus Köln\r\n\r\nbody\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the notice", func() bool { return gone(sp, id) && len(peer.Messages()) == 1 })
	m := peer.Messages()[0]
	if m.From != "" || m.Rcpts[0] != "alice@sender.test" || m.Body != "8BITMIME" {
		t.Fatalf("notice went out as from %q to %v body %q; want <> to alice with BODY=8BITMIME", m.From, m.Rcpts, m.Body)
	}
}
