package deliver_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/deliver"
	"github.com/relayguard/relayguard/internal/deliver/delivertest"
	"github.com/relayguard/relayguard/internal/hosttest"
	"github.com/relayguard/relayguard/internal/queue"
)

// Postfix as the peer of relayguard's SMTP client: a message goes in BDAT
// chunks (Postfix's smtpd logs the BDAT commands), and the DSN parameters
// are relayed: Postfix, asked NOTIFY=SUCCESS, sends its own "delivered"
// notice carrying our ENVID and ORCPT back to the sender (at an
// smtp-sink), which it could only do if it received them; the results say
// the peer took DSN responsibility.
func TestPostfixPeerChunkingAndDSN(t *testing.T) {
	hosttest.NeedPostfix(t)
	sink := delivertest.StartSink(t)
	port := delivertest.FreePort(t)
	pf := hosttest.StartPostfix(t, hosttest.PostfixConfig{
		Listen: fmt.Sprintf("127.0.0.1:%d", port),
		Main: fmt.Sprintf(`
mynetworks = 127.0.0.0/8
debug_peer_list = 127.0.0.1
debug_peer_level = 2
transport_maps = inline:{sender.test=smtp:[127.0.0.1]:%d}
relay_domains = example.test, sender.test
`, sink.Port),
	})
	delivertest.WaitListening(t, "tcp", fmt.Sprintf("127.0.0.1:%d", port))

	cfg := config.Default().Delivery
	cfg.MTASTS, cfg.DANE = false, false
	cfg.TLSPolicy = config.TLSNone
	cfg.ConnectTimeout = config.Duration(5 * time.Second)
	cfg.Transports = map[string]string{"example.test": fmt.Sprintf("smtp:127.0.0.1:%d", port)}
	res, _ := deliver.NewResolver("127.0.0.1:1", time.Second)
	d, err := deliver.New(cfg, "relay.test", slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})), deliver.Options{Resolver: res})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()

	// A message larger than one BDAT chunk (1 MiB), so that it goes in two.
	body := "From: a@sender.test\r\nTo: bob@example.test\r\nSubject: chunked\r\n\r\n" + strings.Repeat(strings.Repeat("z", 78)+"\r\n", 15000)
	req := &deliver.Request{
		ID: "pf1", From: "a@sender.test", Rcpts: []string{"bob@example.test"}, Size: int64(len(body)),
		Open: func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(body)), nil },
		Ret:  "HDRS", EnvID: "rg env+1",
		DSN: []queue.RcptDSN{{Notify: "SUCCESS,FAILURE", ORcpt: "rfc822;Bob.Original@example.test"}},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r := d.Deliver(ctx, "example.test", req)
	if len(r) != 1 || !r[0].OK || !r[0].PeerDSN {
		t.Fatalf("delivery to Postfix: %+v", r)
	}
	log := pf.WaitLog(t, `BDAT \d+ LAST`)
	if !strings.Contains(log, "BDAT 1048576") {
		t.Errorf("Postfix did not see a first full-size chunk (log excerpt):\n%s", grepLines(log, "BDAT"))
	}
	var notice string
	deadline := time.Now().Add(60 * time.Second)
	for notice == "" && time.Now().Before(deadline) {
		for _, m := range sink.Messages(t) {
			if strings.Contains(m.Data, "Original-Envelope-Id") {
				notice = m.Data
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, want := range []string{"Original-Envelope-Id: rg env+1", "Original-Recipient: rfc822;Bob.Original@example.test", "Action: delivered"} {
		if !strings.Contains(notice, want) {
			t.Fatalf("Postfix's success notice lacks %q:\n%s", want, notice)
		}
	}
	if strings.Contains(notice, strings.Repeat("z", 78)) {
		t.Fatalf("RET=HDRS not relayed: the notice returns the body")
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
