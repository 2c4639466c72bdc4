package server_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/hosttest"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
	"go.uber.org/goleak"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/deliver/delivertest"
	"github.com/relayguard/relayguard/internal/dnsutil/dnstest"
	"github.com/relayguard/relayguard/internal/redistest"
	"github.com/relayguard/relayguard/internal/server"
	"github.com/relayguard/relayguard/internal/store"
	"github.com/relayguard/relayguard/internal/userdb"
)

// syncBuffer is a log destination read while goroutines write.
type syncBuffer = hosttest.LogBuffer

// TestRunMetricsAndShutdown runs serve in process with everything that
// starts goroutines switched on: Redis (pub/sub, shared counters), DNS list
// health checks, a delivery through the outbound connection cache, the
// admin listener. Its one registry shows every component's metrics; when
// its context ends Run returns and no goroutine it started is left.
func TestRunMetricsAndShutdown(t *testing.T) {
	rs := redistest.Start(t)
	sink := delivertest.StartSink(t)
	dns := dnstest.Start(t)
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Hostname = "a.test"
	cfg.LocalDomains = []string{"a.test"}
	cfg.Admin.Listen = "127.0.0.1:0"
	cfg.Store.URL = rs.URL()
	cfg.Listeners = []config.ListenerConfig{
		{Name: "mx", Address: "127.0.0.1:0", Mode: config.ModeMX},
		{Name: "submission", Address: "127.0.0.1:0", Mode: config.ModeSubmission, TrustedLocal: true},
	}
	cfg.DNSBL.Zones = []string{"bl.test"}
	cfg.DNSBL.Resolvers = []string{dns.Addr}
	cfg.Delivery.Transports = map[string]string{"remote.test": "smtp:" + sink.Addr}
	cfg.Delivery.ConnectionCacheTime = config.Duration(time.Hour)
	if err := cfg.Finish(dir); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(t.Context(), cfg.DataDir, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	users, err := userdb.Open(t.Context(), st.DB, server.UserdbOptions(cfg))
	if err == nil {
		err = users.Add(t.Context(), "alice", "alice password")
	}
	if err == nil {
		err = users.AddAddress(t.Context(), "alice", "alice@a.test")
	}
	st.Close()
	if err != nil {
		t.Fatal(err)
	}

	leaks := goleak.IgnoreCurrent()
	var logs, notice syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- server.Run(ctx, cfg, log, server.Options{Notice: &notice}) }()
	defer func() {
		if t.Failed() {
			t.Logf("serve's log:\n%s", logs.String())
		}
	}()
	addr := map[string]string{}
	re := regexp.MustCompile(`(?m)^relayguard: (\S+) \(\S+\) listening on (\S+)$|^relayguard: admin/metrics on http://(\S+)/metrics$`)
	for deadline := time.Now().Add(30 * time.Second); len(addr) < 3; time.Sleep(10 * time.Millisecond) {
		select {
		case err := <-done:
			t.Fatalf("serve stopped: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not come up:\n%s", notice.String())
		}
		for _, m := range re.FindAllStringSubmatch(notice.String(), -1) {
			if m[3] != "" {
				addr["admin"] = m[3]
			} else {
				addr[m[1]] = m[2]
			}
		}
	}

	// A message delivered to the sink (the connection stays cached), and
	// an MX transaction refused by the policy.
	c, err := gosmtp.Dial(addr["submission"])
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Auth(sasl.NewPlainClient("", "alice", "alice password")); err != nil {
		t.Fatal(err)
	}
	if err := c.SendMail("alice@a.test", []string{"bob@remote.test"}, strings.NewReader("Subject: hi\r\n\r\nhello\r\n")); err != nil {
		t.Fatal(err)
	}
	c.Quit()
	mx, err := gosmtp.Dial(addr["mx"])
	if err != nil {
		t.Fatal(err)
	}
	if err := mx.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if err := mx.Mail("someone@remote.test", nil); err != nil {
		t.Fatal(err)
	}
	if err := mx.Rcpt("victim@elsewhere.test", nil); err == nil {
		t.Fatal("relay accepted on the MX listener")
	}
	mx.Quit()
	for deadline := time.Now().Add(60 * time.Second); len(sink.Messages(t)) == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the message did not reach the sink")
		}
	}

	// One registry: every component's metrics on the admin listener.
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	var body string
	want := []string{
		"relayguard_smtp_connections_total", "relayguard_spool_messages_total", // smtpd
		"relayguard_policy_decisions_total",                     // policy
		"relayguard_dnsbl_zone_state",                           // dnsbl health
		`relayguard_delivery_results_total{result="delivered"}`, // queue
		"go_goroutines", "process_open_fds",
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, err := hc.Get("http://" + addr["admin"] + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body = string(b)
		missing := ""
		for _, w := range want {
			if !strings.Contains(body, w) {
				missing = w
			}
		}
		if missing == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics lacks %s:\n%s", missing, body)
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	if err := goleak.Find(leaks); err != nil {
		t.Fatalf("goroutines left after Run returned: %v", err)
	}
}
