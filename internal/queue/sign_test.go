package queue_test

import (
	"context"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/deliver"
	"github.com/relayguard/relayguard/internal/deliver/delivertest"
	"github.com/relayguard/relayguard/internal/msgauth"
	"github.com/relayguard/relayguard/internal/queue"
)

// The scheduler signs what authenticated users, trusted networks and this
// server itself send over SMTP, and nothing else: not mail relayed for
// others, not deliveries into local mailboxes. A message it cannot sign
// still goes out, unsigned.
func TestSchedulerSigns(t *testing.T) {
	sink := delivertest.StartSink(t)
	refuser := delivertest.StartSink(t, "-f", "RCPT") // refuses every recipient: a failure notice follows
	mbox := t.TempDir()
	cfg := testConfig(map[string]string{
		"remote.test": "smtp:" + sink.Addr, "sender.test": "smtp:" + sink.Addr,
		"refuses.test": "smtp:" + refuser.Addr, "relay.test": "maildir:" + mbox,
	})
	var keys []msgauth.SigningKey
	recs := map[string]string{}
	for _, d := range []string{"sender.test", "relay.test"} {
		k, err := msgauth.GenerateKey(msgauth.AlgEd25519)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, msgauth.SigningKey{Domain: d, Selector: "q", Key: k})
		recs["q._domainkey."+d], _ = msgauth.Record(k.Public())
	}
	signer, err := msgauth.NewSigner(keys, config.DefaultDKIMHeaders, []string{"From"})
	if err != nil {
		t.Fatal(err)
	}
	sp := openSpool(t, t.TempDir())
	res, _ := deliver.NewResolver("127.0.0.1:1", 0)
	d, err := deliver.New(cfg.Delivery, cfg.Hostname, testLog(), deliver.Options{Resolver: res})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	s := queue.NewScheduler(sp, d, cfg.Delivery, cfg.Hostname, testLog())
	s.SetSigner(signer)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()

	putMsg := func(env *queue.Envelope, msg string) {
		if _, err := sp.Put(context.Background(), env, strings.NewReader(msg)); err != nil {
			t.Fatal(err)
		}
	}
	body := func(from, subject string) string {
		return from + "\r\nTo: x@remote.test\r\nSubject: " + subject + "\r\n\r\nbody\r\n"
	}
	putMsg(&queue.Envelope{From: "a@sender.test", AuthUser: "a", Mode: "submission", Recipients: rcpts("one@remote.test", "two@relay.test")}, body("From: a@sender.test", "authenticated"))
	putMsg(&queue.Envelope{From: "a@sender.test", Trusted: true, Mode: "mx", Recipients: rcpts("three@remote.test")}, body("From: a@sender.test", "trusted"))
	putMsg(&queue.Envelope{From: "a@sender.test", Mode: "mx", Recipients: rcpts("four@remote.test")}, body("From: a@sender.test", "relayed"))
	putMsg(&queue.Envelope{From: "a@sender.test", AuthUser: "a", Mode: "submission", Recipients: rcpts("five@remote.test")}, body("From: a@sender.test\r\nFrom: b@sender.test", "two authors"))
	putMsg(&queue.Envelope{From: "a@sender.test", AuthUser: "a", Mode: "submission", Recipients: rcpts("six@refuses.test")}, body("From: a@sender.test", "bounces"))

	waitFor(t, "five deliveries at the sink (four messages and one notice)", func() bool { return len(sink.Messages(t)) == 5 })
	verify := func(data string) string {
		data = strings.ReplaceAll(data, "\n", "\r\n")
		vs, err := dkim.VerifyWithOptions(strings.NewReader(data), &dkim.VerifyOptions{
			LookupTXT: func(name string) ([]string, error) { return []string{recs[name]}, nil },
		})
		if err != nil {
			t.Fatal(err)
		}
		var doms []string
		for _, v := range vs {
			if v.Err != nil {
				t.Fatalf("signature by %s does not verify: %v\n%s", v.Domain, v.Err, data)
			}
			doms = append(doms, v.Domain)
		}
		return strings.Join(doms, ",")
	}
	got := map[string]string{}
	for _, m := range sink.Messages(t) {
		subj := "notice"
		if i := strings.Index(m.Data, "Subject: "); i >= 0 && !strings.Contains(m.Data, "Undelivered Mail") {
			subj, _, _ = strings.Cut(m.Data[i+len("Subject: "):], "\n")
		}
		got[subj] = verify(m.Data)
	}
	want := map[string]string{"authenticated": "sender.test", "trusted": "sender.test", "relayed": "", "two authors": "", "notice": "relay.test"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: signed by %q, want %q (all: %v)", k, got[k], v, got)
		}
	}
	mails := delivertest.ReadMaildir(t, mbox+"/two")
	if len(mails) != 1 || strings.Contains(mails[0], "DKIM-Signature") {
		t.Fatalf("local delivery: %d messages, signed: %v", len(mails), mails)
	}
}
