package egress

import (
	"context"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestMailerSmtpSink hands an alert to Postfix's smtp-sink on loopback and
// reads the dumped message.
func TestMailerSmtpSink(t *testing.T) {
	bin, err := exec.LookPath("smtp-sink")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but smtp-sink (package postfix) is missing: %v", err)
		}
		t.Skip("smtp-sink not installed")
	}
	dir, err := os.MkdirTemp("", "rg-egress-sink")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	// smtp-sink cannot report an ephemeral port: take a free one.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	args := []string{"-d", filepath.Join(dir, "%M."), addr, "10"}
	if os.Geteuid() == 0 {
		args = append([]string{"-u", "nobody"}, args...)
	}
	sink := exec.Command(bin, args...)
	sink.Stderr = os.Stderr
	if err := sink.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sink.Process.Kill(); _ = sink.Wait() })
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if i == 100 {
			t.Fatalf("smtp-sink on %s did not start: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	al := Alert{UID: 4343, User: "www-data", Count: 12, Window: 10 * time.Minute, Last: Attempt{
		Time: time.Now(), UID: 4343, User: "www-data", Dst: netip.MustParseAddr("203.0.113.9"), DstPort: 25,
		Process: &Process{PID: 777, Exe: "/tmp/.x/spam", Cmdline: "spam -q"},
	}}
	m := Mailer{Addr: addr, To: "admin@example.org", Hostname: "mx.example.org"}
	if err := m.Send(context.Background(), al); err != nil {
		t.Fatal(err)
	}
	var msg []byte
	for i := 0; i < 100 && msg == nil; i++ {
		files, _ := filepath.Glob(filepath.Join(dir, "*"))
		if len(files) > 0 {
			msg, _ = os.ReadFile(files[0])
		}
		if msg == nil {
			time.Sleep(50 * time.Millisecond)
		}
	}
	s := string(msg)
	for _, want := range []string{
		"X-Mail-Args: <relayguard@mx.example.org>", "X-Rcpt-Args: <admin@example.org>",
		"Subject: [relayguard] mx.example.org: user www-data (uid 4343) tried to send mail directly 12 times",
		"pid=777", `exe="/tmp/.x/spam"`, "dst=203.0.113.9:25", strconv.Itoa(12) + " connection attempts",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("mail lacks %q:\n%s", want, s)
		}
	}
	// A refused connection is an error naming the server.
	bad := Mailer{Addr: "127.0.0.1:1", To: "admin@example.org", Hostname: "h"}
	if err := bad.Send(context.Background(), al); err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Errorf("send to a closed port: %v", err)
	}
}
