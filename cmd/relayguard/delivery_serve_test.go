package main

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/relayguard/relayguard/internal/deliver/delivertest"
	"github.com/relayguard/relayguard/internal/queue"
)

// The whole delivery path through the real `relayguard serve` process:
// AUTH over STARTTLS on the submission listener, durable spool, the
// scheduler, and outbound SMTP to Postfix's smtp-sink by the transport
// table. Then the stolen-account containment: over the hourly limit the
// user gets 451 4.7.1 at DATA, the account is suspended (AUTH fails) and
// its mail still in the queue is held.
func TestDeliveryServeSubmissionToSink(t *testing.T) {
	bin := testBinary(t)
	sink := delivertest.StartSink(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	sub := fmt.Sprintf("127.0.0.1:%d", delivertest.FreePort(t))
	dead := fmt.Sprintf("127.0.0.1:%d", delivertest.FreePort(t)) // nobody listens: mail for it stays queued
	conf := fmt.Sprintf(`hostname = "relay.test"
local_domains = ["relay.test"]
[admin]
listen = ""
[[listener]]
name = "submission"
address = %q
mode = "submission"
[delivery]
[delivery.transports]
"remote.test" = "smtp:%s"
"stuck.test" = "smtp:%s"
[delivery.rate_limits]
user_messages_per_hour = 3
suspend_on_limit = true
`, sub, sink.Addr, dead)
	cf := filepath.Join(dir, "relayguard.toml")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	const password = "e2e delivery password"
	add := exec.Command(bin, "user", "add", "alice", "--password-stdin", "--config", cf, "--data-dir", data, "--create-data-dir")
	add.Stdin = strings.NewReader(password + "\n")
	if out, err := add.CombinedOutput(); err != nil {
		t.Fatalf("user add: %v\n%s", err, out)
	}

	cmd := exec.Command(bin, "serve", "--config", cf, "--data-dir", data)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		if t.Failed() {
			t.Logf("relayguard serve log:\n%s", logs.String())
		}
	})
	delivertest.WaitListening(t, "tcp", sub)

	submit := func(rcpt string, seq int) error {
		c, err := gosmtp.DialStartTLS(sub, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Hello("client.test"); err != nil {
			return err
		}
		if err := c.Auth(sasl.NewPlainClient("", "alice", password)); err != nil {
			return err
		}
		msg := fmt.Sprintf("From: alice@relay.test\r\nTo: %s\r\nSubject: e2e %d\r\nMessage-ID: <e2e-%d@relay.test>\r\n\r\n.leading dot\r\nbody %d\r\n", rcpt, seq, seq, seq)
		return c.SendMail("alice@relay.test", []string{rcpt}, strings.NewReader(msg))
	}
	queueList := func() []queue.Envelope {
		t.Helper()
		out, stderr, code := runQueue(t, data, "list", "--json", "--config", cf)
		var envs []queue.Envelope
		if code != 0 || json.Unmarshal([]byte(out), &envs) != nil {
			t.Fatalf("queue list --json (%d): %s %s", code, out, stderr)
		}
		return envs
	}

	if err := submit("someone@stuck.test", 1); err != nil {
		t.Fatalf("message 1: %v", err)
	}
	for i := 2; i <= 3; i++ {
		if err := submit(fmt.Sprintf("friend%d@remote.test", i), i); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		envs := queueList()
		if len(sink.Messages(t)) == 2 && len(envs) == 1 && envs[0].Recipients[0].Attempts >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not delivered: sink has %d messages, queue %+v", len(sink.Messages(t)), envs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, m := range sink.Messages(t) {
		if m.From != "alice@relay.test" || len(m.Rcpts) != 1 || !strings.HasPrefix(m.Rcpts[0], "friend") ||
			!strings.Contains(m.Data, "\n.leading dot\n") || !strings.Contains(m.Data, "Received: from client.test") {
			t.Errorf("sink got from %q to %v:\n%s", m.From, m.Rcpts, m.Data)
		}
	}
	stuck := queueList()[0]
	if r := stuck.Recipients[0]; r.Addr != "someone@stuck.test" || r.Status != queue.StatusQueued || r.LastError == "" || stuck.AuthUser != "alice" {
		t.Fatalf("message to the dead host: %+v", stuck)
	}

	// The 4th message in the hour.
	err := submit("friend4@remote.test", 4)
	var se *gosmtp.SMTPError
	if !errors.As(err, &se) || se.Code != 451 || se.EnhancedCode != (gosmtp.EnhancedCode{4, 7, 1}) {
		t.Fatalf("4th message: got %v, want 451 4.7.1", err)
	}
	envs := queueList()
	if len(envs) != 1 || !envs[0].Held || !strings.Contains(envs[0].HoldReason, "user_messages_per_hour") ||
		envs[0].Recipients[0].Status != queue.StatusHeld {
		t.Fatalf("queued mail of the suspended account not held: %+v", envs)
	}
	if err := submit("friend5@remote.test", 5); err == nil || !errors.As(err, &se) || se.Code/100 != 5 {
		t.Fatalf("AUTH of the suspended account: got %v, want a 5xx refusal", err)
	}
	if n := len(sink.Messages(t)); n != 2 {
		t.Fatalf("sink got %d messages after the limit, want 2", n)
	}
	if !strings.Contains(logs.String(), "delivery.rate_limits.user_messages_per_hour") {
		t.Errorf("no log line naming the limit:\n%s", logs.String())
	}
}
