package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/deliver"
	"github.com/relayguard/relayguard/internal/deliver/delivertest"
	"github.com/relayguard/relayguard/internal/queue"
)

func runQueue(t *testing.T, dataDir string, args ...string) (string, string, int) {
	t.Helper()
	bin, err := relayguardBinary()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, append(append([]string{"queue"}, args...), "--data-dir", dataDir)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	var ee *exec.ExitError
	code := 0
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func TestQueueCommands(t *testing.T) {
	data := t.TempDir()
	sp, err := queue.OpenSpool(filepath.Join(data, "spool"), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	ctx := context.Background()
	id1, err := sp.Put(ctx, &queue.Envelope{From: "alice@mail.test", AuthUser: "alice", Mode: "submission",
		Recipients: []queue.Recipient{{Addr: "x@remote.test"}, {Addr: "y@remote.test", Status: queue.StatusDelivered}}},
		strings.NewReader("Subject: first\r\n\r\nbody\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	env, _ := sp.Load(id1)
	env.Recipients[0].LastError = "mx.remote.test: 451 4.7.1 greylisted"
	env.Recipients[0].Attempts = 1
	env.Recipients[0].NextAttempt = time.Now().Add(time.Hour)
	if err := sp.Update(env); err != nil {
		t.Fatal(err)
	}
	id2, err := sp.Put(ctx, &queue.Envelope{From: "", Recipients: []queue.Recipient{{Addr: "bob@mail.test"}}}, strings.NewReader("Subject: second\r\n\r\nb\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	// The server stops: what its intake journal held becomes msg/ files.
	// From here the test reads the spool as the queue commands do.
	sp.Close()
	if sp, err = queue.OpenForAdmin(filepath.Join(data, "spool"), nil); err != nil {
		t.Fatal(err)
	}
	defer sp.Close()

	out, _, code := runQueue(t, data, "list")
	if code != 0 || !strings.Contains(out, id1) || !strings.Contains(out, id2) || !strings.Contains(out, "greylisted") ||
		!strings.Contains(out, "1 queued, 1 delivered") || !strings.Contains(out, "<>") || !strings.Contains(out, "2 message(s)") {
		t.Fatalf("list (%d):\n%s", code, out)
	}
	out, _, _ = runQueue(t, data, "list", "--json")
	var envs []queue.Envelope
	if err := json.Unmarshal([]byte(out), &envs); err != nil || len(envs) != 2 {
		t.Fatalf("list --json: %v\n%s", err, out)
	}

	out, _, code = runQueue(t, data, "show", id1)
	if code != 0 || !strings.Contains(out, "User:      alice") || !strings.Contains(out, "Subject: first") || !strings.Contains(out, "attempts=1") {
		t.Fatalf("show:\n%s", out)
	}
	_, stderr, code := runQueue(t, data, "show", "doesnotexist")
	if code != 2 || !strings.Contains(stderr, `no message with ID "doesnotexist"`) {
		t.Fatalf("show of a missing ID: code %d, %q", code, stderr)
	}
	_, stderr, code = runQueue(t, data, "hold", "../etc")
	if code == 0 || !strings.Contains(stderr, `"../etc"`) {
		t.Fatalf("hold of a bad ID: code %d, %q", code, stderr)
	}

	if out, _, code = runQueue(t, data, "hold", id1); code != 0 {
		t.Fatalf("hold: %s", out)
	}
	env, _ = sp.Load(id1)
	if !env.Held || env.Recipients[0].Status != queue.StatusHeld || env.Recipients[1].Status != queue.StatusDelivered {
		t.Fatalf("after hold: %+v", env)
	}
	if out, _, _ = runQueue(t, data, "list"); !strings.Contains(out, "HELD (operator)") {
		t.Fatalf("list after hold:\n%s", out)
	}
	// flush leaves held mail alone.
	out, _, _ = runQueue(t, data, "flush", "--json")
	if !strings.Contains(out, `"flushed": 0`) {
		t.Fatalf("flush: %s", out)
	}
	if out, _, code = runQueue(t, data, "release", id1); code != 0 {
		t.Fatalf("release: %s", out)
	}
	env, _ = sp.Load(id1)
	if env.Held || env.Recipients[0].Status != queue.StatusQueued || !env.Recipients[0].NextAttempt.IsZero() {
		t.Fatalf("after release: %+v", env)
	}
	if _, err := os.Stat(filepath.Join(data, "spool", queue.FlushFile)); err != nil {
		t.Fatalf("release did not poke the scheduler: %v", err)
	}
	if out, _, code = runQueue(t, data, "delete", id2); code != 0 {
		t.Fatalf("delete: %s", out)
	}
	if _, err := sp.Load(id2); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("deleted message still there: %v", err)
	}
	if out, _, _ = runQueue(t, data, "list", "--json"); json.Unmarshal([]byte(out), &envs) != nil || len(envs) != 1 {
		t.Fatalf("list after delete: %s", out)
	}
}

// startRelayguard runs `relayguard serve` as a separate process with one MX
// listener accepting mail for domain, and returns its address and data dir.
func startRelayguard(t *testing.T, domain string) (string, string) {
	t.Helper()
	bin, err := relayguardBinary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	port := delivertest.FreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	conf := fmt.Sprintf("hostname = %q\nlocal_domains = [%q]\n[admin]\nlisten = \"\"\n[[listener]]\nname = \"mx\"\naddress = %q\nmode = \"mx\"\n", domain, domain, addr)
	cf := filepath.Join(dir, "relayguard.toml")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", "--config", cf, "--data-dir", filepath.Join(dir, "data"))
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		if t.Failed() {
			t.Logf("relayguard B log:\n%s", logs.String())
		}
	})
	delivertest.WaitListening(t, "tcp", addr)
	return addr, filepath.Join(dir, "data")
}

// relayguard A's scheduler delivers to relayguard B (a separate process)
// over SMTP; B refuses an unknown recipient at RCPT, and A reports that to
// its authenticated sender.
func TestDeliveryToSecondRelayguard(t *testing.T) {
	addrB, dataB := startRelayguard(t, "b.test")
	mbox := t.TempDir()
	cfg := config.Default()
	cfg.Hostname = "a.test"
	cfg.Delivery.Transports = map[string]string{"b.test": "smtp:" + addrB, "a.test": "maildir:" + mbox}
	cfg.Delivery.RescanInterval = config.Duration(200 * time.Millisecond)
	sp, err := queue.OpenSpool(t.TempDir(), time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	res, _ := deliver.NewResolver("127.0.0.1:1", time.Second)
	d, err := deliver.New(cfg.Delivery, cfg.Hostname, nil, deliver.Options{Resolver: res})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	s := queue.NewScheduler(sp, d, cfg.Delivery, cfg.Hostname, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()

	id, err := sp.Put(ctx, &queue.Envelope{From: "alice@a.test", AuthUser: "alice", Mode: "submission",
		Recipients: []queue.Recipient{{Addr: "postmaster@b.test"}, {Addr: "nosuchuser@b.test"}}},
		strings.NewReader("From: alice@a.test\r\nTo: postmaster@b.test\r\nSubject: across\r\nMessage-ID: <across-1@a.test>\r\n\r\nhello B\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, err := sp.Load(id)
		if errors.Is(err, os.ErrNotExist) && len(delivertest.ReadMaildir(t, filepath.Join(mbox, "alice"))) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("message never left A's queue with a notice for alice")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// B delivers its local mail into the default Maildirs under its data
	// directory (delivery.local_transport).
	var got []string
	for time.Now().Before(deadline) {
		if got = delivertest.ReadMaildir(t, filepath.Join(dataB, "mail", "b.test", "postmaster")); len(got) > 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(got) != 1 || !strings.Contains(got[0], "Return-Path: <alice@a.test>") || !strings.Contains(got[0], "Delivered-To: postmaster@b.test") ||
		!strings.Contains(got[0], "Message-ID: <across-1@a.test>") || !strings.Contains(got[0], "Received: from a.test") {
		t.Fatalf("B's Maildir for postmaster: %q", got)
	}
	dsn := delivertest.ReadMaildir(t, filepath.Join(mbox, "alice"))[0]
	if !strings.Contains(dsn, "Final-Recipient: rfc822; nosuchuser@b.test") || !strings.Contains(dsn, "Action: failed") ||
		strings.Contains(dsn, "Final-Recipient: rfc822; postmaster@b.test") {
		t.Fatalf("notice to alice:\n%s", dsn)
	}
}
