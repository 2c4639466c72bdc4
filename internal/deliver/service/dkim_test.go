package service_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/deliver/delivertest"
	"github.com/relayguard/relayguard/internal/deliver/service"
	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/msgauth"
	"github.com/relayguard/relayguard/internal/msgauth/authtest"
	"github.com/relayguard/relayguard/internal/queue"
	"github.com/relayguard/relayguard/internal/smtpd"
	"github.com/relayguard/relayguard/internal/store"
	"github.com/relayguard/relayguard/internal/userdb"
)

// Mail submitted by an authenticated user leaves DKIM-signed by the keys
// of its From: domain (rsa and ed25519, as keygen writes them and the
// [dkim] section names them), and dkimpy verifies what the next hop
// (Postfix's smtp-sink) received against the published records; mail
// relayed for someone else (MX listener, relay_domains) is not signed.
func TestDKIMSignedOnTheWayOut(t *testing.T) {
	dkimverify := delivertest.Need(t, "dkimverify")
	sink := delivertest.StartSink(t)
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Hostname = "mail.relay.test"
	cfg.LocalDomains = []string{"mail.relay.test"}
	cfg.RelayDomains = []string{"backup.test"}
	cfg.Listeners = []config.ListenerConfig{
		{Name: "sub", Address: "127.0.0.1:0", Mode: config.ModeSubmission, TrustedLocal: true},
		{Name: "mx", Address: "127.0.0.1:0", Mode: config.ModeMX},
	}
	cfg.Delivery.Transports = map[string]string{"remote.test": "smtp:" + sink.Addr, "backup.test": "smtp:" + sink.Addr}
	cfg.DKIM.Keys = []config.DKIMKey{{Domain: "relay.test", Selector: "r1"}, {Domain: "Relay.Test", Selector: "e1"}}
	if err := cfg.Finish(dir); err != nil {
		t.Fatal(err)
	}
	zone := authtest.Zone{Name: "relay.test"}
	for i, alg := range []string{msgauth.AlgRSA, msgauth.AlgEd25519} {
		k := cfg.DKIM.Keys[i]
		if k.KeyFile != filepath.Join(dir, "dkim", "relay.test", k.Selector+".key") {
			t.Fatalf("key file %s", k.KeyFile)
		}
		key, err := msgauth.GenerateKey(alg)
		if err != nil {
			t.Fatal(err)
		}
		if err := msgauth.WriteKey(k.KeyFile, key); err != nil {
			t.Fatal(err)
		}
		rec, _ := msgauth.Record(key.Public())
		zone.Records = append(zone.Records, msgauth.ZoneLine(k.Selector, k.Domain, rec))
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db, err := store.OpenSQLite(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	users, err := userdb.Open(ctx, db, userdb.Options{PasswordHash: "bcrypt"})
	if err != nil {
		t.Fatal(err)
	}
	users.Add(ctx, "alice", password)
	users.AddAddress(ctx, "alice", "alice@relay.test")
	spool, err := queue.OpenSpool(cfg.Spool.Dir, time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer spool.Close()
	dl, err := service.Start(ctx, cfg, service.Deps{Stores: &store.Stores{DB: db}, Spool: spool, Users: users, Events: &event.Recorder{}})
	if err != nil {
		t.Fatal(err)
	}
	defer dl.Stop()
	srv, err := smtpd.New(cfg.SMTP(), smtpd.Deps{Users: users, Creds: users, Spool: spool, Limits: dl.Limiter})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	addr := map[string]string{}
	for _, lc := range cfg.Listeners {
		ln, err := net.Listen("tcp", lc.Address)
		if err != nil {
			t.Fatal(err)
		}
		addr[lc.Name] = ln.Addr().String()
		go srv.Serve(ctx, ln, lc)
	}

	if err := submit(t, addr["sub"], "alice", "alice@relay.test", "bob@remote.test"); err != nil {
		t.Fatal(err)
	}
	// Relayed for a relay_domains domain by an unauthenticated client:
	// the same From: domain, but not ours to sign.
	c, err := gosmtp.Dial(addr["mx"])
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SendMail("someone@elsewhere.test", []string{"carol@backup.test"},
		strings.NewReader("From: alice@relay.test\r\nSubject: relayed\r\n\r\nrelayed\r\n")); err != nil {
		t.Fatal(err)
	}
	c.Close()
	waitFor(t, "both messages at the sink", func() bool { return len(sink.Messages(t)) == 2 })

	var signed, relayed string
	for _, m := range sink.Messages(t) {
		if m.Rcpts[0] == "bob@remote.test" {
			signed = m.Data
		} else {
			relayed = m.Data
		}
	}
	if strings.Contains(relayed, "DKIM-Signature") {
		t.Fatalf("relayed mail was signed:\n%s", relayed)
	}
	if n := strings.Count(signed, "DKIM-Signature:"); n != 2 {
		t.Fatalf("%d signatures, want 2:\n%s", n, signed)
	}
	f := filepath.Join(t.TempDir(), "msg")
	os.WriteFile(f, []byte(signed), 0o644)
	script := `for i in 0 1; do "$0" --index $i <"$1" 2>&1; done`
	out, err := authtest.RunWithDNS(t, []authtest.Zone{zone}, nil, "bash", "-c", script, dkimverify, f)
	if err != nil || strings.Count(out, "signature ok") != 2 {
		t.Fatalf("dkimverify: %v\n%s\nmessage:\n%s", err, out, signed)
	}
}
